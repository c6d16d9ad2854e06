"""Sine positional encodings (DETR's image encoding and Conditional DETR's point encoding)."""
from __future__ import annotations

import math

import torch

__all__ = ["sine_image_encoding", "sine_point_encoding", "sine_box_encoding"]


def sine_image_encoding(pad_mask: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2D sine encoding of a feature map.

    Args:
        pad_mask: [B, H, W] bool, True on padding.
        num_feats: features per axis (output has 2*num_feats channels).
    Returns:
        [B, 2*num_feats, H, W]: y features then x features.
    """
    not_mask = (~pad_mask).to(torch.float32)
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=pad_mask.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    px = x[..., None] / dim_t
    py = y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def sine_point_encoding(points: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """Conditional DETR's sine embedding of normalised 2D reference points.

    Args:
        points: [..., 2] (x, y) in [0, 1].
    Returns:
        [..., d_model]: y features then x features (d_model/2 each).
    """
    half = d_model // 2
    scale = 2 * math.pi
    dim_t = torch.arange(half, dtype=torch.float32, device=points.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    px = points[..., 0, None] * scale / dim_t
    py = points[..., 1, None] * scale / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=-1).flatten(-2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=-1).flatten(-2)
    return torch.cat((py, px), dim=-1)


def sine_box_encoding(boxes: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """DAB-DETR's sine embedding of normalised anchor boxes.

    Args:
        boxes: [..., 4] (cx, cy, w, h) in [0, 1].
    Returns:
        [..., 2*d_model]: y, x (= :func:`sine_point_encoding` of the centre), then w, h features
        (d_model/2 each).
    """
    wh = sine_point_encoding(boxes[..., 2:], d_model, temperature)  # (h, w) order
    half = d_model // 2
    return torch.cat([sine_point_encoding(boxes[..., :2], d_model, temperature), wh[..., half:], wh[..., :half]], dim=-1)
