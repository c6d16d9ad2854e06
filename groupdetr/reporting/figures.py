"""Figures of a study's long table, and the registry of the figure kinds a study may ask for.

``plot_*`` draw with matplotlib's object API (no pyplot global state, no GUI; PNG rendered with Agg),
importing matplotlib only when a figure is drawn. :data:`FIGURES` maps each kind of a study's
``figures:`` entry (``workflows/config/studies.yaml``) to its drawing function; its keys are
:data:`groupdetr.names.FIGURE_KINDS`, which the torch-free study spec validates against.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from groupdetr.errors import GatherError
from groupdetr.reporting.runs import _GROUP_EVAL
from groupdetr.reporting.stats import _arms, _labels, _row_label, _values, mean_ci, per_group_summary
from groupdetr.reporting.tables import _short

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "plot_ap_vs_k", "plot_ap_vs_epoch", "plot_per_group", "plot_instability", "plot_variants",
           "plot_comparisons", "plot_cost_vs_k"]


def _figure(width: float = 5.0, height: float = 3.4) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=120)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _curve(sel: pd.DataFrame, x: str) -> pd.DataFrame:
    """mean_ci of ``value`` per ``x`` (sorted)."""
    rows = [{x: key, **mean_ci(g["value"])} for key, g in sel.groupby(x, sort=True)]
    return pd.DataFrame(rows)


def _metric_axis(ax, metric: str, scale: float) -> None:
    ax.set_ylabel(f"{metric} x 100" if scale == 100 else metric)
    ax.grid(alpha=0.3)


def _need(sel: pd.DataFrame, what: str) -> None:
    if sel.empty:
        raise GatherError(f"no data for {what}")


def _dataset_note(runs: pd.DataFrame) -> str:
    ds = sorted(set(runs["dataset"].dropna().astype(str)))
    return ", ".join(ds) if ds else "?"


def plot_ap_vs_k(runs: pd.DataFrame, metric: str = "bbox/AP", evaluation: str = "final") -> Figure:
    """Mean ``metric`` vs the number of groups K over seeds, with the 95 % CI band and each seed as a
    dot (paper Fig. 9)."""
    sel = runs[(runs["evaluation"] == evaluation) & (runs["metric"] == metric)]
    _need(sel, f"{metric} vs K")
    fig = _figure()
    ax = fig.add_subplot()
    c = _curve(sel, "num_groups")
    ax.fill_between(c["num_groups"], 100 * c["low"], 100 * c["high"], color=_color(0), alpha=0.2, lw=0,
                    label="95 % CI")
    ax.plot(c["num_groups"], 100 * c["mean"], "o-", color=_color(0), label="mean over seeds")
    seeds = sorted(sel["seed"].unique())
    jitter = {s: (i - (len(seeds) - 1) / 2) * 0.08 for i, s in enumerate(seeds)}
    ax.scatter(sel["num_groups"] + sel["seed"].map(jitter), 100 * sel["value"], s=10, color="k", alpha=0.5,
               zorder=3, label="one seed")
    ax.set_xticks(sorted(sel["num_groups"].unique()))
    ax.set_xlabel("number of groups K")
    _metric_axis(ax, metric, 100)
    ax.set_title(f"{_short(metric)} vs K ({_dataset_note(sel)}; paper Fig. 9)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _per_epoch(runs: pd.DataFrame, variants: Sequence[str] | None, metric: str, ylabel: str, title: str,
               scale: float) -> Figure:
    sel = runs[(runs["evaluation"] == "epoch") & (runs["metric"] == metric)]
    variants = list(variants) if variants is not None else list(dict.fromkeys(runs["variant"]))
    labels = _labels(runs)
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for i, v in enumerate(variants):
        sv = sel[sel["variant"] == v]
        if sv.empty:
            continue
        c = _curve(sv, "epoch")
        ax.fill_between(c["epoch"], scale * c["low"], scale * c["high"], color=_color(i), alpha=0.2, lw=0)
        ax.plot(c["epoch"], scale * c["mean"], "o-", ms=3, color=_color(i),
                label=f"{labels.get(v, v)} (n={int(c['n'].max())})")
        drawn += 1
    _need(sel[sel["variant"].isin(variants)], f"{metric} per epoch of {', '.join(variants)}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if drawn:
        ax.legend(fontsize=8)
    return fig


def plot_ap_vs_epoch(runs: pd.DataFrame, variants: Sequence[str] | None = None, metric: str = "bbox/AP") -> Figure:
    """``metric`` per epoch (``log.jsonl``), mean with the 95 % CI band over seeds, one curve per variant
    (convergence)."""
    return _per_epoch(runs, variants, metric, f"{metric} x 100", f"Convergence ({_dataset_note(runs)})", 100)


def plot_instability(runs: pd.DataFrame, variants: Sequence[str] | None = None) -> Figure:
    """Matching instability between consecutive epochs (DN-DETR's IS; paper Fig. 5), mean with the
    95 % CI band over seeds, one curve per variant."""
    return _per_epoch(runs, variants, "matching_instability", "matching instability",
                      "Matching instability between epochs (paper Fig. 5)", 1)


def plot_per_group(runs: pd.DataFrame, variant: str, metric: str = "bbox/AP") -> Figure:
    """``metric`` of each group of ``variant`` evaluated alone: mean ± 95 % CI over seeds, seeds as dots,
    the median over groups as a line (paper Fig. 4)."""
    table, spread = per_group_summary(runs, variant, metric)
    sel = runs[(runs["variant"] == variant) & (runs["metric"] == metric) & runs["evaluation"].str.match(_GROUP_EVAL)]
    fig = _figure()
    ax = fig.add_subplot()
    yerr = 100 * table["ci95"].fillna(0)
    ax.errorbar(table["group"], 100 * table["mean"], yerr=yerr, fmt="o", color=_color(0), capsize=3,
                label="mean ± 95 % CI")
    groups = sel["evaluation"].str.extract(_GROUP_EVAL, expand=False).astype(int)
    ax.scatter(groups, 100 * sel["value"], s=10, color="k", alpha=0.4, zorder=3, label="one seed")
    ax.axhline(100 * spread["median"], color=_color(1), ls="--", lw=1,
               label=f"median {100 * spread['median']:.1f} ± {100 * spread['half_range']:.1f} (half range)")
    ax.set_xticks(table["group"])
    ax.set_xlabel("group evaluated alone")
    _metric_axis(ax, metric, 100)
    ax.set_title(f"Each group of {_labels(runs).get(variant, variant)} alone (paper Fig. 4)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_variants(runs: pd.DataFrame, metric: str = "bbox/AP", evaluations: Sequence[str] | None = None) -> Figure:
    """Bar chart of the final ``metric`` of every variant and extra evaluation (per-group ones left
    out), mean with 95 % CI error bars, seeds as dots (paper Table 7)."""
    pairs = [p for p in _arms(runs) if evaluations is None or p[1] in evaluations]
    _need(pd.DataFrame(pairs), f"{metric} per variant")
    labels = _labels(runs)
    fig = _figure(max(5.0, 1.3 * len(pairs) + 1), 3.8)
    ax = fig.add_subplot()
    for i, (v, ev) in enumerate(pairs):
        vals = _values(runs, v, metric, ev)
        s = mean_ci(vals)
        ax.bar(i, 100 * s["mean"], yerr=100 * s["ci95"] if np.isfinite(s["ci95"]) else None, color=_color(i),
               alpha=0.7, capsize=4)
        ax.scatter(np.full(len(vals), i), 100 * vals, s=10, color="k", alpha=0.6, zorder=3)
    ax.set_xticks(range(len(pairs)), [_row_label(labels.get(v, v), ev) for v, ev in pairs], rotation=20, ha="right",
                  fontsize=8)
    _metric_axis(ax, metric, 100)
    ax.set_title(f"{_short(metric)} per variant, mean ± 95 % CI ({_dataset_note(runs)})", fontsize=10)
    return fig


def plot_comparisons(table: pd.DataFrame, dataset: str | None = None) -> Figure:
    """A study's comparisons (:func:`comparisons_table`): our difference b - a (x 100) with its Welch 95 % CI
    beside the paper's reported delta (diamond), one pair per comparison. The paper's numbers come from
    COCO / nuScenes, ours from ``dataset``: compare signs, not sizes."""
    _need(table, "comparisons")
    fig = _figure(max(5.0, 1.1 * len(table) + 1.5), 3.8)
    ax = fig.add_subplot()
    ours_label, paper_label = "ours: mean ± 95 % CI (Welch)", "paper (COCO / nuScenes)"
    for i, r in enumerate(table.itertuples(index=False)):
        if np.isfinite(r.diff):
            err = [[100 * (r.diff - r.low)], [100 * (r.high - r.diff)]] if np.isfinite(r.low) else None
            ax.errorbar(i - 0.12, 100 * r.diff, yerr=err, fmt="o", color=_color(0), capsize=4, label=ours_label)
            ours_label = None
        if np.isfinite(r.paper_delta):
            ax.scatter(i + 0.12, 100 * r.paper_delta, marker="D", color=_color(1), zorder=3, label=paper_label)
            paper_label = None
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(table)), [f"{r.label}\n({r.metric})" for r in table.itertuples(index=False)],
                  rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("difference b - a, x 100")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"Effects: ours ({dataset or 'gathered runs'}) beside the paper's reported deltas", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_cost_vs_k(cost: pd.DataFrame, dataset: str | None = None) -> Figure:
    """Paper Fig. 7: training time per iteration relative to K = 1 and the extra peak memory over K = 1, against
    K (:func:`groupdetr.reporting.cost.cost_vs_k`, mean ± 95 % CI over seeds), with the paper's values (diamonds)
    where :func:`groupdetr.reporting.versus.fig7_comparison` put them beside ours (its memory in GB on a GPU,
    ours in MiB on ``dataset``'s device: compare shapes, not sizes)."""
    _need(cost, "training cost per K")
    fig = _figure(8.0, 3.4)
    time_ax, mem_ax = fig.subplots(1, 2)
    base = float(cost.loc[cost["K"] == 1, "sec_per_iter"].iloc[0]) if (cost["K"] == 1).any() else np.nan
    time_ax.errorbar(cost["K"], cost["time_vs_K1"], yerr=cost["sec_per_iter_ci95"] / base, fmt="o-",
                     color=_color(0), capsize=3, label="ours")
    mem_ax.errorbar(cost["K"], cost["extra_memory_mib"], yerr=cost["peak_memory_mib_ci95"], fmt="o-",
                    color=_color(0), capsize=3, label="ours (MiB)")
    if "paper_time_vs_K1" in cost and cost["paper_time_vs_K1"].notna().any():
        paper = cost[cost["paper_time_vs_K1"].notna()]
        time_ax.scatter(paper["K"], paper["paper_time_vs_K1"], marker="D", color=_color(1), zorder=3,
                        label="paper (min per epoch, 8x A100)")
    if "paper_extra_memory_gb" in cost and cost["paper_extra_memory_gb"].notna().any():
        paper = cost[cost["paper_extra_memory_gb"].notna()]
        gb = mem_ax.twinx()
        gb.scatter(paper["K"], paper["paper_extra_memory_gb"], marker="D", color=_color(1), zorder=3,
                   label="paper (GB, GPU)")
        gb.set_ylabel("paper: extra memory, GB")
        gb.legend(fontsize=7, loc="lower right")
    time_ax.set_ylabel("training time per iteration / K = 1")
    mem_ax.set_ylabel("extra peak memory over K = 1, MiB")
    for ax in (time_ax, mem_ax):
        ax.set_xlabel("K (groups)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Training cost against K (paper Fig. 7; ours: {dataset or 'gathered runs'})", fontsize=10)
    return fig


def _spec_metric(spec: dict) -> str:
    return spec.get("metric", "bbox/AP")


def _epoch_variants(spec: dict, runs: pd.DataFrame) -> list[str] | str:
    """The gathered ones of ``spec``'s variants (default: every variant, study order), or why there are none."""
    present = set(runs["variant"])
    variants = [v for v in spec.get("variants", list(dict.fromkeys(runs["variant"]))) if v in present]
    if not variants:
        return f"none of {', '.join(spec['variants'])} gathered"
    return variants


def _draw_ap_vs_k(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    return plot_ap_vs_k(runs, _spec_metric(spec))


def _draw_ap_vs_epoch(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    variants = _epoch_variants(spec, runs)
    return variants if isinstance(variants, str) else plot_ap_vs_epoch(runs, variants, _spec_metric(spec))


def _draw_per_group_ap(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    variant = spec.get("variant") or next(iter(dict.fromkeys(runs["variant"])))
    if variant not in set(runs["variant"]):
        return f"variant {variant} not gathered"
    return plot_per_group(runs, variant, _spec_metric(spec))


def _draw_instability(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    variants = _epoch_variants(spec, runs)
    return variants if isinstance(variants, str) else plot_instability(runs, variants)


def _draw_variants(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    return plot_variants(runs, _spec_metric(spec))


def _draw_comparisons(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    if comparisons is None or not np.isfinite(comparisons["diff"].to_numpy(dtype=float)).any():
        return "no comparison has both of its variants gathered"
    return plot_comparisons(comparisons, _dataset_note(runs))


def _draw_query_augmentation(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    """The query-augmentation figure of one run (:mod:`groupdetr.visualization.run`), drawn from its checkpoint:
    the only figure kind that loads a model. Torch is imported only here, after the run's checkpoint is found."""
    from pathlib import Path

    from groupdetr.errors import DatasetError, RunError, UsageError
    from groupdetr.rundir import CHECKPOINT

    variant = spec["variant"]
    sel = runs[runs["variant"] == variant]
    seed = int(spec.get("seed", sel["seed"].min() if not sel.empty else 0))
    sel = sel[sel["seed"] == seed]
    if sel.empty:
        return f"variant {variant} seed {seed} not gathered"
    run = Path(str(sel["run_dir"].iloc[0]))
    if not (run / CHECKPOINT).is_file():
        return f"{run / CHECKPOINT} missing"
    from groupdetr.visualization.run import query_augmentation_figure

    label = _labels(runs).get(variant, variant)
    try:
        fig, _, _ = query_augmentation_figure(run, images=spec.get("images") or None, over=spec.get("agreement_images"),
                                              title=f"{label}, seed {seed}: the query of every group matched to each "
                                                    f"object ({_dataset_note(sel)})")
    except (DatasetError, RunError, UsageError) as e:  # e.g. the run's dataset is not where its config says
        return f"cannot draw from {run}: {e}"
    return fig


#: figure kind (a key of a study's ``figures:``) -> its drawing function ``(spec, runs, comparisons)``: ``spec``
#: is the study's entry of that kind (``metric``, ``variant``, ``variants``; ``query_augmentation`` also ``seed``,
#: ``images``, ``agreement_images`` and reads the run's checkpoint named by ``run_dir``), ``runs`` the long table,
#: ``comparisons`` the study's :func:`~groupdetr.reporting.stats.comparisons_table` (None when it declares
#: none); it returns the figure or a one-line reason why it cannot be drawn (e.g. its variant was not
#: gathered). The keys, in order, are :data:`groupdetr.names.FIGURE_KINDS` (``tests/test_names.py`` checks it).
FIGURES: dict[str, Callable[[dict, pd.DataFrame, pd.DataFrame | None], Figure | str]] = {
    "ap_vs_k": _draw_ap_vs_k,
    "ap_vs_epoch": _draw_ap_vs_epoch,
    "per_group_ap": _draw_per_group_ap,
    "instability": _draw_instability,
    "variants": _draw_variants,
    "comparisons": _draw_comparisons,
    "query_augmentation": _draw_query_augmentation,
}


def _draw(kind: str, spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> Figure | str:
    """The figure ``kind`` of a study's ``figures`` entry, or a reason why it cannot be drawn."""
    draw = FIGURES.get(kind)
    if draw is None:
        raise GatherError(f"unknown figure kind {kind!r}")
    return draw(spec, runs, comparisons)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
