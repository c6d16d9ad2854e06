"""Group matching == K independent Hungarian calls with offsets; naive one-to-many == one joint
Hungarian against K copies of the ground truth (paper Sec. 3.2, Table 7)."""
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from conftest import random_targets
from groupdetr.matcher import (
    ASSIGNMENTS,
    HungarianMatcher,
    MatchCosts,
    cost_matrices,
    match_joint_repeated,
    match_per_group,
)


def reference_group_match(cost, k):
    """K independent scipy calls, row offsets g*N added by hand."""
    n = cost.shape[0] // k
    pairs = []
    for g in range(k):
        r, c = linear_sum_assignment(cost[g * n : (g + 1) * n])
        pairs += [(int(i) + g * n, int(j)) for i, j in zip(r, c)]
    return sorted(pairs)


def no_offset_match(cost, k):
    """Negative control: per-group Hungarian that forgets the g*N row offset."""
    n = cost.shape[0] // k
    rows, cols = zip(*[linear_sum_assignment(cost[g * n : (g + 1) * n]) for g in range(k)])
    return np.concatenate(rows), np.concatenate(cols)


def as_pairs(indices):
    return sorted(zip(map(int, indices[0]), map(int, indices[1])))


def random_cost(k, n, m, seed=0):
    return np.random.default_rng(seed).normal(size=(k * n, m)).astype(np.float32)


@pytest.mark.parametrize("k,n,m", [(1, 10, 4), (3, 10, 4), (11, 6, 6), (4, 3, 5)])
def test_group_match_equals_independent_hungarian_with_offsets(k, n, m):
    cost = random_cost(k, n, m)
    assert as_pairs(match_per_group(cost, k)) == reference_group_match(cost, k)
    assert as_pairs(no_offset_match(cost, k)) != reference_group_match(cost, k) or k == 1


@pytest.mark.parametrize("k,n,m", [(3, 10, 4), (11, 6, 6)])
def test_every_gt_matched_exactly_k_times_once_per_group(k, n, m):
    rows, cols = match_per_group(random_cost(k, n, m, seed=1), k)
    assert Counter(cols.tolist()) == {j: k for j in range(m)}
    assert len(set(rows.tolist())) == len(rows)  # a query is matched at most once
    for g in range(k):
        in_g = cols[(rows >= g * n) & (rows < (g + 1) * n)]
        assert sorted(in_g.tolist()) == list(range(m))


@pytest.mark.parametrize("k,n,m", [(3, 10, 4), (11, 6, 5)])
def test_naive_one_to_many_is_one_joint_assignment(k, n, m):
    cost = random_cost(k, n, m, seed=2)
    rows, cols = match_joint_repeated(cost, k)
    assert Counter(cols.tolist()) == {j: k for j in range(m)}
    assert len(set(rows.tolist())) == len(rows)
    r, c = linear_sum_assignment(np.tile(cost, (1, k)))
    assert as_pairs((rows, cols)) == as_pairs((r, c % m))
    # Group assignment is feasible for the joint problem, so the joint optimum is no worse ...
    joint = cost[rows, cols].sum()
    gr, gc = match_per_group(cost, k)
    assert joint <= cost[gr, gc].sum() + 1e-4
    # ... and it ignores group boundaries: some group gets more than M matches here.
    per_group = Counter((rows // n).tolist())
    assert max(per_group.values()) > m or len(per_group) < k


def test_empty_targets_give_empty_matches():
    for assignment in ASSIGNMENTS.values():
        r, c = assignment.match(np.zeros((12, 0), np.float32), 3)
        assert r.shape == c.shape == (0,)


def test_matcher_on_detector_outputs_with_an_image_without_objects():
    k, n, c = 3, 5, 4
    g = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, k * n, c, generator=g),
               "pred_boxes": torch.rand(2, k * n, 4, generator=g) * 0.5 + 0.25, "num_groups": k}
    targets = random_targets(2, c, sizes=[3, 0])
    matcher = HungarianMatcher(MatchCosts(), "group")
    (r0, c0), (r1, c1) = matcher(outputs, targets)
    assert len(r0) == k * 3 and len(r1) == 0
    costs = cost_matrices(outputs, targets, MatchCosts())
    assert costs[0].shape == (k * n, 3) and costs[1].shape == (k * n, 0)
    assert as_pairs((r0.numpy(), c0.numpy())) == reference_group_match(costs[0], k)
    # no objects at all in the batch
    empty = matcher(outputs, random_targets(2, c, sizes=[0, 0]))
    assert all(len(r) == 0 for r, _ in empty)


def test_cost_matrix_matches_a_direct_computation():
    """C = 2 * focal class cost + 5 * L1 - 2 * GIoU, checked against a per-pair loop."""
    from torchvision.ops import box_convert, generalized_box_iou

    g = torch.Generator().manual_seed(1)
    outputs = {"pred_logits": torch.randn(1, 4, 3, generator=g), "pred_boxes": torch.rand(1, 4, 4, generator=g) * 0.4 + 0.3}
    targets = random_targets(1, 3, sizes=[2])
    cost = cost_matrices(outputs, targets, MatchCosts())[0]
    for i in range(4):
        for j in range(2):
            p = outputs["pred_logits"][0, i, targets[0]["labels"][j]].sigmoid()
            focal = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p**2 * -torch.log(1 - p + 1e-8)
            b, t = outputs["pred_boxes"][0, i], targets[0]["boxes"][j]
            giou = generalized_box_iou(box_convert(b[None], "cxcywh", "xyxy"), box_convert(t[None], "cxcywh", "xyxy"))[0, 0]
            expected = 2 * focal + 5 * (b - t).abs().sum() - 2 * giou
            assert abs(cost[i, j] - float(expected)) < 1e-5
