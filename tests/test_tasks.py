"""Every task on the shared core: the group mechanics apply unchanged to the heads (issue 6).

For each task (2D, masks, 3D) and decoder: K=1 is the plain model, a group's evaluation output equals
its slice of the training output (heads included), K identical groups give the K=1 loss (the head
losses are group means too), and one training step plus postprocessing runs on the embedded
benchmark's kind of targets.
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_model
from groupdetr.build import loss_weights
from groupdetr.criterion import weight_losses
from groupdetr.groups import group_slice
from groupdetr.tasks import TASKS

HEAD_KEYS = {
    "detection": (),
    "instance_segmentation": ("pred_mask_embeds",),
    "detection_3d": ("pred_center_2d", "pred_depth", "pred_dims", "pred_yaw"),
}
CASES = [(task, dec) for task in TASKS for dec in ("conditional", "dab", "dab_deformable")]


def task_targets(h: int, w: int, sizes=(3, 1), seed: int = 0) -> list[dict]:
    """Targets with everything any task reads: boxes, masks (the box region), 3D keys."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, m in enumerate(sizes):
        wh = 0.2 + 0.3 * torch.rand(m, 2, generator=g)
        c = wh / 2 + (1 - wh) * torch.rand(m, 2, generator=g)
        boxes = torch.cat([c, wh], 1)
        masks = torch.zeros(m, h, w, dtype=torch.bool)
        for j, (cx, cy, bw, bh) in enumerate(boxes.tolist()):
            masks[j, int((cy - bh / 2) * h):int((cy + bh / 2) * h), int((cx - bw / 2) * w):int((cx + bw / 2) * w)] = True
        k = torch.tensor([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]])
        depth = 4 + 4 * torch.rand(m, generator=g)
        centre = torch.stack([(c[:, 0] * w - w / 2) * depth / 50, (c[:, 1] * h - h / 2) * depth / 50, depth], 1)
        out.append({
            "labels": torch.randint(1, 5, (m,), generator=g), "boxes": boxes, "masks": masks,
            "image_id": torch.tensor(i), "orig_size": torch.tensor([h, w]), "size": torch.tensor([h, w]),
            "center_3d": centre, "dims_3d": 0.3 + torch.rand(m, 3, generator=g), "yaw_3d": torch.rand(m, generator=g) * 3,
            "yaw_period": torch.tensor([math.pi, float("nan"), math.pi])[:m].repeat(3)[:m],
            "intrinsics": k, "camera_pitch": torch.tensor(0.5),
        })
    return out


def build(task: str, decoder: str, k: int, seed: int = 0):
    return tiny_model(seed=seed, model__num_groups=k, model__task=task, model__decoder=decoder,
                      model__mask_head__mask_dim=16)


@pytest.mark.parametrize("task,decoder", CASES)
def test_eval_output_is_a_groups_training_slice_heads_included(task, decoder, images, pad_mask):
    targets = task_targets(*images.shape[-2:])
    _, model, _, _ = build(task, decoder, 3)
    with torch.no_grad():
        train_out = model.train()(images, pad_mask, targets)
        model.eval_group = 2
        ev = model.eval()(images, pad_mask, targets)
    s = group_slice(2, model.num_queries)
    for key in ("pred_logits", "pred_boxes", *HEAD_KEYS[task]):
        torch.testing.assert_close(ev[key], train_out[key][:, s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task,decoder", CASES)
def test_k_identical_groups_give_the_k1_loss_for_every_head(task, decoder, images, pad_mask):
    targets = task_targets(*images.shape[-2:], sizes=(3, 0))
    _, one, crit1, _ = build(task, decoder, 1, seed=3)
    _, many, crit3, _ = build(task, decoder, 3, seed=3)
    with torch.no_grad():
        for (name, a), b in zip(one.state_dict().items(), many.state_dict().values()):
            b.copy_(a.repeat(3, 1) if name == "query_embed.weight" else a)
    # mask losses sample random points: same generator state for both
    torch.manual_seed(0)
    l1 = crit1(one.train()(images, pad_mask, targets), targets)
    torch.manual_seed(0)
    l3 = crit3(many.train()(images, pad_mask, targets), targets)
    assert l1.keys() == l3.keys()
    head_losses = {"instance_segmentation": "loss_dice", "detection_3d": "loss_depth"}.get(task)
    assert head_losses is None or head_losses in l1
    for name in l1:
        torch.testing.assert_close(l3[name], l1[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("task", list(TASKS))
def test_training_step_and_postprocess(task, images, pad_mask):
    cfg, model, crit, _ = build(task, "conditional", 2)
    from groupdetr.build import build_postprocess

    post = build_postprocess(cfg, [{"id": 1, "yaw_period": math.pi}, {"id": 2, "yaw_period": None},
                                   {"id": 3, "yaw_period": math.pi}, {"id": 4, "yaw_period": None}])
    targets = task_targets(*images.shape[-2:])
    losses = crit(model.train()(images, pad_mask, targets), targets)
    total = weight_losses(losses, loss_weights(cfg))
    total.backward()
    assert math.isfinite(total.item())
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("head.")]
    assert all(g is not None for g in grads) and (task == "detection") == (not grads)
    with torch.no_grad():
        res = post(model.eval()(images, pad_mask, targets), targets)
    r = res[0]
    assert set(r) >= {"scores", "labels", "boxes", "query"}
    if task == "instance_segmentation":
        assert r["masks"].shape == (len(r["scores"]), *images.shape[-2:]) and r["masks"].dtype == torch.bool
    if task == "detection_3d":
        assert r["center_3d"].shape == (len(r["scores"]), 3) and torch.isfinite(r["yaw_3d"]).all()


def test_3d_task_without_intrinsics_is_one_clear_error(images):
    _, model, _, _ = build("detection_3d", "conditional", 1)
    with pytest.raises(ValueError, match="intrinsics"):
        model(images)


def test_a_head_is_a_plugin_that_imports_no_model_code():
    """Each head module declares its whole task (head, costs, losses and their weights, postprocess,
    scorers) and reads the core only through HeadContext: the heads never import the detector."""
    import subprocess
    import sys

    code = ("import sys, groupdetr.heads.mask, groupdetr.heads.box3d; "
            "print(sorted(m for m in sys.modules if m.startswith('groupdetr.model')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True)
    assert out.stdout.strip() == "[]"
    from groupdetr.heads import box3d, mask

    assert TASKS["instance_segmentation"] is mask.TASK and TASKS["detection_3d"] is box3d.TASK
    cfg = tiny_model(seed=0, model__task="detection_3d")[0]
    from groupdetr.build import loss_weights

    assert set(loss_weights(cfg)) == {"loss_ce", "loss_bbox", "loss_giou", "loss_center", "loss_depth", "loss_dims",
                                      "loss_yaw"}
