"""Instance segmentation head: query mask embeddings against per-pixel embeddings (Mask2Former).

Each matching query gets a mask embedding ``e_q`` [E] (3-layer MLP of its decoder output, as
Mask2Former's ``mask_embed``); a light FPN-style pixel decoder turns the encoder memory and the
finer backbone stages into per-pixel embeddings ``P`` [E, Hp, Wp] at ``mask_head.stride``. The
mask logits of query q are ``<e_q, P[:, y, x]>``; the map covers the *padded* batch canvas [H, W].

Costs and losses (Mask2Former, Sec. 3.2/4) are sigmoid BCE and dice evaluated at points instead
of every pixel. Choices made here, each for a reason:

- **Points lie inside the image's own region.** Image i occupies the top-left [0, h_i) x [0, w_i)
  of the canvas; points are drawn only there, so predictions over the padding are never scored
  (they are cropped away at postprocess anyway) and a padded image is scored as if unpadded.
- **Targets are zero-padded**: a target mask is sampled bilinearly with ``grid_sample``'s zero
  padding, i.e. the canvas outside the image counts as background. This only matters for the
  bilinear taps of points within half a pixel of the image border.
- **Uniform points, shared by all (query, target) pairs of an image.** Mask2Former draws
  importance-sampled points per matched pair in the loss; we draw ``mask_points`` uniform points
  per image and score every pair on them. The estimate of each pair's loss stays unbiased, the
  loss and the matching cost are the same function, and memory is O(E*P + pairs*P) instead of
  O(pairs*Hp*Wp) -- with K groups there are K times as many pairs.
- **All cells when few.** If the image region holds no more pixel-embedding cells than
  ``mask_points``, every cell centre is used (exact, deterministic).
- Bilinear sampling commutes with the dot product, so embeddings are sampled first and the logits
  computed only at the points (never the full [Q, Hp, Wp] maps in matching or loss).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from groupdetr.heads import Task
from groupdetr.layers import MLP

__all__ = [
    "TASK",
    "PixelDecoder",
    "MaskHead",
    "build_mask_head",
    "mask_logits",
    "point_sample",
    "image_points",
    "sample_target_masks",
    "batch_sigmoid_ce",
    "batch_dice",
    "pair_sigmoid_ce",
    "pair_dice",
    "mask_cost_term",
    "mask_loss_term",
    "mask_postprocess_term",
]


# ---------------------------------------------------------------------------------------------
# pure functions: logits, point sampling, costs


def mask_logits(mask_embeds: torch.Tensor, pixel_embeds: torch.Tensor) -> torch.Tensor:
    """[Q, E] query embeddings, [E, Hp, Wp] pixel embeddings -> [Q, Hp, Wp] mask logits."""
    return torch.einsum("qe,ehw->qhw", mask_embeds, pixel_embeds)


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` [N, C, h, w] at ``points`` [N, P, 2] -> [N, C, P].

    Points are (x, y) in [0, 1] of the map's extent (pixel-area convention, ``align_corners=False``,
    as Mask2Former's ``point_sample``); taps outside the map read zero.
    """
    grid = (2.0 * points - 1.0).unsqueeze(2)  # [N, P, 1, 2]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(-1)


def image_points(
    canvas: tuple[int, int], region: tuple[int, int], grid: tuple[int, int], num_points: int, device=None
) -> torch.Tensor:
    """Points at which one image is scored, in canvas-normalised (x, y) in [0, 1].

    Args:
        canvas: (H, W) of the padded batch.
        region: (h, w) of the image, which occupies the canvas's top-left corner.
        grid: (Hp, Wp) of the pixel embeddings (covering the canvas).
        num_points: P. If the region holds at most P cell centres (and at least one), all of them
            are returned (row-major); otherwise P points uniform over the region.
    Returns:
        [P', 2] float32.
    """
    (ch, cw), (h, w), (gh, gw) = canvas, region, grid
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) / gw
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) / gh
    xs, ys = xs[xs * cw < w], ys[ys * ch < h]  # cell centres inside the image
    if 0 < len(xs) * len(ys) <= num_points:
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.flatten(), yy.flatten()], dim=-1)
    scale = torch.tensor([w / cw, h / ch], device=device, dtype=torch.float32)
    return torch.rand(num_points, 2, device=device) * scale


