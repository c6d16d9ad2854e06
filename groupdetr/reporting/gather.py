"""Gather one study into a folder of tables and figures, and read gathered folders back (notebooks).

:func:`gather` writes ``runs.csv`` (the long table of :func:`groupdetr.reporting.runs.collect`),
``summary.csv``, ``effects.csv``, ``comparisons.csv``, ``table.md``, ``table.tex``, ``comparisons.tex``, one PNG
per figure of the study and ``README.md``, all built in a temporary sibling folder and swapped in at the end: a
reader sees the previous complete folder or the new complete one. :func:`read_gathered`,
:func:`read_comparisons`, :func:`find_gathered` and :func:`read_all_gathered` read them back.

Every value in these files is in the unit of :func:`groupdetr.reporting.units.metric_unit` (AP in points, x 100),
named by a ``unit`` column. A folder gathered before units existed (fractions, no ``unit`` column) is converted
when read, so a reader sees one unit whatever the folder's age.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from groupdetr.errors import GatherError
from groupdetr.reporting.figures import CAPTIONS, _draw, _png
from groupdetr.reporting.runs import COLUMNS, collect
from groupdetr.reporting.stats import COMPARISON_COLUMNS, comparisons_table, effects_table, summarize
from groupdetr.reporting.tables import (TABLE_METRICS, _readme, comparisons_caption, comparisons_display, latex_label,
                                        results_table, table_caption, to_latex, to_markdown)
from groupdetr.reporting.units import in_units
from groupdetr.rundir import atomic_write_bytes, dir_mode  # fsynced: the swapped-in folder is durable

if TYPE_CHECKING:
    from groupdetr.studies import Study

__all__ = ["gather", "read_gathered", "read_comparisons", "find_gathered", "read_all_gathered"]


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Put the finished ``tmp`` folder at ``out_dir``: a reader sees the old complete folder or the
    new complete one, never a mix. An existing ``out_dir`` (empty or a previous gather) is replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GatherError(f"{out_dir}: exists and is not a directory")
    try:
        os.rename(tmp, out_dir)  # atomic when out_dir is absent or an empty directory
        return
    except OSError:
        if not out_dir.is_dir():
            raise
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
    os.rename(out_dir, old / "previous")
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old / "previous", out_dir)  # put the previous gather back
        os.rmdir(old)
        raise
    shutil.rmtree(old, ignore_errors=True)


def gather(study: Study, runs_root: str | Path, out_dir: str | Path, seeds: Sequence[int] | None = None,
           variants: Sequence[str] | None = None, command: Sequence[str] | None = None) -> list[Path]:
    """Gather ``study`` into ``out_dir``: ``runs.csv``, ``summary.csv``, ``effects.csv``, ``comparisons.csv`` and
    ``comparisons.tex`` (studies that declare ``comparisons``, :func:`comparisons_table`), ``table.md``,
    ``table.tex`` (a captioned, labelled LaTeX float; columns: ``study.metrics``, default :data:`TABLE_METRICS`),
    one PNG per entry of ``study.figures`` (``<kind>.png``) and ``README.md``; every value in the unit its
    ``unit`` column or header names.

    Everything is built in a temporary sibling folder and renamed onto ``out_dir`` at the end, so
    ``out_dir`` is either untouched (any error) or complete; it may exist (empty, or an earlier
    gather, which is replaced). ``command`` is recorded in the README. Returns the written paths.

    Raises:
        GatherError: as :func:`collect` (before anything is written).
    """
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    runs = collect(study, runs_root, seeds, variants)
    summary = summarize(runs)
    metrics = study.metrics or TABLE_METRICS
    table = results_table(summary, metrics)
    effects = effects_table(runs)
    comparisons = comparisons_table(runs, study.comparisons) if study.comparisons else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        files: dict[str, bytes] = {
            "runs.csv": runs.to_csv(index=False, lineterminator="\n").encode(),
            "summary.csv": summary.to_csv(index=False, lineterminator="\n").encode(),
            "effects.csv": effects.to_csv(index=False, lineterminator="\n").encode(),
            **({"comparisons.csv": comparisons.to_csv(index=False, lineterminator="\n").encode()}
               if comparisons is not None else {}),
            "table.md": to_markdown(table).encode(),
            "table.tex": to_latex(table, table_caption(study, runs, metrics), latex_label(study.name)).encode(),
            **({"comparisons.tex": to_latex(comparisons_display(comparisons, latex=True),
                                            comparisons_caption(study, runs),
                                            latex_label(study.name, "comparisons")).encode()}
               if comparisons is not None else {}),
        }
        skipped: dict[str, str] = {}
        for kind, spec in study.figures.items():
            fig = _draw(kind, spec or {}, runs, comparisons)
            if isinstance(fig, str):
                skipped[kind] = fig
            else:
                files[f"{kind}.png"] = _png(fig)
        files["README.md"] = _readme(study, runs, table, effects, runs_root, list(files), skipped, command,
                                     comparisons, CAPTIONS).encode()
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        tmp.chmod(dir_mode())  # mkdtemp makes it private; the gathered folder gets a plain mkdir's mode
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in files]


#: value columns of summary.csv, converted from a folder gathered before units
_SUMMARY_VALUES = ("mean", "std", "sem", "ci95", "low", "high")
#: value columns of comparisons.csv in the metric's unit
_COMPARISON_VALUES = ("mean_a", "mean_b", "diff", "low", "high", "mde80")


def read_gathered(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, summary)`` of a folder written by :func:`gather` (for notebooks), in the reports' units with a
    ``unit`` column (a folder gathered before units existed is converted here).

    Raises:
        GatherError: the folder holds no gathered study (one line saying how to make it).

    The long table is ``runs.csv`` or, in a reference copy that keeps it compressed, ``runs.csv.gz``.
    """
    out_dir = Path(out_dir)
    runs_file = out_dir / "runs.csv" if (out_dir / "runs.csv").is_file() else out_dir / "runs.csv.gz"
    for name in (runs_file.name, "summary.csv"):
        if not (out_dir / name).is_file():
            raise GatherError(f"{out_dir / name}: missing; this study has not been gathered yet "
                              f"(run the workflow, or `groupdetr gather --study {out_dir.name} --out {out_dir}`)")
    text = {"paper_row": "string", "label": "string", "variant": "string", "evaluation": "string",
            "metric": "string", "unit": "string"}
    runs = pd.read_csv(runs_file, dtype={**text, "git_commit": "string", "run_dir": "string",
                                                   "config_hash": "string"})
    summary = pd.read_csv(out_dir / "summary.csv", dtype=text)
    if "unit" not in runs.columns:  # gathered before units: fractions
        runs = in_units(runs, ["value"]).astype({"unit": "string"})
    if "unit" not in summary.columns:
        summary = in_units(summary, _SUMMARY_VALUES).astype({"unit": "string"})
    return runs, summary


