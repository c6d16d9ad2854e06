"""Box conversions and pairwise IoU, thin wrappers over ``torchvision.ops``.

Boxes are ``[..., 4]`` tensors; ``cxcywh`` boxes are normalised to [0, 1] as in DETR.
"""
from __future__ import annotations

import torch
from torchvision.ops import box_convert, box_iou, generalized_box_iou

__all__ = ["cxcywh_to_xyxy", "xyxy_to_cxcywh", "box_iou", "generalized_box_iou", "inverse_sigmoid"]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1)."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h)."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Numerically safe logit, as in Conditional/Deformable DETR (clamps to [eps, 1 - eps])."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
