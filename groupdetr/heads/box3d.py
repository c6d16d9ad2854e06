"""Monocular 3D detection head with PETR's camera-aware position embedding (single view).

The paper's Table 5 runs Group DETR on PETR (Liu et al., ECCV 2022) on nuScenes' six cameras; here
there is one camera per image (the embedded benchmark), so PETR reduces to:

- **Position embedding** (PETR Sec. 3.2, "3D coordinates generator" and "3D position encoder").
  Every cell (i, j) of the encoder grid (stride s) looks along the ray through its pixel centre
  ``((j + 0.5) s, (i + 0.5) s)`` of the model-input image; D points on that ray at depths spaced by
  PETR's linear-increasing discretisation (LID, :func:`lid_depths`) are back-projected with the
  image's ``K^-1`` (:func:`frustum_points`), normalised into [0, 1] by a fixed region
  (x, y in [-depth_max, depth_max], z in [0, depth_max]: PETR's ``position_range``),
  ``inverse_sigmoid``-ed, flattened to 3D values per cell and mapped to d by a 2-layer MLP (PETR's
  two 1x1 convs, hidden width 4d). It is added to the sine encoding of the image features, so the
  encoder and the decoder's cross-attention see the camera geometry. The padded canvas shares the
  image's top-left corner, so padding shifts no pixel and leaves the embedding of image cells as it is.
- **Per-query 3D box** (monocular, FCOS3D/SMOKE-style parametrisation on top of DETR's queries).
  One 3-layer MLP, shared by all decoder layers, reads each matching query's decoder output and
  predicts: an offset of the projected 3D centre from the query's 2D box centre (normalised image
  coordinates), log depth, log dimensions (w, h, l) and (sin, cos) of the yaw scaled to its class's
  period. Centre + depth is unprojected with ``K^-1`` at postprocess time, so the head never needs
  the camera to predict, only to encode positions.

**Yaw periods.** A box looks the same after a rotation by pi, a sphere after any rotation. The yaw
target is ``(sin, cos)(2 pi yaw / period)``, which is continuous and identical for equivalent yaws;
rotation-symmetric objects (period NaN in the targets, None in the category table) have no yaw
target and contribute zero yaw loss (as nuScenes scores no orientation for cones).

**Coordinates.** "Normalised image coordinates" are ``(u / W_in, v / H_in)`` with
``(H_in, W_in) = target["size"]``, the model-input image without padding: the DETR convention of the
2D boxes, so a centre and its box live in the same units. ``intrinsics`` are those of the
model-input image (every transform updates them), and 3D quantities are in its camera frame (OpenCV:
x right, y down, z forward; ``groupdetr.geometry``), which a resize does not change.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn

from groupdetr.box_ops import inverse_sigmoid
from groupdetr.heads import Task
from groupdetr.layers import MLP

__all__ = [
    "TASK",
    "lid_depths",
    "frustum_points",
    "normalise_points",
    "project_centres",
    "unproject_centres",
    "encode_yaw",
    "decode_yaw",
    "label_periods",
    "Box3DHead",
    "build_box3d_head",
    "box3d_loss_term",
    "box3d_postprocess_term",
]

TWO_PI = 2 * math.pi
# Depths below this (m) are clamped before the log: a ground-truth centre at or behind the camera
# cannot be seen in the image, but one bad annotation must not turn the loss into inf/NaN.
MIN_DEPTH = 1e-3


# ---------------------------------------------------------------------------------------------
# pure geometry


def lid_depths(depth_min: float, depth_max: float, bins: int) -> torch.Tensor:
    """PETR's linear-increasing discretisation of a ray: ``d_i = d_min + (d_max - d_min) i (i+1) / (D (D+1))``
    for i = 0..D-1; bins widen with depth, where monocular depth is coarser anyway.

    Returns:
        [D] float32, increasing, ``d_0 = depth_min``, ``d_{D-1} < depth_max``.
    """
    i = torch.arange(bins, dtype=torch.float64)
    return (depth_min + (depth_max - depth_min) * i * (i + 1) / (bins * (bins + 1))).float()


def frustum_points(intrinsics: torch.Tensor, hw: tuple[int, int], stride: int, depths: torch.Tensor) -> torch.Tensor:
    """Camera-frame 3D points on the rays through the feature cells' pixel centres.

    Args:
        intrinsics: [B, 3, 3] camera matrices of the model-input images.
        hw: (h, w) of the feature grid.
        stride: pixels per feature cell; cell (i, j) is centred on pixel ((j + 0.5) s, (i + 0.5) s)
            (continuous coordinates, pixel (i, j) covering [j, j+1) x [i, i+1)).
        depths: [D] z values (m) of the points on each ray.
    Returns:
        [B, h, w, D, 3] float32 (x, y, z), with z equal to the depth: ``project`` of a point gives
        its cell's pixel centre back.
    """
    h, w = hw
    k = intrinsics.float()
    dev = k.device
    u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * stride
    v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) * stride
    pix = torch.stack([u[None, :].expand(h, w), v[:, None].expand(h, w), torch.ones(h, w, device=dev)], dim=-1)
    rays = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(k), pix)  # [B, h, w, 3]
    # Scale each ray to z = 1 so that "depth" is the z coordinate (PETR's (u d, v d, d) convention);
    # a no-op for the usual K with last row (0, 0, 1), but exact for any invertible K.
    rays = rays / rays[..., 2:3]
    return rays[:, :, :, None, :] * depths.to(dev, torch.float32)[:, None]


def normalise_points(points: torch.Tensor, depth_max: float) -> torch.Tensor:
    """[..., 3] camera-frame points -> [..., 3] in [0, 1] inside PETR's fixed region
    x, y in [-depth_max, depth_max], z in [0, depth_max] (outside: beyond [0, 1], clamped later by
    ``inverse_sigmoid``)."""
    lo = points.new_tensor([-depth_max, -depth_max, 0.0])
    span = points.new_tensor([2 * depth_max, 2 * depth_max, depth_max])
    return (points - lo) / span


def project_centres(center_3d: torch.Tensor, intrinsics: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Camera-frame centres -> normalised image coordinates of their projections.

    Args:
        center_3d: [P, 3]; intrinsics: [P, 3, 3] or [3, 3]; size: [P, 2] or [2], (H_in, W_in).
    Returns:
        [P, 2] ``(u / W_in, v / H_in)``.
    """
    uvw = (intrinsics @ center_3d[..., None])[..., 0] if intrinsics.dim() == 3 else center_3d @ intrinsics.T
    uv = uvw[..., :2] / uvw[..., 2:3]
    return uv / size.flip(-1).to(uv.dtype)


