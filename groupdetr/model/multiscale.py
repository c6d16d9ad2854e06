"""Multi-scale features for deformable attention: the backbone's last stages (plus extra stride-2 levels, as
Deformable DETR) projected to d with GroupNorm, each with its padding mask, flattened into one sequence with
a learned level embedding, and the bookkeeping the encoder needs (level shapes, valid ratios, reference
points).

Shapes: B batch, C_i backbone channels, d model width, L levels, S = sum over levels of H_l * W_l.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from groupdetr.model.backbone import downsample_mask

__all__ = ["MultiScaleProjection", "FlatLevels", "flatten_levels", "valid_ratios", "encoder_reference_points"]


def _group_norm(d: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups as Deformable DETR, or the largest divisor of d below that for small d."""
    return nn.GroupNorm(math.gcd(32, d), d)


class MultiScaleProjection(nn.Module):
    """The last ``len(in_channels)`` backbone maps -> ``num_levels`` maps of width d.

    Each backbone map gets a 1x1 conv + GroupNorm; each extra level (``num_levels`` beyond the backbone maps)
    a 3x3 stride-2 conv + GroupNorm of the previous extra level, the first reading the last backbone map.
    Convs Xavier-initialised with zero bias, as the reference implementation.
    """

    def __init__(self, in_channels: Sequence[int], d_model: int, num_levels: int):
        super().__init__()
        if num_levels < len(in_channels):
            raise ValueError(f"multi-scale: {num_levels} levels cannot hold {len(in_channels)} backbone maps")
        self.num_levels = num_levels
        self.inputs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, d_model, 1), _group_norm(d_model)) for c in in_channels)
        extra, cin = [], in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            extra.append(nn.Sequential(nn.Conv2d(cin, d_model, 3, stride=2, padding=1), _group_norm(d_model)))
            cin = d_model
        self.extra = nn.ModuleList(extra)
        for seq in (*self.inputs, *self.extra):
            nn.init.xavier_uniform_(seq[0].weight, gain=1)
            nn.init.zeros_(seq[0].bias)

    def forward(self, maps: Sequence[torch.Tensor], pad_mask: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            maps: the backbone's last ``len(in_channels)`` maps, finest first, ``[B, C_i, H_i, W_i]``.
            pad_mask: [B, H, W] bool, True on padding of the input images.

        Returns:
            ([B, d, H_l, W_l] per level, [B, H_l, W_l] bool padding mask per level), finest first.
        """
        feats = [proj(x) for proj, x in zip(self.inputs, maps)]
        src = maps[-1]
        for proj in self.extra:
            src = proj(src)
            feats.append(src)
        masks = [downsample_mask(pad_mask, f.shape[-2:]) for f in feats]
        return feats, masks


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """[B, H, W] padding mask (True = pad, padding at the bottom/right) -> [B, 2] the valid fraction
    (width, height) of the map."""
    h, w = mask.shape[-2:]
    valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
    valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
    return torch.stack([valid_w / w, valid_h / h], -1)


@dataclass
class FlatLevels:
    """Multi-scale maps as one sequence.

    Attributes:
        src: [B, S, d] features, level after level, row-major.
        pos: [B, S, d] position encoding plus the level's embedding.
        mask: [B, S] bool, True at padding.
        shapes: (H_l, W_l) per level.
        start: [L] long, where each level begins in S.
        ratios: [B, L, 2] valid (width, height) fraction of each level.
    """

    src: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    shapes: list[tuple[int, int]]
    start: torch.Tensor
    ratios: torch.Tensor


def flatten_levels(feats: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], pos: Sequence[torch.Tensor],
                   level_embed: torch.Tensor) -> FlatLevels:
    """Per-level ``[B, d, H_l, W_l]`` features, ``[B, H_l, W_l]`` masks and ``[B, d, H_l, W_l]`` position
    encodings, plus ``level_embed`` [L, d] -> :class:`FlatLevels`."""
    shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]
    src = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)
    pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + level_embed[i][None, None] for i, p in enumerate(pos)], 1)
    mask = torch.cat([m.flatten(1) for m in masks], 1)
    sizes = torch.tensor([h * w for h, w in shapes], device=src.device)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    ratios = torch.stack([valid_ratios(m) for m in masks], 1)
    return FlatLevels(src, pos_flat, mask, shapes, start, ratios)


def encoder_reference_points(shapes: Sequence[tuple[int, int]], ratios: torch.Tensor) -> torch.Tensor:
    """The encoder's reference points: each position's pixel centre, normalised by its level's *valid* size,
    then seen from every level (times that level's valid ratio).

    Args:
        shapes: (H_l, W_l) per level.
        ratios: [B, L, 2] valid (width, height) fraction per level.

    Returns:
        [B, S, L, 2] (x, y).
    """
    points = []
    for level, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=ratios.dtype, device=ratios.device),
                                torch.linspace(0.5, w - 0.5, w, dtype=ratios.dtype, device=ratios.device),
                                indexing="ij")
        x = xs.reshape(1, -1) / (ratios[:, None, level, 0] * w)
        y = ys.reshape(1, -1) / (ratios[:, None, level, 1] * h)
        points.append(torch.stack([x, y], -1))
    ref = torch.cat(points, 1)
    return ref[:, :, None] * ratios[:, None]
