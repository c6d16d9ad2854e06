"""Conditional DETR encoder and decoder (Meng et al., ICCV 2021), batch-first.

The decoder takes the number of *active* groups and a self-attention strategy from
``groupdetr.model.attention.SELF_ATTENTION`` as explicit arguments: layers never consult
``self.training`` to decide group behaviour (house rule 3). Cross-attention and the FFN act per
query, so they run on all G*N queries at once (paper Sec. 3.2).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from groupdetr.box_ops import inverse_sigmoid
from groupdetr.groups import QueryLayout
from groupdetr.layers import MLP  # re-exported: the detector's and the heads' small MLP
from groupdetr.model.attention import AttentionFn, ProjectedAttention
from groupdetr.model.backbone import downsample_mask
from groupdetr.model.memory import Memory
from groupdetr.model.multiscale import valid_ratios
from groupdetr.model.position import sine_box_encoding, sine_image_encoding, sine_point_encoding

__all__ = ["MLP", "FFN", "Encoder", "ConditionalDecoder", "DABDecoder", "INITS", "init_like_authors", "static_queries"]


def static_queries(params: torch.Tensor, memory: Memory, groups) -> tuple[torch.Tensor, None, dict]:
    """A decoder's initial queries when they are parameters: the active groups' ``params`` [G*N, query_dim]
    repeated over the batch ([B, G*N, query_dim]), no content (the decoder starts from zeros), no extra
    outputs. (DINO's decoder selects anchors from the memory instead.)"""
    return params.unsqueeze(0).expand(memory.src.shape[0], -1, -1), None, {}


class FFN(nn.Module):
    """Post-norm feed-forward block: x + Dropout(W2 Dropout(ReLU(W1 x))), then LayerNorm."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


def init_like_authors(module: nn.Module) -> nn.Module:
    """Initialise ``module`` (an encoder or decoder) as the authors' ``Transformer._reset_parameters``.

    Conditional DETR / Group DETR (``models/transformer.py``, and DAB-DETR's transformer likewise)
    run ``xavier_uniform_`` on every parameter with more than one dimension once encoder and decoder
    (with their ``query_scale`` / ``ref_point_head`` / ``ref_anchor_head`` MLPs) are built; 1-D
    parameters keep the values they were built with. We reproduce the result of that on our module
    layout, so that training starts from the same distribution as the reference runs:

    * every weight with dim > 1: xavier uniform, bound ``sqrt(6 / (fan_in + fan_out))``;
    * encoder self-attention: the authors use ``nn.MultiheadAttention``, whose q/k/v projections are
      one packed ``[3d, d]`` matrix initialised as a whole (bound ``sqrt(6 / 4d)``), with zero
      ``in_proj_bias``; our separate ``q_proj``/``k_proj``/``v_proj`` get the three row blocks of one
      such matrix and zero biases;
    * every attention output projection (``ProjectedAttention.out_proj``): zero bias, as both
      ``nn.MultiheadAttention`` and the authors' decoder ``MultiheadAttention`` set it;
    * other Linear biases (projections, FFN, MLPs) keep PyTorch's default uniform(+-1/sqrt(fan_in));
      LayerNorm stays at weight 1, bias 0.

    Call it after any ``deepcopy`` of layers so that cloned layers get independent weights.
    Returns ``module`` (initialised in place).
    """
    packed: dict[int, tuple[torch.Tensor, int]] = {}  # id(weight) -> (packed matrix, row block)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, EncoderLayer):
                ref = m.q_proj.weight
                w = nn.init.xavier_uniform_(ref.new_empty(3 * ref.shape[0], ref.shape[1]))
                for i, proj in enumerate((m.q_proj, m.k_proj, m.v_proj)):
                    packed[id(proj.weight)] = (w, i)
                    nn.init.zeros_(proj.bias)
        for p in module.parameters():
            if id(p) in packed:
                w, i = packed[id(p)]
                p.copy_(w[i * p.shape[0]:(i + 1) * p.shape[0]])
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in module.modules():
            if isinstance(m, ProjectedAttention):
                nn.init.zeros_(m.out_proj.bias)
    return module


#: ``model.init`` -> in-place initialisation of an encoder or decoder: the authors' (default), or
#: PyTorch's defaults as built (kept to measure what the authors' init changes, issue 11)
INITS = {"authors": init_like_authors, "pytorch": lambda module: module}


class EncoderLayer(nn.Module):
    """DETR post-norm encoder layer; positions are added to queries and keys only."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.attn = ProjectedAttention(d_model, nhead, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """src, pos: [B, L, d]; pad: [B, L] bool (True = padding) -> [B, L, d]."""
        qk = src + pos
        out = self.attn(self.q_proj(qk), self.k_proj(qk), self.v_proj(src), key_padding_mask=pad)
        return self.ffn(self.norm(src + self.dropout(out)))


class Encoder(nn.Module):
    """Stack of encoder layers over the last backbone map (one level); ``init`` names the initialisation
    (:data:`INITS`)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 init: str = "authors"):
        super().__init__()
        layer = EncoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.d_model = d_model
        INITS[init](self)  # after cloning: independent weights per layer

    @classmethod
    def from_config(cls, cfg) -> "Encoder":
        """From the model config (``ModelConfig``)."""
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers, init=cfg.init)

    def input_projection(self, backbone: nn.Module) -> nn.Module:
        """The detector's projection of the last backbone map to d: a 1x1 conv."""
        return nn.Conv2d(backbone.num_channels, self.d_model, kernel_size=1)

    def encode(self, proj: nn.Module, features: list[torch.Tensor], pad_mask: torch.Tensor,
               extra_pos: torch.Tensor | None = None) -> Memory:
        """Backbone maps -> :class:`Memory` of one level.

        Args:
            proj: the detector's :meth:`input_projection`.
            features: the backbone's maps, finest first; the last one is encoded.
            pad_mask: [B, H, W] bool, True on padding.
            extra_pos: [B, h*w, d] added to the sine positions (the 3D head's camera rays), or None.
        """
        feat = features[-1]
        mask = downsample_mask(pad_mask, feat.shape[-2:])
        pos = sine_image_encoding(mask, self.d_model // 2).to(feat.dtype).flatten(2).transpose(1, 2)
        src = proj(feat).flatten(2).transpose(1, 2)  # [B, hw, d]
        if extra_pos is not None:
            pos = pos + extra_pos
        flat_mask = mask.flatten(1)
        return Memory(self(src, pos, flat_mask), pos, flat_mask, [tuple(feat.shape[-2:])], valid_ratios(mask)[:, None])

    def forward(self, src: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """src, pos: [B, L, d]; pad: [B, L] bool -> [B, L, d]."""
        for layer in self.layers:
            src = layer(src, pos, pad)
        return src


class DecoderLayer(nn.Module):
    """Conditional DETR decoder layer.

    Self-attention: content and positional projections of queries and keys are added. Which
    queries attend to which is decided by the strategy ``sa_fn`` over ``num_groups`` groups.
    Cross-attention (conditional spatial): per head, q = [content ; spatial] with the spatial part
    from the reference point's sine embedding, k = [content ; position], so q/k heads are 2*d_head
    wide. Only the first layer also adds the query position to the content query.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, is_first: bool):
        super().__init__()
        lin = lambda: nn.Linear(d_model, d_model)  # noqa: E731
        self.sa_qcontent_proj, self.sa_qpos_proj = lin(), lin()
        self.sa_kcontent_proj, self.sa_kpos_proj = lin(), lin()
        self.sa_v_proj = lin()
        self.self_attn = ProjectedAttention(d_model, nhead, dropout)
        self.ca_qcontent_proj, self.ca_kcontent_proj = lin(), lin()
        self.ca_kpos_proj, self.ca_v_proj = lin(), lin()
        self.ca_qpos_sine_proj = lin()
        self.ca_qpos_proj = lin() if is_first else None
        self.cross_attn = ProjectedAttention(d_model, nhead, dropout)
        self.nhead = nhead
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        query_sine: torch.Tensor,
        layout: QueryLayout | int,
        sa_fn: AttentionFn,
    ) -> torch.Tensor:
        """
        Args:
            tgt, query_pos, query_sine: [B, Q, d], queries in the order of ``layout``
                (``groupdetr.groups.QueryLayout``; an int G means G groups, no denoising).
            memory, pos: [B, L, d]; memory_pad: [B, L] bool.
        Returns:
            [B, Q, d]
        """
        # --- self-attention, inside groups or across them (paper Sec. 3.2, Table 7) ---
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(sa_fn(self.self_attn, q, k, self.sa_v_proj(tgt), layout)))

        # --- conditional spatial cross-attention, per query ---
        b, nq, d = tgt.shape
        h = self.nhead
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.ca_qpos_proj is not None:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q_sine = self.ca_qpos_sine_proj(query_sine)
        q = torch.cat([q.view(b, nq, h, d // h), q_sine.view(b, nq, h, d // h)], dim=3).view(b, nq, 2 * d)
        lk = memory.shape[1]
        k = torch.cat([k.view(b, lk, h, d // h), k_pos.view(b, lk, h, d // h)], dim=3).view(b, lk, 2 * d)
        out = self.cross_attn(q, k, self.ca_v_proj(memory), key_padding_mask=memory_pad)
        tgt = self.norm2(tgt + self.dropout2(out))
        return self.ffn(tgt)


class ConditionalDecoder(nn.Module):
    """Stack of decoder layers with Conditional DETR's reference points and query scaling.

    Reference points are predicted from the query embedding (one 2D point per query, not refined
    across layers); every layer's output is normalised by one shared LayerNorm (auxiliary heads).
    Boxes are predicted relative to each query's reference point (centre offsets in logit space).
    """

    supports_denoising = False
    encoder_kind = "standard"  # the encoder it reads (``groupdetr.model.registry.ENCODERS``)
    initial_queries = staticmethod(static_queries)

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 init: str = "authors"):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout, is_first=(i == 0)) for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)
        self.d_model = d_model
        self.query_dim = d_model
        INITS[init](self)

    @classmethod
    def from_config(cls, cfg) -> "ConditionalDecoder":
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.dec_layers, init=cfg.init)

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
            memory: the encoder's :class:`Memory` (one level).
            query_pos: [B, Q, d] query embeddings (the G active groups, in the order of ``layout``).
            bbox_embed: the detector's box head, d -> 4 (shared by all layers).
            content: unused (Conditional DETR starts from zero content; no denoising queries).
        Returns:
            hs: [num_layers, B, Q, d] normalised outputs of every layer.
            boxes: [num_layers, B, Q, 4] predicted boxes, normalised cxcywh.
        """
        if content is not None:
            raise ValueError("the conditional decoder has no denoising queries; use model.decoder=dab")
        reference = self.ref_point_head(query_pos).sigmoid()
        point_sine = sine_point_encoding(reference, self.d_model)
        out = torch.zeros_like(query_pos)
        hs = []
        for i, layer in enumerate(self.layers):
            # First layer: no content yet, so the spatial query is the bare point embedding.
            query_sine = point_sine if i == 0 else point_sine * self.query_scale(out)
            out = layer(out, memory.src, memory.mask, memory.pos, query_pos, query_sine, layout, sa_fn)
            hs.append(self.norm(out))
        hs = torch.stack(hs)
        deltas = bbox_embed(hs)
        deltas = torch.cat([deltas[..., :2] + inverse_sigmoid(reference), deltas[..., 2:]], dim=-1)
        return hs, deltas.sigmoid()


class DABDecoder(nn.Module):
    """DAB-DETR's decoder (Liu et al., ICLR 2022): queries are 4D anchor boxes refined layer by layer.

    Per layer: the anchor's sine embedding (:func:`sine_box_encoding`) gives the positional query
    (``ref_point_head``) and, scaled by ``query_scale(content)`` from the second layer on and by the
    width/height modulation (``ref_anchor_head``), the spatial query of conditional cross-attention
    (the layer itself is Conditional DETR's). After the layer, the shared box head predicts an
    update in logit space, ``box = sigmoid(bbox_embed(h) + inverse_sigmoid(anchor))``; that box is
    the layer's prediction and, detached, the next layer's anchor (as DAB-DETR). Deviation: the
    update is predicted from the normalised output ``h`` (the one the prediction heads see), where
    DAB-DETR's refinement inside the decoder reads the un-normalised output.
    """

    supports_denoising = True
    encoder_kind = "standard"
    initial_queries = staticmethod(static_queries)

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 modulate_hw: bool = True, init: str = "authors"):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout, is_first=(i == 0)) for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.ref_anchor_head = MLP(d_model, d_model, 2, 2) if modulate_hw else None
        self.d_model = d_model
        self.query_dim = 4
        INITS[init](self)

    @classmethod
    def from_config(cls, cfg) -> "DABDecoder":
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.dec_layers, init=cfg.init)

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
            memory: the encoder's :class:`Memory` (one level).
            query_pos: [B, Q, 4] anchor boxes in logit space (inverse sigmoid of cxcywh), in the
                order of ``layout`` (denoising anchors first).
            bbox_embed: box head d -> 4, shared by all layers.
            content: [B, Q, d] initial content queries (zeros for matching queries, label
                embeddings for denoising queries), or None for zeros.
        Returns:
            hs: [num_layers, B, Q, d] normalised outputs; boxes: [num_layers, B, Q, 4] cxcywh.
        """
        d = self.d_model
        anchor = query_pos.sigmoid()
        out = torch.zeros(*query_pos.shape[:-1], d, dtype=memory.src.dtype, device=memory.src.device) if content is None else content
        hs, boxes = [], []
        for i, layer in enumerate(self.layers):
            sine = sine_box_encoding(anchor, d)  # [B, Q, 2d]
            qpos = self.ref_point_head(sine)
            query_sine = sine[..., :d] if i == 0 else sine[..., :d] * self.query_scale(out)
            if self.ref_anchor_head is not None:
                # modulated attention: the x (y) part of the spatial query is scaled by the ratio of a
                # predicted reference width (height) to the anchor's width (height)
                ref_wh = self.ref_anchor_head(out).sigmoid()
                query_sine = torch.cat([query_sine[..., : d // 2] * (ref_wh[..., 1] / anchor[..., 3])[..., None],
                                        query_sine[..., d // 2:] * (ref_wh[..., 0] / anchor[..., 2])[..., None]], dim=-1)
            out = layer(out, memory.src, memory.mask, memory.pos, qpos, query_sine, layout, sa_fn)
            h = self.norm(out)
            box = (bbox_embed(h) + inverse_sigmoid(anchor)).sigmoid()
            hs.append(h)
            boxes.append(box)
            anchor = box.detach()
        return torch.stack(hs), torch.stack(boxes)