def sample_target_masks(masks: torch.Tensor, points: torch.Tensor, canvas: tuple[int, int]) -> torch.Tensor:
    """Target masks [M, h, w] (bool, the image's own size) at canvas points [P, 2] -> [M, P] float.

    Equivalent to zero-padding the masks to the canvas and sampling there (padding = background,
    module docstring): points are rescaled from canvas to image extent and ``grid_sample`` reads
    zero outside the image.
    """
    h, w = masks.shape[-2:]
    ch, cw = canvas
    pts = points * torch.tensor([cw / w, ch / h], device=points.device, dtype=points.dtype)
    m = masks[:, None].to(points.dtype)  # [M, 1, h, w]
    return point_sample(m, pts[None].expand(len(masks), -1, -1))[:, 0]


def sample_pixel_embeds(pixel_embeds: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """One image's pixel embeddings [E, Hp, Wp] at canvas points [P, 2] -> [E, P]."""
    return point_sample(pixel_embeds[None], points[None])[0]


def batch_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid BCE of every prediction against every target: [Q, P], [M, P] -> [Q, M]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def batch_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (+1 smoothing, Mask2Former) of every prediction against every target:
    [Q, P], [M, P] -> [Q, M]."""
    p = logits.sigmoid()
    num = 2 * p @ targets.T
    den = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def pair_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid BCE of paired rows: [n, P], [n, P] -> [n]."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)


def pair_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of paired rows: [n, P], [n, P] -> [n] (same definition as :func:`batch_dice`)."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def _canvas(outputs: dict) -> tuple[int, int]:
    h, w = outputs["image_size"]
    return int(h), int(w)


def _region(target: dict) -> tuple[int, int]:
    h, w = target["masks"].shape[-2:]
    return int(h), int(w)


def _point_logits_and_targets(outputs: dict, image: int, target: dict, queries, num_points: int):
    """Logits of ``queries`` and the image's target masks at the image's points.

    Returns ([n, P] float32 logits, [M, P] float32 targets). Computed in float32 with autocast off
    (as Mask2Former): BCE and dice of bf16 logits summed over 12k points are too coarse.
    """
    embeds, pixels = outputs["pred_mask_embeds"][image], outputs["pixel_embeds"][image]
    canvas = _canvas(outputs)
    with torch.autocast(pixels.device.type, enabled=False):
        points = image_points(canvas, _region(target), tuple(pixels.shape[-2:]), num_points, pixels.device)
        feats = sample_pixel_embeds(pixels.float(), points)  # [E, P]
        logits = embeds[queries].float() @ feats
        tmasks = sample_target_masks(target["masks"], points, canvas)
    return logits, tmasks


# ---------------------------------------------------------------------------------------------
# terms the task registry plugs into the matcher, the criterion and the postprocessor


def mask_cost_term(cfg) -> Callable[[dict, int, dict], torch.Tensor]:
    """Matching cost ``cost_mask * BCE + cost_dice * dice`` (Mask2Former) of one image.

    Returns ``cost(outputs, image, target) -> [Q, M]`` float32, where ``outputs`` holds
    ``pred_mask_embeds`` [B, Q, E], ``pixel_embeds`` [B, E, Hp, Wp], ``image_size`` (H, W) of the
    padded canvas, and ``target["masks"]`` is [M, h_i, w_i] bool. ``cfg.matcher.mask_points``
    uniform points, shared by all queries and targets of the image (module docstring).
    """
    w_mask, w_dice, num_points = cfg.matcher.cost_mask, cfg.matcher.cost_dice, cfg.matcher.mask_points

    @torch.no_grad()
    def cost(outputs: dict, image: int, target: dict) -> torch.Tensor:
        embeds = outputs["pred_mask_embeds"][image]
        m = len(target["masks"])
        if m == 0:
            return embeds.new_zeros(embeds.shape[0], 0, dtype=torch.float32)
        logits, tmasks = _point_logits_and_targets(outputs, image, target, slice(None), num_points)
        return w_mask * batch_sigmoid_ce(logits, tmasks) + w_dice * batch_dice(logits, tmasks)

    return cost


def mask_loss_term(cfg) -> Callable[..., dict[str, torch.Tensor]]:
    """Unweighted ``loss_mask`` (sigmoid BCE, mean over points) and ``loss_dice`` of the matched
    (query, target) pairs, each summed over pairs and divided by ``num_boxes``.

    Returns ``loss(outputs, targets, indices, num_boxes) -> dict``; ``indices[b]`` =
    (query_idx, target_idx). Points: ``cfg.loss.mask_points`` *uniform* points per image, shared by
    its pairs (Mask2Former's importance sampling is not implemented), or every cell when fewer.
    """
    num_points = cfg.loss.mask_points

    def loss(outputs: dict, targets: list[dict], indices, num_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        # The zero term keeps the graph (and the dtype/device) when no image has a pair, so every
        # rank's backward touches the head's parameters (DDP needs that).
        zero = (outputs["pred_mask_embeds"].sum() + outputs["pixel_embeds"].sum()).float() * 0
        ce, dice = zero, zero
        for b, (q, j) in enumerate(indices):
            if len(q) == 0:
                continue
            logits, tmasks = _point_logits_and_targets(outputs, b, targets[b], q, num_points)
            t = tmasks[j]
            ce = ce + pair_sigmoid_ce(logits, t).sum()
            dice = dice + pair_dice(logits, t).sum()
        return {"loss_mask": ce / num_boxes, "loss_dice": dice / num_boxes}

    return loss


def mask_postprocess_term(cfg) -> Callable[[dict, list[dict], list[dict]], None]:
    """Adds ``results[i]["masks"]`` [k, orig_h, orig_w] bool for the selected queries
    ``results[i]["query"]`` [k] (repeats allowed).

    Logits are computed for the selected queries only, upsampled (bilinear) to the padded canvas,
    cropped to ``targets[i]["size"]``, resized (bilinear) to ``targets[i]["orig_size"]`` and
    thresholded at sigmoid 0.5 (logit 0).
    """

    @torch.no_grad()
    def postprocess(outputs: dict, results: list[dict], targets: list[dict]) -> None:
        canvas = _canvas(outputs)
        for i, (res, tgt) in enumerate(zip(results, targets)):
            h, w = (int(v) for v in tgt["size"])
            oh, ow = (int(v) for v in tgt["orig_size"])
            q = res["query"]
            if len(q) == 0:
                res["masks"] = torch.zeros(0, oh, ow, dtype=torch.bool, device=q.device)
                continue
            logits = mask_logits(outputs["pred_mask_embeds"][i, q], outputs["pixel_embeds"][i])
            logits = F.interpolate(logits[None], size=canvas, mode="bilinear", align_corners=False)
            logits = F.interpolate(logits[..., :h, :w], size=(oh, ow), mode="bilinear", align_corners=False)
            res["masks"] = logits[0] > 0

    return postprocess


# ---------------------------------------------------------------------------------------------
# modules (parameters live here)


def _conv_gn_relu(cin: int, cout: int) -> nn.Sequential:
    # GroupNorm (not BatchNorm): batch-size independent and identical in train/eval; 32 groups as
    # Mask2Former when the width allows it.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(32, cout), cout), nn.ReLU(inplace=True)
    )


class PixelDecoder(nn.Module):
    """Light FPN-style pixel decoder (Mask2Former's ``BasePixelDecoder`` with the encoder memory on
    top, as its ``TransformerEncoderPixelDecoder``).

    Top-down: ``y = conv(memory map)``; for each finer stage, coarse to fine,
    ``y = conv(lateral(stage) + upsample_nearest(y))``; then a 1x1 conv to E and, if the finest
    level is coarser than the output stride, a bilinear upsampling by ``upsample``.

    Args:
        stage_channels: channels of the stages used, ascending stride (finest first).
        memory_dim: d, channels of the encoder memory.
        mask_dim: E.
        upsample: integer factor from the finest level to the output stride (1 = none).
    """

    def __init__(self, stage_channels: Sequence[int], memory_dim: int, mask_dim: int, upsample: int = 1):
        super().__init__()
        d = memory_dim
        self.top = _conv_gn_relu(d, d)
        self.laterals = nn.ModuleList(nn.Conv2d(c, d, 1) for c in stage_channels)
        self.outputs = nn.ModuleList(_conv_gn_relu(d, d) for _ in stage_channels)
        self.mask_features = nn.Conv2d(d, mask_dim, 1)
        self.upsample = upsample

    def forward(self, memory_map: torch.Tensor, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            memory_map: [B, d, h, w] encoder output on the last stage's grid.
            stages: the used backbone maps, ascending stride, [B, C_i, H_i, W_i].
        Returns:
            [B, E, Hp, Wp].
        """
        y = self.top(memory_map)
        for x, lateral, out in reversed(list(zip(stages, self.laterals, self.outputs))):
            y = out(lateral(x) + F.interpolate(y, size=x.shape[-2:], mode="nearest"))
        # 1x1 conv before upsampling: the two commute (bilinear weights sum to 1), and E <= d is cheaper.
        y = self.mask_features(y)
        if self.upsample > 1:
            y = F.interpolate(y, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return y


class MaskHead(nn.Module):
    """Per-query mask embeddings and per-pixel embeddings (module docstring).

    Args:
        stage_channels, stage_strides: the backbone's stages (ascending stride).
        hidden_dim: d.
        mask_dim: E.
        stride: output stride of the pixel embeddings (a power of 2 <= the last stage's stride).

    The pixel decoder uses the stages with stride >= ``stride`` except the last, whose place the
    encoder memory takes (the encoder already read it, as in Mask2Former).
    """

    def __init__(self, stage_channels: Sequence[int], stage_strides: Sequence[int], hidden_dim: int, mask_dim: int, stride: int):
        super().__init__()
        self.stage_index = [i for i, s in enumerate(stage_strides[:-1]) if s >= stride]
        finest = stage_strides[self.stage_index[0]] if self.stage_index else stage_strides[-1]
        self.pixel_decoder = PixelDecoder(
            [stage_channels[i] for i in self.stage_index], hidden_dim, mask_dim, upsample=finest // stride
        )
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.stride = stride

    def position(self, ctx) -> None:
        """No extra positional encoding."""
        return None

    def pixel_embeds(self, ctx) -> torch.Tensor:
        """[B, E, Hp, Wp] from ``ctx.memory`` [B, h*w, d] and ``ctx.features``."""
        b, _, d = ctx.memory.shape
        h, w = ctx.memory_hw
        memory_map = ctx.memory.transpose(1, 2).reshape(b, d, h, w)
        return self.pixel_decoder(memory_map, [ctx.features[i] for i in self.stage_index])

    def forward(self, ctx, hs: torch.Tensor, boxes: torch.Tensor) -> list[dict]:
        """
        Args:
            ctx: :class:`groupdetr.heads.HeadContext` (``images``, ``features``, ``memory``, ``memory_hw``).
            hs: [L, B, Q, d] decoder outputs of the matching queries.
            boxes: [L, B, Q, 4] (unused: masks are not box-conditioned).
        Returns:
            L dicts: ``pred_mask_embeds`` [B, Q, E], ``pixel_embeds`` [B, E, Hp, Wp] (one tensor,
            shared by every layer), ``pixel_stride`` (int), ``image_size`` (H, W) of the canvas.
        """
        pixels = self.pixel_embeds(ctx)
        embeds = self.mask_embed(hs)
        size = tuple(int(s) for s in ctx.images.shape[-2:])
        return [
            {"pred_mask_embeds": e, "pixel_embeds": pixels, "pixel_stride": self.stride, "image_size": size}
            for e in embeds
        ]


def build_mask_head(cfg, backbone) -> MaskHead:
    """:class:`MaskHead` for ``cfg`` (a ``ModelConfig``) on ``backbone`` (``stage_channels``,
    ``stage_strides``). Raises ValueError if ``mask_head.stride`` is not a power of 2 or exceeds the
    last stage's stride."""
    stride, strides = cfg.mask_head.stride, tuple(backbone.stage_strides)
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"model.mask_head.stride must be a power of 2, got {stride}")
    if stride > strides[-1]:
        raise ValueError(f"model.mask_head.stride {stride} exceeds the backbone's last stage stride {strides[-1]}")
    return MaskHead(tuple(backbone.stage_channels), strides, cfg.hidden_dim, cfg.mask_head.mask_dim, stride)


def _mask_scorers(cfg, coco_gt) -> list:
    from groupdetr.evaluation.scorers import CocoScorer

    return [CocoScorer(coco_gt, ("bbox", "segm"), cfg.train.eval_backend)]


#: ``model.task=instance_segmentation``: this head, the mask costs and losses, masks in the results,
#: COCO box and mask AP.
TASK = Task(
    name="instance_segmentation",
    primary_metric="segm/AP",
    scorers=_mask_scorers,
    head=build_mask_head,
    cost_terms=lambda cfg: [mask_cost_term(cfg)],
    loss_terms=lambda cfg: [mask_loss_term(cfg)],
    loss_weights=lambda loss: {"loss_mask": loss.weight_mask, "loss_dice": loss.weight_dice},
    postprocess_terms=lambda cfg, categories=None: [mask_postprocess_term(cfg)],
    needs_masks=True,
)
