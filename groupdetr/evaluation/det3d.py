"""3D detection metric in the style of nuScenes (Caesar et al., CVPR 2020): mAP over BEV
centre-distance thresholds, true-positive errors, and an NDS-style composite.

Inputs are per-image dicts in the *camera* frame (see ``docs/annotation-format.md``):
``center_3d`` [M, 3] metres, ``dims_3d`` [M, 3] (w, h, l), ``yaw_3d`` [M] radians about gravity,
``labels`` [M] category ids; predictions add ``scores`` [P]; the ground-truth dict carries the image's
``camera_pitch``. Centres are rotated into the ground frame with
:func:`groupdetr.geometry.camera_to_ground` before any distance is taken, so a distance is measured on
the ground plane (x_g, z_g), not along the tilted optical axis. Yaw is already about gravity and is used
as is.

**Matching.** Per class, predictions of all images are taken by descending score; each is matched to the
closest not-yet-matched ground truth of its class *in its own image* by BEV centre distance, and is a true
positive if that distance is < d (strict, as the nuScenes devkit), for d in D = (0.5, 1, 2, 4) m.

**AP** per (class, d), exactly as the nuScenes devkit (``nuscenes/eval/detection/algo.py``,
``accumulate`` then ``calc_ap``): over the predictions by descending score, precision = TP / (TP + FP)
and recall = TP / #GT after each prediction; the precision p(r) at the 101 recall points
r = 0, 0.01, ..., 1 (``np.linspace(0, 1, 101)``) is ``np.interp(r, recall, precision, right=0)``, i.e.
*linear interpolation of the raw precision* (no envelope, so the saw-tooth between recall steps counts:
one ground truth found after one higher-scored false positive gives AP 0.2), precision[0] below the
first recall and 0 beyond the highest recall reached. Where the recall stays flat over false positives,
``np.interp`` takes the last (lowest) precision of the flat run at that recall and interpolates on from
there; so false positives ranked after the last true positive still cost the point r = 1 when every
object is found (true positive then false positive on one object: AP = (89 + 4/9) / 90). Then

    AP = mean over r > min_recall of max(p(r) - min_precision, 0) / (1 - min_precision),

with min_recall = min_precision = 0.1: the 90 points r = 0.11 ... 1.00, so operating points below 10%
recall or 10% precision earn nothing. Without predictions AP = 0.

**TP errors**, from the matches at d = 2 m (as nuScenes), each the mean over the class's true positives:
ATE = BEV centre distance (m); ASE = 1 - IoU of the two boxes after aligning centre and yaw
(prod(min(dims)) / (vol_a + vol_b - prod(min(dims)))); AOE = smallest absolute yaw difference modulo the
class's ``yaw_period`` (pi for boxes), rad. A class whose period is None (rotation-symmetric) has no AOE,
as nuScenes drops cones. A class without any true positive gets error 1 (nuScenes' convention: its TP
score below is then 0). Deviation: nuScenes averages the running mean error over recall points from 10%
to the maximum recall; we take the plain mean over true positives.

**Averaging.** A class with no ground truth is skipped (its predictions are not scored at all).
mAP = mean over classes with ground truth and over D; each error is the mean over the classes that have
it. NDS keeps nuScenes' weighting, mAP counting as much as all TP metrics together (five there):

    NDS = (5 * mAP + sum over (ATE, ASE, AOE) of (1 - min(1, err))) / 8

8 = 5 + our three TP metrics where nuScenes has 10 = 5 + five (velocity and attributes do not exist
here). If no evaluated class has an orientation, AOE is NaN and drops out: NDS = (5 mAP + ...) / 7.

**Results file** (``*.detections.3d.json``, written beside the stats of every evaluation of a 3D run; see
:func:`to_3d_results`): a JSON list with one object per detection, COCO-results style,

    {"image_id": int, "category_id": int, "score": float,
     "center_3d": [x, y, z], "dims_3d": [w, h, l], "yaw_3d": float}

in the annotation format's conventions (``docs/annotation-format.md``): the centre in metres in the camera
frame of the image (x right, y down, z forward), the size in metres (width across, height vertical, length
along the yaw axis), the yaw in radians about gravity (length axis along (cos yaw, sin yaw) in BEV
(x_g, z_g)), decoded with the period of the detection's class. To score a file against the annotation
file (``ann``: its JSON)::

    ids = sorted(img["id"] for img in ann["images"])
    evaluate_3d(ground_truth_3d(ann, ids), from_3d_results(json.load(open(f)), ids),
                yaw_periods_from_categories(ann["categories"]))

The engine scores ground truth that went through the model's float32 inputs; from the file's float64 the
stats agree to float32 rounding (~1e-7).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from groupdetr.geometry import camera_to_ground

__all__ = ["DIST_THRESHOLDS", "TP_THRESHOLD", "MIN_RECALL", "MIN_PRECISION", "TP_ERRORS", "bev_centres",
           "aligned_box_iou", "yaw_error", "greedy_match", "calc_ap", "yaw_periods_from_categories",
           "evaluate_3d", "Det3DEvaluator", "RESULT_BOX_KEYS", "to_3d_results", "from_3d_results",
           "ground_truth_3d"]

DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
"""BEV centre-distance thresholds D (m) of the AP."""
TP_THRESHOLD = 2.0
"""Matching threshold (m) whose true positives give the TP errors."""
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
TP_ERRORS = ("ATE", "ASE", "AOE")


# ---- pure math -------------------------------------------------------------------------------------

def bev_centres(centres: np.ndarray, pitch: float) -> np.ndarray:
    """[N, 3] camera-frame centres -> [N, 2] ground-plane (x_g, z_g)."""
    return camera_to_ground(np.asarray(centres, dtype=np.float64).reshape(-1, 3), pitch)[:, [0, 2]]


def aligned_box_iou(dims_a: np.ndarray, dims_b: np.ndarray) -> np.ndarray:
    """[N, 3], [N, 3] box sizes -> [N] 3D IoU once centres and yaw coincide."""
    inter = np.prod(np.minimum(dims_a, dims_b), axis=-1)
    return inter / (np.prod(dims_a, axis=-1) + np.prod(dims_b, axis=-1) - inter)


def yaw_error(yaw_a: np.ndarray, yaw_b: np.ndarray, period: float) -> np.ndarray:
    """[N], [N] yaws -> [N] smallest |yaw_a - yaw_b| modulo ``period``, in [0, period / 2]."""
    diff = np.mod(np.asarray(yaw_a) - np.asarray(yaw_b), period)
    return np.minimum(diff, period - diff)


def greedy_match(dist: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy nuScenes matching within one image and class.

    Args:
        dist: [P, M] prediction-to-ground-truth distances, rows in descending score order.
        threshold: a match needs distance < threshold.
    Returns:
        [P] index of the matched ground truth, -1 for a false positive.
    """
    match = np.full(dist.shape[0], -1, dtype=np.int64)
    free = np.ones(dist.shape[1], dtype=bool)
    for i, row in enumerate(dist):
        if not free.any():
            break
        # The closest *free* ground truth decides, even if a taken one is closer (as the devkit).
        j = int(np.argmin(np.where(free, row, np.inf)))
        if row[j] < threshold:
            match[i], free[j] = j, False
    return match


