"""Checkpoints of the run directory (:mod:`groupdetr.rundir`): the only torch files of the contract."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from groupdetr.rundir import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to memory, then an atomic write: a kill never leaves a torn checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers only."""
    return torch.load(path, map_location="cpu", weights_only=True)
