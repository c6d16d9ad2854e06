"""DN-DETR denoising (Li et al., CVPR 2022) on top of query groups: noised ground-truth queries and
their reconstruction losses. Pure functions; the label embedding lives in the detector.

Training only. From the ground truth of a batch, each *denoising set* holds ``copies`` noised copies
of every image's objects, each copy padded to the largest object count of the batch (DN-DETR's
"denoising groups"; we say *copies* because *groups* are Group DETR's query groups here). With K
query groups there is one set per group (``sharing="per_group"``, default, each set noised
independently) or one set for all groups (``"shared"``). Which queries a denoising query may see is
defined by :class:`groupdetr.groups.QueryLayout`.

Noise (DN-DETR's defaults): a label is replaced by a uniformly random class with probability
``label_noise``; a box centre moves by up to ``box_noise * (w, h) / 2`` and its size is scaled by a
factor in ``[1 - box_noise, 1 + box_noise]``, then clamped to [0, 1]. With ``contrastive`` (DINO's
contrastive denoising) each copy also holds a *negative* of every object, noised between one and two times
that much, which must be scored as no object (class loss only); a copy is then ``2 * pad`` slots,
positives first. Each positive denoising query must
reconstruct its original object: focal class loss and L1 + GIoU box losses on the real (non-padding)
slots, normalised by their number (all-reduced over processes), i.e. the mean over sets, copies and
objects -- the per-set loss of DN-DETR averaged over the sets, as the matching loss is averaged over
groups (paper Eq. 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from groupdetr.groups import QueryLayout
from groupdetr.losses import class_and_box_losses, global_count

__all__ = ["DenoisingQueries", "num_copies", "make_denoising_queries", "denoising_losses"]


@dataclass(frozen=True, eq=False)
class DenoisingQueries:
    """Noised ground truth of one batch, laid out ``[set][copy][slot]`` along the query axis.

    Attributes:
        labels: [B, S*C*P] long, noised labels (0 on padding slots).
        boxes: [B, S*C*P, 4] noised boxes, normalised cxcywh (a dummy box on padding).
        target_index: [B, S*C*P] long, the object each slot was made from (-1 on padding).
        sets, copies, pad: S, C and P (slots per copy: the most objects of an image in the batch, twice
            that with negatives).
        negative: [B, S*C*P] bool, True on DINO's negative slots (contrastive denoising), or None.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    target_index: torch.Tensor
    sets: int
    copies: int
    pad: int
    negative: torch.Tensor | None = None

    @property
    def valid(self) -> torch.Tensor:
        return self.target_index >= 0

    @property
    def positive(self) -> torch.Tensor:
        """Real slots that reconstruct their object (all real slots without contrastive denoising)."""
        return self.valid if self.negative is None else self.valid & ~self.negative

    def layout(self, num_groups: int, num_queries: int) -> QueryLayout:
        return QueryLayout(num_groups, num_queries, self.sets, self.copies, self.pad, self.valid)