def calc_ap(is_tp: np.ndarray, num_gt: int, min_recall: float = MIN_RECALL,
            min_precision: float = MIN_PRECISION) -> float:
    """nuScenes devkit AP of one class at one threshold (formula in the module docstring).

    Args:
        is_tp: [P] bool, predictions in descending score order.
        num_gt: ground-truth objects of the class (> 0).
    """
    if len(is_tp) == 0:
        return 0.0
    is_tp = np.asarray(is_tp, dtype=bool)
    tp = np.cumsum(is_tp).astype(float)
    fp = np.cumsum(~is_tp).astype(float)
    prec = tp / (tp + fp)
    rec = tp / float(num_gt)
    p = np.interp(np.linspace(0, 1, 101), rec, prec, right=0)
    p = p[round(100 * min_recall) + 1:]  # +1: the point at min_recall itself is excluded (devkit)
    # The devkit subtracts, clips, averages, then divides by (1 - min_precision); normalising each
    # point before the mean is the same AP and keeps a perfect AP exactly 1.0 (0.9 / 0.9 per point).
    return float(np.mean(np.maximum((p - min_precision) / (1.0 - min_precision), 0.0)))


def yaw_periods_from_categories(categories: Sequence[Mapping]) -> dict[int, float | None]:
    """COCO ``categories`` (with the synth ``yaw_period`` key) -> ``{category_id: period or None}``."""
    return {int(c["id"]): c.get("yaw_period") for c in categories}


