"""The task registry: ``model.task`` -> :class:`groupdetr.heads.Task` (issue 6). Each head module declares
its task; this module only lists them, plus plain 2D detection, which adds nothing to the shared core.
Every task keeps the 2D class and box heads (their matching costs and losses are the base of every task),
so the group mechanics -- K groups, per-group matching, separate self-attention, one group at inference --
apply unchanged to every task.

- ``detection``: Conditional DETR / DAB-DETR boxes; COCO box AP.
- ``instance_segmentation`` (:mod:`groupdetr.heads.mask`): + query-based masks (Mask2Former's idea);
  mask cost in the matching; COCO box and mask AP (``segm/AP``).
- ``detection_3d`` (:mod:`groupdetr.heads.box3d`): + 3D boxes from a monocular head with PETR's
  camera-aware positional encoding; the nuScenes-style metric of :mod:`groupdetr.evaluation.det3d`
  (``3d/NDS``, ``3d/mAP``) besides box AP.
"""
from __future__ import annotations

from groupdetr.heads import Task, box3d, mask

__all__ = ["Task", "TASKS", "DETECTION", "box_loss_weights"]


def box_loss_weights(loss) -> dict[str, float]:
    """The weights of the losses every task has (classes, boxes), from :class:`groupdetr.config.LossConfig`."""
    return {"loss_ce": loss.weight_class, "loss_bbox": loss.weight_bbox, "loss_giou": loss.weight_giou}


def _box_scorers(cfg, coco_gt) -> list:
    from groupdetr.evaluation.scorers import CocoScorer

    return [CocoScorer(coco_gt, ("bbox",), cfg.train.eval_backend)]


#: ``model.task=detection``: the shared core alone; COCO box AP.
DETECTION = Task(name="detection", primary_metric="bbox/AP", scorers=_box_scorers)

TASKS: dict[str, Task] = {t.name: t for t in (DETECTION, mask.TASK, box3d.TASK)}