def unproject_centres(center_2d: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                      size: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`project_centres` given the depth.

    Args:
        center_2d: [k, 2] normalised image coordinates; depth: [k] z (m); intrinsics: [3, 3];
        size: [2] (H_in, W_in).
    Returns:
        [k, 3] camera-frame points whose z is ``depth`` and whose projection is ``center_2d``.
    """
    uv = center_2d * size.flip(-1).to(center_2d.dtype)
    pix = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=-1)
    rays = pix @ torch.linalg.inv(intrinsics.to(center_2d.dtype)).T
    return rays / rays[:, 2:3] * depth[:, None]


def encode_yaw(yaw: torch.Tensor, period: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw target ``(sin, cos)(2 pi yaw / period)``, the same for yaws one period apart.

    Args:
        yaw: [M] radians; period: [M] radians, NaN for rotation-symmetric objects.
    Returns:
        ([M, 2] (sin, cos), zero where the period is NaN; [M] bool, True where the yaw is defined).
    """
    valid = torch.isfinite(period)
    angle = TWO_PI * yaw / period
    enc = torch.stack([angle.sin(), angle.cos()], dim=-1)
    # Zeros, not NaN: the loss masks these objects with torch.where, but its backward still runs through
    # the masked entries, where a NaN target would leave the gradient to the kernel's sign(NaN).
    return torch.where(valid[:, None], enc, torch.zeros_like(enc)), valid


def decode_yaw(sincos: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_yaw`: [k, 2] (sin, cos), [k] periods -> [k] yaw in
    [-period/2, period/2) (inside [-pi, pi)); 0 where the period is NaN (no orientation)."""
    valid = torch.isfinite(period)
    safe = torch.where(valid, period, torch.full_like(period, TWO_PI))
    yaw = torch.atan2(sincos[:, 0], sincos[:, 1]) * safe / TWO_PI
    yaw = torch.remainder(yaw + safe / 2, safe) - safe / 2
    return torch.where(valid, yaw, torch.zeros_like(yaw))


def label_periods(labels: torch.Tensor, yaw_periods: Mapping[int, float | None] | None) -> torch.Tensor:
    """[k] category ids -> [k] float32 yaw periods: NaN for a category whose period is None,
    2 pi for a category missing from ``yaw_periods`` (or every category when it is None)."""
    out = torch.full(labels.shape, TWO_PI, dtype=torch.float32, device=labels.device)
    if yaw_periods:
        for cat, period in yaw_periods.items():
            out[labels == int(cat)] = math.nan if period is None else float(period)
    return out


# ---------------------------------------------------------------------------------------------
# terms the task registry plugs into the criterion and the postprocessor


def _pairs(outputs: dict, targets: list[dict], indices) -> tuple[dict, dict]:
    """Predictions and ground truth of the matched pairs of all images.

    Returns:
        (predictions: ``center_2d`` [P, 2], ``depth`` [P], ``dims`` [P, 3], ``yaw`` [P, 2], float32;
        targets: ``center_2d`` [P, 2], ``depth`` [P], ``dims`` [P, 3], ``yaw`` [P, 2], ``yaw_valid`` [P]).
    """
    dev = outputs["pred_center_2d"].device
    b_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(dev)
    q_idx = torch.cat([q for q, _ in indices]).to(dev)
    pred = {k: outputs[f"pred_{k}"][b_idx, q_idx].float() for k in ("center_2d", "depth", "dims", "yaw")}

    def cat(key):
        return torch.cat([t[key][j.to(t[key].device)] for t, (_, j) in zip(targets, indices)]).to(dev, torch.float32)

    center = cat("center_3d")
    k = torch.stack([t["intrinsics"] for t in targets]).to(dev, torch.float32)[b_idx]
    size = torch.stack([t["size"] for t in targets]).to(dev, torch.float32)[b_idx]
    yaw, valid = encode_yaw(cat("yaw_3d"), cat("yaw_period"))
    tgt = {"center_2d": project_centres(center, k, size), "depth": center[:, 2], "dims": cat("dims_3d"),
           "yaw": yaw, "yaw_valid": valid}
    return pred, tgt


def box3d_loss_term(cfg) -> Callable[..., dict[str, torch.Tensor]]:
    """Unweighted 3D losses of the matched (query, target) pairs, each summed over pairs and
    divided by ``num_boxes`` (weights: ``cfg.loss.weight_center`` ...):

    - ``loss_center``: L1 of ``pred_center_2d`` against the projected ground-truth centre
      ``K c / (K c)_z`` in normalised image coordinates (both components);
    - ``loss_depth``: L1 of log depth against ``log c_z``;
    - ``loss_dims``: L1 of log dimensions (three components);
    - ``loss_yaw``: L1 of ``pred_yaw`` against ``(sin, cos)(2 pi yaw / period)`` (two components),
      zero for objects with a NaN period.

    Returns ``loss(outputs, targets, indices, num_boxes) -> dict``: ``outputs`` holds the keys of
    :meth:`Box3DHead.forward`, each target ``center_3d`` [M, 3], ``dims_3d`` [M, 3], ``yaw_3d`` [M],
    ``yaw_period`` [M], ``intrinsics`` [3, 3] and ``size`` [2]; ``indices[b]`` = (query_idx, target_idx).
    """

    def loss(outputs: dict, targets: list[dict], indices, num_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        # With no pairs the sums run over empty selections of the outputs: zero, yet attached to the
        # graph, so every rank's backward touches the head's parameters (DDP needs that).
        pred, tgt = _pairs(outputs, targets, indices)
        log_depth = tgt["depth"].clamp(min=MIN_DEPTH).log()
        log_dims = tgt["dims"].clamp(min=MIN_DEPTH).log()
        yaw_l1 = (pred["yaw"] - tgt["yaw"]).abs().sum(-1)
        return {
            "loss_center": (pred["center_2d"] - tgt["center_2d"]).abs().sum() / num_boxes,
            "loss_depth": (pred["depth"].log() - log_depth).abs().sum() / num_boxes,
            "loss_dims": (pred["dims"].log() - log_dims).abs().sum() / num_boxes,
            "loss_yaw": torch.where(tgt["yaw_valid"], yaw_l1, torch.zeros_like(yaw_l1)).sum() / num_boxes,
        }

    return loss


def box3d_postprocess_term(cfg, yaw_periods: Mapping[int, float | None] | None = None
                           ) -> Callable[[dict, list[dict], list[dict]], None]:
    """Adds the 3D boxes of the selected detections to each image's result:
    ``center_3d`` [k, 3] (camera frame, ``pred_center_2d`` scaled by (W_in, H_in) and unprojected with
    ``K^-1`` to ``pred_depth``), ``dims_3d`` [k, 3] (w, h, l) and ``yaw_3d`` [k] (decoded with the
    period of the detection's predicted label, in [-period/2, period/2); 0 for rotation-symmetric
    labels), float32, for ``results[i]["query"]`` [k] (repeats allowed) and ``results[i]["labels"]``.

    Args:
        yaw_periods: ``{category id: period or None}``
            (``groupdetr.evaluation.det3d.yaw_periods_from_categories``); a label missing from it,
            or every label when it is None, gets period 2 pi.
    """

    @torch.no_grad()
    def postprocess(outputs: dict, results: list[dict], targets: list[dict]) -> None:
        for i, (res, tgt) in enumerate(zip(results, targets)):
            q = res["query"]
            center_2d = outputs["pred_center_2d"][i, q].float()
            k = tgt["intrinsics"].to(center_2d.device, torch.float32)
            res["center_3d"] = unproject_centres(center_2d, outputs["pred_depth"][i, q].float(), k,
                                                 tgt["size"].to(center_2d.device))
            res["dims_3d"] = outputs["pred_dims"][i, q].float()
            res["yaw_3d"] = decode_yaw(outputs["pred_yaw"][i, q].float(), label_periods(res["labels"], yaw_periods))

    return postprocess


# ---------------------------------------------------------------------------------------------
# module (parameters live here)


class Box3DHead(nn.Module):
    """PETR position embedding plus per-query 3D boxes (module docstring).

    Args:
        hidden_dim: d.
        stride: pixels per cell of the encoder grid (the backbone's last stride).
        depth_bins: D, points per ray.
        depth_min, depth_max: metres; the LID range, and ``depth_max`` bounds the normalisation region.
    """

    def __init__(self, hidden_dim: int, stride: int, depth_bins: int, depth_min: float, depth_max: float):
        super().__init__()
        self.stride, self.depth_max = stride, depth_max
        # Not persistent: a function of the config, so checkpoints hold only learned parameters.
        self.register_buffer("depths", lid_depths(depth_min, depth_max, depth_bins), persistent=False)
        self.position_encoder = MLP(3 * depth_bins, 4 * hidden_dim, hidden_dim, 2)  # PETR's 1x1 convs
        self.box3d_embed = MLP(hidden_dim, hidden_dim, 8, 3)  # offset 2, log depth 1, log dims 3, yaw 2
        last = self.box3d_embed.layers[-1]
        with torch.no_grad():
            # The centre starts at the 2D box centre (offset 0), the depth in the middle of the range and
            # the dims at 1 m (log 0): every target is within a few units in these parametrisations.
            last.weight[:2].zero_()
            last.bias.zero_()
            last.bias[2] = math.log((depth_min + depth_max) / 2)

    def position(self, ctx) -> torch.Tensor:
        """PETR's camera-aware position embedding of the encoder grid.

        Args:
            ctx: :class:`groupdetr.heads.HeadContext` with ``memory_hw`` and ``targets``, each holding the
                ``intrinsics`` [3, 3] of its model-input image.
        Returns:
            [B, h*w, d], row-major over the grid as the flattened features.
        """
        if not ctx.targets or any("intrinsics" not in t for t in ctx.targets):
            raise ValueError("detection_3d needs camera intrinsics in the targets")
        intrinsics = torch.stack([t["intrinsics"] for t in ctx.targets]).to(ctx.images.device, torch.float32)
        # Geometry in float32 with autocast off: bf16 (AMP) is too coarse to invert, and linalg.inv has
        # no bf16 kernel.
        with torch.autocast(intrinsics.device.type, enabled=False):
            points = frustum_points(intrinsics, ctx.memory_hw, self.stride, self.depths)
            coords = inverse_sigmoid(normalise_points(points, self.depth_max)).flatten(3)  # [B, h, w, 3D]
        return self.position_encoder(coords).flatten(1, 2)

    def forward(self, ctx, hs: torch.Tensor, boxes: torch.Tensor) -> list[dict]:
        """
        Args:
            ctx: :class:`groupdetr.heads.HeadContext` (unused: the box needs no camera until postprocess).
            hs: [L, B, Q, d] decoder outputs of the matching queries.
            boxes: [L, B, Q, 4] their 2D boxes, normalised cxcywh.
        Returns:
            L dicts: ``pred_center_2d`` [B, Q, 2] (normalised image coordinates of the projected 3D
            centre), ``pred_depth`` [B, Q] (m), ``pred_dims`` [B, Q, 3] (m, (w, h, l)), ``pred_yaw``
            [B, Q, 2] ((sin, cos) of the period-scaled yaw), float32.
        """
        # float32 before exp: bf16 depths would be off by up to ~0.4% (several cm at 10 m).
        out = self.box3d_embed(hs).float()
        offset, log_depth, log_dims, yaw = out.split([2, 1, 3, 2], dim=-1)
        # Detached: the 2D box is trained by the 2D losses only; the offset absorbs the gap between box
        # centre and projected 3D centre instead of dragging the box towards the 3D centre.
        center = boxes[..., :2].detach().float() + offset
        depth, dims = log_depth[..., 0].exp(), log_dims.exp()
        return [
            {"pred_center_2d": c, "pred_depth": z, "pred_dims": s, "pred_yaw": y}
            for c, z, s, y in zip(center, depth, dims, yaw)
        ]


def build_box3d_head(cfg, backbone) -> Box3DHead:
    """:class:`Box3DHead` for ``cfg`` (a ``ModelConfig``: ``hidden_dim``, ``box3d_head``) on
    ``backbone`` (its ``stride`` is the encoder grid's)."""
    b3 = cfg.box3d_head
    return Box3DHead(cfg.hidden_dim, int(backbone.stride), b3.depth_bins, b3.depth_min, b3.depth_max)


def _periods(categories) -> dict | None:
    from groupdetr.evaluation.det3d import yaw_periods_from_categories

    return None if categories is None else yaw_periods_from_categories(categories)


def _box3d_scorers(cfg, coco_gt) -> list:
    """Box AP and the 3D metric; ``coco_gt``: the val set's COCO object (its categories give the yaw periods)."""
    from groupdetr.evaluation.scorers import CocoScorer, Det3DScorer

    return [CocoScorer(coco_gt, ("bbox",), cfg.train.eval_backend), Det3DScorer(_periods(coco_gt.dataset["categories"]))]


#: ``model.task=detection_3d``: this head and its losses, 3D boxes in the results (yaw decoded with the
#: period of each detection's class, from the dataset's categories), box AP and the 3D metric.
TASK = Task(
    name="detection_3d",
    primary_metric="3d/NDS",
    scorers=_box3d_scorers,
    head=build_box3d_head,
    loss_terms=lambda cfg: [box3d_loss_term(cfg)],
    loss_weights=lambda loss: {"loss_center": loss.weight_center, "loss_depth": loss.weight_depth,
                               "loss_dims": loss.weight_dims, "loss_yaw": loss.weight_yaw},
    postprocess_terms=lambda cfg, categories=None: [box3d_postprocess_term(cfg, _periods(categories))],
    needs_3d=True,
)
