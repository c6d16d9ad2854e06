"""The loss terms every set prediction shares (the matched queries of the criterion, the denoising queries
of DN), as pure functions, and the count they are normalised by."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from groupdetr.box_ops import cxcywh_to_xyxy

__all__ = ["global_count", "class_and_box_losses"]


def global_count(count: float, device: torch.device) -> torch.Tensor:
    """``count`` summed over every rank and divided by the world size, clamped to >= 1 (as the authors'
    code): under DDP each rank divides its local loss sum by this, and gradient averaging over ranks then
    yields the global per-box mean. A 0-dim float tensor on ``device``."""
    n = torch.tensor(float(count), device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        world = dist.get_world_size()
    return (n / world).clamp(min=1.0)


def class_and_box_losses(logits: torch.Tensor, onehot: torch.Tensor, src_boxes: torch.Tensor,
                         tgt_boxes: torch.Tensor, num: torch.Tensor, alpha: float, gamma: float,
                         suffix: str = "") -> dict[str, torch.Tensor]:
    """DETR's three losses, each summed and divided by ``num``.

    Args:
        logits, onehot: class logits and their one-hot targets, any matching shape (``[B, Q, C]`` for
            every query of the criterion, ``[P, C]`` for the denoising queries).
        src_boxes, tgt_boxes: ``[P, 4]`` paired boxes, normalised cxcywh.
        num: the normaliser (:func:`global_count`).
        alpha, gamma: sigmoid focal loss parameters.
        suffix: appended to every name (``"_dn"``: the denoising losses).
    Returns:
        ``loss_ce`` (sigmoid focal), ``loss_bbox`` (L1), ``loss_giou`` (1 - GIoU, paired: O(P), where DETR's
        ``diag(generalized_box_iou(...))`` builds a P x P matrix, and with groups P = K * #GT, so its cost
        and its backward's would grow with K^2), each with ``suffix``.
    """
    loss_ce = sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="sum")
    loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="sum")
    loss_giou = generalized_box_iou_loss(cxcywh_to_xyxy(src_boxes), cxcywh_to_xyxy(tgt_boxes), reduction="sum")
    return {f"loss_ce{suffix}": loss_ce / num, f"loss_bbox{suffix}": loss_bbox / num,
            f"loss_giou{suffix}": loss_giou / num}
