"""Set-prediction losses of (Group) Conditional DETR.

The criterion returns *unweighted* named losses (DETR convention); :func:`weight_losses` combines
them. Normalisation: every loss is summed over the batch and divided by ``num_boxes = #GT * G``
(all-reduced over processes), which makes the total the mean of the G per-group losses (paper
Eq. 7). Auxiliary decoder layers are matched and scored independently (keys ``loss_ce_0`` ...).
"""
from __future__ import annotations

import torch

from groupdetr.denoising import denoising_losses
from groupdetr.losses import class_and_box_losses, global_count
from groupdetr.matcher import HungarianMatcher

__all__ = ["SetCriterion", "loss_weight", "weight_losses", "normaliser"]


def normaliser(targets: list[dict], num_groups: int, device: torch.device) -> torch.Tensor:
    """``#GT in the global batch * G / world size``, clamped to >= 1 (as the authors' code).

    Under DDP each rank divides its local sum by this, and gradient averaging over ranks then
    yields the global per-box mean.
    """
    return global_count(sum(len(t["labels"]) for t in targets) * num_groups, device)


class SetCriterion:
    """Callable ``(outputs, targets) -> {loss name: scalar tensor}``.

    Args:
        matcher: :class:`groupdetr.matcher.HungarianMatcher`.
        num_classes: width of ``pred_logits``.
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        loss_terms: task losses ``(outputs, targets, indices, num_boxes) -> {name: loss}`` computed
            on the same matching as the box losses, in every decoder layer (``groupdetr.tasks``).

    Denoising queries (``dn_outputs`` in the outputs) add their reconstruction losses
    (``groupdetr.denoising.denoising_losses``: ``loss_ce_dn`` ...); they are never matched.
    """

    def __init__(self, matcher: HungarianMatcher, num_classes: int, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 loss_terms=()):
        self.matcher = matcher
        self.num_classes = num_classes
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_terms = tuple(loss_terms)

    def layer_losses(self, outputs: dict, targets: list[dict], indices, num_boxes: torch.Tensor) -> dict:
        """Losses of one decoder layer given its matching.

        Args:
            outputs: ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4].
            indices: per image (query_idx [P_b], target_idx [P_b]).
        Returns:
            ``loss_ce`` (sigmoid focal over all queries and classes), ``loss_bbox`` (L1),
            ``loss_giou`` (1 - GIoU), each summed and divided by ``num_boxes``.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
        query_idx = torch.cat([q for q, _ in indices])
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        tboxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])

        onehot = torch.zeros_like(logits)
        onehot[batch_idx, query_idx, labels] = 1.0
        losses = class_and_box_losses(logits, onehot, boxes[batch_idx, query_idx], tboxes, num_boxes,
                                      self.focal_alpha, self.focal_gamma)
        for term in self.loss_terms:
            losses.update(term(outputs, targets, indices, num_boxes))
        return losses

    def losses_and_matching(self, outputs: dict, targets: list[dict]):
        """Losses plus the final layer's matching (per image (query_idx, target_idx)), which the
        engine uses for the matching-instability statistic (DN-DETR) without matching twice."""
        g = outputs.get("num_groups", 1)
        num_boxes = normaliser(targets, g, outputs["pred_logits"].device)
        indices = self.matcher(outputs, targets)
        losses = self.layer_losses(outputs, targets, indices, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self.layer_losses(aux, targets, self.matcher(aux, targets), num_boxes)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        if "enc_outputs" in outputs:  # DINO's selected proposals (two-stage): matched and scored like a layer
            enc = outputs["enc_outputs"]
            losses.update({f"{k}_enc": v for k, v in self.layer_losses(enc, targets, self.matcher(enc, targets),
                                                                          num_boxes).items()})
        if "dn_outputs" in outputs:
            losses.update(denoising_losses(outputs["dn_outputs"], targets, outputs["dn_queries"], self.focal_alpha,
                                           self.focal_gamma))
        return losses, indices

    def __call__(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: detector output dict (``num_groups`` = G active groups).
            targets: per image ``labels`` [M] (long) and ``boxes`` [M, 4] normalised cxcywh.
        """
        return self.losses_and_matching(outputs, targets)[0]


def loss_weight(name: str, weights: dict[str, float]) -> float:
    """The weight of loss ``name``: an auxiliary layer's ``loss_ce_3``, the denoising ``loss_ce_dn`` /
    ``loss_ce_dn_3`` and the encoder proposals' ``loss_ce_enc`` take the weight of ``loss_ce`` (as DN-DETR,
    DINO). KeyError when no base name of ``name`` has one.

    Args:
        weights: base loss name -> weight, e.g. ``{"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2}``.
    """
    base = name
    while base not in weights and "_" in base and base.rsplit("_", 1)[1] in ("dn", "enc", *map(str, range(100))):
        base = base.rsplit("_", 1)[0]
    if base not in weights:
        raise KeyError(f"no weight for loss {name!r}")
    return weights[base]


def weight_losses(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of named losses, each weighted by :func:`loss_weight`.

    Args:
        weights: base loss name -> weight, e.g. ``{"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2}``.
    """
    total = None
    for name, value in losses.items():
        term = loss_weight(name, weights) * value
        total = term if total is None else total + term
    return total
