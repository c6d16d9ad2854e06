"""Equal training time (paper Table 2): the schedule on which a model trains as long as another one did.

The paper answers "is Group DETR's gain just its extra training time?" by training the baseline longer, to the
same (or more) GPU hours as Group DETR (C-DETR 12 ep: 4.6 h; w/ Group DETR 5.6 h; the baseline at 15 ep: 5.8 h).
Here the longer schedule is derived from the finished runs' own ``log.jsonl`` (``seconds``: the training time of
each epoch, evaluation excluded), never assumed:

    epochs = max(E, ceil(T_to / t_measured))

with ``T_to`` the mean over seeds of the total training seconds of the model to match (Group DETR at 1x) and
``t_measured`` the mean seconds per epoch of the baseline at 1x (E epochs). The learning-rate drop keeps its
distance from the end (``lr_drop = epochs - (E - lr_drop_1x)``: 12 ep dropping after 11 becomes 15 ep dropping
after 14), as the authors' schedules keep the short low-lr phase at the end. Torch-free: it reads run files.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import yaml

from groupdetr import rundir as rd
from groupdetr.errors import RunError

__all__ = ["train_seconds", "equal_time_schedule", "write_schedule"]


def train_seconds(run: str | Path) -> tuple[float, int]:
    """(total training seconds, epochs) of the finished run ``run``, summed over its ``log.jsonl`` records
    (``seconds``: training only; an epoch run again after a kill is logged once). One RunError line naming the
    file when the run is not finished or its log does not say."""
    run = Path(run)
    if not (run / rd.METRICS).is_file():
        raise RunError(f"{run / rd.METRICS}: missing; the training time of an unfinished run is not known yet")
    rows = rd.read_jsonl(run / rd.LOG)
    epochs = int(rd.read_json(run / rd.METRICS).get("epoch", 0))
    seconds = [r.get("seconds") for r in rows]
    if len(rows) != epochs or not all(isinstance(x, (int, float)) and x > 0 for x in seconds):
        raise RunError(f"{run / rd.LOG}: expected the training seconds of {epochs} epochs, found "
                       f"{sum(isinstance(x, (int, float)) for x in seconds)} of {len(rows)} records")
    return float(sum(seconds)), epochs


def _schedule_of(run: Path) -> tuple[int, int]:
    """(optim.epochs, optim.lr_drop) of a run's ``config.yaml``."""
    path = run / rd.CONFIG
    try:
        optim = yaml.safe_load(path.read_text())["optim"]
        return int(optim["epochs"]), int(optim["lr_drop"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise RunError(f"{path}: no readable optim.epochs and optim.lr_drop") from None


def equal_time_schedule(to: Sequence[str | Path], measured_on: Sequence[str | Path]) -> dict:
    """The schedule on which the model of the runs ``measured_on`` (the baseline at 1x, one run per seed)
    trains as long as the runs ``to`` took (Group DETR at 1x): ``{"overrides": {"optim.epochs": ..,
    "optim.lr_drop": ..}, "derived": {...}}``, the record saying from which runs and seconds (see the module)."""
    if not to or not measured_on:
        raise RunError("equal training time needs at least one finished run to match and one to measure")
    reference = [(Path(r), *train_seconds(r)) for r in to]
    measured = [(Path(r), *train_seconds(r)) for r in measured_on]
    schedules = {_schedule_of(r) for r, _, _ in measured}
    if len(schedules) != 1:
        raise RunError(f"the measured runs have different schedules (optim.epochs, optim.lr_drop): {sorted(schedules)}")
    ((epochs_1x, lr_drop_1x),) = schedules
    total = sum(s for _, s, _ in reference) / len(reference)
    per_epoch = sum(s / e for _, s, e in measured) / len(measured)
    ratio = total / per_epoch
    epochs = max(epochs_1x, math.ceil(round(ratio, 6)))  # round: 15.0000001 epochs is 15
    lr_drop = max(1, epochs - (epochs_1x - lr_drop_1x))
    return {"overrides": {"optim.epochs": epochs, "optim.lr_drop": lr_drop},
            "derived": {"rule": "epochs = max(E, ceil(T_to / t_measured)); lr_drop = epochs - (E - lr_drop at E)",
                        "to": [{"run": str(r), "train_seconds": round(s, 3), "epochs": e} for r, s, e in reference],
                        "measured_on": [{"run": str(r), "train_seconds": round(s, 3), "epochs": e}
                                        for r, s, e in measured],
                        "T_to": round(total, 3), "t_measured_per_epoch": round(per_epoch, 3),
                        "epochs_to_match": round(ratio, 3), "E": epochs_1x, "lr_drop_at_E": lr_drop_1x}}


def write_schedule(schedule: dict, out: str | Path) -> Path:
    """Write ``schedule`` (:func:`equal_time_schedule`) atomically as YAML, the file ``groupdetr train
    --set-from`` reads."""
    out = Path(out)
    text = ("# the schedule of equal training time, derived by `groupdetr equal-time` (groupdetr/equal_time.py)\n"
            + yaml.safe_dump(schedule, sort_keys=False))
    rd.atomic_write_text(out, text)
    return out
