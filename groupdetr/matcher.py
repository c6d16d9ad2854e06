"""Hungarian matching for Group DETR: one cost matrix, several assignment strategies.

The cost (Conditional DETR / Deformable DETR) between query i and ground-truth box j is
    C_ij = w_class * focal_cost(p_i[c_j]) + w_bbox * |b_i - b_j|_1 - w_giou * GIoU(b_i, b_j),
computed once for all G*N queries of an image. An *assignment* turns that ``[G*N, M]`` matrix into
(query, target) pairs:

- ``group`` (Group DETR, paper Sec. 3.2): one Hungarian per group on its ``[N, M]`` block, row
  indices offset by g*N, so every ground truth is matched once in each group (K times in all).
- ``one_to_one``: plain DETR matching (only valid with one group).
- ``naive_one_to_many`` (paper Table 7 row b): one joint Hungarian of all G*N queries against the
  ground-truth set repeated G times, so every ground truth gets G queries chosen jointly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from groupdetr.box_ops import cxcywh_to_xyxy, generalized_box_iou
from groupdetr.config import MatcherConfig

__all__ = [
    "MatchCosts",
    "cost_matrices",
    "match_per_group",
    "match_joint_repeated",
    "Assignment",
    "ASSIGNMENTS",
    "HungarianMatcher",
]

Indices = tuple[np.ndarray, np.ndarray]


#: Weights of the matching cost and the focal parameters of its class term: the ``matcher`` section of the
#: config itself (``cost_class``, ``cost_bbox``, ``cost_giou``, ``focal_alpha``, ``focal_gamma``; its other
#: fields are not read here), so the two can never disagree.
MatchCosts = MatcherConfig


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal-style classification cost: [Q, C] logits, [M] labels -> [Q, M]."""
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos[:, labels] - neg[:, labels]


@torch.no_grad()
def cost_matrices(outputs: dict, targets: list[dict], costs: MatchCosts) -> list[np.ndarray]:
    """Matching cost of every query against every ground truth, per image.

    Args:
        outputs: ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4] (normalised cxcywh).
        targets: per image ``labels`` [M_b] and ``boxes`` [M_b, 4] (normalised cxcywh).
    Returns:
        B float arrays of shape [Q, M_b].
    """
    b, q = outputs["pred_logits"].shape[:2]
    sizes = [len(t["boxes"]) for t in targets]
    if sum(sizes) == 0:
        return [np.zeros((q, 0), dtype=np.float32) for _ in range(b)]
    logits = outputs["pred_logits"].flatten(0, 1).float()
    boxes = outputs["pred_boxes"].flatten(0, 1).float()
    labels = torch.cat([t["labels"] for t in targets])
    tboxes = torch.cat([t["boxes"] for t in targets]).float()
    c = (
        costs.cost_class * focal_class_cost(logits, labels, costs.focal_alpha, costs.focal_gamma)
        + costs.cost_bbox * torch.cdist(boxes, tboxes, p=1)
        - costs.cost_giou * generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tboxes))
    )
    c = c.view(b, q, -1).cpu().numpy()
    return [block[i] for i, block in enumerate(np.split(c, np.cumsum(sizes)[:-1], axis=-1))]


def _empty() -> Indices:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)


def match_per_group(cost: np.ndarray, num_groups: int) -> Indices:
    """Group-wise one-to-one assignment (paper Sec. 3.2).

    Args:
        cost: [G*N, M] cost of one image, queries group-contiguous.
    Returns:
        (query indices, target indices), each of length G*min(N, M), sorted by query.
    """
    if cost.shape[1] == 0:
        return _empty()
    n = cost.shape[0] // num_groups
    rows, cols = [], []
    for g in range(num_groups):
        r, c = linear_sum_assignment(cost[g * n : (g + 1) * n])
        rows.append(r + g * n)
        cols.append(c)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def match_joint_repeated(cost: np.ndarray, num_groups: int) -> Indices:
    """Naive one-to-many (paper Table 7 row b): one Hungarian of all G*N queries against the
    ground truth repeated G times; target indices are mapped back to the original M.

    Returns:
        (query indices, target indices) of length min(G*N, G*M), sorted by query.
    """
    m = cost.shape[1]
    if m == 0:
        return _empty()
    r, c = linear_sum_assignment(np.tile(cost, (1, num_groups)))
    return r.astype(np.int64), (c % m).astype(np.int64)


@dataclass(frozen=True)
class Assignment:
    """A matching strategy and the queries the detector keeps at inference with it."""

    match: Callable[[np.ndarray, int], Indices]
    inference_queries: str  # see groupdetr.model.INFERENCE_QUERIES
    requires_single_group: bool = False


ASSIGNMENTS: dict[str, Assignment] = {
    "one_to_one": Assignment(match_per_group, "one_group", requires_single_group=True),
    "group": Assignment(match_per_group, "one_group"),
    "naive_one_to_many": Assignment(match_joint_repeated, "all_groups"),
}


class HungarianMatcher:
    """Callable ``(outputs, targets) -> [(query_idx, target_idx)] * B`` (LongTensors, on the
    outputs' device). The number of groups is read from ``outputs["num_groups"]`` (the groups
    active in that forward), so the same matcher serves training (K) and evaluation (1).

    ``extra_costs``: task cost terms ``(outputs, image index, target) -> [Q, M]`` (already
    weighted; e.g. the mask costs of ``groupdetr.heads.mask``) added to the class and box cost of
    each image before the assignment, so every group's Hungarian sees them.
    """

    def __init__(self, costs: MatchCosts, assignment: str, extra_costs=()):
        self.costs = costs
        self.assignment = assignment
        self._match = ASSIGNMENTS[assignment].match
        self.extra_costs = tuple(extra_costs)

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = outputs.get("num_groups", 1)
        device = outputs["pred_logits"].device
        result = []
        for i, cost in enumerate(cost_matrices(outputs, targets, self.costs)):
            for term in self.extra_costs:
                if cost.shape[1]:
                    cost = cost + term(outputs, i, targets[i]).float().cpu().numpy()
            r, c = self._match(cost, g)
            result.append((torch.as_tensor(r, device=device), torch.as_tensor(c, device=device)))
        return result
