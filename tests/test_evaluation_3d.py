"""nuScenes-style 3D metric: exact values on hand-built scenes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from groupdetr import rundir as rd
from groupdetr.evaluation.det3d import (
    Det3DEvaluator,
    calc_ap,
    evaluate_3d,
    from_3d_results,
    greedy_match,
    yaw_periods_from_categories,
)
from groupdetr.evaluation.scorers import Det3DScorer
from groupdetr.geometry import ground_to_camera

BOX, CYL, OTHER = 1, 2, 3  # a yaw-periodic box class, a rotation-symmetric class, another box class
PERIODS = {BOX: math.pi, CYL: None, OTHER: math.pi}
PITCH = 0.3
# AP of a class whose only ground truth is found by the second of two predictions (FP, TP), by the
# devkit formula: recall 0, 1 with precision 0, 1/2, so np.interp gives p(r) = r / 2 on [0, 1].
# r = 0.11 ... 0.20 earn max(r/2 - 0.1, 0) = 0; r = k/100 for k = 21 ... 100 earn k/200 - 0.1, in sum
# (sum_{k=21}^{100} k) / 200 - 80 * 0.1 = 4840 / 200 - 8 = 16.2. AP = 16.2 / 90 / 0.9 = 0.2.
FP_FIRST_AP = 0.2


def obj(label, ground_xyz, dims=(1.0, 1.5, 2.0), yaw=0.4, score=1.0, pitch=PITCH) -> dict:
    """One object placed in the *ground* frame, stored in the camera frame as the format does."""
    return {"label": label, "center": ground_to_camera(np.asarray(ground_xyz, float), pitch), "dims": dims,
            "yaw": yaw, "score": score}


def image(objs: list[dict], pitch=PITCH, with_scores=False) -> dict:
    out = {"center_3d": np.array([o["center"] for o in objs]).reshape(-1, 3),
           "dims_3d": np.array([o["dims"] for o in objs], dtype=float).reshape(-1, 3),
           "yaw_3d": np.array([o["yaw"] for o in objs], dtype=float),
           "labels": np.array([o["label"] for o in objs], dtype=int)}
    if with_scores:
        out["scores"] = np.array([o["score"] for o in objs], dtype=float)
    else:
        out["camera_pitch"] = pitch
    return out


def evaluate(gt_images: list[list[dict]], pred_images: list[list[dict]], pitch=PITCH) -> dict:
    return evaluate_3d([image(g, pitch) for g in gt_images], [image(p, with_scores=True) for p in pred_images],
                       PERIODS)


SCENE = [
    [obj(BOX, (0.0, 1.0, 10.0)), obj(CYL, (3.0, 1.2, 14.0), yaw=1.0), obj(OTHER, (-4.0, 0.8, 20.0), yaw=-2.0)],
    [obj(BOX, (2.0, 1.0, 8.0), yaw=3.0), obj(BOX, (-2.0, 1.0, 8.5)), obj(CYL, (0.0, 1.1, 30.0))],
]


def test_perfect_predictions():
    out = evaluate(SCENE, SCENE)
    assert out["mAP"] == 1.0 and out["NDS"] == pytest.approx(1.0)
    for d in ("0.5", "1.0", "2.0", "4.0"):
        assert out[f"AP@{d}"] == 1.0
    for e in ("ATE", "ASE", "AOE"):
        assert out[e] == pytest.approx(0.0, abs=1e-12)
    assert set(out["per_class"]) == {BOX, CYL, OTHER}


def test_displacement_of_07m_is_tp_from_1m_and_sets_ate():
    gt = [[obj(BOX, (1.0, 1.0, 10.0))]]
    # 0.7 m on the ground (0.42, 0.56) plus 0.5 m vertically, which BEV distances ignore.
    pred = [[obj(BOX, (1.42, 1.5, 10.56))]]
    out = evaluate(gt, pred)
    assert out["AP@0.5"] == 0.0
    assert out["AP@1.0"] == out["AP@2.0"] == out["AP@4.0"] == 1.0
    assert out["mAP"] == pytest.approx(0.75)
    assert out["ATE"] == pytest.approx(0.7, abs=1e-12)
    assert out["ASE"] == pytest.approx(0.0, abs=1e-12) and out["AOE"] == pytest.approx(0.0, abs=1e-12)
    assert out["NDS"] == pytest.approx((5 * 0.75 + (1 - 0.7) + 1 + 1) / 8)


def test_pitch_is_applied_before_bev_distances():
    pitch = 0.5
    gt_g, pred_g = np.array([0.0, 1.0, 10.0]), np.array([0.0, 1.9, 10.4])  # 0.4 m apart on the ground
    gt_c, pred_c = ground_to_camera(gt_g, pitch), ground_to_camera(pred_g, pitch)
    # In the camera frame the two are > 0.5 m apart in (x, z) and in 3D: ignoring the pitch, or measuring
    # in 3D, turns the 0.5 m true positive into a false positive.
    assert np.linalg.norm((pred_c - gt_c)[[0, 2]]) > 0.5 and np.linalg.norm(pred_c - gt_c) > 0.5
    out = evaluate([[obj(BOX, gt_g, pitch=pitch)]], [[obj(BOX, pred_g, pitch=pitch)]], pitch=pitch)
    assert out["AP@0.5"] == 1.0
    assert out["ATE"] == pytest.approx(0.4, abs=1e-12)


def test_scaled_dims_give_analytic_ase():
    gt = [[obj(BOX, (0, 1, 10), dims=(1.0, 2.0, 3.0)), obj(OTHER, (3, 1, 10), dims=(1.0, 1.0, 2.0))]]
    pred = [[obj(BOX, (0, 1, 10), dims=(2.0, 1.0, 3.0)), obj(OTHER, (3, 1, 10), dims=(1.5, 1.5, 3.0))]]
    out = evaluate(gt, pred)
    ase_box = 1 - 3.0 / (6.0 + 6.0 - 3.0)  # intersection 1*1*3 of two 6 m^3 boxes
    ase_other = 1 - 1 / 1.5 ** 3  # the GT lies inside a box 1.5x larger in every direction
    assert out["per_class"][BOX]["ASE"] == pytest.approx(ase_box)
    assert out["per_class"][OTHER]["ASE"] == pytest.approx(ase_other)
    assert out["ASE"] == pytest.approx((ase_box + ase_other) / 2)
    assert out["mAP"] == 1.0 and out["ATE"] == pytest.approx(0.0, abs=1e-12)


def test_yaw_error_is_modulo_the_class_period_and_skips_symmetric_classes():
    gt = [[obj(BOX, (0, 1, 10), yaw=0.2), obj(CYL, (3, 1, 10), yaw=0.2)]]
    pred = [[obj(BOX, (0, 1, 10), yaw=0.5), obj(CYL, (3, 1, 10), yaw=1.7)]]
    out = evaluate(gt, pred)
    assert out["per_class"][BOX]["AOE"] == pytest.approx(0.3)
    assert out["per_class"][CYL]["AOE"] is None
    assert out["AOE"] == pytest.approx(0.3)  # the cylinder's 1.5 rad does not count

    flipped = [[obj(BOX, (0, 1, 10), yaw=0.2 + math.pi), obj(CYL, (3, 1, 10), yaw=0.2)]]
    assert evaluate(gt, flipped)["AOE"] == pytest.approx(0.0, abs=1e-12)  # a box looks the same turned by pi
    wrapped = [[obj(BOX, (0, 1, 10), yaw=0.2 - 0.3 + 2 * math.pi), obj(CYL, (3, 1, 10), yaw=0.2)]]
    assert evaluate(gt, wrapped)["AOE"] == pytest.approx(0.3)


def test_higher_scored_false_positive_lowers_ap_by_calc_ap():
    gt = [[obj(BOX, (0, 1, 10))]]
    fp = obj(BOX, (5, 1, 20), score=0.9)  # 11 m away: a false positive at every threshold
    out = evaluate(gt, [[fp, obj(BOX, (0, 1, 10), score=0.8)]])
    assert out["mAP"] == pytest.approx(FP_FIRST_AP)
    for d in ("0.5", "1.0", "2.0", "4.0"):
        assert out[f"AP@{d}"] == pytest.approx(FP_FIRST_AP)
    # Ranked below the true positive the same false positive costs only the point r = 1: recall 1, 1 with
    # precision 1, 1/2, so np.interp gives 1 below r = 1 (left = precision[0]) and, at r = 1 exactly,
    # the last precision of the flat run, 1/2. 89 points earn 1, r = 1 earns (1/2 - 0.1) / 0.9 = 4/9.
    low = dict(fp, score=0.7)
    assert evaluate(gt, [[low, obj(BOX, (0, 1, 10), score=0.8)]])["mAP"] == pytest.approx((89 + 4 / 9) / 90)


def test_calc_ap_recall_points_and_clipping():
    # 1 of 4 found at precision 1: recall 0.25 only, so p = 1 (left = precision[0]) up to r = 0.25
    # (hit exactly), 0 beyond (right=0): r = 0.11 ... 0.25, 15 of the 90 points above 0.1, earn 1.
    assert calc_ap(np.array([True]), num_gt=4) == pytest.approx(15 / 90)
    # Below min_recall or at min_precision nothing counts.
    assert calc_ap(np.array([True]), num_gt=20) == 0.0  # recall 0.05 < 0.11: p = 0 at all 90 points
    # Recall 0 (x9), 1 with precision 0 (x9), 1/10: p(r) = r / 10 <= 0.1 everywhere, so every point earns 0.
    assert calc_ap(np.array([False] * 9 + [True]), num_gt=1) == 0.0
    # TP then 9 FP on 1 GT: recall 1 (x10), precision 1, 1/2, ..., 1/10. Below r = 1 np.interp returns
    # precision[0] = 1; at r = 1 exactly it returns the last of the flat run, 1/10, which earns 0.
    # The later false positives cost exactly the point r = 1: AP = 89 / 90.
    assert calc_ap(np.array([True] + [False] * 9), num_gt=1) == pytest.approx(89 / 90)
    assert calc_ap(np.zeros(0, dtype=bool), num_gt=3) == 0.0
    # FP, TP, TP, FP, TP over 3 GT: recall 0, 1/3, 2/3, 2/3, 1; precision 0, 1/2, 2/3, 1/2, 3/5.
    # np.interp on the raw precision (no recall point equals 1/3 or 2/3):
    #   r in (0, 1/3):   from (0, 0) to (1/3, 1/2):      p = 3r/2
    #   r in (1/3, 2/3): from (1/3, 1/2) to (2/3, 2/3):  p = 1/3 + r/2
    #   r in (2/3, 1]:   from (2/3, 1/2) (last of the flat run at 2/3) to (1, 3/5): p = 3/10 + 3r/10
    # With r = k/100, p - 0.1 > 0 at every point, summed:
    #   k = 11..33 (23 points): 1.5 * 506 / 100 - 23 * 0.1         = 7.59 - 2.3 = 5.29
    #   k = 34..66 (33 points): 1650 / 200 + 33 * (1/3 - 0.1)      = 8.25 + 7.7 = 15.95
    #   k = 67..100 (34 points): 0.3 * 2839 / 100 + 34 * (0.3 - 0.1) = 8.517 + 6.8 = 15.317
    # total 36.557; AP = 36.557 / 90 / 0.9 = 36.557 / 81.
    expected = 36.557 / 81
    assert calc_ap(np.array([False, True, True, False, True]), num_gt=3) == pytest.approx(expected)


def devkit_ap(is_tp: np.ndarray, num_gt: int, min_recall: float = 0.1, min_precision: float = 0.1) -> float:
    """Direct transcription of nuscenes/eval/detection/algo.py: ``accumulate`` (from the sorted TP/FP
    flags on) and ``calc_ap``."""
    tp = np.cumsum(is_tp).astype(float)
    fp = np.cumsum(~is_tp).astype(float)
    prec = tp / (fp + tp)
    rec = tp / float(num_gt)
    rec_interp = np.linspace(0, 1, 101)
    prec = np.interp(rec_interp, rec, prec, right=0)
    prec = prec[round(100 * min_recall) + 1:]
    prec -= min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


def test_calc_ap_matches_devkit_transcription_on_random_sequences():
    rng = np.random.default_rng(0)
    values = []
    for n in (1, 2, 3, 5, 8, 13, 40, 200):
        for p_tp in (0.2, 0.5, 0.9):
            is_tp = rng.random(n) < p_tp
            for extra_gt in (0, 1, 7):
                num_gt = max(int(is_tp.sum()) + extra_gt, 1)
                for min_recall, min_precision in ((0.1, 0.1), (0.0, 0.0), (0.25, 0.3)):
                    got = calc_ap(is_tp, num_gt, min_recall, min_precision)
                    want = devkit_ap(is_tp, num_gt, min_recall, min_precision)
                    assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (is_tp, num_gt, min_recall)
                    values.append(want)
    assert len(set(values)) > 50 and 0.0 in values and max(values) > 0.9  # a varied sample, not a trivial one


def test_greedy_match_takes_closest_free_ground_truth_strictly_below_threshold():
    assert greedy_match(np.array([[0.3, 0.2], [0.1, 5.0]]), 1.0).tolist() == [1, 0]
    # Row 1 finds its closest GT taken and falls back to the next one, if close enough.
    assert greedy_match(np.array([[0.1, 0.2], [0.1, 0.5]]), 1.0).tolist() == [0, 1]
    assert greedy_match(np.array([[0.1, 0.2], [0.1, 3.0]]), 1.0).tolist() == [0, -1]
    assert greedy_match(np.array([[1.0]]), 1.0).tolist() == [-1]
    assert greedy_match(np.zeros((2, 0)), 1.0).tolist() == [-1, -1]


def test_predictions_are_ranked_by_score_across_images():
    gt = [[obj(BOX, (0, 1, 10))], [obj(BOX, (5, 1, 10))]]
    pred = [[obj(BOX, (0, 1, 10), score=0.5)],
            [obj(BOX, (5, 1, 30), score=0.9), obj(BOX, (5, 1, 10), score=0.4)]]
    # Globally FP (0.9), TP (0.5), TP (0.4): recall 0, 1/2, 1; precision 0, 1/2, 2/3. np.interp gives
    # p = r on [0, 1/2] and p = 1/2 + (r - 1/2) / 3 = 1/3 + r/3 on [1/2, 1]. With r = k/100:
    #   k = 11..50 (40 points): sum(k) / 100 - 40 * 0.1 = 1220 / 100 - 4 = 8.2
    #   k = 51..100 (50 points): sum(k) / 300 + 50 * (1/3 - 0.1) = 3775 / 300 + 35 / 3 = 24.25
    # total 32.45; AP = 32.45 / 90 / 0.9 = 32.45 / 81. Ranking image by image (TP, FP, TP) would wrongly
    # give precision 1 below recall 0.5.
    assert evaluate(gt, pred)["mAP"] == pytest.approx(32.45 / 81)


def test_predictions_match_only_ground_truth_of_their_image_and_class():
    gt = [[obj(BOX, (0, 1, 10))], [obj(BOX, (5, 1, 10))]]
    pred = [[obj(OTHER, (0, 1, 10))], [obj(BOX, (0, 1, 10))]]  # right place, wrong class / wrong image
    out = evaluate(gt, pred)
    assert out["mAP"] == 0.0 and set(out["per_class"]) == {BOX}
    assert out["ATE"] == 1.0 and out["ASE"] == 1.0 and out["AOE"] == 1.0  # no true positive
    assert out["NDS"] == 0.0


def test_classes_without_ground_truth_are_skipped_and_missed_classes_count():
    gt = [[obj(BOX, (0, 1, 10)), obj(OTHER, (4, 1, 12))]]
    pred = [[obj(BOX, (0, 1, 10))]]
    out = evaluate(gt, pred)
    assert out["per_class"][OTHER]["AP"] == 0.0 and out["per_class"][OTHER]["ATE"] == 1.0
    assert out["mAP"] == pytest.approx(0.5)
    assert out["ATE"] == out["ASE"] == out["AOE"] == pytest.approx(0.5)  # (0 + 1) / 2
    assert out["NDS"] == pytest.approx((5 * 0.5 + 3 * 0.5) / 8)
    # A class with predictions but no ground truth changes nothing.
    extra = evaluate(gt, [pred[0] + [obj(CYL, (9, 1, 9)), obj(CYL, (0, 1, 10))]])
    assert CYL not in extra["per_class"]
    assert {k: extra[k] for k in ("mAP", "ATE", "ASE", "AOE", "NDS")} == \
        {k: out[k] for k in ("mAP", "ATE", "ASE", "AOE", "NDS")}


def test_without_orientable_classes_aoe_is_nan_and_nds_uses_seven():
    gt = [[obj(CYL, (1.0, 1.0, 10.0))]]
    out = evaluate(gt, [[obj(CYL, (1.42, 1.0, 10.56))]])
    assert math.isnan(out["AOE"])
    assert out["NDS"] == pytest.approx((5 * 0.75 + (1 - 0.7) + 1) / 7)


def test_evaluator_accumulates_tensors_like_evaluate_3d():
    pred = [[obj(BOX, (0.3, 1, 10), score=0.9), obj(CYL, (3, 1, 14.5), yaw=0.0, score=0.6)],
            [obj(BOX, (2.0, 1, 9.0), score=0.8), obj(OTHER, (0, 1, 8.5), score=0.95)]]
    ev = Det3DEvaluator(yaw_periods_from_categories(
        [{"id": BOX, "yaw_period": math.pi}, {"id": CYL, "yaw_period": None}, {"id": OTHER, "yaw_period": math.pi}]))
    for g, p in zip(SCENE, pred):
        gt_t = {k: (torch.as_tensor(v) if k != "camera_pitch" else v) for k, v in image(g).items()}
        ev.update(gt_t, {k: torch.as_tensor(v) for k, v in image(p, with_scores=True).items()})
    expected = evaluate(SCENE, pred)
    assert ev.summarize() == expected
    assert 0 < expected["mAP"] < 1  # a mixed case, not a trivial one


def test_a_written_results_file_scores_the_same_as_the_evaluation(tmp_path):
    """The 3D detections an evaluation writes (``*.detections.3d.json``) hold everything its stats came from:
    read back with ``from_3d_results`` and scored against the same ground truth, they give the same stats,
    exactly; the float32 values of the model (as here) survive JSON bit for bit."""
    pred = [[obj(BOX, (0.3, 1, 10), score=0.9), obj(CYL, (3, 1, 14.5), yaw=0.0, score=0.6), obj(BOX, (9, 1, 9), score=0.7)],
            [obj(BOX, (2.0, 1, 9.0), score=0.8), obj(OTHER, (0, 1, 8.5), score=0.95)], []]
    scenes = [*SCENE, [obj(BOX, (1.0, 1.0, 12.0))]]  # an image without any detection
    scorer = Det3DScorer(PERIODS)
    records = {}
    for image_id, g, p in zip((30, 10, 20), scenes, pred):
        target = {k: (torch.as_tensor(v) if k != "camera_pitch" else v) for k, v in image(g).items()}
        result = {k: torch.as_tensor(v, dtype=torch.float32 if k != "labels" else torch.int64)
                  for k, v in image(p, with_scores=True).items()}
        records[image_id] = scorer.record(target, result)
    stats = scorer.score(records)
    assert 0 < stats["3d/mAP"] < 1
    (path,) = rd.write_detections(tmp_path / rd.METRICS, scorer.detections(records))
    assert path == tmp_path / "detections.3d.json"
    results = json.loads(path.read_text())
    assert [r["image_id"] for r in results] == [10, 10, 30, 30, 30]  # by image id, each image's in its order
    assert set(results[0]) == {"image_id", "category_id", "score", "center_3d", "dims_3d", "yaw_3d"}
    ids = sorted(records)
    again = evaluate_3d([records[i][0] for i in ids], from_3d_results(results, ids), PERIODS)
    assert {f"3d/{k}": v for k, v in again.items() if k != "per_class"} == stats
    assert from_3d_results(results, [20])[0]["center_3d"].shape == (0, 3)  # no detections: empty arrays


def test_invalid_inputs_raise_value_error():
    with pytest.raises(ValueError, match="yaw_periods"):
        evaluate_3d([image(SCENE[0])], [image(SCENE[0], with_scores=True)], {BOX: math.pi})
    with pytest.raises(ValueError, match="images"):
        evaluate_3d([image(SCENE[0])], [], PERIODS)
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_3d([image([])], [image([], with_scores=True)], PERIODS)
