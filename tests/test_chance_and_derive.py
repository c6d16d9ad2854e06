"""The fixed-boxes baseline and the derived (one-class, box-only) dataset."""
from __future__ import annotations

import json

import pytest

from groupdetr.config import load_config
from groupdetr.data.coco import CocoDetection, DatasetError, dataset_paths
from groupdetr.data.derive import BOX_KEYS, derive_dataset
from groupdetr.evaluation.chance import fixed_boxes, fixed_boxes_results, fixed_boxes_stats
from groupdetr.synth.writer import generate


def coco(boxes_per_image, cat=1, size=100):
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size} for i in range(len(boxes_per_image))]
    anns = [{"id": 1000 * (i + 1) + j, "image_id": i + 1, "category_id": cat, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, boxes in enumerate(boxes_per_image) for j, b in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": [{"id": cat, "name": "object"}]}


def test_fixed_boxes_reach_full_ap_when_every_image_has_the_same_boxes(tmp_path):
    same = [[[10, 10, 20, 20], [60, 50, 30, 40]]] * 6
    (tmp_path / "t.json").write_text(json.dumps(coco(same)))
    (tmp_path / "v.json").write_text(json.dumps(coco(same[:3])))
    assert fixed_boxes_stats(tmp_path / "t.json", tmp_path / "v.json", num_boxes=2)["bbox/AP"] == pytest.approx(1.0)


def test_fixed_boxes_are_far_from_full_ap_when_objects_move(tmp_path):
    train = [[[5 + 10 * i, 5 + 7 * i, 12, 12]] for i in range(8)]
    val = [[[80 - 9 * i, 6 * i, 12, 12]] for i in range(8)]
    (tmp_path / "t.json").write_text(json.dumps(coco(train)))
    (tmp_path / "v.json").write_text(json.dumps(coco(val)))
    assert fixed_boxes_stats(tmp_path / "t.json", tmp_path / "v.json", num_boxes=4)["bbox/AP"] < 0.3


def test_fixed_boxes_share_the_budget_by_category_frequency_and_clip_to_the_image():
    data = coco([[[0, 0, 10, 10]] * 3] * 4)
    data["annotations"] += [{**a, "id": a["id"] + 1, "category_id": 2} for a in data["annotations"][:2]]
    data["categories"].append({"id": 2, "name": "b"})
    boxes = fixed_boxes(data, num_boxes=7)
    assert {c for c, _, _ in boxes} == {1, 2} and len(boxes) <= 7
    assert sum(s for _, _, s in boxes) == pytest.approx(1.0)
    (r,) = fixed_boxes_results([(1, [0.0, 0.0, 0.5, 0.5], 1.0)], [{"id": 7, "width": 40, "height": 20}])
    assert r["bbox"] == [0.0, 0.0, 10.0, 5.0] and r["image_id"] == 7


def test_derived_dataset_is_one_class_box_only_and_loads(tmp_path):
    src = tmp_path / "src"
    generate(load_config("cpu_small", ["data.synth.num_train=6", "data.synth.num_val=3", "data.image_size=32"]).data,
             src, workers=1)
    out = tmp_path / "derived"
    summary = derive_dataset(src, out, num_train=4, seed=1)
    assert summary["train"]["images"] == 4 and summary["val"]["images"] == 3
    _, ann = dataset_paths("synth", out, "train")
    data = json.loads(ann.read_text())
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert all(set(a) <= set(BOX_KEYS) and a["category_id"] == 1 for a in data["annotations"])
    assert all(set(im) == {"id", "file_name", "width", "height"} for im in data["images"])
    ds = CocoDetection(*dataset_paths("synth", out, "train"))
    assert len(ds) == 4 and not ds.has_3d and ds.category_ids == [1]
    with pytest.raises(DatasetError, match="exists"):
        derive_dataset(src, out)
    again = derive_dataset(src, out, num_train=4, seed=1, force=True)
    assert again == summary and json.loads(ann.read_text()) == data  # seeded: the same subset
