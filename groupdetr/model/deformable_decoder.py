"""DAB-Deformable-DETR's decoder (Liu et al., DAB-DETR, ICLR 2022, on Deformable DETR): queries are 4D anchor
boxes refined layer by layer, and cross-attention samples a few points per head and level around each
anchor (multi-scale deformable attention) instead of attending to every memory position.

Groups: self-attention goes through the same strategy (``sa_fn``) and :class:`groupdetr.groups.QueryLayout`
as the other decoders, so no query sees another group's; the deformable cross-attention and the FFN act
per query, so they run on all G*N queries at once.

Shapes: B batch, Q queries (denoising first, then the G active groups of N), d model width, L levels.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from groupdetr.box_ops import inverse_sigmoid
from groupdetr.groups import QueryLayout
from groupdetr.layers import MLP
from groupdetr.model.attention import AttentionFn, ProjectedAttention
from groupdetr.model.deformable import MSDeformAttn
from groupdetr.model.memory import Memory
from groupdetr.model.position import sine_box_encoding
from groupdetr.model.query_selection import GroupProposalHeads, select_queries
from groupdetr.model.transformer import FFN, INITS, static_queries

__all__ = ["DeformableDecoderLayer", "DABDeformableDecoder", "DINODecoder"]


class DeformableDecoderLayer(nn.Module):
    """Post-norm: self-attention (q = k = content + position, v = content, through ``sa_fn``), deformable
    cross-attention from content + position around the reference boxes, FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, n_levels: int, n_points: int):
        super().__init__()
        self.sa_q_proj, self.sa_k_proj, self.sa_v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        self.self_attn = ProjectedAttention(d_model, nhead, dropout)
        self.cross_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, reference: torch.Tensor, memory: Memory,
                layout: QueryLayout | int, sa_fn: AttentionFn) -> torch.Tensor:
        """
        Args:
            tgt, query_pos: [B, Q, d] content and positional queries, in the order of ``layout``.
            reference: [B, Q, L, 4] anchor boxes (cxcywh) scaled to each level's valid area.
            memory: the encoder's :class:`Memory`.
        Returns:
            [B, Q, d]
        """
        qk = tgt + query_pos
        sa = sa_fn(self.self_attn, self.sa_q_proj(qk), self.sa_k_proj(qk), self.sa_v_proj(tgt), layout)
        tgt = self.norm1(tgt + self.dropout1(sa))
        ca = self.cross_attn(tgt + query_pos, reference, memory.src, memory.shapes, memory.mask)
        tgt = self.norm2(tgt + self.dropout2(ca))
        return self.ffn(tgt)


