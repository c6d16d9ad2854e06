"""Progress: tqdm bars on a terminal, plain periodic log lines otherwise (workflow logs), with the running
loss and the ETA of the whole run while training.

A training epoch's bar reads ``epoch 3: 40%|####  | 8/20 [00:04<00:06, 2.0it/s, loss 12.3456, run eta 0:05:12]``
(tqdm's own ETA is the epoch's); without a terminal, every ``train.log_every`` iterations and at the end:
``epoch 3 [8/20] loss 12.3456, 2.00 it/s, 4.0 s elapsed, eta 6 s, run eta 0:05:12``. The loss is the mean
weighted total of the last :data:`WINDOW` iterations (DETR's smoothing window). The run's ETA counts every
training iteration left, this epoch's and the later epochs', at the mean seconds per iteration this process
has measured, and every evaluation still due at the mean seconds of those measured (this process's, and
those ``log.jsonl`` holds when resuming); before any evaluation was timed it counts training only and reads
``run eta >0:05:12 (+eval)``.
"""
from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from tqdm import tqdm

__all__ = ["WINDOW", "progress", "Progress", "evaluations_left", "run_eta", "format_duration", "RunClock"]

log = logging.getLogger("groupdetr.engine")

WINDOW = 20
"""Iterations over which the shown loss is averaged."""


def evaluations_left(epoch: int, epochs: int, eval_every: int) -> int:
    """Evaluations still due while epoch ``epoch`` trains: those after the epochs ``epoch`` ... ``epochs`` whose
    number is a multiple of ``eval_every``, and after the last epoch always (``train.eval_every``)."""
    return sum(1 for e in range(epoch, epochs + 1) if e % eval_every == 0 or e == epochs)


def run_eta(epoch: int, iteration: int, epochs: int, per_epoch: int, eval_every: int, seconds_per_iteration: float,
            seconds_per_evaluation: float | None) -> tuple[float, bool]:
    """Seconds left of a run once iteration ``iteration`` of epoch ``epoch`` is done (both from 1).

    Training: the ``per_epoch - iteration`` iterations left in this epoch and ``per_epoch`` in each of the
    ``epochs - epoch`` later ones, at ``seconds_per_iteration``; evaluation: :func:`evaluations_left` at
    ``seconds_per_evaluation`` (None: none timed yet). Returns ``(seconds, complete)``; ``complete`` is False
    when no evaluation was timed yet (one is always due: the last epoch's), the seconds then a lower bound.
    """
    iterations = per_epoch - iteration + (epochs - epoch) * per_epoch
    seconds = iterations * seconds_per_iteration
    if seconds_per_evaluation is None:
        return seconds, False
    return seconds + evaluations_left(epoch, epochs, eval_every) * seconds_per_evaluation, True


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours past 24 keep counting: ``75:02:03``)."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RunClock:
    """What the run's ETA is estimated from: the training seconds and iterations, and the evaluation seconds,
    measured so far. ``evaluation_seconds``: evaluations timed before (``eval_seconds`` of the evaluated
    epochs in ``log.jsonl``, when resuming)."""

    def __init__(self, epochs: int, per_epoch: int, eval_every: int, evaluation_seconds: Iterable[float] = ()):
        self.epochs, self.per_epoch, self.eval_every = epochs, per_epoch, eval_every
        self.train_seconds, self.train_iterations = 0.0, 0
        self.evaluation_seconds = list(evaluation_seconds)

    def add_epoch(self, seconds: float, iterations: int, evaluation_seconds: float | None) -> None:
        """A finished epoch: its training time and iterations, its evaluation's time (None: not evaluated)."""
        self.train_seconds += seconds
        self.train_iterations += iterations
        if evaluation_seconds is not None:
            self.evaluation_seconds.append(evaluation_seconds)

    def eta(self, epoch: int) -> Callable[[int, float], tuple[float, bool]]:
        """The ETA of epoch ``epoch``'s bar: ``(iteration, seconds elapsed in the epoch) -> run_eta(...)``."""
        def eta(iteration: int, elapsed: float) -> tuple[float, bool]:
            per_iteration = (self.train_seconds + elapsed) / (self.train_iterations + iteration)
            per_evaluation = (sum(self.evaluation_seconds) / len(self.evaluation_seconds)
                              if self.evaluation_seconds else None)
            return run_eta(epoch, iteration, self.epochs, self.per_epoch, self.eval_every, per_iteration,
                           per_evaluation)

        return eta


class Progress:
    """Iterate ``items`` (``total`` of them) showing progress: a tqdm bar when stderr is a terminal, else
    ``desc [i/total] ...`` log lines every ``every`` items and at the end; nothing when not ``enabled``
    (non-main ranks). While iterating, :meth:`add_loss` after each item feeds the running loss shown, and
    ``eta`` (``(items done, seconds elapsed) -> (seconds, complete)``, e.g. :meth:`RunClock.eta`) gives the
    run's ETA shown."""

    def __init__(self, items: Iterable, total: int, desc: str, every: int, enabled: bool = True,
                 eta: Callable[[int, float], tuple[float, bool]] | None = None):
        self.items, self.total, self.desc, self.every, self.enabled, self.eta = items, total, desc, every, enabled, eta
        self.losses: deque[float] = deque(maxlen=WINDOW)

    def add_loss(self, value: float) -> None:
        self.losses.append(value)

    def _loss(self) -> str | None:
        """The running loss, once there is one."""
        return f"loss {sum(self.losses) / len(self.losses):.4f}" if self.losses else None

    def _run_eta(self, done: int, elapsed: float) -> str | None:
        """The run's ETA, when an ``eta`` was given."""
        if self.eta is None:
            return None
        seconds, complete = self.eta(done, elapsed)
        return f"run eta {format_duration(seconds)}" if complete else f"run eta >{format_duration(seconds)} (+eval)"

    def __iter__(self) -> Iterator:
        if not self.enabled:
            yield from self.items
            return
        if sys.stderr.isatty():
            bar = tqdm(self.items, total=self.total, desc=self.desc, dynamic_ncols=True, leave=False)
            for i, item in enumerate(bar, 1):
                yield item
                extra = [p for p in (self._loss(), self._run_eta(i, bar.format_dict["elapsed"])) if p]
                if extra:
                    bar.set_postfix_str(", ".join(extra), refresh=False)
            return
        start = time.perf_counter()
        for i, item in enumerate(self.items, 1):
            yield item
            if i % self.every == 0 or i == self.total:
                elapsed = time.perf_counter() - start
                parts = [self._loss(), f"{i / elapsed:.2f} it/s" if elapsed > 0 else None,
                         f"{elapsed:.1f} s elapsed", f"eta {elapsed / i * (self.total - i):.0f} s",
                         self._run_eta(i, elapsed)]
                log.info("%s [%d/%d] %s", self.desc, i, self.total, ", ".join(p for p in parts if p))


def progress(items: Iterable, total: int, desc: str, every: int, enabled: bool = True) -> Progress:
    """:class:`Progress` of ``items`` without loss or run ETA (an evaluation pass)."""
    return Progress(items, total, desc, every, enabled)
