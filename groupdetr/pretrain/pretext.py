"""The pretext network: a backbone's stages, each read by a small dense head, and its losses.

Every stage of ``forward_features`` gets its own head, Conv3x3 -> ReLU -> Conv1x1, predicting per cell
``C + 1`` occupancy logits, one centre logit and four extent values (sigmoid: fractions of the image).
The finer stages are supervised too, because the mask head's pixel decoder reads them (and a
multi-scale decoder would). Losses per stage, averaged over stages and over valid (non-padding) cells:

- occupancy: soft cross-entropy against :attr:`CellTargets.occupancy`;
- centre: binary cross-entropy against the heatmap;
- extent: L1 on the cells inside a box.

Only the backbone is kept afterwards; the heads are discarded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groupdetr.pretrain.targets import CellTargets, cell_targets

__all__ = ["PretextNet", "pretext_losses", "pretext_metrics", "LOSS_KEYS"]

LOSS_KEYS = ("occupancy", "center", "extent")


class PretextNet(nn.Module):
    """A backbone (``forward_features``, ``stage_channels``, ``stage_strides``) plus one dense head per stage.

    Args:
        backbone: the network being pretrained (its state dict is what is exported).
        num_classes: C, the dataset's number of categories.
        width: hidden channels of every head.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, width: int = 64):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, num_classes + 6, 1))
            for c in backbone.stage_channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> per stage ``[B, C + 6, h_s, w_s]``: occupancy logits (C + 1), centre logit, extent logits (4)."""
        return [head(f) for head, f in zip(self.heads, self.backbone.forward_features(images))]


def _split(pred: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return pred[:, : num_classes + 1], pred[:, num_classes + 1: num_classes + 2], pred[:, num_classes + 2:]


def _stage_losses(pred: torch.Tensor, t: CellTargets, num_classes: int) -> dict[str, torch.Tensor]:
    occ_logits, center_logit, extent_logits = _split(pred, num_classes)
    valid = t.valid.float()
    n_valid = valid.sum().clamp(min=1.0)
    occupancy = -(t.occupancy * F.log_softmax(occ_logits, dim=1)).sum(1)
    center = F.binary_cross_entropy_with_logits(center_logit, t.center, reduction="none")[:, 0]
    inside = t.extent_mask.float()
    extent = (extent_logits.sigmoid() - t.extent).abs().sum(1)
    return {"occupancy": (occupancy * valid).sum() / n_valid,
            "center": (center * valid).sum() / n_valid,
            "extent": (extent * inside).sum() / inside.sum().clamp(min=1.0)}


def stage_targets(preds: list[torch.Tensor], targets: list[dict], category_ids: list[int],
                  strides: tuple[int, ...]) -> list[CellTargets]:
    """The :class:`CellTargets` of every stage's prediction grid."""
    return [cell_targets(targets, category_ids, tuple(p.shape[-2:]), s) for p, s in zip(preds, strides)]


def pretext_losses(preds: list[torch.Tensor], stage_tgts: list[CellTargets], num_classes: int) -> dict[str, torch.Tensor]:
    """Unweighted losses ``occupancy``, ``center``, ``extent``, each the mean over stages."""
    per_stage = [_stage_losses(p, t, num_classes) for p, t in zip(preds, stage_tgts)]
    return {k: torch.stack([s[k] for s in per_stage]).mean() for k in LOSS_KEYS}


@torch.no_grad()
def pretext_metrics(pred: torch.Tensor, t: CellTargets, num_classes: int) -> dict[str, float]:
    """Sums over the valid cells of one stage, for held-out metrics: ``cells``, ``correct`` (argmax of the
    occupancy equals the target's), ``fg_inter`` / ``fg_union`` (cells whose argmax is an object class),
    ``extent_l1`` and ``extent_cells`` (inside boxes)."""
    occ_logits, _, extent_logits = _split(pred, num_classes)
    valid = t.valid
    pred_cls, true_cls = occ_logits.argmax(1), t.occupancy.argmax(1)
    pred_fg, true_fg = (pred_cls > 0) & valid, (true_cls > 0) & valid
    inside = t.extent_mask
    return {"cells": float(valid.sum()), "correct": float(((pred_cls == true_cls) & valid).sum()),
            "fg_inter": float((pred_fg & true_fg).sum()), "fg_union": float((pred_fg | true_fg).sum()),
            "extent_l1": float(((extent_logits.sigmoid() - t.extent).abs().sum(1) * inside).sum()),
            "extent_cells": float(inside.sum())}
