"""What the detector predicts, how it is matched, trained, postprocessed and evaluated: one registry
entry per ``model.task`` (issue 6). Every task keeps the 2D class and box heads (their matching
costs and losses are the base of every task; a head adds its own terms on top), so the group
mechanics -- K groups, per-group matching, separate self-attention, first group at inference --
apply unchanged to every task.

- ``detection``: Conditional DETR / DAB-DETR boxes; COCO box AP.
- ``instance_segmentation``: + query-based masks (``groupdetr.heads.mask``, Mask2Former's idea);
  mask cost in the matching; COCO box and mask AP (``segm/AP``).
- ``detection_3d``: + 3D boxes from a monocular head with PETR's camera-aware positional encoding
  (``groupdetr.heads.box3d``); the nuScenes-style metric of ``groupdetr.evaluation.det3d``
  (``3d/NDS``, ``3d/mAP``) besides box AP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Task", "TASKS"]


def _none(*args, **kwargs):
    return None


def _empty(*args, **kwargs):
    return []


@dataclass(frozen=True)
class Task:
    """A registry entry. Factories take the resolved config (``Config`` or ``ModelConfig`` for the
    head) and return the head module, lists of matching-cost terms, loss terms and postprocess terms.

    Term signatures:
        cost: ``(outputs, image index, target) -> [Q, M]`` weighted cost, added before Hungarian.
        loss: ``(outputs, targets, indices, num_boxes) -> {name: unweighted loss}`` per layer.
        postprocess: ``(outputs, results, targets) -> None``, adding keys to each image's result.
    """

    name: str
    needs_masks: bool
    needs_3d: bool
    iou_types: tuple[str, ...]  # COCO evaluations
    evaluate_3d: bool
    primary_metric: str
    head: Callable = _none  # (ModelConfig, backbone) -> nn.Module | None
    cost_terms: Callable = _empty  # Config -> list
    loss_terms: Callable = _empty  # Config -> list
    postprocess_terms: Callable = _empty  # (Config, yaw_periods | None) -> list


def _mask_head(cfg, backbone):
    from groupdetr.heads.mask import build_mask_head

    return build_mask_head(cfg, backbone)


def _mask_costs(cfg):
    from groupdetr.heads.mask import mask_cost_term

    return [mask_cost_term(cfg)]


def _mask_losses(cfg):
    from groupdetr.heads.mask import mask_loss_term

    return [mask_loss_term(cfg)]


def _mask_post(cfg, yaw_periods=None):
    from groupdetr.heads.mask import mask_postprocess_term

    return [mask_postprocess_term(cfg)]


def _box3d_head(cfg, backbone):
    from groupdetr.heads.box3d import build_box3d_head

    return build_box3d_head(cfg, backbone)


def _box3d_losses(cfg):
    from groupdetr.heads.box3d import box3d_loss_term

    return [box3d_loss_term(cfg)]


def _box3d_post(cfg, yaw_periods=None):
    from groupdetr.heads.box3d import box3d_postprocess_term

    return [box3d_postprocess_term(cfg, yaw_periods)]


TASKS: dict[str, Task] = {
    "detection": Task("detection", needs_masks=False, needs_3d=False, iou_types=("bbox",), evaluate_3d=False,
                      primary_metric="bbox/AP"),
    "instance_segmentation": Task("instance_segmentation", needs_masks=True, needs_3d=False, iou_types=("bbox", "segm"),
                                  evaluate_3d=False, primary_metric="segm/AP", head=_mask_head, cost_terms=_mask_costs,
                                  loss_terms=_mask_losses, postprocess_terms=_mask_post),
    "detection_3d": Task("detection_3d", needs_masks=False, needs_3d=True, iou_types=("bbox",), evaluate_3d=True,
                         primary_metric="3d/NDS", head=_box3d_head, loss_terms=_box3d_losses,
                         postprocess_terms=_box3d_post),
}


def yaw_periods(task: str, categories: list[dict]) -> dict | None:
    """{category id: yaw period or None} for the 3D task (from the dataset's categories), else None."""
    if not TASKS[task].evaluate_3d:
        return None
    from groupdetr.evaluation.det3d import yaw_periods_from_categories

    return yaw_periods_from_categories(categories)
