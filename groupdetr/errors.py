"""Every error a user can meet, in one light module (no torch, pandas or pycocotools).

Each is raised with a one-line message naming the file, key or run at fault; the console command
catches them here, so starting it imports nothing heavy. The modules that raise them re-export
them under their old names (``groupdetr.data.DatasetError`` ...).
"""
from __future__ import annotations

__all__ = ["DatasetError", "WeightsError", "StudyError", "GatherError", "NotebookError", "NotebookFailed",
           "RunError", "InitFromError", "NonFiniteLoss", "SynthError", "BenchError", "UsageError", "first_line"]


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none (``torch.load`` of an
    empty file raises with no message: taking ``str(e).splitlines()[0]`` there crashed the error handler)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message is one line naming the file."""


class WeightsError(ValueError):
    """A backbone weights file that is missing, unreadable or does not fit; one line naming the file."""


class StudyError(ValueError):
    """An invalid study file; the message is one line naming the study and the key."""


class GatherError(ValueError):
    """A run, file or value the gatherer needs is missing or inconsistent; one line naming the path."""


class NotebookError(ValueError):
    """Bad input: no such notebook, not a notebook, no results root. One line."""


class NotebookFailed(RuntimeError):
    """A cell raised; one line naming the notebook, the cell and the error."""


class RunError(RuntimeError):
    """The run cannot start or continue; one line saying why. Nothing in the run dir was changed."""


class InitFromError(ValueError):
    """The run to start from (``model.init_from``) is missing, unfinished, damaged, or its checkpoint does not fit
    the model (a part it lacks, a parameter of another shape); one line naming the file. Nothing was written."""


class NonFiniteLoss(RuntimeError):
    """Training diverged: a NaN or infinity in a step's model outputs or loss, or in the weights after an
    epoch; the message names epoch and iteration."""


class SynthError(RuntimeError):
    """The benchmark cannot be written (e.g. a different one already exists)."""


class BenchError(RuntimeError):
    """The benchmark could not run (no CUDA, a worker failed, ...)."""


class UsageError(ValueError):
    """A command-line argument the command cannot use (an ``--out`` that names a file where a folder is
    meant, or a file it must not overwrite); one line naming it. Nothing was changed."""