def read_comparisons(out_dir: str | Path) -> pd.DataFrame:
    """``comparisons.csv`` of a folder written by :func:`gather` (columns
    :data:`~groupdetr.reporting.stats.COMPARISON_COLUMNS`), in the metric's unit (a folder gathered before units
    existed is converted here; its relative columns and ``paper_a``, which it lacks, are NaN).

    Raises:
        GatherError: the study is not gathered, or declares no comparisons (one line).
    """
    out_dir = Path(out_dir)
    path = out_dir / "comparisons.csv"
    if not path.is_file():
        why = ("this study has not been gathered yet" if not (out_dir / "runs.csv").is_file()
               else "the study declares no comparisons (or was gathered before it did; gather it again)")
        raise GatherError(f"{path}: missing; {why}")
    text = {c: "string" for c in ("comparison", "label", "a", "b", "metric", "unit", "paper_table", "paper_note")}
    table = pd.read_csv(path, dtype={**text, "significant": "boolean", "sign": "Int64", "sign_match": "boolean",
                                     "confirms_paper": "boolean"})
    if "unit" not in table.columns:  # gathered before units: fractions, and the paper's delta / 100 for every metric
        table = in_units(table, _COMPARISON_VALUES).astype({"unit": "string"})
        table["paper_delta"] = 100 * table["paper_delta"].astype(float)
        for c in COMPARISON_COLUMNS:
            if c not in table.columns:
                table[c] = float("nan")
        table = table[list(COMPARISON_COLUMNS)]
    return table


def find_gathered(results_root: str | Path) -> dict[str, Path]:
    """``{study: folder}`` of every gathered study directly under ``results_root`` (folders with a
    ``runs.csv``), sorted by name."""
    root = Path(results_root)
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "runs.csv").is_file() and (p / "summary.csv").is_file()}


def read_all_gathered(results_root: str | Path) -> pd.DataFrame:
    """The long tables of every gathered study under ``results_root``, concatenated (an empty table
    with :data:`COLUMNS` when none is gathered)."""
    frames = [read_gathered(p)[0] for p in find_gathered(results_root).values()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
