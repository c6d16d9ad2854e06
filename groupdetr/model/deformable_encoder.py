"""Deformable DETR's encoder: every position of every level attends, through multi-scale deformable attention,
to a few points around itself on all levels; post-norm, FFN as DETR's.

Shapes: B batch, S flattened positions of all levels, L levels, d model width.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from groupdetr.model.deformable import MSDeformAttn
from groupdetr.model.multiscale import FlatLevels, encoder_reference_points
from groupdetr.model.transformer import FFN

__all__ = ["DeformableEncoderLayer", "DeformableEncoder"]


class DeformableEncoderLayer(nn.Module):
    """src + Dropout(MSDeformAttn(src + pos, reference points, src)), LayerNorm, then the FFN block."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, n_levels: int, n_points: int):
        super().__init__()
        self.attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor, flat: FlatLevels) -> torch.Tensor:
        """src, pos: [B, S, d]; reference: [B, S, L, 2] -> [B, S, d]."""
        out = self.attn(src + pos, reference, src, flat.shapes, flat.mask)
        return self.ffn(self.norm(src + self.dropout(out)))


class DeformableEncoder(nn.Module):
    """Stack of :class:`DeformableEncoderLayer` over flattened multi-scale features, initialised as Deformable
    DETR's ``_reset_parameters``: Xavier uniform on every matrix, then each attention's own init
    (:meth:`MSDeformAttn.reset_parameters`); biases and LayerNorms as built."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 n_levels: int, n_points: int):
        super().__init__()
        layer = DeformableEncoderLayer(d_model, nhead, dim_feedforward, dropout, n_levels, n_points)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        for p in self.parameters():  # independent draws after the copies
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for lyr in self.layers:
            lyr.attn.reset_parameters()
        self.n_levels = n_levels

    def forward(self, flat: FlatLevels) -> torch.Tensor:
        """:class:`groupdetr.model.multiscale.FlatLevels` -> memory [B, S, d]."""
        if len(flat.shapes) != self.n_levels:
            raise ValueError(f"deformable encoder: built for {self.n_levels} levels, got {len(flat.shapes)}")
        reference = encoder_reference_points(flat.shapes, flat.ratios)
        src = flat.src
        for layer in self.layers:
            src = layer(src, flat.pos, reference, flat)
        return src
