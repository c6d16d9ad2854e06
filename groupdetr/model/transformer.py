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

from groupdetr.model.attention import AttentionFn, ProjectedAttention
from groupdetr.model.position import sine_point_encoding

__all__ = ["MLP", "Encoder", "ConditionalDecoder"]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between (DETR's box head and Conditional DETR's
    reference-point / query-scale heads)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, num_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (num_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


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
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int):
        super().__init__()
        layer = EncoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
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
        num_groups: int,
        sa_fn: AttentionFn,
    ) -> torch.Tensor:
        """
        Args:
            tgt, query_pos, query_sine: [B, G*N, d] (queries of G active groups, group-contiguous).
            memory, pos: [B, L, d]; memory_pad: [B, L] bool.
        Returns:
            [B, G*N, d]
        """
        # --- self-attention, inside groups or across them (paper Sec. 3.2, Table 7) ---
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(sa_fn(self.self_attn, q, k, self.sa_v_proj(tgt), num_groups)))

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
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout, is_first=(i == 0)) for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)
        self.d_model = d_model

    def forward(
        self,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        num_groups: int,
        sa_fn: AttentionFn,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            memory, pos: [B, L, d]; memory_pad: [B, L] bool.
            query_pos: [B, G*N, d] query embeddings of the G active groups.
        Returns:
            hs: [num_layers, B, G*N, d] normalised outputs of every layer.
            reference: [B, G*N, 2] sigmoid reference points (x, y).
        """
        reference = self.ref_point_head(query_pos).sigmoid()
        point_sine = sine_point_encoding(reference, self.d_model)
        out = torch.zeros_like(query_pos)
        hs = []
        for i, layer in enumerate(self.layers):
            # First layer: no content yet, so the spatial query is the bare point embedding.
            query_sine = point_sine if i == 0 else point_sine * self.query_scale(out)
            out = layer(out, memory, memory_pad, pos, query_pos, query_sine, num_groups, sa_fn)
            hs.append(self.norm(out))
        return torch.stack(hs), reference