# ---- evaluation ------------------------------------------------------------------------------------

def _numpy(x, dtype=None) -> np.ndarray:
    """Torch tensor (any device) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass(frozen=True)
class _Objects:
    """Boxes of one image (optionally one class): ``bev`` [N, 2], ``dims`` [N, 3], ``yaw`` [N],
    ``labels`` [N], ``scores`` [N] (ones for ground truth)."""

    bev: np.ndarray
    dims: np.ndarray
    yaw: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_dict(cls, d: Mapping, pitch: float) -> _Objects:
        labels = _numpy(d["labels"], np.int64).reshape(-1)
        scores = _numpy(d["scores"], np.float64).reshape(-1) if "scores" in d else np.ones(len(labels))
        return cls(bev_centres(_numpy(d["center_3d"], np.float64), pitch),
                   _numpy(d["dims_3d"], np.float64).reshape(-1, 3), _numpy(d["yaw_3d"], np.float64).reshape(-1),
                   labels, scores)

    @classmethod
    def concat(cls, objs: Sequence[_Objects]) -> _Objects:
        return cls(*(np.concatenate([getattr(o, f.name) for o in objs]) for f in fields(cls)))

    def select(self, keep: np.ndarray) -> _Objects:
        """Rows ``keep`` (indices or mask) of every field."""
        return _Objects(*(getattr(self, f.name)[keep] for f in fields(self)))

    def of_class(self, label: int) -> _Objects:
        """This class only, by descending score (stable, so ties keep their input order)."""
        keep = np.flatnonzero(self.labels == label)
        return self.select(keep[np.argsort(-self.scores[keep], kind="stable")])


def _match_class(images: list[tuple[_Objects, _Objects]], threshold: float) -> tuple[np.ndarray, list]:
    """Match one class over all images.

    Args:
        images: per image (ground truth, predictions by descending score) of the class.
    Returns:
        [P] bool true positives of all predictions by descending score; per image the [P_i] match
        indices of :func:`greedy_match`.
    """
    # A ground truth can only take predictions of its own image, so greedy matching image by image
    # gives the same matches as one pass over all predictions by score; only the TP/FP sequence needs
    # the global order.
    matches = [greedy_match(np.linalg.norm(p.bev[:, None] - g.bev[None], axis=-1), threshold) for g, p in images]
    scores = np.concatenate([p.scores for _, p in images])
    is_tp = np.concatenate(matches) >= 0
    return is_tp[np.argsort(-scores, kind="stable")], matches


def _tp_errors(images: list[tuple[_Objects, _Objects]], matches: list, period: float | None) -> dict:
    """Mean ATE/ASE/AOE over the true positives of one class (1 without any; AOE None if no period)."""
    pairs = [(g.select(m[m >= 0]), p.select(np.flatnonzero(m >= 0))) for (g, p), m in zip(images, matches)]
    g = _Objects.concat([g for g, _ in pairs])
    p = _Objects.concat([p for _, p in pairs])
    if len(g.labels) == 0:
        return {"ATE": 1.0, "ASE": 1.0, "AOE": None if period is None else 1.0}
    return {
        "ATE": float(np.mean(np.linalg.norm(g.bev - p.bev, axis=-1))),
        "ASE": float(np.mean(1.0 - aligned_box_iou(g.dims, p.dims))),
        "AOE": None if period is None else float(np.mean(yaw_error(p.yaw, g.yaw, period))),
    }


def _ap_key(d: float) -> str:
    return f"AP@{d:.1f}"


def _evaluate_class(images: list[tuple[_Objects, _Objects]], label: int, period: float | None) -> dict:
    """AP at each threshold, their mean, and the TP errors of one class."""
    images = [(g.of_class(label), p.of_class(label)) for g, p in images]
    num_gt = sum(len(g.labels) for g, _ in images)
    matched = {d: _match_class(images, d) for d in {*DIST_THRESHOLDS, TP_THRESHOLD}}
    out = {_ap_key(d): calc_ap(matched[d][0], num_gt) for d in DIST_THRESHOLDS}
    out["AP"] = float(np.mean(list(out.values())))
    out.update(_tp_errors(images, matched[TP_THRESHOLD][1], period))
    return out


def _nds(mean_ap: float, errors: dict[str, float]) -> float:
    """NDS-style composite; an undefined (NaN) error drops out of numerator and denominator."""
    scores = [1.0 - min(1.0, e) for e in errors.values() if not math.isnan(e)]
    return (5.0 * mean_ap + sum(scores)) / (5.0 + len(scores))


def _mean_defined(values: list) -> float:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else math.nan


def evaluate_3d(gts: Sequence[Mapping], preds: Sequence[Mapping],
                yaw_periods: Mapping[int, float | None]) -> dict:
    """nuScenes-style 3D detection metric (definitions in the module docstring).

    Args:
        gts: per image ``center_3d`` [M, 3], ``dims_3d`` [M, 3], ``yaw_3d`` [M], ``labels`` [M],
            ``camera_pitch`` (rad); numpy arrays or tensors.
        preds: per image (same order) the same keys without ``camera_pitch``, plus ``scores`` [P].
        yaw_periods: ``{category_id: period or None}`` for every class with ground truth, e.g. from
            :func:`yaw_periods_from_categories`.
    Returns:
        ``mAP``, ``AP@0.5``, ``AP@1.0``, ``AP@2.0``, ``AP@4.0`` (mean over classes), ``ATE``, ``ASE``,
        ``AOE``, ``NDS``, and ``per_class``: ``{category_id: {"AP", "AP@0.5", ..., "ATE", "ASE",
        "AOE" (None without a yaw period)}}``.
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction images")
    images = [(_Objects.from_dict(g, float(g["camera_pitch"])), _Objects.from_dict(p, float(g["camera_pitch"])))
              for g, p in zip(gts, preds)]
    labels = sorted({int(c) for g, _ in images for c in g.labels})
    if not labels:
        raise ValueError("no ground-truth objects to evaluate")
    missing = [c for c in labels if c not in yaw_periods]
    if missing:
        raise ValueError(f"yaw_periods has no entry for categories {missing}")
    per_class = {c: _evaluate_class(images, c, yaw_periods[c]) for c in labels}
    out = {"mAP": float(np.mean([r["AP"] for r in per_class.values()]))}
    out.update({_ap_key(d): float(np.mean([r[_ap_key(d)] for r in per_class.values()])) for d in DIST_THRESHOLDS})
    out.update({e: _mean_defined([r[e] for r in per_class.values()]) for e in TP_ERRORS})
    out["NDS"] = _nds(out["mAP"], {e: out[e] for e in TP_ERRORS})
    out["per_class"] = per_class
    return out


