"""Pure functions for the group mechanics of Group DETR (paper Sec. 3.2, Algorithm 1).

Layout convention used everywhere in this package: decoder queries are batch-first,
``[B, G*N, C]``, with the ``G`` active groups stored contiguously *inside each image*
(group ``g`` occupies query slots ``g*N ... (g+1)*N - 1``). Folding groups into the batch axis is
then a pure ``view`` that can never mix images -- the bug that made detrex's group attention
attend across groups and across images (detrex #163, #238).
"""
from __future__ import annotations

import torch

__all__ = ["fold_groups", "unfold_groups", "block_diagonal_mask", "group_slice"]


def fold_groups(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Move groups into the batch axis: ``[B, G*N, C] -> [B*G, N, C]``.

    Row ``b*G + g`` of the result is group ``g`` of image ``b``.
    """
    b, q, c = x.shape
    if q % num_groups:
        raise ValueError(f"{q} queries cannot be split into {num_groups} equal groups")
    return x.reshape(b * num_groups, q // num_groups, c)


def unfold_groups(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Inverse of :func:`fold_groups`: ``[B*G, N, C] -> [B, G*N, C]``."""
    bg, n, c = x.shape
    if bg % num_groups:
        raise ValueError(f"batch axis {bg} is not a multiple of {num_groups} groups")
    return x.reshape(bg // num_groups, num_groups * n, c)


def block_diagonal_mask(num_groups: int, num_queries: int, device=None) -> torch.Tensor:
    """Boolean attention mask ``[G*N, G*N]``, True where attention is *blocked*.

    Query ``i`` may attend to key ``j`` only when both are in the same group. Used by the masked
    implementation of separate self-attention, which costs (G*N)^2 and exists to cross-check the
    fold implementation (cost G*N^2).
    """
    gid = torch.arange(num_groups, device=device).repeat_interleave(num_queries)
    return gid[:, None] != gid[None, :]


def group_slice(group: int, num_queries: int) -> slice:
    """Query slots of group ``group`` in the ``[B, G*N, ...]`` layout."""
    return slice(group * num_queries, (group + 1) * num_queries)

