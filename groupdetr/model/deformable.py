"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021), in plain PyTorch.

Each query attends to a few sampled points per head and per feature level instead of to every position:
``n_points`` locations around its reference point on each of ``n_levels`` maps, read by bilinear
interpolation (``F.grid_sample``) and summed with softmax weights predicted from the query. The formulation
is that of the reference implementation's PyTorch path; no compiled extension is needed. (No fused kernel
ships with our pinned torch/torchvision, so the same function runs on CPU and GPU.)

Shapes use B batch, Q queries, S = sum over levels of H_l * W_l flattened positions (level by level, row
major), M heads, L levels, P points per head and level, d model width, d_h = d / M.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ms_deform_attn", "sampling_locations", "MSDeformAttn"]

Shapes = Sequence[tuple[int, int]]


def _shapes(spatial_shapes: Shapes | torch.Tensor) -> list[tuple[int, int]]:
    """(H_l, W_l) of each level as Python ints (a tensor is read once)."""
    rows = spatial_shapes.tolist() if torch.is_tensor(spatial_shapes) else spatial_shapes
    return [(int(h), int(w)) for h, w in rows]


def ms_deform_attn(value: torch.Tensor, spatial_shapes: Shapes | torch.Tensor, locations: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Sum over levels and points of the bilinearly sampled values, weighted.

    Args:
        value: [B, S, M, d_h], every level's map flattened row-major, levels one after the other.
        spatial_shapes: (H_l, W_l) of the L levels, in the order of ``value``.
        locations: [B, Q, M, L, P, 2] sampling points as (x, y) in [0, 1] of each level's map (0 and 1 are the
            outer edges, as ``align_corners=False``); points outside read zeros.
        weights: [B, Q, M, L, P] attention weights (a softmax over L * P per query and head).

    Returns:
        [B, Q, M * d_h], heads concatenated.
    """
    b, s, m, dh = value.shape
    _, q, _, n_levels, p, _ = locations.shape
    shapes = _shapes(spatial_shapes)
    if len(shapes) != n_levels or sum(h * w for h, w in shapes) != s:
        raise ValueError(f"ms_deform_attn: spatial shapes {shapes} do not cover the {s} values of {n_levels} levels")
    grids = 2 * locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for level, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes)):
        v = v.permute(0, 2, 3, 1).reshape(b * m, dh, h, w)
        g = grids[:, :, :, level].transpose(1, 2).reshape(b * m, q, p, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [B*M, d_h, Q, L*P]
    w = weights.transpose(1, 2).reshape(b * m, 1, q, n_levels * p)
    return (stacked * w).sum(-1).view(b, m * dh, q).transpose(1, 2)


def sampling_locations(reference: torch.Tensor, offsets: torch.Tensor, spatial_shapes: Shapes | torch.Tensor) -> torch.Tensor:
    """Where each head samples: the reference point plus the predicted offsets.

    Args:
        reference: [B, Q, L, 2] points (x, y) or [B, Q, L, 4] boxes (cx, cy, w, h), normalised, per level.
        offsets: [B, Q, M, L, P, 2] raw offsets.
        spatial_shapes: (H_l, W_l) per level.

    Returns:
        [B, Q, M, L, P, 2]: for points, offsets in pixels of each level (divided by (W_l, H_l)); for boxes,
        offsets in units of half the box, divided by P (Deformable DETR's two-stage / box-refinement rule).
    """
    ref = reference[:, :, None, :, None, :]
    if reference.shape[-1] == 2:
        shapes = _shapes(spatial_shapes)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=offsets.dtype, device=offsets.device)
        return ref + offsets / norm[None, None, None, :, None, :]
    if reference.shape[-1] == 4:
        return ref[..., :2] + offsets / offsets.shape[4] * ref[..., 2:] * 0.5
    raise ValueError(f"reference points: last dimension 2 or 4, got {reference.shape[-1]}")


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention, batch-first.

    Initialised as Deformable DETR: offset weights zero and biases pointing the P points of head m along
    direction 2*pi*m/M at 1..P pixels; attention weights uniform; value and output projections Xavier.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MSDeformAttn: d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # on the square's border
        grid = grid[:, None, None, :].repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value: torch.Tensor,
                spatial_shapes: Shapes | torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            query: [B, Q, d] (position already added).
            reference: [B, Q, L, 2] points or [B, Q, L, 4] boxes, normalised to each level's valid area.
            value: [B, S, d] the flattened multi-scale features.
            spatial_shapes: (H_l, W_l) per level.
            padding_mask: [B, S] bool, True at padded positions (their values read as zero), or None.

        Returns:
            [B, Q, d].
        """
        b, q, _ = query.shape
        m, n_levels, p = self.n_heads, self.n_levels, self.n_points
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(b, value.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(b, q, m, n_levels, p, 2)
        weights = self.attention_weights(query).view(b, q, m, n_levels * p).softmax(-1).view(b, q, m, n_levels, p)
        locations = sampling_locations(reference, offsets, spatial_shapes)
        return self.output_proj(ms_deform_attn(v, spatial_shapes, locations, weights))