class DABDeformableDecoder(nn.Module):
    """Stack of :class:`DeformableDecoderLayer` with DAB's anchors.

    Per layer: the anchor's sine embedding gives the positional query (``ref_point_head``), scaled from the
    second layer on by ``query_scale(content)``; the anchor, scaled to each level's valid area, is the
    reference box of the deformable cross-attention. After the layer the shared box head predicts an update
    in logit space, ``box = sigmoid(bbox_embed(h) + inverse_sigmoid(anchor))``: the layer's prediction and,
    detached, the next layer's anchor. Deviations from DAB-Deformable-DETR: content queries start at zero
    (as our DAB decoder) instead of a learned embedding, and the box head is shared by all layers.
    """

    supports_denoising = True
    encoder_kind = "deformable"
    initial_queries = staticmethod(static_queries)
    look_forward_twice = False  # DINO's box prediction (:class:`DINODecoder`)

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 n_levels: int, n_points: int, init: str = "authors"):
        super().__init__()
        layer = DeformableDecoderLayer(d_model, nhead, dim_feedforward, dropout, n_levels, n_points)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.d_model, self.query_dim = d_model, 4
        INITS[init](self)
        for lyr in self.layers:  # the deformable attention keeps its own init (zero offsets, uniform weights)
            lyr.cross_attn.reset_parameters()

    @classmethod
    def from_config(cls, cfg) -> "DABDeformableDecoder":
        df = cfg.deformable
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.dec_layers, df.num_levels,
                   df.dec_points, init=cfg.init)

    def forward(
        self,
        memory: Memory,
        query_pos: torch.Tensor,
        layout: QueryLayout | int,
        sa_fn: AttentionFn,
        bbox_embed: nn.Module,
        content: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            memory: the encoder's multi-scale :class:`Memory`.
            query_pos: [B, Q, 4] anchor boxes in logit space, in the order of ``layout``.
            bbox_embed: box head d -> 4, shared by all layers.
            content: [B, Q, d] initial content (label embeddings of denoising queries, zeros for matching
                queries), or None for zeros.
        Returns:
            hs: [num_layers, B, Q, d] normalised outputs; boxes: [num_layers, B, Q, 4] cxcywh.
        """
        d = self.d_model
        anchor = query_pos.sigmoid()
        out = (torch.zeros(*query_pos.shape[:-1], d, dtype=memory.src.dtype, device=memory.src.device)
               if content is None else content)
        scale = torch.cat([memory.ratios, memory.ratios], -1)[:, None]  # [B, 1, L, 4]
        previous = anchor  # the box the next prediction refines, gradients kept (look-forward-twice)
        hs, boxes = [], []
        for i, layer in enumerate(self.layers):
            raw = self.ref_point_head(sine_box_encoding(anchor, d))
            qpos = raw if i == 0 else raw * self.query_scale(out)
            out = layer(out, qpos, anchor[:, :, None] * scale, memory, layout, sa_fn)
            h = self.norm(out)
            delta = bbox_embed(h)
            refined = (delta + inverse_sigmoid(anchor)).sigmoid()  # this layer's refinement of its anchor
            hs.append(h)
            boxes.append((delta + inverse_sigmoid(previous)).sigmoid() if self.look_forward_twice else refined)
            previous, anchor = refined, refined.detach()
        return torch.stack(hs), torch.stack(boxes)


class DINODecoder(DABDeformableDecoder):
    """DINO's decoder (Zhang et al., ICLR 2023) on the DAB-Deformable one, with groups.

    - **Mixed query selection** (:func:`groupdetr.model.query_selection.select_queries`): each active group's
      anchors are its top-N encoder proposals, chosen by its own proposal heads; its content queries are the
      detector's query parameters of that group (``query_dim`` = d, learned). The selected proposals are
      returned as ``enc_outputs`` for the encoder's (two-stage) loss.
    - **Look forward twice**: layer i predicts ``sigmoid(delta_i + inverse_sigmoid(box_{i-1}))`` with the
      previous layer's box *not* detached (its gradient reaches layer i-1's update), while the reference box
      layer i reads is detached, as DINO.
    Contrastive denoising is ``model.denoising.contrastive`` (:mod:`groupdetr.denoising`).
    """

    look_forward_twice = True

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 n_levels: int, n_points: int, num_groups: int, num_queries: int, num_classes: int,
                 init: str = "authors"):
        super().__init__(d_model, nhead, dim_feedforward, dropout, num_layers, n_levels, n_points, init=init)
        self.proposals = GroupProposalHeads(num_groups, d_model, num_classes)
        self.num_queries = num_queries
        self.query_dim = d_model  # learned content queries; anchors come from the proposals

    @classmethod
    def from_config(cls, cfg) -> "DINODecoder":
        df = cfg.deformable
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.dec_layers, df.num_levels,
                   df.dec_points, cfg.num_groups, cfg.num_queries, cfg.num_classes, init=cfg.init)

    def initial_queries(self, params: torch.Tensor, memory: Memory, groups) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Anchors (logit space) [B, G*N, 4] from each group's proposals, content [B, G*N, d] = the groups'
        query parameters, and ``{"enc_outputs": ...}`` (the selected proposals, ``num_groups`` G)."""
        sel = select_queries(self.proposals, memory, tuple(groups), self.num_queries)
        b = memory.src.shape[0]
        content = params.unsqueeze(0).expand(b, -1, -1)
        enc = {"pred_logits": sel["pred_logits"], "pred_boxes": sel["pred_boxes"], "num_groups": len(tuple(groups))}
        return inverse_sigmoid(sel["anchors"]), content, {"enc_outputs": enc}
