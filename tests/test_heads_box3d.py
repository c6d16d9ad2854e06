"""3D detection head: frustum geometry, PETR position embedding, losses against hand computations,
yaw periods (NaN = rotation-symmetric), postprocess round trip, and the dataset's ``yaw_period``."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from groupdetr.config import Box3DHeadConfig, Config, ModelConfig, load_config
from groupdetr.data.coco import CocoDetection
from groupdetr.data.transforms import hflip, to_model_input
from groupdetr.evaluation.det3d import yaw_error
from groupdetr.geometry import project
from groupdetr.heads import HeadContext
from groupdetr.heads.box3d import (
    Box3DHead,
    box3d_loss_term,
    box3d_postprocess_term,
    build_box3d_head,
    frustum_points,
    lid_depths,
)
from groupdetr.model.backbone import SmallCNN
from groupdetr.synth.writer import generate

D_MODEL = 16
K_A = [[60.0, 0.0, 31.5], [0.0, 58.0, 22.0], [0.0, 0.0, 1.0]]
K_B = [[45.0, 0.0, 20.0], [0.0, 47.0, 26.5], [0.0, 0.0, 1.0]]


def make_head(bins=4, d=D_MODEL, stride=8):
    torch.manual_seed(0)
    return Box3DHead(d, stride, bins, depth_min=1.0, depth_max=20.0)


def context(intrinsics, hw=(3, 5), stride=8):
    b = len(intrinsics)
    h, w = hw
    images = torch.zeros(b, 3, h * stride, w * stride)
    pad = torch.zeros(b, h * stride, w * stride, dtype=torch.bool)
    return HeadContext(images, pad, features=[], memory_hw=hw,
                       targets=[{"intrinsics": torch.tensor(k)} for k in intrinsics])


# ---------------------------------------------------------------------------------------------
# geometry and position embedding


def test_lid_depths_follow_petr():
    d = lid_depths(1.0, 21.0, 4)  # bin (21 - 1) / (4 * 5) = 1: d_i = 1 + i (i + 1)
    torch.testing.assert_close(d, torch.tensor([1.0, 3.0, 7.0, 13.0]))
    widths = lid_depths(1.0, 20.0, 16).diff()
    torch.testing.assert_close(widths.diff(), torch.full((14,), float(widths[0])), rtol=1e-4, atol=1e-5)
    assert lid_depths(2.0, 9.0, 1).tolist() == [2.0]


def test_frustum_points_project_back_to_pixel_centres():
    k = torch.tensor([K_A, K_B])
    k[1, 0, 1] = 3.0  # a skewed camera too
    depths = lid_depths(1.0, 20.0, 5)
    pts = frustum_points(k, (3, 4), 16, depths)
    assert pts.shape == (2, 3, 4, 5, 3) and pts.dtype == torch.float32
    torch.testing.assert_close(pts[..., 2], depths.expand(2, 3, 4, 5))
    for b in range(2):
        uv = project(pts[b].double().numpy(), k[b].double().numpy())  # [3, 4, 5, 2]
        for i in range(3):
            for j in range(4):
                np.testing.assert_allclose(uv[i, j], np.tile([(j + 0.5) * 16, (i + 0.5) * 16], (5, 1)), atol=1e-3)


def test_position_embedding_shape_and_camera_awareness():
    head = make_head()
    pos = head.position(context([K_A, K_B]))
    assert pos.shape == (2, 15, D_MODEL)
    # another camera for image 1 only: only image 1's embedding changes
    k_b2 = [[90.0, 0.0, 20.0], [0.0, 90.0, 26.5], [0.0, 0.0, 1.0]]
    pos2 = head.position(context([K_A, k_b2]))
    torch.testing.assert_close(pos2[0], pos[0])
    assert (pos2[1] - pos[1]).abs().amax(-1).min() > 1e-4  # every cell sees the new camera
    # the same camera on a larger (padded) canvas: the cells of the image keep their embedding
    big = head.position(context([K_A, K_B], hw=(4, 7))).view(2, 4, 7, D_MODEL)
    torch.testing.assert_close(big[:, :3, :5], pos.view(2, 3, 5, D_MODEL))


def test_position_embedding_needs_intrinsics():
    ctx = context([K_A])
    ctx.targets = None
    with pytest.raises(ValueError, match="detection_3d needs camera intrinsics in the targets"):
        make_head().position(ctx)
    ctx.targets = [{"labels": torch.zeros(0)}]
    with pytest.raises(ValueError, match="detection_3d needs camera intrinsics in the targets"):
        make_head().position(ctx)


def test_build_from_config():
    cfg = ModelConfig(hidden_dim=D_MODEL, box3d_head=Box3DHeadConfig(depth_bins=6, depth_min=2.0, depth_max=30.0))
    backbone = SmallCNN((8, 16, 16))
    head = build_box3d_head(cfg, backbone)
    assert head.stride == backbone.stride == 8
    torch.testing.assert_close(head.depths, lid_depths(2.0, 30.0, 6))
    assert head.position(context([K_A], stride=8)).shape == (1, 15, D_MODEL)


def test_forward_shapes_and_initial_state():
    head = make_head()
    hs, boxes = torch.randn(3, 2, 7, D_MODEL), torch.rand(3, 2, 7, 4)
    out = head(context([K_A, K_B]), hs, boxes)
    assert len(out) == 3
    for layer, o in enumerate(out):
        assert set(o) == {"pred_center_2d", "pred_depth", "pred_dims", "pred_yaw"}
        assert o["pred_center_2d"].shape == (2, 7, 2) and o["pred_depth"].shape == (2, 7)
        assert o["pred_dims"].shape == (2, 7, 3) and o["pred_yaw"].shape == (2, 7, 2)
        assert (o["pred_depth"] > 0).all() and (o["pred_dims"] > 0).all()
        # the projected centre starts at the box centre
        torch.testing.assert_close(o["pred_center_2d"], boxes[layer, ..., :2])
    assert not torch.allclose(out[0]["pred_depth"], out[1]["pred_depth"])  # one MLP, per-layer inputs
    # log depth starts near the middle of the range (random weights around the bias)
    assert 0.5 * 10.5 < float(out[0]["pred_depth"].detach().median()) < 2.0 * 10.5


# ---------------------------------------------------------------------------------------------
# losses


def make_target(n=4, seed=0, periods=(math.pi, math.nan, 2 * math.pi, math.pi), k=K_A, size=(44, 63)):
    g = torch.Generator().manual_seed(seed)
    center = torch.stack([torch.rand(n, generator=g) * 4 - 2, torch.rand(n, generator=g) * 2 - 1,
                          torch.rand(n, generator=g) * 10 + 3], dim=-1)
    return {
        "labels": torch.arange(1, n + 1),
        "center_3d": center,
        "dims_3d": torch.rand(n, 3, generator=g) + 0.3,
        "yaw_3d": torch.rand(n, generator=g) * 2 * math.pi - math.pi,
        "yaw_period": torch.tensor(periods[:n], dtype=torch.float32),
        "intrinsics": torch.tensor(k),
        "size": torch.tensor(size),
    }


def encode_exactly(targets, num_queries, assignment):
    """Outputs whose matched queries encode the ground truth exactly; other queries random.
    ``assignment[b]`` = (query_idx, target_idx). Projection via ``groupdetr.geometry.project``."""
    b = len(targets)
    g = torch.Generator().manual_seed(1)
    out = {"pred_center_2d": torch.rand(b, num_queries, 2, generator=g),
           "pred_depth": torch.rand(b, num_queries, generator=g) * 10 + 1,
           "pred_dims": torch.rand(b, num_queries, 3, generator=g) + 0.5,
           "pred_yaw": torch.rand(b, num_queries, 2, generator=g) * 2 - 1}
    for i, (t, (q, j)) in enumerate(zip(targets, assignment)):
        uv = project(t["center_3d"][j].double().numpy(), t["intrinsics"].double().numpy())
        h, w = t["size"].tolist()
        out["pred_center_2d"][i, q] = torch.tensor(uv / [w, h], dtype=torch.float32)
        out["pred_depth"][i, q] = t["center_3d"][j, 2]
        out["pred_dims"][i, q] = t["dims_3d"][j]
        period = t["yaw_period"][j].double()
        angle = 2 * math.pi * t["yaw_3d"][j].double() / torch.where(period.isnan(), 1.0, period)
        out["pred_yaw"][i, q] = torch.stack([angle.sin(), angle.cos()], -1).float()
    return out


def indices_for(targets, num_queries, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randperm(num_queries, generator=g)[: len(t["labels"])],
             torch.randperm(len(t["labels"]), generator=g)) for t in targets]


LOSS_KEYS = ("loss_center", "loss_depth", "loss_dims", "loss_yaw")


def test_losses_zero_for_a_perfect_prediction_positive_otherwise():
    targets = [make_target(4, 0), make_target(3, 1, k=K_B, size=(52, 40))]
    indices = indices_for(targets, 9)
    outputs = encode_exactly(targets, 9, indices)
    loss = box3d_loss_term(Config())
    perfect = loss(outputs, targets, indices, torch.tensor(7.0))
    assert set(perfect) == set(LOSS_KEYS)
    for k in LOSS_KEYS:
        assert float(perfect[k]) == pytest.approx(0.0, abs=2e-6), k
    for key, k in zip(("pred_center_2d", "pred_depth", "pred_dims", "pred_yaw"), LOSS_KEYS):
        bad = dict(outputs)
        bad[key] = outputs[key] * 1.1 + 0.01
        assert float(loss(bad, targets, indices, torch.tensor(7.0))[k]) > 1e-3, k
    # other queries do not matter
    shuffled = {k: v.clone() for k, v in outputs.items()}
    free = torch.ones(9, dtype=torch.bool)
    free[indices[0][0]] = False
    shuffled["pred_depth"][0, free] = 99.0
    assert float(loss(shuffled, targets, indices, torch.tensor(7.0))["loss_depth"]) == pytest.approx(0.0, abs=2e-6)


def test_losses_match_a_hand_computation():
    target = {
        "labels": torch.tensor([1]), "center_3d": torch.tensor([[1.0, 0.5, 5.0]]),
        "dims_3d": torch.tensor([[1.0, 2.0, 4.0]]), "yaw_3d": torch.tensor([0.3]),
        "yaw_period": torch.tensor([math.pi]),
        "intrinsics": torch.tensor([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]]),
        "size": torch.tensor([80, 100]),  # (H, W)
    }
    # projection: u = 100 * 1 / 5 + 50 = 70, v = 100 * 0.5 / 5 + 40 = 50 -> (0.7, 0.625)
    outputs = {"pred_center_2d": torch.tensor([[[0.0, 0.0], [0.6, 0.65]]]),
               "pred_depth": torch.tensor([[1.0, 10.0]]),
               "pred_dims": torch.tensor([[[1.0, 1.0, 1.0], [2.0, 2.0, 4.0]]]),
               "pred_yaw": torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])}
    out = box3d_loss_term(Config())(outputs, [target], [(torch.tensor([1]), torch.tensor([0]))], torch.tensor(2.0))
    assert float(out["loss_center"]) == pytest.approx((0.1 + 0.025) / 2, rel=1e-5)
    assert float(out["loss_depth"]) == pytest.approx(math.log(2) / 2, rel=1e-5)
    assert float(out["loss_dims"]) == pytest.approx(math.log(2) / 2, rel=1e-5)
    # period pi: angle 2 pi 0.3 / pi = 0.6
    assert float(out["loss_yaw"]) == pytest.approx((math.sin(0.6) + 1 - math.cos(0.6)) / 2, rel=1e-5)


def test_rotation_symmetric_objects_have_no_yaw_loss_and_finite_gradients():
    targets = [make_target(4, 0, periods=(math.nan, math.pi, math.nan, 2 * math.pi))]
    indices = [(torch.tensor([2, 0, 5, 1]), torch.tensor([0, 1, 2, 3]))]
    # queries 0 and 1 encode targets 1 and 3 exactly; queries 2 and 5 (NaN period) hold random yaws
    exact = encode_exactly(targets, 6, [(torch.tensor([0, 1]), torch.tensor([1, 3]))])
    outputs = {k: v.requires_grad_() for k, v in exact.items()}
    loss = box3d_loss_term(Config())(outputs, targets, indices, torch.tensor(4.0))
    assert float(loss["loss_yaw"].detach()) == pytest.approx(0.0, abs=2e-6)
    sum(loss.values()).backward()
    for k, v in outputs.items():
        assert torch.isfinite(v.grad).all(), k
    assert (outputs["pred_yaw"].grad[0, [2, 5]] == 0).all()

    only_nan = [make_target(1, 0, periods=(math.nan,))]
    out = {k: v.detach().requires_grad_() for k, v in outputs.items()}
    loss = box3d_loss_term(Config())(out, only_nan, [(torch.tensor([3]), torch.tensor([0]))], torch.tensor(1.0))
    assert float(loss["loss_yaw"].detach()) == 0.0
    loss["loss_yaw"].backward()
    assert torch.isfinite(out["pred_yaw"].grad).all()


def test_no_pairs_gives_zero_losses_attached_to_the_graph():
    targets = [make_target(0, 0), make_target(0, 1)]
    empty = [(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))] * 2
    outputs = {k: v.requires_grad_() for k, v in encode_exactly(targets, 5, empty).items()}
    loss = box3d_loss_term(Config())(outputs, targets, empty, torch.tensor(1.0))
    for k in LOSS_KEYS:
        assert float(loss[k].detach()) == 0.0 and loss[k].requires_grad, k
    sum(loss.values()).backward()
    assert all((v.grad == 0).all() for v in outputs.values())


def test_gradient_reaches_every_head_parameter_but_not_the_2d_boxes():
    head = make_head()
    ctx = context([K_A, K_B])
    hs = torch.randn(2, 2, 6, D_MODEL)
    boxes = torch.rand(2, 2, 6, 4, requires_grad=True)
    targets = [make_target(3, 0), make_target(2, 1, k=K_B)]
    indices = indices_for(targets, 6)
    loss = box3d_loss_term(Config())
    layers = head(ctx, hs, boxes)
    total = head.position(ctx).pow(2).mean()
    for layer in layers:
        total = total + sum(loss(layer, targets, indices, torch.tensor(5.0)).values())
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert boxes.grad is None  # the 2D box is trained by the 2D losses only


# ---------------------------------------------------------------------------------------------
# postprocess


def test_postprocess_round_trip_recovers_the_ground_truth():
    periods = {1: math.pi, 2: None, 3: 2 * math.pi, 4: math.pi}
    targets = [make_target(4, 0, periods=(math.pi, math.nan, 2 * math.pi, math.pi)),
               make_target(3, 1, periods=(math.pi, math.nan, 2 * math.pi), k=K_B, size=(52, 40))]
    assignment = indices_for(targets, 8, seed=3)
    outputs = encode_exactly(targets, 8, assignment)
    results = []
    for q, j in assignment:
        pick = torch.cat([j, j[:1]])  # a repeated detection, in another order than the queries
        inv = torch.empty_like(j)
        inv[j] = q
        results.append({"query": inv[pick], "labels": pick + 1, "gt": pick})
    box3d_postprocess_term(Config(), periods)(outputs, results, targets)
    for res, t in zip(results, targets):
        j = res["gt"]
        assert res["center_3d"].shape == (len(j), 3) and res["yaw_3d"].shape == (len(j),)
        torch.testing.assert_close(res["center_3d"], t["center_3d"][j], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(res["dims_3d"], t["dims_3d"][j])
        for r, yaw, label in zip(res["yaw_3d"].tolist(), t["yaw_3d"][j].tolist(), res["labels"].tolist()):
            if periods[label] is None:
                assert r == 0.0  # no orientation
            else:
                p = periods[label]
                assert -p / 2 - 1e-6 <= r < p / 2 + 1e-6
                assert float(yaw_error(np.array([r]), np.array([yaw]), p)[0]) < 1e-4


def test_postprocess_without_periods_uses_two_pi():
    targets = [make_target(3, 0, periods=(2 * math.pi,) * 3)]
    assignment = [(torch.tensor([4, 0, 2]), torch.tensor([0, 1, 2]))]
    outputs = encode_exactly(targets, 5, assignment)
    results = [{"query": torch.tensor([4, 0, 2]), "labels": torch.tensor([7, 7, 8])}]
    box3d_postprocess_term(Config())(outputs, results, targets)
    torch.testing.assert_close(results[0]["yaw_3d"], targets[0]["yaw_3d"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# the dataset's yaw_period


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth3d") / "b"
    small = ["data.synth.num_train=1", "data.synth.num_val=6", "data.image_size=48", "data.synth.min_objects=6"]
    generate(load_config("cpu_small", small).data, root, workers=1)
    return root


def test_dataset_yaw_period_per_object(tiny_bench):
    ds = CocoDetection(tiny_bench / "val", tiny_bench / "annotations" / "instances_val.json")
    shapes = {c["id"]: c["shape"] for c in ds.coco.dataset["categories"]}
    seen = set()
    for i in range(len(ds)):
        _, t = ds[i]
        assert t["yaw_period"].dtype == torch.float32 and t["yaw_period"].shape == t["labels"].shape
        for label, period in zip(t["labels"].tolist(), t["yaw_period"].tolist()):
            seen.add(shapes[label])
            if shapes[label] == "box":
                assert period == pytest.approx(math.pi)
            else:
                assert math.isnan(period), shapes[label]
    assert "box" in seen and len(seen) >= 2
    # a flip keeps every object's period
    raw = ds._target(ds.coco.imgs[ds.ids[0]], ds._anns[ds.ids[0]])
    image = ds._read_image(ds.coco.imgs[ds.ids[0]])
    _, flipped = to_model_input(*hflip(image, raw))
    torch.testing.assert_close(flipped["yaw_period"], raw["yaw_period"].float(), equal_nan=True)


def test_dataset_yaw_period_defaults_to_two_pi(tiny_bench, tmp_path):
    data = json.loads((tiny_bench / "annotations" / "instances_val.json").read_text())
    for c in data["categories"]:
        c.pop("yaw_period")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    shutil.copytree(tiny_bench / "val", tmp_path / "val")
    _, t = CocoDetection(tmp_path / "val", ann)[0]
    assert len(t["labels"]) and torch.equal(t["yaw_period"], torch.full_like(t["yaw_period"], 2 * math.pi))
