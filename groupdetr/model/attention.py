"""Multi-head attention on pre-projected inputs, and the group self-attention strategies.

Conditional DETR projects content and positional parts of q/k separately before attention, so the
attention module here takes already-projected ``q, k, v`` and owns only the output projection.
Heads may have a q/k width different from the v width (cross-attention concatenates content and
spatial parts per head: 2*d_head for q/k, d_head for v).

The attention kernel is ``F.scaled_dot_product_attention`` (memory-efficient/flash on GPU); the
paper's small memory overhead for K=11 assumes such a kernel (paper Sec. 3.2).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from groupdetr.groups import QueryLayout, as_layout, dn_key_padding, fold_groups, self_attention_mask, unfold_groups

__all__ = ["ProjectedAttention", "SELF_ATTENTION", "AttentionFn"]


class ProjectedAttention(nn.Module):
    """Multi-head attention whose inputs are already projected.

    Args:
        d_model: output width (= total v width).
        nhead: number of heads.
        dropout: dropout on attention weights (training only, via ``self.training`` of this leaf).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} not divisible by nhead {nhead}")
        self.nhead = nhead
        self.dropout = dropout
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            q: [B, Lq, H*dqk]; k: [B, Lk, H*dqk]; v: [B, Lk, H*dv].
            attn_mask: [Lq, Lk] bool, True = blocked.
            key_padding_mask: [B, Lk] bool, True = padding (ignored key).
        Returns:
            [B, Lq, H*dv]
        """
        b, lq, _ = q.shape
        lk = k.shape[1]
        h = self.nhead
        qh = q.view(b, lq, h, -1).transpose(1, 2)
        kh = k.view(b, lk, h, -1).transpose(1, 2)
        vh = v.view(b, lk, h, -1).transpose(1, 2)
        # Dot products are scaled by the per-head q/k width (as nn.MultiheadAttention would).
        mask = None
        if attn_mask is not None or key_padding_mask is not None:
            allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
            if attn_mask is not None:
                allowed = allowed & ~attn_mask
            allowed = allowed.expand(b, 1, lq, lk)
            if key_padding_mask is not None:
                allowed = allowed & ~key_padding_mask[:, None, None, :]
            mask = allowed
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))


# A self-attention strategy maps (attention module, q, k, v, layout) -> output. All tensors are
# [B, L, C] in the order of ``groupdetr.groups.QueryLayout`` (denoising queries first, then G*N
# matching queries, group-contiguous); ``layout`` may be a plain number of groups (no denoising).
AttentionFn = Callable[[ProjectedAttention, torch.Tensor, torch.Tensor, torch.Tensor, "QueryLayout | int"], torch.Tensor]


def _split(x: torch.Tensor, layout: QueryLayout) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, : layout.num_dn], x[:, layout.num_dn :]


def _copy_blocks(layout: QueryLayout, num_keys_after: int, device) -> torch.Tensor:
    """``[D, D + num_keys_after]`` mask of one denoising set's queries: True (blocked) between
    different copies; the ``num_keys_after`` matching keys appended after the set stay visible."""
    copy = torch.arange(layout.dn_set_size, device=device) // layout.dn_pad
    dn = copy[:, None] != copy[None, :]
    return torch.cat([dn, dn.new_zeros(layout.dn_set_size, num_keys_after)], dim=1)


def _denoising_attention(attn, q, k, v, layout: QueryLayout, per_group: bool) -> torch.Tensor:
    """Outputs of the denoising queries ``[B, num_dn, C]``. Keys: their own copy (padding excluded)
    and the matching queries -- of their own group when ``per_group`` (sets folded into the batch
    axis beside their group, as PaddleDetection's Group-DINO), else of every group."""
    qd, _ = _split(q, layout)
    kd, km = _split(k, layout)
    vd, vm = _split(v, layout)
    pad = ~layout.dn_valid  # [B, S*D]
    if per_group:
        g = layout.num_groups
        keys = torch.cat([fold_groups(kd, g), fold_groups(km, g)], dim=1)
        values = torch.cat([fold_groups(vd, g), fold_groups(vm, g)], dim=1)
        kpm = torch.cat([pad.reshape(-1, layout.dn_set_size), pad.new_zeros(pad.shape[0] * g, layout.num_queries)], 1)
        mask = _copy_blocks(layout, layout.num_queries, q.device)
        return unfold_groups(attn(fold_groups(qd, g), keys, values, attn_mask=mask, key_padding_mask=kpm), g)
    s = layout.dn_sets
    one = _copy_blocks(layout, 0, q.device)
    dn = torch.block_diag(*[~one] * s) if s > 1 else ~one  # True = allowed within the same set and copy
    mask = torch.cat([~dn, dn.new_zeros(layout.num_dn, layout.num_matching)], dim=1)
    kpm = torch.cat([pad, pad.new_zeros(pad.shape[0], layout.num_matching)], dim=1)
    return attn(qd, k, v, attn_mask=mask, key_padding_mask=kpm)


def separate_self_attention(attn, q, k, v, layout) -> torch.Tensor:
    """Group DETR's parallel self-attention (paper Algorithm 1): groups folded into the batch
    axis, so each group attends only to itself at cost G*N^2 instead of (G*N)^2. Matching queries
    are computed from matching queries alone (they never see denoising queries), denoising
    queries by one more attention call (:func:`_denoising_attention`)."""
    layout = as_layout(layout, q.shape[1])
    g = layout.num_groups
    qm, km, vm = (_split(x, layout)[1] for x in (q, k, v))
    out = unfold_groups(attn(fold_groups(qm, g), fold_groups(km, g), fold_groups(vm, g)), g)
    if not layout.num_dn:
        return out
    per_group = layout.dn_sets == g and g > 1
    return torch.cat([_denoising_attention(attn, q, k, v, layout, per_group), out], dim=1)


def masked_self_attention(attn, q, k, v, layout) -> torch.Tensor:
    """Separate self-attention via the reference mask over all queries
    (:func:`groupdetr.groups.self_attention_mask`). Same result as :func:`separate_self_attention`
    at (L)^2 cost; the tests' reference for the fold path, not a user choice (not in :data:`SELF_ATTENTION`)."""
    layout = as_layout(layout, q.shape[1])
    return attn(q, k, v, attn_mask=self_attention_mask(layout, device=q.device), key_padding_mask=dn_key_padding(layout))


def shared_self_attention(attn, q, k, v, layout) -> torch.Tensor:
    """All G*N matching queries attend to each other (paper Table 7 rows b, c); denoising queries
    see their own copy and every matching query."""
    layout = as_layout(layout, q.shape[1])
    qm, km, vm = (_split(x, layout)[1] for x in (q, k, v))
    out = attn(qm, km, vm)
    if not layout.num_dn:
        return out
    return torch.cat([_denoising_attention(attn, q, k, v, layout, per_group=False), out], dim=1)


SELF_ATTENTION: dict[str, AttentionFn] = {
    "separate": separate_self_attention,
    "shared": shared_self_attention,
}