def num_copies(max_objects: int, budget: int) -> int:
    """DN-DETR's dynamic number of copies: as many as fit ``budget`` queries, at least one."""
    return max(1, budget // max(max_objects, 1))


def _noise_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    if scale <= 0:
        return boxes
    diff = torch.cat([boxes[..., 2:] / 2, boxes[..., 2:]], dim=-1)
    return (boxes + (torch.rand_like(boxes) * 2 - 1) * diff * scale).clamp(0.0, 1.0)


def _negative_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """DINO's negatives: every coordinate moved by a random sign times [1, 2) x ``scale`` x (w/2, h/2, w, h)."""
    diff = torch.cat([boxes[..., 2:] / 2, boxes[..., 2:]], dim=-1)
    sign = torch.randint_like(boxes, 0, 2) * 2 - 1
    return (boxes + sign * (1.0 + torch.rand_like(boxes)) * diff * scale).clamp(0.0, 1.0)


def _noise_labels(labels: torch.Tensor, prob: float, num_classes: int) -> torch.Tensor:
    if prob <= 0:
        return labels
    flip = torch.rand(labels.shape, device=labels.device) < prob
    return torch.where(flip, torch.randint_like(labels, 0, num_classes), labels)


def make_denoising_queries(targets: list[dict], num_sets: int, budget: int, label_noise: float, box_noise: float,
                           num_classes: int, contrastive: bool = False) -> DenoisingQueries | None:
    """Noised copies of the targets' ``labels`` [M] and ``boxes`` [M, 4] (normalised cxcywh); with
    ``contrastive``, each copy followed by its negatives (module docstring).

    Randomness comes from torch's global generator (seeded per epoch by the engine). Returns None
    when the batch has no object (no denoising query at all).
    """
    sizes = [len(t["labels"]) for t in targets]
    pad = max(sizes, default=0)
    if pad == 0:
        return None
    copies = num_copies(2 * pad if contrastive else pad, budget)
    b = len(targets)
    device = targets[0]["boxes"].device
    index = torch.full((b, pad), -1, dtype=torch.long, device=device)
    labels = torch.zeros(b, pad, dtype=torch.long, device=device)
    boxes = torch.full((b, pad, 4), 0.5, device=device)  # padding: a dummy box, never seen nor scored
    for i, (t, m) in enumerate(zip(targets, sizes)):
        index[i, :m] = torch.arange(m, device=device)
        labels[i, :m] = t["labels"]
        boxes[i, :m] = t["boxes"].to(boxes.dtype)
    reps = num_sets * copies
    if contrastive:  # every copy: [positives | negatives], each ``pad`` slots
        positive = _noise_boxes(boxes.repeat(1, reps, 1), box_noise).view(b, reps, pad, 4)
        negative = _negative_boxes(boxes.repeat(1, reps, 1), box_noise).view(b, reps, pad, 4)
        boxes = torch.cat([positive, negative], 2).view(b, reps * 2 * pad, 4)
        labels = labels.repeat(1, 2 * reps)
        index = index.repeat(1, 2 * reps)
        neg = torch.zeros(b, reps, 2, pad, dtype=torch.bool, device=device)
        neg[:, :, 1] = True
        valid = index >= 0
        labels = torch.where(valid, _noise_labels(labels, label_noise, num_classes), 0)
        boxes = torch.where(valid[..., None], boxes, 0.5)
        return DenoisingQueries(labels, boxes, index, num_sets, copies, 2 * pad, neg.view(b, -1) & valid)
    index = index.repeat(1, reps)
    valid = index >= 0
    labels = torch.where(valid, _noise_labels(labels.repeat(1, reps), label_noise, num_classes), 0)
    boxes = torch.where(valid[..., None], _noise_boxes(boxes.repeat(1, reps, 1), box_noise), 0.5)
    return DenoisingQueries(labels, boxes, index, num_sets, copies, pad)


def _layer_losses(outputs: dict, targets: list[dict], dn: DenoisingQueries, num: torch.Tensor, alpha: float,
                  gamma: float) -> dict[str, torch.Tensor]:
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    batch_idx, slot = dn.valid.nonzero(as_tuple=True)
    obj = dn.target_index[batch_idx, slot]
    labels = torch.cat([t["labels"] for t in targets])
    tboxes = torch.cat([t["boxes"] for t in targets]).to(boxes.dtype)
    offsets = torch.tensor([0] + [len(t["labels"]) for t in targets], device=obj.device).cumsum(0)[:-1]
    flat = offsets[batch_idx] + obj
    # class loss over the real slots only (padding slots are not queries of anything); a negative's
    # target is no object (an all-zero one-hot row), and only positives are scored on boxes
    src_logits = logits[batch_idx, slot]
    onehot = F.one_hot(labels[flat], logits.shape[-1]).to(src_logits.dtype)
    pos = dn.positive[batch_idx, slot]
    if dn.negative is not None:
        onehot = onehot * pos[:, None].to(onehot.dtype)
    return class_and_box_losses(src_logits, onehot, boxes[batch_idx, slot][pos], tboxes[flat][pos], num, alpha, gamma,
                                "_dn")


def denoising_losses(dn_outputs: dict, targets: list[dict], dn: DenoisingQueries, focal_alpha: float = 0.25,
                     focal_gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """Reconstruction losses of the denoising queries (unweighted; module docstring).

    Args:
        dn_outputs: ``pred_logits`` [B, S*C*P, num_classes], ``pred_boxes`` [B, S*C*P, 4] and
            ``aux_outputs`` (earlier layers, same keys).
        targets: per image ``labels`` [M], ``boxes`` [M, 4].
    Returns:
        ``loss_ce_dn``, ``loss_bbox_dn``, ``loss_giou_dn`` and ``<name>_<i>`` for auxiliary layer i.
    """
    num = global_count(int(dn.positive.sum()), dn_outputs["pred_logits"].device)
    losses = _layer_losses(dn_outputs, targets, dn, num, focal_alpha, focal_gamma)
    for i, aux in enumerate(dn_outputs.get("aux_outputs", [])):
        losses.update({f"{k}_{i}": v for k, v in _layer_losses(aux, targets, dn, num, focal_alpha, focal_gamma).items()})
    return losses
