"""What an encoder hands the decoder: the memory sequence, its positions and padding, and its levels.

A single-scale encoder (DETR, Conditional DETR, DAB-DETR) has one level, the last backbone stage; a
multi-scale one (Deformable DETR) several, flattened one after another. Heads that read the memory as a
map (the mask head's pixel decoder, the 3D head's frustum) read the *grid level*: the level at the
resolution of the last backbone stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Memory"]


@dataclass
class Memory:
    """Encoder output.

    Attributes:
        src: [B, S, d] memory, levels one after another, each row-major.
        pos: [B, S, d] position encoding of every memory position (with level embeddings, if any).
        mask: [B, S] bool, True at padding.
        shapes: (H_l, W_l) of each level.
        ratios: [B, L, 2] valid (width, height) fraction of each level.
        grid_level: index of the level at the last backbone stage's resolution.
    """

    src: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    shapes: list[tuple[int, int]]
    ratios: torch.Tensor
    grid_level: int = 0

    def level_range(self, level: int) -> slice:
        """Where ``level`` lies in the S axis."""
        start = sum(h * w for h, w in self.shapes[:level])
        h, w = self.shapes[level]
        return slice(start, start + h * w)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid level's memory [B, h*w, d] and padding [B, h*w]."""
        s = self.level_range(self.grid_level)
        return self.src[:, s], self.mask[:, s]
