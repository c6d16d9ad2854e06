"""Which query of every group is matched to each ground-truth object, and how close those queries land.

The paper reads Group DETR as "data augmentation with automatically-learned object query augmentation"
(abstract, Sec. 3): with group-wise one-to-one assignment every object gets K positive queries, one per
group, and the K predictions of those queries land close together. These pure functions turn one image's
matching (``groupdetr.matcher.HungarianMatcher`` on a forward with all K groups active) into the K matched
boxes of each object, and summarise how much the boxes of one object agree compared with the boxes of
different objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from groupdetr.box_ops import box_iou

__all__ = ["boxes_per_object", "GroupAgreement", "group_agreement"]


def boxes_per_object(pred_boxes: torch.Tensor, query_idx: torch.Tensor, target_idx: torch.Tensor, num_targets: int,
                     num_groups: int) -> torch.Tensor:
    """The box each group's matched query predicts for each ground-truth object of one image.

    Args:
        pred_boxes: [G*N, 4] boxes of the image's queries, group-contiguous (``groupdetr.groups``); any format.
        query_idx, target_idx: [P] the matching of that image (query ``query_idx[p]`` to object
            ``target_idx[p]``), as the matcher returns it.
        num_targets: M, the image's ground-truth objects.
        num_groups: G, the groups active in the forward.
    Returns:
        [M, G, 4]: row ``m``, column ``g`` is the box of group g's query matched to object m; NaN where group
        g matched no query to m (a group with fewer queries than objects).
    Raises:
        ValueError: a group matched two queries to one object (not a group-wise one-to-one matching, e.g.
            naive one-to-many, paper Table 7 row b).
    """
    q = pred_boxes.shape[0]
    if q % num_groups:
        raise ValueError(f"{q} queries cannot be split into {num_groups} equal groups")
    n = q // num_groups
    groups = query_idx.long() // n
    targets = target_idx.long()
    pairs = targets * num_groups + groups
    if pairs.numel() != pairs.unique().numel():
        raise ValueError("a group has more than one query matched to the same object: the matching is not "
                         "one-to-one within each group")
    out = pred_boxes.new_full((num_targets, num_groups, pred_boxes.shape[-1]), math.nan)
    out[targets, groups] = pred_boxes[query_idx.long()]
    return out


@dataclass(frozen=True)
class GroupAgreement:
    """Sums and counts of box IoUs, poolable over images with ``+``.

    ``within``: pairs of boxes matched to the *same* object by two different groups; ``between``: pairs of
    matched boxes of *different* objects of the same image (any groups); ``gt``: each matched box against its
    own ground truth. Their means are the properties of the same names (NaN without a pair: one group has no
    within-object pairs).
    """

    within_sum: float = 0.0
    within_pairs: int = 0
    between_sum: float = 0.0
    between_pairs: int = 0
    gt_sum: float = 0.0
    gt_boxes: int = 0

    def __add__(self, other: GroupAgreement) -> GroupAgreement:
        return GroupAgreement(*(a + b for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple:
        return (self.within_sum, self.within_pairs, self.between_sum, self.between_pairs, self.gt_sum, self.gt_boxes)

    @staticmethod
    def _mean(total: float, count: int) -> float:
        return total / count if count else math.nan

    @property
    def within(self) -> float:
        """Mean IoU between the boxes of one object's matched queries from two different groups."""
        return self._mean(self.within_sum, self.within_pairs)

    @property
    def between(self) -> float:
        """Mean IoU between matched boxes of two different objects of one image."""
        return self._mean(self.between_sum, self.between_pairs)

    @property
    def gt(self) -> float:
        """Mean IoU of a matched box with its own ground truth."""
        return self._mean(self.gt_sum, self.gt_boxes)

    def as_dict(self) -> dict:
        """The means (None without a pair) and the counts behind them, JSON-ready."""
        def mean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"within_object_iou": mean(self.within), "within_object_pairs": self.within_pairs,
                "between_objects_iou": mean(self.between), "between_objects_pairs": self.between_pairs,
                "matched_to_gt_iou": mean(self.gt), "matched_boxes": self.gt_boxes}


def group_agreement(matched: torch.Tensor, gt_boxes: torch.Tensor) -> GroupAgreement:
    """How much the K matched boxes of each object agree, against boxes of different objects.

    Args:
        matched: [M, G, 4] xyxy boxes of :func:`boxes_per_object` (NaN rows: unmatched, left out).
        gt_boxes: [M, 4] xyxy ground truth, in the same coordinates.
    Returns:
        The IoU sums and pair counts of one image (:class:`GroupAgreement`): every unordered pair of
        matched boxes is counted once, as ``within`` when both belong to the same object, else as ``between``.
    """
    m, g = matched.shape[:2]
    flat = matched.reshape(m * g, 4).double()
    owner = torch.arange(m).repeat_interleave(g)
    valid = ~flat.isnan().any(-1)
    flat, owner = flat[valid], owner[valid]
    if flat.shape[0] == 0:
        return GroupAgreement()
    iou = box_iou(flat, flat)
    upper = torch.ones_like(iou, dtype=torch.bool).triu(1)
    same = owner[:, None] == owner[None, :]
    within, between = iou[upper & same], iou[upper & ~same]
    gt = box_iou(flat, gt_boxes.double()[owner]).diagonal()
    return GroupAgreement(float(within.sum()), int(within.numel()), float(between.sum()), int(between.numel()),
                          float(gt.sum()), int(gt.numel()))