RESULT_BOX_KEYS = ("center_3d", "dims_3d", "yaw_3d")
"""The 3D box of a detection in a results file (with ``image_id``, ``category_id``, ``score``)."""


def to_3d_results(predictions: Mapping[int, Mapping]) -> list[dict]:
    """Per-image 3D predictions -> the results list of the module docstring (JSON-serialisable).

    Args:
        predictions: ``{image_id: {"center_3d": [k, 3], "dims_3d": [k, 3], "yaw_3d": [k], "labels": [k]
            category ids, "scores": [k]}}`` (tensors or arrays), as :func:`evaluate_3d` takes them.
    Returns:
        ``[{"image_id", "category_id", "score", "center_3d", "dims_3d", "yaw_3d"}]``, image by image in the
        order given, each image's detections in their order (so :func:`from_3d_results` gives them back
        as they were).
    """
    out = []
    for image_id, pred in predictions.items():
        centres = _numpy(pred["center_3d"], np.float64).reshape(-1, 3)
        dims = _numpy(pred["dims_3d"], np.float64).reshape(-1, 3)
        yaws = _numpy(pred["yaw_3d"], np.float64).reshape(-1)
        labels = _numpy(pred["labels"], np.int64).reshape(-1)
        scores = _numpy(pred["scores"], np.float64).reshape(-1)
        out += [{"image_id": int(image_id), "category_id": int(c), "score": float(s), "center_3d": centre.tolist(),
                 "dims_3d": size.tolist(), "yaw_3d": float(yaw)}
                for centre, size, yaw, c, s in zip(centres, dims, yaws, labels, scores)]
    return out


