"""Turn detector outputs into scored boxes in image pixels (COCO evaluation format)."""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from groupdetr.box_ops import cxcywh_to_xyxy

__all__ = ["PostProcess", "TaskPostProcess"]


class PostProcess:
    """Top-k over all (query, class) sigmoid scores, as Conditional DETR evaluates (k = 100).

    Args:
        num_select: detections kept per image.
        nms_iou: if set, class-wise NMS at this IoU runs over the top ``nms_candidates`` (query,
            class) pairs before the final top-k (our extension for naive one-to-many, whose K
            positives per object are duplicates at inference).
        nms_candidates: candidates entering NMS.
    """

    def __init__(self, num_select: int = 100, nms_iou: float | None = None, nms_candidates: int = 1000):
        self.num_select, self.nms_iou, self.nms_candidates = num_select, nms_iou, nms_candidates

    @torch.no_grad()
    def __call__(self, outputs: dict, target_sizes: torch.Tensor) -> list[dict]:
        """
        Args:
            outputs: ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4] normalised cxcywh.
            target_sizes: [B, 2] (height, width) of the original images.
        Returns:
            per image ``scores`` [k], ``labels`` [k] (long), ``boxes`` [k, 4] xyxy in pixels and
            ``query`` [k] (long), the query each detection comes from (task heads read their
            per-query outputs through it).
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        b, q, c = logits.shape
        prob = logits.sigmoid().flatten(1)
        k = min(self.nms_candidates if self.nms_iou is not None else self.num_select, q * c)
        scores, idx = prob.topk(k, dim=1)
        query, labels = idx // c, idx % c
        h, w = target_sizes.unbind(1)
        scale = torch.stack([w, h, w, h], dim=1)[:, None, :].to(boxes.dtype)
        xyxy = cxcywh_to_xyxy(torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))) * scale
        results = []
        for i in range(b):
            s, l, bx, qi = scores[i], labels[i], xyxy[i], query[i]
            if self.nms_iou is not None:
                keep = batched_nms(bx, s, l, self.nms_iou)[: self.num_select]
                s, l, bx, qi = s[keep], l[keep], bx[keep], qi[keep]
            results.append({"scores": s, "labels": l, "boxes": bx, "query": qi})
        return results


class TaskPostProcess:
    """:class:`PostProcess` followed by the task's terms ``(outputs, results, targets) -> None``
    (masks, 3D boxes; ``groupdetr.tasks``). Called as ``(outputs, targets)``: image sizes come from
    each target's ``orig_size``."""

    def __init__(self, core: PostProcess, terms=()):
        self.core, self.terms = core, tuple(terms)

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict]) -> list[dict]:
        sizes = torch.stack([t["orig_size"] for t in targets]).to(outputs["pred_boxes"].device)
        results = self.core(outputs, sizes)
        for term in self.terms:
            term(outputs, results, targets)
        return results
