"""Pure functions for the group mechanics of Group DETR (paper Sec. 3.2, Algorithm 1).

Layout convention used everywhere in this package: decoder queries are batch-first,
``[B, G*N, C]``, with the ``G`` active groups stored contiguously *inside each image*
(group ``g`` occupies query slots ``g*N ... (g+1)*N - 1``). Folding groups into the batch axis is
then a pure ``view`` that can never mix images -- the bug that made detrex's group attention
attend across groups and across images (detrex #163, #238).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["fold_groups", "unfold_groups", "group_slice", "select_group", "QueryLayout", "as_layout",
           "self_attention_mask", "dn_key_padding"]


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


def group_slice(group: int, num_queries: int) -> slice:
    """Query slots of group ``group`` in the ``[B, G*N, ...]`` layout."""
    return slice(group * num_queries, (group + 1) * num_queries)


def select_group(outputs: dict, index: int) -> dict:
    """The detector's final outputs of one active group, as if it had run alone.

    Args:
        outputs: DETR-convention dict of ``G = outputs["num_groups"]`` active groups: every per-query
            prediction is a ``pred_*`` tensor ``[B, G*N, ...]``; other keys (``pixel_embeds``,
            ``image_size`` ...) are per image.
        index: position of the group among the active ones (0 ... G-1).
    Returns:
        The same keys with every ``pred_*`` tensor ``[B, N, ...]`` (slots ``index*N ... (index+1)*N - 1``)
        and ``num_groups`` 1; ``aux_outputs`` and the denoising keys are left out (evaluation reads
        neither).
    """
    g = outputs["num_groups"]
    if not 0 <= index < g:
        raise ValueError(f"group index {index} is not among the {g} active groups")
    n = outputs["pred_logits"].shape[1] // g
    out = {k: (v[:, group_slice(index, n)] if k.startswith("pred_") else v) for k, v in outputs.items()
           if k not in ("aux_outputs", "dn_outputs", "dn_queries")}
    out["num_groups"] = 1
    return out



# ---------------------------------------------------------------------------------------------
# Query layout with denoising queries (DN-DETR on top of groups)


@dataclass(frozen=True, eq=False)
class QueryLayout:
    """Which decoder queries exist in one forward and who may attend to whom.

    The decoder's query axis holds ``num_dn`` denoising queries first (DN-DETR's order), then the
    ``G*N`` matching queries group-contiguous::

        [ DN set 0 | DN set 1 | ... | DN set S-1 | group 0 | group 1 | ... | group G-1 ]
        each DN set = ``dn_copies`` noised copies of the ground truth, each copy ``dn_pad`` slots
        (the largest number of objects of an image in the batch; slots beyond an image's own
        objects are padding, ``dn_valid`` False).

    Visibility in self-attention (True = may attend), the rules :func:`self_attention_mask` encodes:

    - a matching query sees the matching queries of its own group (separate self-attention) or of
      every group (shared), and **never a denoising query** -- so the matching outputs are those of
      the same model without denoising, and no ground truth leaks into them;
    - a denoising query sees the other slots of its own copy of its own set (never another copy,
      never another set: DN-DETR's "denoising groups never see each other") and the matching
      queries: with ``dn_sets == G`` ("per_group", one set per group, the choice of the only public
      implementation, PaddleDetection's Group-DINO) only those of its own group unless self-attention
      is shared; with one set shared by all groups, those of every group;
    - padding slots are never seen (key padding), so a denoising query's output does not depend on
      how many objects the other images of the batch have. (DN-DETR lets a copy see its own padding
      slots; blocking them is our deviation.)

    Attributes:
        num_groups: G, active matching groups; num_queries: N per group.
        dn_sets: S = 0 (no denoising), 1 (shared) or G (per group).
        dn_copies, dn_pad: copies per set and slots per copy.
        dn_valid: [B, S*dn_copies*dn_pad] bool, True on real (non-padding) denoising slots.
    """

    num_groups: int
    num_queries: int
    dn_sets: int = 0
    dn_copies: int = 0
    dn_pad: int = 0
    dn_valid: torch.Tensor | None = None

    def __post_init__(self):
        if self.dn_sets not in (0, 1, self.num_groups):
            raise ValueError(f"dn_sets must be 0, 1 or num_groups={self.num_groups}, got {self.dn_sets}")
        if self.num_dn and (self.dn_valid is None or self.dn_valid.shape[-1] != self.num_dn):
            raise ValueError(f"dn_valid must be [B, {self.num_dn}]")

    @property
    def dn_set_size(self) -> int:
        return self.dn_copies * self.dn_pad

    @property
    def num_dn(self) -> int:
        return self.dn_sets * self.dn_set_size

    @property
    def num_matching(self) -> int:
        return self.num_groups * self.num_queries

    @property
    def total(self) -> int:
        return self.num_dn + self.num_matching


def as_layout(layout: "QueryLayout | int", length: int) -> QueryLayout:
    """Accept a plain number of groups (no denoising) where a :class:`QueryLayout` is expected."""
    if isinstance(layout, QueryLayout):
        if layout.total != length:
            raise ValueError(f"layout describes {layout.total} queries, the tensor has {length}")
        return layout
    if length % layout:
        raise ValueError(f"{length} queries cannot be split into {layout} equal groups")
    return QueryLayout(num_groups=layout, num_queries=length // layout)


def self_attention_mask(layout: QueryLayout, shared_groups: bool = False, device=None) -> torch.Tensor:
    """Reference mask ``[L, L]`` (L = ``layout.total``), True where attention is **blocked**, built
    entry by entry from the rules of :class:`QueryLayout` (padding is handled by
    :func:`dn_key_padding`). The fast strategies in ``groupdetr.model.attention`` are tested against it.
    """
    nd, g, n = layout.num_dn, layout.num_groups, layout.num_queries
    idx = torch.arange(layout.total, device=device)
    is_dn = idx < nd
    m = (idx - nd).clamp(min=0)
    group = torch.where(is_dn, -1, m // n)
    dn_set = torch.where(is_dn, idx // max(layout.dn_set_size, 1), -1)
    dn_copy = torch.where(is_dn, idx // max(layout.dn_pad, 1), -1)  # global copy index
    qi, kj = (slice(None), None), (None, slice(None))
    match_q, match_k = ~is_dn[qi], ~is_dn[kj]
    same_group = (group[qi] == group[kj]) | shared_groups
    # the group a denoising set belongs to (per-group sets); a shared set belongs to all
    set_group = dn_set if layout.dn_sets == g and layout.dn_sets > 1 else torch.full_like(dn_set, -1)
    dn_sees_match = (set_group[qi] == -1) | (set_group[qi] == group[kj]) | shared_groups
    allowed = (match_q & match_k & same_group) | (is_dn[qi] & is_dn[kj] & (dn_copy[qi] == dn_copy[kj]))
    allowed |= is_dn[qi] & match_k & dn_sees_match
    return ~allowed


def dn_key_padding(layout: QueryLayout) -> torch.Tensor | None:
    """``[B, L]`` bool, True on padding denoising slots (never attended), or None without denoising."""
    if not layout.num_dn:
        return None
    valid = layout.dn_valid
    return torch.cat([~valid, valid.new_zeros(valid.shape[0], layout.num_matching)], dim=1)
