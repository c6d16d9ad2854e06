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

from groupdetr.groups import block_diagonal_mask, fold_groups, unfold_groups

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


# A self-attention strategy maps (attention module, q, k, v, number of active groups) -> output.
# All tensors are [B, G*N, C] in the layout of ``groupdetr.groups``.
AttentionFn = Callable[[ProjectedAttention, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def separate_self_attention(attn, q, k, v, num_groups: int) -> torch.Tensor:
    """Group DETR's parallel self-attention (paper Algorithm 1): groups folded into the batch
    axis, so each group attends only to itself at cost G*N^2 instead of (G*N)^2."""
    out = attn(fold_groups(q, num_groups), fold_groups(k, num_groups), fold_groups(v, num_groups))
    return unfold_groups(out, num_groups)


def masked_self_attention(attn, q, k, v, num_groups: int) -> torch.Tensor:
    """Separate self-attention via a block-diagonal mask over all G*N queries. Same result as
    :func:`separate_self_attention` at (G*N)^2 cost; kept to cross-check the fold path."""
    n = q.shape[1] // num_groups
    return attn(q, k, v, attn_mask=block_diagonal_mask(num_groups, n, device=q.device))


def shared_self_attention(attn, q, k, v, num_groups: int) -> torch.Tensor:
    """All G*N queries attend to each other (paper Table 7 rows b, c)."""
    return attn(q, k, v)


SELF_ATTENTION: dict[str, AttentionFn] = {
    "separate": separate_self_attention,
    "separate_masked": masked_self_attention,
    "shared": shared_self_attention,
}
