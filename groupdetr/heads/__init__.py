"""Task heads on the shared core model (issue 6): instance segmentation (``mask``) and 3D detection
(``box3d``). A head is an ``nn.Module`` with two methods the detector calls once per forward:

- ``position(ctx) -> [B, h*w, d] | None``: an extra positional encoding of the image features,
  added to the sine encoding before the encoder (the 3D head's camera-aware encoding, PETR);
- ``forward(ctx, hs, boxes) -> list[dict]``: per decoder layer, the extra output keys of the
  matching queries (``hs`` [L, B, Q, d], ``boxes`` [L, B, Q, 4]).

The group mechanics are untouched by heads: a head sees the G*N matching queries of the active
groups, group-contiguous, like the class and box heads. Matching costs, losses and postprocessing
of each head are plain callables registered per task in ``groupdetr.tasks``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["HeadContext"]


@dataclass
class HeadContext:
    """What a head may read about the current batch (filled in by the detector as it goes).

    Attributes:
        images: [B, 3, H, W] padded input; pad_mask: [B, H, W] bool, True on padding.
        features: backbone maps of every stage, ascending stride, [B, C_i, H_i, W_i].
        memory_hw: (h, w) of the last stage (the encoder's grid).
        memory: [B, h*w, d] encoder output (None before the encoder ran).
        memory_pad: [B, h*w] bool.
        targets: the batch's targets (training and evaluation), or None.
        intrinsics: [B, 3, 3] camera matrices of the model-input images when the targets carry
            them, else None.
    """

    images: torch.Tensor
    pad_mask: torch.Tensor
    features: list
    memory_hw: tuple
    memory: torch.Tensor | None = None
    memory_pad: torch.Tensor | None = None
    targets: list | None = None
    intrinsics: torch.Tensor | None = None