def from_3d_results(results: Sequence[Mapping], image_ids: Sequence[int]) -> list[dict]:
    """A results list (:func:`to_3d_results`, or its file) -> the predictions of ``image_ids``, in that
    order, as :func:`evaluate_3d` takes them (numpy arrays; no detections: empty arrays). Results of other
    images are ignored."""
    per_image: dict[int, list] = {int(i): [] for i in image_ids}
    for r in results:
        if int(r["image_id"]) in per_image:
            per_image[int(r["image_id"])].append(r)
    return [{**_box_arrays(rows), "scores": np.asarray([r["score"] for r in rows], np.float64).reshape(-1)}
            for rows in (per_image[int(i)] for i in image_ids)]


def _box_arrays(rows: Sequence[Mapping]) -> dict:
    """``center_3d`` [n, 3], ``dims_3d`` [n, 3], ``yaw_3d`` [n], ``labels`` [n] (``category_id``) of result or
    annotation dicts."""
    return {"center_3d": np.asarray([r["center_3d"] for r in rows], np.float64).reshape(-1, 3),
            "dims_3d": np.asarray([r["dims_3d"] for r in rows], np.float64).reshape(-1, 3),
            "yaw_3d": np.asarray([r["yaw_3d"] for r in rows], np.float64).reshape(-1),
            "labels": np.asarray([r["category_id"] for r in rows], np.int64).reshape(-1)}


def _usable(ann: Mapping, image: Mapping) -> bool:
    """Whether the dataset keeps ``ann`` (``groupdetr.data.coco``): not a crowd region, not empty once
    clipped to the image."""
    x, y, w, h = ann["bbox"]
    width, height = image["width"], image["height"]
    return (not ann.get("iscrowd", 0) and min(max(x + w, 0.0), width) > min(max(x, 0.0), width)
            and min(max(y + h, 0.0), height) > min(max(y, 0.0), height))


def ground_truth_3d(dataset: Mapping, image_ids: Sequence[int]) -> list[dict]:
    """The ground truth of ``image_ids`` (in that order) from a COCO annotation dict with the 3D keys of
    ``docs/annotation-format.md``, as :func:`evaluate_3d` takes it: the annotations the dataset trains and
    scores on (no crowd regions, no boxes empty in the image), the image's ``camera_pitch``."""
    images = {int(img["id"]): img for img in dataset["images"]}
    per_image: dict[int, list] = {int(i): [] for i in image_ids}
    for ann in dataset["annotations"]:
        image_id = int(ann["image_id"])
        if image_id in per_image and _usable(ann, images[image_id]):
            per_image[image_id].append(ann)
    return [{**_box_arrays(per_image[int(i)]), "camera_pitch": float(images[int(i)]["camera_pitch"])}
            for i in image_ids]


class Det3DEvaluator:
    """Accumulates per-image ground truth and predictions, then runs :func:`evaluate_3d` once.

    ``gts`` and ``preds`` are plain lists of dicts of numpy arrays, so a distributed run can gather and
    concatenate them before :meth:`summarize`.
    """

    GT_KEYS = ("center_3d", "dims_3d", "yaw_3d", "labels", "camera_pitch")
    PRED_KEYS = ("center_3d", "dims_3d", "yaw_3d", "labels", "scores")

    def __init__(self, yaw_periods: Mapping[int, float | None]):
        self.yaw_periods = dict(yaw_periods)
        self.gts: list[dict] = []
        self.preds: list[dict] = []

    def update(self, image_gt: Mapping, image_pred: Mapping) -> None:
        """Add one image (keys as in :func:`evaluate_3d`); tensors are copied to numpy."""
        self.gts.append({k: _numpy(image_gt[k]).copy() for k in self.GT_KEYS})
        self.preds.append({k: _numpy(image_pred[k]).copy() for k in self.PRED_KEYS})

    def summarize(self) -> dict:
        """:func:`evaluate_3d` over everything added so far."""
        return evaluate_3d(self.gts, self.preds, self.yaw_periods)
