"""One unit per metric, decided in one place: what every gathered file, table and axis states.

A run directory keeps the evaluators' native values (COCO's AP as a fraction in [0, 1], the 3D errors in metres
and radians; ``docs/run-directory.md``). Reporting converts them once, when :func:`groupdetr.reporting.runs.collect`
reads them, with :func:`metric_unit`:

- every AP / AR of COCO (``bbox/*``, ``segm/*``) and the 3D scores (``3d/mAP``, ``3d/AP@<d>``, ``3d/NDS``) are
  fractions: x 100, unit ``points`` (the paper's mAP and NDS, e.g. 37.6);
- the 3D true-positive errors keep nuScenes' physical units (the paper's Table 5 convention): ``3d/ATE`` in m,
  ``3d/AOE`` in rad, ``3d/ASE`` as 1 - IoU (unscaled, as nuScenes reports it);
- ``matching_instability`` (DN-DETR's IS: the fraction of assignments that changed between two epochs) x 100,
  unit ``%``;
- the training log's own fields: ``seconds`` / ``eval_seconds`` in s, ``iterations`` in steps,
  ``peak_memory_mib`` in MiB, losses and learning rates unitless; any other field is kept as logged.

Differences of a metric (effects, CI bounds) carry the metric's unit; relative effects are in % of the
baseline's mean. :func:`metric_unit` and :func:`with_unit` are pure; :func:`in_units` applies them to a table.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["POINTS", "PERCENT", "AS_LOGGED", "UNITLESS", "ERRORS_3D", "metric_unit", "with_unit", "in_units"]

#: unit of a fraction-valued score x 100 (AP, AR, NDS): the paper's "mAP" numbers
POINTS = "points"
#: unit of a fraction x 100 that is no score (matching instability), and of relative effects
PERCENT = "%"
#: unit of a log field this module does not know: its value is left as the run logged it
AS_LOGGED = "as logged"
#: unit of a dimensionless number that is no fraction (losses, learning rates)
UNITLESS = "unitless"

#: the 3D true-positive errors (:data:`groupdetr.evaluation.det3d.TP_ERRORS`) -> their unit (nuScenes').
ERRORS_3D = {"ATE": "m", "ASE": "1 - IoU", "AOE": "rad"}
#: score families whose every stat is a fraction (COCO AP / AR; the 3D family's except its errors)
_SCORE_FAMILIES = ("bbox", "segm", "3d")
#: log fields (``log.jsonl``) with a physical unit
_LOG_UNITS = {"seconds": "s", "eval_seconds": "s", "iterations": "steps", "peak_memory_mib": "MiB"}


def metric_unit(metric: str) -> tuple[float, str]:
    """``(scale, unit)`` of a long-table metric: its value in reports is ``scale`` x the run directory's value.

    >>> metric_unit("bbox/AP"), metric_unit("3d/ATE"), metric_unit("matching_instability")
    ((100.0, 'points'), (1.0, 'm'), (100.0, '%'))
    """
    family, sep, stat = str(metric).partition("/")
    if sep:
        if family == "3d" and stat in ERRORS_3D:
            return 1.0, ERRORS_3D[stat]
        if family in _SCORE_FAMILIES:
            return 100.0, POINTS
        return 1.0, AS_LOGGED
    if metric == "matching_instability":
        return 100.0, PERCENT
    if metric in _LOG_UNITS:
        return 1.0, _LOG_UNITS[metric]
    if metric.startswith(("loss", "lr")):
        return 1.0, UNITLESS
    return 1.0, AS_LOGGED


def with_unit(name: str, unit: str) -> str:
    """A header or axis label: ``"AP (points)"``, ``"ATE (m)"``; the name alone for unitless or unknown units."""
    return name if unit in (UNITLESS, AS_LOGGED, "") else f"{name} ({unit})"


def in_units(table: pd.DataFrame, columns: Sequence[str], metric_column: str = "metric") -> pd.DataFrame:
    """A copy of ``table`` whose ``columns`` (values in the run directories' units, e.g. fractions) are multiplied
    by the scale of each row's metric, with a ``unit`` column right after ``metric_column`` (replaced if there)."""
    scales, units = zip(*(metric_unit(m) for m in table[metric_column])) if len(table) else ((), ())
    out = table.copy()
    for c in columns:
        out[c] = out[c].astype(float) * list(scales)
    if "unit" in out.columns:
        out = out.drop(columns="unit")
    out.insert(out.columns.get_loc(metric_column) + 1, "unit", list(units))
    return out
