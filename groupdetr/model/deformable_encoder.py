"""Deformable DETR's encoder: every position of every level attends, through multi-scale deformable attention,
to a few points around itself on all levels; post-norm, FFN as DETR's.

Shapes: B batch, S flattened positions of all levels, L levels, d model width.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from groupdetr.model.deformable import MSDeformAttn
from groupdetr.model.memory import Memory
from groupdetr.model.multiscale import FlatLevels, MultiScaleProjection, encoder_reference_points, flatten_levels
from groupdetr.model.position import sine_image_encoding
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
                 n_levels: int, n_points: int, backbone_levels: int | None = None):
        super().__init__()
        layer = DeformableEncoderLayer(d_model, nhead, dim_feedforward, dropout, n_levels, n_points)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        for p in self.layers.parameters():  # independent draws after the copies
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for lyr in self.layers:
            lyr.attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        self.d_model, self.n_levels = d_model, n_levels
        self.backbone_levels = n_levels if backbone_levels is None else backbone_levels

    @classmethod
    def from_config(cls, cfg) -> "DeformableEncoder":
        """From the model config (``ModelConfig``, its ``deformable`` section)."""
        df = cfg.deformable
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers, df.num_levels,
                   df.enc_points, df.backbone_levels)

    def input_projection(self, backbone: nn.Module) -> MultiScaleProjection:
        """The detector's projection: the last ``backbone_levels`` stages to d, plus extra stride-2 levels."""
        stages = tuple(backbone.stage_channels)
        if self.backbone_levels > len(stages):
            raise ValueError(f"model.deformable.backbone_levels={self.backbone_levels}: the backbone has "
                             f"{len(stages)} stages")
        return MultiScaleProjection(stages[-self.backbone_levels:], self.d_model, self.n_levels)

    def encode(self, proj: MultiScaleProjection, features: list[torch.Tensor], pad_mask: torch.Tensor,
               extra_pos: torch.Tensor | None = None) -> Memory:
        """Backbone maps -> :class:`Memory` of ``n_levels`` levels; the grid level (the last backbone stage's)
        gets ``extra_pos`` [B, h*w, d] (the 3D head's camera rays) when given."""
        feats, masks = proj(features[-self.backbone_levels:], pad_mask)
        pos = [sine_image_encoding(m, self.d_model // 2).to(f.dtype) for f, m in zip(feats, masks)]
        flat = flatten_levels(feats, masks, pos, self.level_embed)
        grid = self.backbone_levels - 1
        if extra_pos is not None:
            start = int(flat.start[grid])
            h, w = flat.shapes[grid]
            flat.pos = torch.cat([flat.pos[:, :start], flat.pos[:, start:start + h * w] + extra_pos,
                                  flat.pos[:, start + h * w:]], 1)
        return Memory(self(flat), flat.pos, flat.mask, flat.shapes, flat.ratios, grid_level=grid)

    def forward(self, flat: FlatLevels) -> torch.Tensor:
        """:class:`groupdetr.model.multiscale.FlatLevels` -> memory [B, S, d]."""
        if len(flat.shapes) != self.n_levels:
            raise ValueError(f"deformable encoder: built for {self.n_levels} levels, got {len(flat.shapes)}")
        reference = encoder_reference_points(flat.shapes, flat.ratios)
        src = flat.src
        for layer in self.layers:
            src = layer(src, flat.pos, reference, flat)
        return src
