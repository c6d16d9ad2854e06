"""Batching: zero-padded images with a padding mask, and a reproducibly seeded DataLoader.

Seeding (why augmentation is reproducible): the DataLoader gets its own ``torch.Generator`` seeded
with ``seed``; it drives the shuffling order and the base seed of each epoch's workers. Worker
``i`` starts with torch seed ``base_seed + i`` (set by PyTorch), from which :func:`seed_worker`
also seeds ``numpy`` and ``random``; the transforms draw from torch's global RNG, so the same
``seed`` and ``num_workers`` give the same batches. With ``num_workers=0`` the transforms run in
the main process and draw from its global RNG: seed it (``torch.manual_seed(cfg.seed)``) first.
"""
from __future__ import annotations

import functools
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from groupdetr.errors import DatasetError

__all__ = ["collate", "seed_worker", "worker_message", "Loader", "build_loader"]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate(batch: list[tuple[torch.Tensor, dict]], size_divisibility: int = 1):
    """
    Args:
        batch: ``(image [3, H_i, W_i], target)`` pairs.
        size_divisibility: pad H and W up to a multiple of this (e.g. the backbone stride).
    Returns:
        ``images`` ``[B, 3, H, W]`` zero-padded at the bottom/right (zero = the mean colour once
        normalised), ``pad_mask`` ``[B, H, W]`` bool, True on padding, and the list of targets
        (boxes stay normalised by each image's own size, as in DETR).
    """
    images, targets = zip(*batch)
    h = _round_up(max(im.shape[-2] for im in images), size_divisibility)
    w = _round_up(max(im.shape[-1] for im in images), size_divisibility)
    out = images[0].new_zeros(len(images), images[0].shape[0], h, w)
    pad_mask = torch.ones(len(images), h, w, dtype=torch.bool)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
        pad_mask[i, : im.shape[-2], : im.shape[-1]] = False
    return out, pad_mask, list(targets)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed, which PyTorch
    derives from the loader's generator (module docstring)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def worker_message(error: BaseException) -> str:
    """The one-line message an exception had where it was raised. PyTorch re-raises an exception of a
    DataLoader worker in the main process with the worker's whole traceback as its message
    (``Caught DatasetError in DataLoader worker process 0.`` / ``Original Traceback ...``), whose last line
    is ``module.Class: <message>``; an exception raised in this process is returned as it is."""
    text = str(error)
    if not text.startswith(f"Caught {type(error).__name__} in DataLoader worker"):
        return text
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


class Loader(DataLoader):
    """A DataLoader whose :class:`DatasetError` (an unreadable or zero-byte image ...) reads the same with
    ``num_workers > 0`` as without: the dataset's own line naming the file, not a worker's traceback."""

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except DatasetError as e:
                raise DatasetError(worker_message(e)) from None
            yield batch


def build_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = False,
    size_divisibility: int = 1,
    sampler=None,
) -> DataLoader:
    """DataLoader over ``dataset`` batching with :func:`collate`, seeded as in the module docstring.
    A ``sampler`` (e.g. ``DistributedSampler``) replaces ``shuffle``. Errors of the dataset read as one
    line with or without workers (:class:`Loader`)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return Loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisibility=size_divisibility),
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
    )
