"""The fixed-boxes baseline: the AP of predicting the same boxes for every image.

A DETR-family detector in its early plateau predicts (nearly) the same boxes whatever the image: its
queries have learnt where objects tend to be, not where they are. This baseline makes that level
explicit, so that "the model learnt something" means "above this": per category, the training split's
boxes (normalised cxcywh) are clustered with k-means into a share of ``num_boxes`` proportional to the
category's frequency; each cluster centre becomes one prediction for every image, scored by the share
of training boxes in its cluster. Scored on the val split by the same COCO evaluation as the models.

No torch: numpy, scipy and pycocotools only.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from scipy.cluster.vq import kmeans2

from groupdetr.evaluation.coco import evaluate_coco

__all__ = ["fixed_boxes", "fixed_boxes_results", "fixed_boxes_stats"]


def _normalised_boxes(data: dict) -> dict[int, np.ndarray]:
    """Category id -> [n, 4] cxcywh of its (non-crowd) boxes, normalised by the image size."""
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    out: dict[int, list] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or ann["image_id"] not in sizes:
            continue
        w, h = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        if bw <= 0 or bh <= 0:
            continue
        out.setdefault(ann["category_id"], []).append([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h])
    return {c: np.asarray(v, dtype=np.float64) for c, v in out.items()}


def fixed_boxes(train: dict, num_boxes: int = 100, seed: int = 0) -> list[tuple[int, np.ndarray, float]]:
    """The fixed predictions learnt from a training annotation dict.

    Returns ``(category_id, cxcywh [4] normalised, score)`` triples, at most ``num_boxes`` in total,
    at least one per category that has boxes.
    """
    per_cat = _normalised_boxes(train)
    total = sum(len(b) for b in per_cat.values())
    rng = np.random.default_rng(seed)
    out = []
    for cat, boxes in sorted(per_cat.items()):
        distinct = len(np.unique(boxes, axis=0))
        k = int(min(distinct, max(1, round(num_boxes * len(boxes) / total))))
        if k > 1:
            with warnings.catch_warnings():  # an empty cluster is dropped below, no need to warn
                warnings.simplefilter("ignore")
                centres, labels = kmeans2(boxes, k, minit="++", rng=rng, missing="warn")
        else:
            centres, labels = boxes.mean(0, keepdims=True), np.zeros(len(boxes), dtype=int)
        counts = np.bincount(labels, minlength=k)
        out += [(cat, centres[i], counts[i] / total) for i in range(k) if counts[i] > 0]
    return sorted(out, key=lambda t: -t[2])[:num_boxes]


def fixed_boxes_results(boxes: list[tuple[int, np.ndarray, float]], images: list[dict]) -> list[dict]:
    """COCO result dicts: every fixed box on every image (xywh in that image's pixels)."""
    results = []
    for img in images:
        w, h = img["width"], img["height"]
        for cat, (cx, cy, bw, bh), score in boxes:
            x0, y0 = max(0.0, (cx - bw / 2) * w), max(0.0, (cy - bh / 2) * h)
            x1, y1 = min(float(w), (cx + bw / 2) * w), min(float(h), (cy + bh / 2) * h)
            results.append({"image_id": img["id"], "category_id": int(cat), "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score)})
    return results


def fixed_boxes_stats(train_ann: str | Path, val_ann: str | Path, num_boxes: int = 100, seed: int = 0) -> dict:
    """COCO bbox stats on ``val_ann`` of the fixed boxes learnt from ``train_ann`` (annotation JSON files)."""
    train, val = json.loads(Path(train_ann).read_text()), json.loads(Path(val_ann).read_text())
    results = fixed_boxes_results(fixed_boxes(train, num_boxes, seed), val["images"])
    return {f"bbox/{k}": v for k, v in evaluate_coco(val, results, "bbox").items()}
