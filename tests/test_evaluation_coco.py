"""COCO evaluation: result conversion, exact AP on hand-built cases, and backend agreement."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from conftest import cocoeval_file
from groupdetr import rundir as rd
from groupdetr.evaluation.coco import STAT_NAMES, CocoEvaluator, evaluate_coco, load_coco_gt, to_coco_results
from groupdetr.evaluation.scorers import CocoScorer

BACKENDS = ("pycocotools", "faster_coco_eval")
H, W = 160, 200
# COCO interpolates precision at the 101 recall points 0, 0.01, ..., 1: finding 1 of 2 objects at
# precision 1 covers the 51 points up to recall 0.5.
HALF_FOUND_AP = 51 / 101


def box_mask(x, y, w, h, notch=True) -> np.ndarray:
    """[H, W] bool rectangle; the notch makes the mask area differ from its box area."""
    m = np.zeros((H, W), dtype=bool)
    m[y:y + h, x:x + w] = True
    if notch:
        m[y + h // 3: y + h // 2, x + w // 3: x + w // 2] = False
    return m


def ring_mask(x, y, size, thickness) -> np.ndarray:
    m = box_mask(x, y, size, size, notch=False)
    m[y + thickness: y + size - thickness, x + thickness: x + size - thickness] = False
    return m


def extent_xywh(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def make_gt(objects: list[tuple[int, int, np.ndarray]], num_images: int) -> dict:
    """COCO GT dict from (image_id, category_id, mask); bbox and area from the mask, as the format says."""
    anns = []
    for i, (image_id, cat, m) in enumerate(objects, start=1):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"id": i, "image_id": image_id, "category_id": cat, "bbox": extent_xywh(m),
                     "area": float(m.sum()), "segmentation": rle, "iscrowd": 0})
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in range(1, num_images + 1)],
            "annotations": anns, "categories": [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in (1, 2, 3)]}


def make_predictions(entries: list[tuple[int, int, np.ndarray, float]]) -> dict[int, dict]:
    """{image_id: postprocess dict} from (image_id, category_id, mask, score); box = mask extent."""
    out = {}
    for image_id in sorted({e[0] for e in entries}):
        mine = [e for e in entries if e[0] == image_id]
        boxes = [extent_xywh(m) for _, _, m, _ in mine]
        out[image_id] = {
            "scores": torch.tensor([s for *_, s in mine]),
            "labels": torch.tensor([c for _, c, _, _ in mine]),
            "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]),
            "masks": torch.from_numpy(np.stack([m for _, _, m, _ in mine])),
        }
    return out


# Small (< 32^2), medium and large (> 96^2) objects of all three classes over three images.
OBJECTS = [
    (1, 1, box_mask(5, 5, 12, 10)), (1, 2, box_mask(30, 20, 50, 40)), (1, 3, box_mask(70, 40, 120, 110)),
    (2, 1, box_mask(150, 10, 40, 45)), (2, 1, box_mask(20, 100, 20, 18)), (2, 2, box_mask(10, 10, 110, 100)),
    (3, 3, box_mask(60, 60, 25, 20)), (3, 2, box_mask(100, 5, 60, 70)), (3, 1, box_mask(5, 90, 100, 60)),
]


@pytest.fixture(scope="module")
def gt() -> dict:
    return make_gt(OBJECTS, num_images=3)


def perfect_results() -> list[dict]:
    return to_coco_results(make_predictions([(i, c, m, 1.0) for i, c, m in OBJECTS]))


def perturbed_results(seed: int = 0) -> list[dict]:
    """Two jittered, sometimes mislabelled copies of every object plus random false positives."""
    return to_coco_results(make_predictions(perturbed_entries(seed)))


def perturbed_entries(seed: int = 0) -> list[tuple[int, int, np.ndarray, float]]:
    """The (image_id, category_id, mask, score) of :func:`perturbed_results`."""
    rng = np.random.default_rng(seed)
    entries = []
    for image_id, cat, m in OBJECTS:
        for _ in range(2):
            shifted = np.roll(m, tuple(rng.integers(-8, 9, size=2)), axis=(0, 1))
            label = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
            entries.append((image_id, label, shifted, float(rng.random())))
    for _ in range(6):
        x, y = rng.integers(0, W - 40), rng.integers(0, H - 40)
        entries.append((int(rng.integers(1, 4)), int(rng.integers(1, 4)), box_mask(x, y, 30, 30), float(rng.random())))
    return entries


# ---- conversion --------------------------------------------------------------------------------------

# pycocotools 2.0.11's decode trips a numpy 2 DeprecationWarning of its own.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_to_coco_results_converts_xyxy_and_masks():
    m = box_mask(30, 20, 50, 40)
    preds = {7: {"scores": torch.tensor([0.25, 0.5]), "labels": torch.tensor([3, 1]),
                 "boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 5.0, 5.0]]),
                 "masks": torch.from_numpy(np.stack([m, np.zeros_like(m)]))},
             8: {"scores": np.zeros(0), "labels": np.zeros(0, dtype=int), "boxes": np.zeros((0, 4))}}
    res = to_coco_results(preds)
    assert len(res) == 2
    assert res[0]["image_id"] == 7 and res[0]["category_id"] == 3 and res[0]["score"] == 0.25
    assert res[0]["bbox"] == [10.0, 20.0, 30.0, 40.0]  # xyxy -> xywh
    assert isinstance(res[0]["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(res[0]["segmentation"]).astype(bool), m)
    assert not mask_util.decode(res[1]["segmentation"]).any()
    json.dumps(res)  # plain Python types only


# ---- exact values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_predictions_score_one_everywhere(gt, backend, iou_type):
    stats = evaluate_coco(gt, perfect_results(), iou_type, backend)
    # APs/APm/APl = 1 (not -1) also proves the fixture covers all three area ranges. AR1 keeps one
    # detection per image and class: image 2 has two objects of class 1, so class 1 recalls 3 of its 4
    # objects and AR1 = (3/4 + 1 + 1) / 3.
    expected = dict.fromkeys(STAT_NAMES, 1.0) | {"AR1": 11 / 12}
    assert stats == pytest.approx(expected, abs=1e-12)


TWO_SQUARES = [(1, 1, box_mask(10, 10, 20, 20, notch=False)), (1, 1, box_mask(60, 10, 20, 20, notch=False))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_one_of_two_found_gives_51_of_101(backend, iou_type):
    gt = make_gt(TWO_SQUARES, num_images=1)
    res = to_coco_results(make_predictions([(1, 1, TWO_SQUARES[0][2], 1.0)]))
    stats = evaluate_coco(gt, res, iou_type, backend)
    for name in ("AP", "AP50", "AP75"):
        assert stats[name] == pytest.approx(HALF_FOUND_AP, abs=1e-12)
    assert stats["AR100"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_shift_to_iou_two_thirds_keeps_ap50_and_drops_ap75(backend, iou_type):
    gt = make_gt(TWO_SQUARES, num_images=1)
    # 20x20 square moved 4 px: IoU = 16*20 / (2*400 - 16*20) = 2/3, a TP at IoU 0.50..0.65 (4 of the 10
    # thresholds) and an FP at 0.70..0.95 (where, scored below the exact box, AP = 51/101).
    shifted = box_mask(64, 10, 20, 20, notch=False)
    res = to_coco_results(make_predictions([(1, 1, TWO_SQUARES[0][2], 1.0), (1, 1, shifted, 0.9)]))
    stats = evaluate_coco(gt, res, iou_type, backend)
    assert stats["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert stats["AP75"] == pytest.approx(HALF_FOUND_AP, abs=1e-12)
    assert stats["AP"] == pytest.approx((4 * 1.0 + 6 * HALF_FOUND_AP) / 10, abs=1e-12)
    assert stats["AR100"] == pytest.approx((4 * 1.0 + 6 * 0.5) / 10, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_top_scored_false_positive_caps_precision_at_two_thirds(backend, iou_type):
    gt = make_gt(TWO_SQUARES, num_images=1)
    far = box_mask(150, 100, 20, 20, notch=False)
    res = to_coco_results(make_predictions([(1, 1, far, 1.0), (1, 1, TWO_SQUARES[0][2], 0.9),
                                            (1, 1, TWO_SQUARES[1][2], 0.8)]))
    # Precision after each detection: 0, 1/2, 2/3; the envelope is 2/3 at every recall point.
    stats = evaluate_coco(gt, res, iou_type, backend)
    assert stats["AP"] == pytest.approx(2 / 3, abs=1e-12)
    assert stats["AR100"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_ap_takes_object_size_from_the_mask(backend):
    small = box_mask(10, 10, 10, 10, notch=False)
    gt = make_gt([(1, 1, small)], num_images=1)
    # A false positive whose mask is small (304 px) but whose box is medium (40x40 = 1600 px): scored by
    # mask area it counts against APs (0.5); by box area it would be ignored there (1.0).
    ring = ring_mask(100, 60, 40, 2)
    assert ring.sum() < 32 ** 2 < 40 * 40
    res = to_coco_results(make_predictions([(1, 1, ring, 0.9), (1, 1, small, 0.5)]))
    assert evaluate_coco(gt, res, "segm", backend)["APs"] == pytest.approx(0.5, abs=1e-12)


# ---- backends, inputs, edge cases --------------------------------------------------------------------

@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_backends_agree_on_perturbed_results(gt, iou_type):
    res = perturbed_results()
    ref = evaluate_coco(gt, res, iou_type, "pycocotools")
    fast = evaluate_coco(gt, res, iou_type, "faster_coco_eval")
    assert 0.05 < ref["AP"] < 0.95  # a case where matching, ranking and area ranges all matter
    for name in STAT_NAMES:
        assert fast[name] == pytest.approx(ref[name], abs=1e-6), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_empty_results_give_zeros(gt, backend, iou_type):
    assert evaluate_coco(gt, [], iou_type, backend) == dict.fromkeys(STAT_NAMES, 0.0)


def test_bad_arguments_raise_value_error(gt):
    with pytest.raises(ValueError, match="backend"):
        evaluate_coco(gt, perfect_results(), backend="detectron2")
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt, perfect_results(), iou_type="keypoints")
    no_masks = [{k: v for k, v in r.items() if k != "segmentation"} for r in perfect_results()]
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco(gt, no_masks, iou_type="segm")


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_are_not_modified(gt, backend):
    res = perturbed_results()
    before = copy.deepcopy(res)
    evaluate_coco(gt, res, "bbox", backend)
    evaluate_coco(gt, res, "segm", backend)
    assert res == before


def test_ground_truth_as_path_dict_or_either_coco_object(gt, tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    res = perturbed_results()
    ref = evaluate_coco(gt, res, "segm", "pycocotools")
    assert evaluate_coco(str(path), res, "segm", "pycocotools") == ref
    assert evaluate_coco(load_coco_gt(gt, "faster_coco_eval"), res, "segm", "pycocotools") == ref
    assert evaluate_coco(load_coco_gt(gt, "pycocotools"), res, "segm", "faster_coco_eval") == pytest.approx(ref)


def test_img_ids_restricts_evaluation(gt):
    # Perfect on image 1, nothing on the others: perfect when only image 1 is evaluated.
    res = [r for r in perfect_results() if r["image_id"] == 1]
    assert evaluate_coco(gt, res, img_ids=[1])["AP"] == pytest.approx(1.0)
    assert evaluate_coco(gt, res)["AP"] < 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_evaluator_accumulates_batches(gt, backend):
    entries = [(i, c, m, 1.0) for i, c, m in OBJECTS]
    ev = CocoEvaluator(gt, backend)
    ev.update(make_predictions([e for e in entries if e[0] == 1]))
    ev.update(make_predictions([e for e in entries if e[0] != 1]))
    out = ev.summarize(("bbox", "segm"))
    assert set(out) == {f"{t}/{n}" for t in ("bbox", "segm") for n in STAT_NAMES}
    assert out["bbox/AP"] == pytest.approx(1.0) and out["segm/AP"] == pytest.approx(1.0)
    assert len(ev.results) == len(OBJECTS) and sorted(ev.img_ids) == [1, 2, 3]


def test_coco_evaluator_scores_only_the_images_it_saw(gt):
    ev = CocoEvaluator(gt)
    ev.update(make_predictions([(i, c, m, 1.0) for i, c, m in OBJECTS if i == 2]))
    assert ev.summarize()["bbox/AP"] == pytest.approx(1.0)  # images 1 and 3 never seen, not missed
    assert CocoEvaluator(gt).summarize(("bbox", "segm")) == {f"{t}/{n}": 0.0 for t in ("bbox", "segm")
                                                           for n in STAT_NAMES}


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_prints_nothing(gt, backend, capsys):
    evaluate_coco(gt, perturbed_results(), "segm", backend)
    assert capsys.readouterr().out == ""


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("iou_types", [("bbox",), ("bbox", "segm")], ids=["boxes", "masks"])
def test_written_detections_rescore_with_load_res_to_the_stats(gt, tmp_path, iou_types):
    """What an evaluation writes beside its stats (``<stem>.detections.<iou type>.json``) scores with plain
    pycocotools (``COCO.loadRes(file)``, ``COCOeval``) to the very stats of the evaluation. The segm file
    carries no ``bbox``, so loadRes takes each result's area from its mask, as our evaluation does: a false
    positive small by mask and medium by box (the ring) shows it."""
    gt_file = tmp_path / "instances_val.json"
    gt_file.write_text(json.dumps(gt))
    ring = ring_mask(100, 60, 40, 2)
    predictions = make_predictions(perturbed_entries() + [(3, 1, ring, 0.99)])
    scorer = CocoScorer(load_coco_gt(gt), iou_types)
    records = {image_id: scorer.record({"image_id": image_id}, pred) for image_id, pred in predictions.items()}
    stats = scorer.score(records)
    files = rd.write_detections(tmp_path / "eval" / "nms.json", scorer.detections(records))
    assert [f.name for f in files] == [f"nms.detections.{t}.json" for t in iou_types]
    for iou_type, path in zip(iou_types, files):
        results = json.loads(path.read_text())
        assert len(results) == sum(len(r) for r in records.values())
        assert all(("bbox" in r) == (iou_type == "bbox") and ("segmentation" in r) == (iou_type == "segm")
                   for r in results)
        expected = {name: stats[f"{iou_type}/{name}"] for name in STAT_NAMES}
        assert 0.05 < expected["AP"] < 0.95
        assert cocoeval_file(gt_file, path, iou_type) == expected  # exactly
    if "segm" in iou_types:  # with the boxes left in, loadRes would size the ring by its box: other APs
        with_boxes = tmp_path / "with_boxes.json"
        with_boxes.write_text(json.dumps(to_coco_results(predictions)))
        assert cocoeval_file(gt_file, with_boxes, "segm")["APs"] != stats["segm/APs"]
