"""TensorBoard curves of a training run: ``RUN/tensorboard/`` (``tensorboard --logdir results/runs``).

Everything is logged against the global step, the iterations trained so far: iteration i of epoch e is step
``(e - 1) * iterations_per_epoch + i`` (every epoch runs the same number: the loader drops its last
incomplete batch), so a resumed run continues the same curves.

- every iteration: ``loss/total``, the weighted sum the optimiser minimises, and ``loss/<name>`` for each of
  its weighted terms (weight x named loss, so the terms add up to the total; ``log.jsonl`` keeps the unweighted
  ones), ``lr/lr`` and ``lr/lr_backbone``. Rank 0's own batch under torchrun (``log.jsonl``: epoch means
  over every rank);
- every epoch, at the step of its last iteration: the evaluation stats under their own names (``bbox/AP``,
  ``segm/AP``, ``3d/NDS`` ...) when the epoch was evaluated, ``matching/instability`` (IS, DN-DETR) from
  epoch 2, the epoch means ``epoch/loss`` and ``epoch/<name>`` (unweighted, as ``log.jsonl``), and
  ``time/train_seconds``, ``time/eval_seconds``, ``memory/peak_mib``.

Only the main process writes (``RANK`` 0). ``log.jsonl`` stays the record that gatherers read; these files are
for looking at, and not part of the run-directory contract's atomic writes (event files are appended to).
``torch.utils.tensorboard`` is imported only when a board is opened.
"""
from __future__ import annotations

import math
from pathlib import Path

from groupdetr.criterion import loss_weight

__all__ = ["global_step", "step_scalars", "epoch_scalars", "Board"]

#: ``log.jsonl`` keys of an epoch record -> TensorBoard tags (the losses and stats are mapped by rule)
_EPOCH_TAGS = {"matching_instability": "matching/instability", "seconds": "time/train_seconds",
               "eval_seconds": "time/eval_seconds", "peak_memory_mib": "memory/peak_mib"}


def global_step(epoch: int, iteration: int, per_epoch: int) -> int:
    """Iterations trained once iteration ``iteration`` (from 1) of epoch ``epoch`` (from 1) is done."""
    return (epoch - 1) * per_epoch + iteration


def step_scalars(losses: dict[str, float], weights: dict[str, float], lrs: dict[str, float]) -> dict[str, float]:
    """One iteration's scalars: ``losses`` holds the named (unweighted) losses and ``loss``, their weighted
    total; ``weights`` the base weights (:func:`groupdetr.criterion.loss_weight`); ``lrs`` ``{"lr": ...,
    "lr_backbone": ...}``. Returns ``{"loss/total", "loss/<name>" (weighted), "lr/<key>"}``."""
    out = {"loss/total": losses["loss"]}
    out.update({f"loss/{k}": loss_weight(k, weights) * v for k, v in losses.items() if k != "loss"})
    out.update({f"lr/{k}": v for k, v in lrs.items()})
    return out


def epoch_scalars(record: dict) -> dict[str, float]:
    """An epoch's scalars from its ``log.jsonl`` record: the stats (keys with a ``/``) as they are, the epoch
    mean losses under ``epoch/``, and :data:`_EPOCH_TAGS`. Nulls and NaNs (no IS in epoch 1, an AOE
    without orientable classes) are left out."""
    out = {}
    for k, v in record.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            continue
        if "/" in k:
            out[k] = v
        elif k == "loss" or k.startswith("loss_"):
            out[f"epoch/{k}"] = v
        elif k in _EPOCH_TAGS:
            out[_EPOCH_TAGS[k]] = v
    return out


class Board:
    """The event writer of one training process, or nothing (``log_dir`` None: another rank, or
    ``--no-tensorboard``): every method is then a no-op, so the caller never branches.

    ``first_step``: the first step this process trains (1, or the one after the checkpoint it resumes from).
    A run killed after its last checkpoint had already written some steps of the epoch it was in; resumed, it
    trains them again and writes them again, in a new event file (one per process). What a reader sees of the
    killed attempt's copies: every process starts its file with a session start at ``first_step``
    (``SummaryWriter(purge_step=first_step)``, a ``SessionLog.START`` event), which TensorBoard's Python loader
    (``tensorboard --load_fast=false``, ``EventAccumulator``) takes for a restart and drops every earlier
    point at or after that step (a run's first process starts at step 1: nothing to drop). The default fast
    loader (``--load_fast=auto``, Rust) keeps one point per step, the last written, i.e. the resumed run's
    (checked with TensorBoard 2.21). A reader of the raw event files sees both copies at the same steps, the
    killed attempt's first -- on CPU the same values (a resumed epoch computes exactly what the killed one did).
    """

    def __init__(self, log_dir: str | Path | None, first_step: int = 1):
        self._writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(log_dir), purge_step=first_step)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Add each ``{tag: value}`` at ``step``."""
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Write what is queued (before a checkpoint: the curves on disk reach at least as far as it)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
