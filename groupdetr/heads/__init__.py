"""Task heads on the shared core model (issue 6): instance segmentation (``mask``) and 3D detection
(``box3d``), each a plugin: its module declares a :class:`Task` (``TASK``) holding everything the rest of
the library needs of it, and :data:`groupdetr.tasks.TASKS` only lists them. Adding a head touches its own
module, its config section and its tests.

A head is an ``nn.Module`` with two methods the detector calls once per forward:

- ``position(ctx) -> [B, h*w, d] | None``: an extra positional encoding of the image features,
  added to the sine encoding before the encoder (the 3D head's camera-aware encoding, PETR);
- ``forward(ctx, hs, boxes) -> list[dict]``: per decoder layer, the extra output keys of the
  matching queries (``hs`` [L, B, Q, d], ``boxes`` [L, B, Q, 4]).

The group mechanics are untouched by heads: a head sees the G*N matching queries of the active
groups, group-contiguous, like the class and box heads. Matching costs, losses, postprocessing and
scoring of each head are plain callables of its :class:`Task`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["HeadContext", "Task"]


def _none(*args, **kwargs):
    return None


def _empty(*args, **kwargs):
    return []


def _no_weights(loss_cfg) -> dict[str, float]:
    return {}


@dataclass(frozen=True)
class Task:
    """What a ``model.task`` adds to the shared detector. Every task keeps the class and box heads, their
    matching costs, losses and weights (the base of every task); a task's callables add its own on top.

    Attributes:
        name: the ``model.task`` value (:data:`groupdetr.names.TASKS`).
        primary_metric: the stat the trainer reports as the task's headline (``bbox/AP``, ``3d/NDS`` ...).
        head: ``(ModelConfig, backbone) -> nn.Module | None``, the head the detector calls.
        cost_terms: ``Config -> [cost]``, each ``cost(outputs, image index, target) -> [Q, M]`` (weighted),
            added to the class and box costs before every group's Hungarian matching.
        loss_terms: ``Config -> [loss]``, each ``loss(outputs, targets, indices, num_boxes) -> {name: loss}``
            (unweighted, per decoder layer).
        loss_weights: ``LossConfig -> {loss name: weight}`` of the names ``loss_terms`` return.
        postprocess_terms: ``(Config, categories) -> [term]``, each ``term(outputs, results, targets) -> None``
            adding keys to every image's result; ``categories``: the dataset's COCO categories (or None).
        scorers: ``(Config, coco_gt) -> [Scorer]`` (:mod:`groupdetr.evaluation.scorers`): the metrics
            the task is evaluated with, the box AP included.
        needs_masks, needs_3d: what the task needs of the dataset (instance masks decoded; 3D annotations
            and cameras, else :func:`groupdetr.data.build_dataset` refuses the dataset).
    """

    name: str
    primary_metric: str
    scorers: Callable
    head: Callable = _none
    cost_terms: Callable = _empty
    loss_terms: Callable = _empty
    loss_weights: Callable = _no_weights
    postprocess_terms: Callable = _empty
    needs_masks: bool = False
    needs_3d: bool = False


@dataclass
class HeadContext:
    """What a head may read about the current batch (filled in by the detector as it goes).

    Attributes:
        images: [B, 3, H, W] padded input; pad_mask: [B, H, W] bool, True on padding.
        features: backbone maps of every stage, ascending stride, [B, C_i, H_i, W_i].
        memory_hw: (h, w) of the last stage (the encoder's grid).
        memory: [B, h*w, d] encoder output (None before the encoder ran).
        memory_pad: [B, h*w] bool.
        targets: the batch's targets (training and evaluation), or None; a head reads what it needs
            of them itself (the 3D head: the camera ``intrinsics``).
    """

    images: torch.Tensor
    pad_mask: torch.Tensor
    features: list
    memory_hw: tuple
    memory: torch.Tensor | None = None
    memory_pad: torch.Tensor | None = None
    targets: list | None = None
