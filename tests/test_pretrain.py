"""Box-only backbone pretraining: hand-computed targets, determinism, the cache, loading, refusals."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import TINY
from groupdetr.build import build_model
from groupdetr.config import load_config
from groupdetr.model.backbone import SmallCNN, WeightsError, read_weights
from groupdetr.pretrain.cache import RECORD, WEIGHTS, dataset_fingerprint, pretrain_spec
from groupdetr.pretrain.run import pretrain, resolve_backbone_weights
from groupdetr.pretrain.targets import cell_targets
from groupdetr.synth.writer import generate

CATS = [1, 2, 3]


def target(boxes_px, labels, size=(32, 32)):
    """DETR target from pixel xyxy boxes on an image of ``size`` (H, W)."""
    h, w = size
    b = torch.tensor(boxes_px, dtype=torch.float32).reshape(-1, 4)
    cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                          (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], -1)
    return {"boxes": cxcywh, "labels": torch.tensor(labels, dtype=torch.long), "size": torch.tensor(size)}


# ---------------------------------------------------------------------------------------------
# targets, by hand


def test_occupancy_of_a_box_covering_one_cell_and_half_of_another():
    # stride 8 on a 32 px image: 4 x 4 cells; box covers cell (0, 0) fully and half of cell (0, 1)
    t = cell_targets([target([[0, 0, 12, 8]], [2])], CATS, (4, 4), 8)
    occ = t.occupancy[0]
    assert occ.shape == (4, 4, 4)
    assert torch.allclose(occ[:, 0, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.allclose(occ[:, 0, 1], torch.tensor([0.5, 0.0, 0.5, 0.0]))
    assert torch.allclose(occ[0, 1:], torch.ones(3, 4)) and torch.allclose(occ.sum(0), torch.ones(4, 4))
    assert t.valid.all()


def test_overlapping_boxes_of_one_class_are_a_union_and_classes_share_a_full_cell():
    # two boxes of class 1 each cover half of cell (0, 0) from different sides, overlapping a quarter:
    # union = 1 - (1 - .5)(1 - .5) = .75 (independence approximation of the union)
    same = cell_targets([target([[0, 0, 4, 8], [0, 0, 8, 4]], [1, 1])], CATS, (4, 4), 8).occupancy[0]
    assert math.isclose(float(same[1, 0, 0]), 0.75, abs_tol=1e-5) and math.isclose(float(same[0, 0, 0]), 0.25, abs_tol=1e-5)
    # two classes each covering cell (0, 0) fully: scaled to share it, no background
    both = cell_targets([target([[0, 0, 8, 8], [0, 0, 8, 8]], [1, 3])], CATS, (4, 4), 8).occupancy[0]
    assert torch.allclose(both[:, 0, 0], torch.tensor([0.0, 0.5, 0.0, 0.5]))


def test_padding_cells_are_invalid_and_background():
    # image 16 x 24 padded to 32 x 32: cells whose centre is outside the image are not valid
    t = cell_targets([target([[0, 0, 8, 8]], [1], size=(16, 24))], CATS, (4, 4), 8)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :3] = True
    assert torch.equal(t.valid[0], expected)
    assert torch.all(t.occupancy[0, 0][~expected] == 1) and torch.all(t.center[0, 0][~expected] == 0)


def test_extent_is_the_distance_to_the_edges_of_the_smallest_box_holding_the_cell_centre():
    # big box 0..32 x 0..32 (class 1) and small box 8..24 x 8..16 (class 2); cell (1, 1) centre (12, 12)
    t = cell_targets([target([[0, 0, 32, 32], [8, 8, 24, 16]], [1, 2])], CATS, (4, 4), 8)
    assert torch.allclose(t.extent[0, :, 1, 1], torch.tensor([4, 4, 12, 4]) / 32.0)
    assert torch.allclose(t.extent[0, :, 3, 3], torch.tensor([28, 28, 4, 4]) / 32.0)  # only the big box
    assert t.extent_mask[0].all()
    empty = cell_targets([target([], [])], CATS, (4, 4), 8)
    assert not empty.extent_mask.any() and torch.all(empty.occupancy[0, 0] == 1) and torch.all(empty.center == 0)


def test_centre_heatmap_peaks_at_the_box_centre():
    # box centred on cell (2, 1)'s centre (12, 20): heat 1 there, smaller around
    t = cell_targets([target([[4, 12, 20, 28]], [1])], CATS, (4, 4), 8)
    heat = t.center[0, 0]
    assert math.isclose(float(heat[2, 1]), 1.0, abs_tol=1e-6)
    assert float(heat.flatten().argmax()) == 2 * 4 + 1 and float(heat[0, 3]) < 0.05


# ---------------------------------------------------------------------------------------------
# pretraining, cache, loading


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain") / "synth"
    generate(load_config("cpu_small", ["data.synth.num_train=12", "data.synth.num_val=4", "data.image_size=48"]).data,
             root, workers=1)
    return root


def config(root, cache, *extra):
    return load_config("cpu_small", TINY + [
        "model.num_classes=9", f"data.root={root}", "data.image_size=48", "model.backbone.weights=pretrain",
        "pretrain.steps=3", "pretrain.batch_size=4", f"pretrain.cache={cache}", *extra])


def test_pretraining_is_deterministic_cached_and_keyed_by_its_inputs(bench, tmp_path):
    path_a, record, built = pretrain(config(bench, tmp_path / "a"))
    path_b, _, built_b = pretrain(config(bench, tmp_path / "b"))
    assert built and built_b
    assert path_a.name == WEIGHTS and path_a.parent.name == path_b.parent.name  # same key in both caches
    assert path_a.read_bytes() == path_b.read_bytes()  # deterministic on CPU for a seed
    assert record["steps"] == 3 and record["dataset"]["num_images"] == 12 and record["backbone"]["name"] == "small_cnn"
    assert {"heldout_cell_accuracy", "heldout_foreground_iou", "heldout_extent_l1", "train_occupancy"} <= set(record["metrics"])
    assert record["dataset"]["fingerprint"] == dataset_fingerprint(bench / "train", bench / "annotations/instances_train.json")["fingerprint"]
    mtime = path_a.stat().st_mtime_ns
    again, _, built_again = pretrain(config(bench, tmp_path / "a"))
    assert again == path_a and not built_again and path_a.stat().st_mtime_ns == mtime  # never twice
    other, _, _ = pretrain(config(bench, tmp_path / "a", "pretrain.seed=1"))
    assert other.parent != path_a.parent and other.read_bytes() != path_a.read_bytes()
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_model_backbone_weights_pretrain_loads_the_pretrained_backbone(bench, tmp_path):
    cfg = config(bench, tmp_path)
    resolved = resolve_backbone_weights(cfg)
    path = resolved.model.backbone.weights
    assert path.endswith(WEIGHTS) and resolved.model.backbone.channels == cfg.model.backbone.channels
    model = build_model(resolved.model)
    state = read_weights(path)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in state.items())
    assert set(state) == set(model.backbone.state_dict())
    with pytest.raises(WeightsError, match="resolved by the trainer"):
        build_model(cfg.model)


def test_a_tampered_cache_entry_is_refused(bench, tmp_path):
    path, _, _ = pretrain(config(bench, tmp_path))
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x00" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="do not match the checksum"):
        pretrain(config(bench, tmp_path))


def test_weights_that_do_not_fit_or_cannot_be_read_are_refused_with_one_line(tmp_path):
    good = tmp_path / "small.pth"
    torch.save(SmallCNN((8, 16)).state_dict(), good)
    SmallCNN((8, 16), weights=good)  # fits
    cases = {
        "missing": (tmp_path / "nope.pth", "not found"),
        "other architecture": (good, "do not fit small_cnn channels \\[8, 32\\]"),
        "zero bytes": (tmp_path / "empty.pth", "cannot be read"),
        "not a state dict": (tmp_path / "list.pth", "not a state dict"),
    }
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pth")
    for what, (path, message) in cases.items():
        channels = (8, 32) if what == "other architecture" else (8, 16)
        with pytest.raises(WeightsError, match=message) as e:
            SmallCNN(channels, weights=path)
        assert str(path) in str(e.value) and "\n" not in str(e.value), what


def test_resnet_pretraining_exports_weights_the_detector_backbone_loads(bench, tmp_path):
    cfg = config(bench, tmp_path, "model.backbone.name=resnet18", "pretrain.steps=1", "pretrain.batch_size=2")
    resolved = resolve_backbone_weights(cfg)
    model = build_model(resolved.model)  # FrozenBatchNorm backbone loads torchvision key names
    state = read_weights(resolved.model.backbone.weights)
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state and not any(k.startswith("fc.") for k in state)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])
    assert torch.equal(body["bn1.running_mean"], state["bn1.running_mean"])


def test_pretraining_on_another_dataset_is_keyed_by_that_dataset(bench, tmp_path):
    cfg = config(tmp_path / "not-used", tmp_path, "pretrain.dataset=synth", f"pretrain.root={bench}")
    assert pretrain_spec(cfg).root == str(bench)
    path, record, _ = pretrain(cfg)
    assert record["dataset"]["root"] == str(bench) and (path.parent / RECORD).is_file()


def test_cli_pretrain_prints_one_line_and_copies_out(bench, tmp_path):
    out = tmp_path / "copy" / "backbone.pth"
    args = ["-c", "cpu_small"] + [a for o in [*TINY, "model.num_classes=9", f"data.root={bench}", "data.image_size=48",
                                               "pretrain.steps=2", "pretrain.batch_size=4", f"pretrain.cache={tmp_path / 'c'}"]
                                   for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "groupdetr", "pretrain", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and "held-out cell accuracy" in done.stdout
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["steps"] == 2
    bad = subprocess.run([sys.executable, "-m", "groupdetr", "train", "-c", "cpu_small", "--set",
                          f"model.backbone.weights={tmp_path / 'missing.pth'}", "--set", f"data.root={bench}",
                          "--set", "model.num_classes=9", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=1800)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing.pth" in bad.stderr, bad.stderr
