"""Scorers: how a task's predictions become evaluation stats, one image at a time.

A scorer is what :attr:`groupdetr.heads.Task.scorers` returns, one per metric family the task reports.
The engine knows nothing else about metrics: for every image it asks each scorer for a small picklable
``record(target, result)``, gathers the records of every rank (keyed by image id, so an image a
distributed sampler repeated counts once), and calls ``score(records)`` for the stats, and
``detections(records)`` for the detections they were computed from when an evaluation writes them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from groupdetr.evaluation.coco import CocoEvaluator, results_for, to_coco_results
from groupdetr.evaluation.det3d import Det3DEvaluator, to_3d_results

__all__ = ["Scorer", "CocoScorer", "Det3DScorer"]


class Scorer(Protocol):
    def record(self, target: Mapping, result: Mapping) -> Any:
        """What this scorer keeps of one image (CPU, picklable): ``target`` is the image's target dict,
        ``result`` its postprocessed detections (tensors on the CPU)."""

    def score(self, records: Mapping[int, Any]) -> dict[str, float]:
        """The stats (``<family>/<stat>``) of every image's record, ``{image id: record}``."""

    def detections(self, records: Mapping[int, Any]) -> dict[str, list[dict]]:
        """The detections that :meth:`score` scores, as files keep them: ``{kind: results list}`` (plain JSON
        values), each kind a file (``bbox``, ``segm``: COCO results that ``COCO.loadRes`` reads; ``3d``)."""


class CocoScorer:
    """COCO AP of ``iou_types`` (``bbox``, ``segm``) against ``coco_gt`` (the dataset's COCO object or
    annotation file): ``bbox/AP`` ... ``segm/AP`` ... . Masks are RLE-encoded per image as they come, so no
    full-size mask is kept (COCO val would need ~150 GB of boolean masks otherwise)."""

    def __init__(self, coco_gt, iou_types: Sequence[str], backend: str = "pycocotools"):
        self.coco_gt, self.iou_types, self.backend = coco_gt, tuple(iou_types), backend

    def record(self, target: Mapping, result: Mapping) -> list[dict]:
        image_id = int(target["image_id"])
        return to_coco_results({image_id: result})

    def score(self, records: Mapping[int, list[dict]]) -> dict[str, float]:
        evaluator = CocoEvaluator(self.coco_gt, backend=self.backend)
        evaluator.img_ids = sorted(records)
        evaluator.results = [res for image_id in evaluator.img_ids for res in records[image_id]]
        return evaluator.summarize(self.iou_types)

    def detections(self, records: Mapping[int, list[dict]]) -> dict[str, list[dict]]:
        """One COCO results list per IoU type, in the order :meth:`score` evaluates them, with only the fields
        that type needs (:func:`groupdetr.evaluation.coco.results_for`: ``segm`` results carry the mask RLE
        and no ``bbox``, so ``loadRes`` takes their area from the mask as the stats did)."""
        results = [res for image_id in sorted(records) for res in records[image_id]]
        return {iou_type: results_for(results, iou_type) for iou_type in self.iou_types}


class Det3DScorer:
    """The nuScenes-style 3D metric of :mod:`groupdetr.evaluation.det3d` (``3d/mAP``, ``3d/NDS``, ``3d/ATE``
    ...), the ground truth read from each image's target; ``yaw_periods``: ``{category id: period or None}``."""

    def __init__(self, yaw_periods: Mapping[int, float | None]):
        self.yaw_periods = dict(yaw_periods)

    def record(self, target: Mapping, result: Mapping) -> tuple[dict, dict]:
        gt = {k: target[k].cpu() if hasattr(target[k], "cpu") else target[k] for k in Det3DEvaluator.GT_KEYS}
        return gt, {k: result[k] for k in Det3DEvaluator.PRED_KEYS}

    def score(self, records: Mapping[int, tuple[dict, dict]]) -> dict[str, float]:
        det3d = Det3DEvaluator(self.yaw_periods)
        for image_id in sorted(records):
            det3d.update(*records[image_id])
        return {f"3d/{k}": v for k, v in det3d.summarize().items() if k != "per_class"}

    def detections(self, records: Mapping[int, tuple[dict, dict]]) -> dict[str, list[dict]]:
        """``{"3d": results}`` in the format of :mod:`groupdetr.evaluation.det3d` (:func:`to_3d_results`)."""
        return {"3d": to_3d_results({image_id: records[image_id][1] for image_id in sorted(records)})}
