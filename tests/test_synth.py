"""The embedded benchmark: determinism and annotation validity."""
import hashlib
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from groupdetr.config import load_config
from groupdetr.geometry import project
from groupdetr.synth.primitives import SHAPES
from groupdetr.synth.scene import CATEGORIES
from groupdetr.synth.writer import SynthError, generate

SMALL = ["data.synth.num_train=24", "data.synth.num_val=8", "data.image_size=96"]


def tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "b"
    generate(load_config("cpu_small", SMALL).data, root, workers=1)
    return root


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(bench, tmp_path):
    generate(load_config("cpu_small", SMALL).data, tmp_path / "again", workers=2)
    assert tree_digest(bench) == tree_digest(tmp_path / "again")
    other = load_config("cpu_small", SMALL + ["data.synth.seed=1"]).data
    generate(other, tmp_path / "other", workers=1)
    assert tree_digest(tmp_path / "other")["train/000000.png"] != tree_digest(bench)["train/000000.png"]


def test_finished_benchmark_is_kept_or_refused(bench, tmp_path):
    before = tree_digest(bench)
    generate(load_config("cpu_small", SMALL).data, bench)  # same settings: no-op
    with pytest.raises(SynthError, match="other settings"):
        generate(load_config("cpu_small", SMALL + ["data.synth.noise=0.1"]).data, bench)
    assert tree_digest(bench) == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(SynthError, match="not an embedded benchmark"):
        generate(load_config("cpu_small", SMALL).data, tmp_path / "busy")


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotations_are_valid_coco_with_consistent_masks_boxes_and_3d(bench, split):
    ann_file = bench / "annotations" / f"instances_{split}.json"
    coco = COCO(str(ann_file))
    images = {img["id"]: img for img in coco.dataset["images"]}
    assert len(coco.getCatIds()) == len(CATEGORIES) >= 8
    assert all((bench / split / img["file_name"]).is_file() for img in images.values())
    visibilities = []
    for ann in coco.dataset["annotations"]:
        img = images[ann["image_id"]]
        m = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert m.sum() == ann["area"] > 0
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert ann["bbox"] == [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
        x, y, w, h = ann["bbox"]
        ax, ay, aw, ah = ann["bbox_amodal"]
        assert ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah  # visible inside amodal
        u, v = project(np.array(ann["center_3d"]), np.array(img["intrinsics"]))
        assert ax <= u <= ax + aw and ay <= v <= ay + ah  # a convex object's centre projects on its silhouette
        if ann["visibility"] == 1.0:  # unoccluded: the visible box is the silhouette's box
            assert x <= u <= x + w and y <= v <= y + h
        assert ann["center_3d"][2] > 0 and all(d > 0 for d in ann["dims_3d"])
        visibilities.append(ann["visibility"])
    assert min(visibilities) < 0.7 and max(visibilities) == 1.0  # real occlusion happens, and not everywhere


def test_categories_carry_shape_and_yaw_period(bench):
    cats = json.loads((bench / "annotations" / "instances_val.json").read_text())["categories"]
    assert {c["shape"] for c in cats} == set(SHAPES)
    assert [c["yaw_period"] for c in cats if c["shape"] == "box"] == [pytest.approx(np.pi)] * 2
    assert all(c["yaw_period"] is None for c in cats if c["shape"] != "box")


def test_difficulty_knobs_change_the_scenes(tmp_path):
    def mean_objects(overrides):
        data = load_config("cpu_small", SMALL + overrides).data
        generate(data, tmp_path / str(len(list(tmp_path.iterdir()))))
        ann = json.loads((sorted(tmp_path.iterdir())[-1] / "annotations" / "instances_train.json").read_text())
        return len(ann["annotations"]) / len(ann["images"])

    few = mean_objects(["data.synth.min_objects=1", "data.synth.max_objects=2"])
    crowd = mean_objects(["data.synth.min_objects=15", "data.synth.max_objects=20"])
    assert few <= 2 and crowd > 10
