"""Losses, normalisation by #GT x K, and weighting."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchvision.ops import box_convert, generalized_box_iou

from conftest import random_targets
from groupdetr.criterion import SetCriterion, loss_weight, normaliser, weight_losses
from groupdetr.matcher import HungarianMatcher, MatchCosts


def outputs_for(k=2, n=4, c=3, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pred_logits": torch.randn(b, k * n, c, generator=g),
            "pred_boxes": torch.rand(b, k * n, 4, generator=g) * 0.4 + 0.3, "num_groups": k}


def reference_losses(outputs, targets, indices, num_boxes, alpha=0.25, gamma=2.0):
    """Explicit per-element focal, L1 and GIoU sums (DETR's definitions)."""
    logits = outputs["pred_logits"]
    prob = logits.sigmoid()
    target = torch.zeros_like(logits)
    l1 = giou = torch.tensor(0.0)
    for b, (q, j) in enumerate(indices):
        for qi, ji in zip(q.tolist(), j.tolist()):
            target[b, qi, targets[b]["labels"][ji]] = 1
            src, tgt = outputs["pred_boxes"][b, qi], targets[b]["boxes"][ji]
            l1 = l1 + (src - tgt).abs().sum()
            giou = giou + 1 - generalized_box_iou(box_convert(src[None], "cxcywh", "xyxy"), box_convert(tgt[None], "cxcywh", "xyxy"))[0, 0]
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    focal = (a_t * ce * (1 - p_t) ** gamma).sum()
    return {"loss_ce": focal / num_boxes, "loss_bbox": l1 / num_boxes, "loss_giou": giou / num_boxes}


@pytest.mark.parametrize("assignment", ["group", "naive_one_to_many"])
def test_losses_equal_explicit_reference(assignment):
    out = outputs_for()
    targets = random_targets(2, 3, sizes=[2, 1])
    crit = SetCriterion(HungarianMatcher(MatchCosts(), assignment), 3)
    losses = crit(out, targets)
    ref = reference_losses(out, targets, crit.matcher(out, targets), num_boxes=3 * 2)
    for k in ref:
        torch.testing.assert_close(losses[k], ref[k], rtol=1e-5, atol=1e-6)


def test_normaliser_is_gt_times_groups_and_clamped():
    t = random_targets(3, 3, sizes=[2, 0, 3])
    assert normaliser(t, 11, torch.device("cpu")).item() == 55
    assert normaliser(random_targets(1, 3, sizes=[0]), 11, torch.device("cpu")).item() == 1


def test_no_objects_gives_finite_loss_with_zero_box_terms():
    out = outputs_for()
    crit = SetCriterion(HungarianMatcher(MatchCosts(), "group"), 3)
    losses = crit(out, random_targets(2, 3, sizes=[0, 0]))
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    assert torch.isfinite(losses["loss_ce"]) and losses["loss_ce"] > 0


def test_aux_layers_get_their_own_keys_and_weights_apply():
    out = outputs_for()
    out["aux_outputs"] = [outputs_for(seed=1), outputs_for(seed=2)]
    crit = SetCriterion(HungarianMatcher(MatchCosts(), "group"), 3)
    losses = crit(out, random_targets(2, 3))
    assert set(losses) == {f"{n}{s}" for n in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0", "_1")}
    w = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    expected = sum(w[k.rsplit("_", 1)[0] if k not in w else k] * v for k, v in losses.items())
    torch.testing.assert_close(weight_losses(losses, w), expected)
    with pytest.raises(KeyError):
        weight_losses({"loss_mask": torch.tensor(1.0)}, w)
    # the per-name weights (TensorBoard's weighted terms) are those of the sum
    assert [loss_weight(k, w) for k in ("loss_ce_1", "loss_bbox", "loss_giou_dn", "loss_ce_dn_0", "loss_bbox_enc")] == [2.0, 5.0, 2.0, 2.0, 5.0]


def _ddp_worker(rank, world, init_file, sizes, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        n = normaliser(random_targets(1, 3, sizes=[sizes[rank]]), 11, torch.device("cpu"))
        (out_dir / f"rank{rank}").write_text(str(n.item()))
    finally:
        dist.destroy_process_group()


def test_normaliser_is_reduced_across_processes(tmp_path):
    """Two gloo ranks with 1 and 3 objects: each divides by the global mean (1+3)*11/2 = 22."""
    mp.spawn(_ddp_worker, args=(2, tmp_path / "init", [1, 3], tmp_path), nprocs=2, join=True)
    assert [float((tmp_path / f"rank{r}").read_text()) for r in (0, 1)] == [22.0, 22.0]
