"""Gather one study's finished runs into the tables and figures a paper needs: one import for all of it.

This module re-exports the reporting modules, one concern each:

- :mod:`groupdetr.reporting.runs`: :func:`collect`, the run directories of a study -> one row per
  (variant, seed, evaluation, epoch, metric) with provenance columns (:data:`COLUMNS`), each value in the unit
  :func:`metric_unit` decides (:mod:`groupdetr.reporting.units`: AP in points, x 100) and names in ``unit``.
- :mod:`groupdetr.reporting.stats`: :func:`mean_ci`, :func:`summarize` (mean and Student-t 95 % CI over
  seeds), :func:`effect` (Welch 95 % CI of a difference), :func:`relative_effect` (the same in % of the
  baseline), :func:`effects_table`, :func:`comparisons_table` (a study's declared comparisons beside the paper's
  deltas), :func:`flattening_point`, :func:`per_epoch_table`, :func:`per_group_summary`, :func:`per_group_offsets`.
- :mod:`groupdetr.reporting.tables`: :func:`results_table`, :func:`comparisons_display`, :func:`to_markdown`,
  :func:`to_latex` (the paper-style tables, units in the headers, decimals that show the CIs), and the gathered
  README's text.
- :mod:`groupdetr.reporting.figures`: ``plot_*`` (matplotlib object API, no pyplot state; PNG via Agg) and
  the registry ``FIGURES`` of the figure kinds a study may ask for.
- :mod:`groupdetr.reporting.cost`: :func:`run_costs`, :func:`cost_vs_k` (paper Fig. 7), :func:`training_time_table`
  (paper Table 2): training seconds, seconds per iteration and peak memory from the runs' logs.
- :mod:`groupdetr.reporting.gather`: :func:`gather`, all of the above written atomically into one folder;
  :func:`read_gathered`, :func:`read_comparisons`, :func:`find_gathered`, :func:`read_all_gathered`.

Everything after :func:`collect` is a pure function of its long table, so notebooks can rebuild any
table or figure from ``runs.csv`` alone. None of these modules imports torch or the model: notebooks
that read gathered results stay light.
"""
from __future__ import annotations

# _png and _check_overrides are no API: re-exported for the tests that reach them through this module.
from groupdetr.errors import GatherError
from groupdetr.reporting.cost import cost_vs_k, run_costs, training_time_table
from groupdetr.reporting.figures import (_png, plot_ap_vs_epoch, plot_ap_vs_k, plot_comparisons, plot_cost_vs_k,
                                         plot_instability, plot_per_group, plot_variants)
from groupdetr.reporting.gather import find_gathered, gather, read_all_gathered, read_comparisons, read_gathered
from groupdetr.reporting.runs import COLUMNS, PROVENANCE, _check_overrides, collect
from groupdetr.reporting.stats import (COMPARISON_COLUMNS, comparisons_table, effect, effects_table,
                                       epochs_to_reach, flattening_point, mean_ci, per_epoch_table, per_group_offsets,
                                       per_group_summary, ratio_ci, relative_effect, summarize)
from groupdetr.reporting.tables import (NOT_COCO, NOT_PAPER_DATA, TABLE_METRICS, comparisons_display, decimals, fmt,
                                        results_table, to_latex, to_markdown)
from groupdetr.reporting.units import metric_unit, with_unit

__all__ = [
    "GatherError",
    "PROVENANCE",
    "COLUMNS",
    "COMPARISON_COLUMNS",
    "TABLE_METRICS",
    "NOT_COCO",
    "NOT_PAPER_DATA",
    "collect",
    "mean_ci",
    "summarize",
    "effect",
    "relative_effect",
    "ratio_ci",
    "effects_table",
    "comparisons_table",
    "flattening_point",
    "per_group_summary",
    "per_group_offsets",
    "per_epoch_table",
    "epochs_to_reach",
    "metric_unit",
    "with_unit",
    "decimals",
    "fmt",
    "results_table",
    "comparisons_display",
    "to_markdown",
    "to_latex",
    "plot_ap_vs_k",
    "plot_ap_vs_epoch",
    "plot_per_group",
    "plot_instability",
    "plot_variants",
    "plot_comparisons",
    "plot_cost_vs_k",
    "run_costs",
    "cost_vs_k",
    "training_time_table",
    "gather",
    "read_gathered",
    "read_comparisons",
    "find_gathered",
    "read_all_gathered",
]
