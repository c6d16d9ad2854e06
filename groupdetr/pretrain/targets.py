"""Dense pretext targets from boxes alone: what a backbone cell should know about the objects on it.

For one feature map of stride ``s`` over a (padded) batch, each cell ``(i, j)`` covers the pixel square
``[j*s, (j+1)*s) x [i*s, (i+1)*s)``. From the ground-truth boxes (DETR targets: normalised cxcywh
relative to each image's own size, labels = category ids) every cell gets:

- **occupancy** ``[B, C+1, h, w]``: a distribution over background (index 0) and the ``C`` classes
  (index = position of the category id in ``category_ids`` + 1): the fraction of the cell covered by
  boxes of each class (overlapping boxes of one class combined as ``1 - prod(1 - cover)``), scaled down
  if the classes together exceed 1; background takes the rest. Soft targets, so small objects that
  cover part of a cell still count (the probe of issue 11 used the same target);
- **centre** ``[B, 1, h, w]``: a class-agnostic heatmap, the maximum over boxes of a Gaussian at the
  box centre with per-axis sigma = max(size / 6, half a cell) (CenterNet's idea, simplified);
- **extent** ``[B, 4, h, w]``: distances from the cell centre to the left, top, right and bottom edges
  of the smallest box containing the cell centre, as fractions of the image width/height (FCOS's
  regression target); ``extent_mask`` ``[B, h, w]`` says which cells lie inside a box;
- ``valid`` ``[B, h, w]``: cells whose centre lies inside the image (not padding).

Pure functions of tensors; nothing here has parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CellTargets", "cell_targets"]


@dataclass(frozen=True)
class CellTargets:
    occupancy: torch.Tensor  # [B, C+1, h, w] float, sums to 1 over dim 1
    center: torch.Tensor  # [B, 1, h, w] float in [0, 1]
    extent: torch.Tensor  # [B, 4, h, w] float (l, t, r, b) / (W, H, W, H)
    extent_mask: torch.Tensor  # [B, h, w] bool
    valid: torch.Tensor  # [B, h, w] bool


def _one_image(boxes: torch.Tensor, labels: torch.Tensor, size: torch.Tensor, class_index: torch.Tensor,
               num_classes: int, h: int, w: int, stride: int) -> tuple[torch.Tensor, ...]:
    """Targets of one image on an ``h x w`` grid of stride ``stride`` (pixels of the padded batch).

    boxes [M, 4] normalised cxcywh; labels [M]; size [2] (H, W) of the image before padding.
    Returns occupancy [C+1, h, w], center [1, h, w], extent [4, h, w], extent_mask [h, w], valid [h, w].
    """
    img_h, img_w = float(size[0]), float(size[1])
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride  # cell centres in pixels
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    valid = (ys[:, None] < img_h) & (xs[None, :] < img_w)
    occupancy = torch.zeros(num_classes + 1, h, w)
    occupancy[0] = 1.0  # no object: all background
    center = torch.zeros(1, h, w)
    extent = torch.zeros(4, h, w)
    inside_any = torch.zeros(h, w, dtype=torch.bool)
    if len(boxes):
        cx, cy, bw, bh = (boxes * torch.tensor([img_w, img_h, img_w, img_h])).unbind(-1)
        x0, x1, y0, y1 = cx - bw / 2, cx + bw / 2, cy - bh / 2, cy + bh / 2
        # fraction of each cell covered by each box: separable overlaps [M, w] x [M, h]
        left = torch.arange(w, dtype=torch.float32) * stride
        top = torch.arange(h, dtype=torch.float32) * stride
        ox = (torch.minimum(x1[:, None], left + stride) - torch.maximum(x0[:, None], left)).clamp(min=0) / stride
        oy = (torch.minimum(y1[:, None], top + stride) - torch.maximum(y0[:, None], top)).clamp(min=0) / stride
        cover = oy[:, :, None] * ox[:, None, :]  # [M, h, w]
        cls = class_index[labels] + 1  # [M], 1..C
        # union per class, 1 - prod(1 - cover), as a sum of logs (index_add_ is deterministic on CPU;
        # a full cover adds log 0 = -inf, whose exp is exactly 0)
        log_free = torch.zeros(num_classes + 1, h, w).index_add_(0, cls, torch.log1p(-cover.clamp(max=1.0)))
        occupancy = 1.0 - log_free.exp()
        occupancy[0] = 0.0
        total = occupancy.sum(0)
        occupancy = occupancy / total.clamp(min=1.0)
        occupancy[0] = (1.0 - total).clamp(min=0.0)
        # centre heatmap
        sx = (bw / 6).clamp(min=stride / 2)
        sy = (bh / 6).clamp(min=stride / 2)
        gx = ((xs[None, :] - cx[:, None]) / sx[:, None]) ** 2  # [M, w]
        gy = ((ys[None, :] - cy[:, None]) / sy[:, None]) ** 2  # [M, h]
        center[0] = torch.exp(-0.5 * (gy[:, :, None] + gx[:, None, :])).amax(0)
        # extent of the smallest box containing each cell centre
        d = torch.stack(_edge_distances(xs, ys, x0, y0, x1, y1), dim=1)  # [M, 4, h, w]
        inside = (d > 0).all(1)  # [M, h, w]
        area = torch.where(inside, (bw * bh)[:, None, None], torch.full_like(cover, float("inf")))
        best = area.argmin(0)  # [h, w]
        inside_any = inside.any(0)
        chosen = d.gather(0, best[None, None].expand(1, 4, h, w))[0]
        norm = torch.tensor([img_w, img_h, img_w, img_h])[:, None, None]
        extent = torch.where(inside_any[None], chosen / norm, torch.zeros_like(chosen))
    occupancy = torch.where(valid[None], occupancy, torch.zeros_like(occupancy))
    occupancy[0] = torch.where(valid, occupancy[0], torch.ones_like(occupancy[0]))
    return occupancy, center * valid, extent, inside_any & valid, valid


def _edge_distances(xs, ys, x0, y0, x1, y1) -> list[torch.Tensor]:
    """(left, top, right, bottom) distances [M, h, w] from every cell centre to every box's edges."""
    h, w, m = len(ys), len(xs), len(x0)
    return [(xs[None, None, :] - x0[:, None, None]).expand(m, h, w),
            (ys[None, :, None] - y0[:, None, None]).expand(m, h, w),
            (x1[:, None, None] - xs[None, None, :]).expand(m, h, w),
            (y1[:, None, None] - ys[None, :, None]).expand(m, h, w)]


def cell_targets(targets: list[dict], category_ids: list[int], shape: tuple[int, int], stride: int) -> CellTargets:
    """Pretext targets of a batch on one feature map.

    Args:
        targets: DETR-convention targets (``boxes`` [M, 4] normalised cxcywh, ``labels`` [M] category
            ids, ``size`` [2] (H, W) of the image before padding).
        category_ids: the dataset's category ids; class index c + 1 is ``category_ids[c]``.
        shape: (h, w) of the feature map; stride: its stride in pixels of the padded batch.
    Returns:
        :class:`CellTargets` of the batch.
    """
    h, w = shape
    lookup = torch.full((max(category_ids) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(category_ids)] = torch.arange(len(category_ids))
    parts = [_one_image(t["boxes"].float(), t["labels"], t["size"], lookup, len(category_ids), h, w, stride)
             for t in targets]
    return CellTargets(*(torch.stack(p) for p in zip(*parts)))
