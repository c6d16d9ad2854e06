"""Figures of a study's long table, and the registry of the figure kinds a study may ask for.

``plot_*`` draw with matplotlib's object API (no pyplot global state, no GUI; PNG rendered with Agg),
importing matplotlib only when a figure is drawn. :data:`FIGURES` maps each kind of a study's
``figures:`` entry (``workflows/config/studies.yaml``) to its drawing function; its keys are
:data:`groupdetr.names.FIGURE_KINDS`, which the torch-free study spec validates against, and
:data:`CAPTIONS` says in a sentence what each kind shows (the gathered README lists them).

Every axis names its unit (:func:`groupdetr.reporting.units.with_unit`: "bbox/AP (points)"). Where the paper
reports a value, it stands beside ours on an axis where the two compare: our AP and the paper's COCO mAP differ
in size, so effects are also drawn relative to their baseline (% of its mean; ours with a delta-method 95 % CI,
:func:`~groupdetr.reporting.stats.ratio_ci`; the paper's from its two reported values, the study's
``comparisons:``), and Fig. 4's band relative to the median of the groups. A figure whose paper artefact has no
numbers says so in its title.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from groupdetr.errors import GatherError
from groupdetr.reporting.runs import _GROUP_EVAL
from groupdetr.reporting.stats import (_arms, _labels, _row_label, _values, mean_ci, per_group_offsets,
                                       per_group_summary, ratio_ci, relative_effect)
from groupdetr.reporting.tables import _short
from groupdetr.reporting.units import PERCENT, metric_unit, with_unit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "CAPTIONS", "plot_ap_vs_k", "plot_ap_vs_epoch", "plot_per_group", "plot_instability",
           "plot_variants", "plot_comparisons", "plot_cost_vs_k"]

#: the look of the paper's values in every figure (``gid`` "paper": tests and readers of the figure find them)
_PAPER = {"marker": "D", "color": "C1", "zorder": 4, "s": 36, "gid": "paper"}
_OURS = "C0"


def _figure(width: float = 5.0, height: float = 3.4) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=120)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _curve(sel: pd.DataFrame, x: str) -> pd.DataFrame:
    """mean_ci of ``value`` per ``x`` (sorted)."""
    rows = [{x: key, **mean_ci(g["value"])} for key, g in sel.groupby(x, sort=True)]
    return pd.DataFrame(rows)


def _metric_axis(ax: Axes, metric: str) -> None:
    ax.set_ylabel(with_unit(metric, metric_unit(metric)[1]))
    ax.grid(alpha=0.3)


def _relative_axis(ax: Axes, of: str, horizontal: bool = False) -> None:
    """An axis of changes relative to ``of`` (e.g. "K = 1", "the baseline"), in % of its mean, with the zero line."""
    label = f"change ({PERCENT} of {of}'s mean)"
    (ax.set_xlabel if horizontal else ax.set_ylabel)(label)
    (ax.axvline if horizontal else ax.axhline)(0, color="k", lw=0.8)
    ax.grid(alpha=0.3, axis="x" if horizontal else "y")


def _need(sel: pd.DataFrame, what: str) -> None:
    if sel.empty:
        raise GatherError(f"no data for {what}")


def _dataset_note(runs: pd.DataFrame) -> str:
    ds = sorted(set(runs["dataset"].dropna().astype(str)))
    return ", ".join(ds) if ds else "?"


def _err(mid: float, low: float, high: float):
    """An errorbar's [[below], [above]] of a CI, or None when it is unknown."""
    return [[mid - low], [high - mid]] if np.isfinite(low) and np.isfinite(high) else None


def _paper_markers(comparisons: pd.DataFrame | None, a: str, metric: str) -> dict[str, pd.Series]:
    """The study's comparisons over variant ``a`` in ``metric`` that give the paper's relative value: b -> row."""
    if comparisons is None or "paper_rel_pct" not in comparisons:
        return {}
    sel = comparisons[(comparisons["a"] == a) & (comparisons["metric"] == metric)
                      & np.isfinite(comparisons["paper_rel_pct"].astype(float))]
    return {r["b"]: r for _, r in sel.iterrows()}


def _paper_label(row: pd.Series) -> str:
    return f"paper ({row['paper_table']})" if pd.notna(row.get("paper_table")) else "paper"


def plot_ap_vs_k(runs: pd.DataFrame, metric: str = "bbox/AP", evaluation: str = "final",
                 comparisons: pd.DataFrame | None = None) -> Figure:
    """Paper Fig. 9 from a K sweep. Left: the final ``metric`` against the number of groups K, mean with the 95 % CI
    band over seeds and each seed as a dot. Right: each K relative to the smallest K (% of its mean, delta-method
    95 % CI), with the paper's relative gain where one of ``comparisons`` is over the smallest K's variant
    (Table 3: K = 1 -> 11, +5.0 on 32.6 for C-DETR); the paper gives no per-K values."""
    sel = runs[(runs["evaluation"] == evaluation) & (runs["metric"] == metric)]
    _need(sel, f"{metric} vs K")
    fig = _figure(9.0, 3.6)
    ax, rel = fig.subplots(1, 2)
    c = _curve(sel, "num_groups")
    ks = sorted(sel["num_groups"].unique())
    ax.fill_between(c["num_groups"], c["low"], c["high"], color=_OURS, alpha=0.2, lw=0, label="95 % CI")
    ax.plot(c["num_groups"], c["mean"], "o-", color=_OURS, label="mean over seeds")
    seeds = sorted(sel["seed"].unique())
    jitter = {s: (i - (len(seeds) - 1) / 2) * 0.08 for i, s in enumerate(seeds)}
    ax.scatter(sel["num_groups"] + sel["seed"].map(jitter), sel["value"], s=10, color="k", alpha=0.5, zorder=3,
               label="one seed")
    ax.set_xticks(ks)
    ax.set_xlabel("number of groups K")
    _metric_axis(ax, metric)
    ax.set_title(f"ours ({_dataset_note(sel)})", fontsize=9)
    ax.legend(fontsize=7)

    k0 = ks[0]
    base = sel.loc[sel["num_groups"] == k0, "value"]
    rows = [{"K": k, **ratio_ci(base, sel.loc[sel["num_groups"] == k, "value"])} for k in ks[1:]]
    r = pd.DataFrame(rows, columns=["K", "rel_pct", "rel_low_pct", "rel_high_pct", "rel_dof"])
    rel.plot([k0], [0], "o", color=_OURS)
    if len(r):
        lo, hi = r["rel_pct"] - r["rel_low_pct"], r["rel_high_pct"] - r["rel_pct"]
        rel.errorbar(r["K"], r["rel_pct"], yerr=[lo.fillna(0), hi.fillna(0)], fmt="o-", color=_OURS, capsize=3,
                     label="ours: mean, 95 % CI")
    k_of = dict(sel[["variant", "num_groups"]].drop_duplicates().itertuples(index=False, name=None))
    base_variants = set(sel.loc[sel["num_groups"] == k0, "variant"])
    for a in base_variants:
        for b, row in _paper_markers(comparisons, a, metric).items():
            if b in k_of:
                rel.scatter([k_of[b]], [row["paper_rel_pct"]], **_PAPER,
                            label=f"{_paper_label(row)}: {row['paper_rel_pct']:+.1f} % at K = {k_of[b]}")
    rel.set_xticks(ks)
    rel.set_xlabel("number of groups K")
    _relative_axis(rel, f"K = {k0}")
    rel.set_title(f"relative to K = {k0}; the paper reports no per-K values", fontsize=9)
    rel.legend(fontsize=7)
    fig.suptitle(f"{_short(metric)} against K (paper Fig. 9)", fontsize=10)
    return fig


def _per_epoch(runs: pd.DataFrame, variants: Sequence[str] | None, metric: str, title: str,
               ylabel: str | None = None) -> Figure:
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
        ax.fill_between(c["epoch"], c["low"], c["high"], color=_color(i), alpha=0.2, lw=0)
        ax.plot(c["epoch"], c["mean"], "o-", ms=3, color=_color(i), label=f"{labels.get(v, v)} (n={int(c['n'].max())})")
        drawn += 1
    _need(sel[sel["variant"].isin(variants)], f"{metric} per epoch of {', '.join(variants)}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    _metric_axis(ax, metric)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if drawn:
        ax.legend(fontsize=8)
    return fig


def plot_ap_vs_epoch(runs: pd.DataFrame, variants: Sequence[str] | None = None, metric: str = "bbox/AP") -> Figure:
    """``metric`` per epoch (``log.jsonl``), mean with the 95 % CI band over seeds, one curve per variant
    (convergence; ours only: the paper's convergence curves are of other detectors and schedules)."""
    return _per_epoch(runs, variants, metric, f"Convergence, mean ± 95 % CI over seeds (ours, {_dataset_note(runs)})")


def plot_instability(runs: pd.DataFrame, variants: Sequence[str] | None = None) -> Figure:
    """Matching instability between consecutive epochs (DN-DETR's IS, in % of the assignments; paper Fig. 5),
    mean with the 95 % CI band over seeds, one curve per variant. The paper's Fig. 5 gives no numbers: ours only."""
    unit = metric_unit("matching_instability")[1]
    return _per_epoch(runs, variants, "matching_instability",
                      "Matching instability (paper Fig. 5 gives no numbers: ours only)",
                      f"assignments changed ({unit})")


def plot_per_group(runs: pd.DataFrame, variant: str, metric: str = "bbox/AP", paper: dict | None = None) -> Figure:
    """Paper Fig. 4: each group of ``variant`` evaluated alone. Left: ``metric`` per group, mean ± 95 % CI over
    seeds, seeds as dots, the median over groups as a line. Right: each group against the median over the groups
    of the same model, paired by seed (% of the median; :func:`~groupdetr.reporting.stats.per_group_offsets`),
    beside ``paper``'s band (``{"table", "median", "spread"}``: 37.5 ± 0.1 mAP, i.e. ± 0.27 % of its median)."""
    table, spread = per_group_summary(runs, variant, metric)
    offsets, per_seed = per_group_offsets(runs, variant, metric)
    sel = runs[(runs["variant"] == variant) & (runs["metric"] == metric) & runs["evaluation"].str.match(_GROUP_EVAL)]
    fig = _figure(9.0, 3.6)
    ax, rel = fig.subplots(1, 2)
    ax.errorbar(table["group"], table["mean"], yerr=table["ci95"].fillna(0), fmt="o", color=_OURS, capsize=3,
                label="mean ± 95 % CI")
    groups = sel["evaluation"].str.extract(_GROUP_EVAL, expand=False).astype(int)
    ax.scatter(groups, sel["value"], s=10, color="k", alpha=0.4, zorder=3, label="one seed")
    ax.axhline(spread["median"], color=_color(2), ls="--", lw=1,
               label=f"median {spread['median']:.2f} ± {spread['half_range']:.2f} (half range)")
    ax.set_xticks(table["group"])
    ax.set_xlabel("group evaluated alone")
    _metric_axis(ax, metric)
    ax.set_title(f"ours ({_dataset_note(sel)})", fontsize=9)
    ax.legend(fontsize=7)

    if paper:
        band = 100 * float(paper["spread"]) / float(paper["median"])
        rel.axhspan(-band, band, color=_PAPER["color"], alpha=0.25, lw=0, gid="paper",
                    label=f"paper ({paper['table']}, COCO): {paper['median']:g} ± {paper['spread']:g}, "
                          f"± {band:.2f} %")
    rel.errorbar(offsets["group"], offsets["pct_mean"], yerr=offsets["pct_ci95"].fillna(0), fmt="o", color=_OURS,
                 capsize=3, label="ours: mean ± 95 % CI over seeds")
    rel.scatter(per_seed["group"], per_seed["offset_pct"], s=10, color="k", alpha=0.4, zorder=3, label="one seed")
    rel.axhline(0, color="k", lw=0.8)
    rel.set_xticks(offsets["group"])
    rel.set_xlabel("group evaluated alone")
    rel.set_ylabel(f"offset from the model's median ({PERCENT})")
    rel.grid(alpha=0.3)
    rel.set_title("against the median of the same model, paired by seed", fontsize=9)
    rel.legend(fontsize=7)
    fig.suptitle(f"Each group of {_labels(runs).get(variant, variant)} alone (paper Fig. 4)", fontsize=10)
    return fig


def plot_variants(runs: pd.DataFrame, metric: str = "bbox/AP", evaluations: Sequence[str] | None = None,
                  comparisons: pd.DataFrame | None = None) -> Figure:
    """Every variant and extra evaluation (per-group ones left out; paper Table 7). Left: the final ``metric``,
    mean as a bar, 95 % CI error bars, seeds as dots. Right: each relative to the first variant (% of its mean,
    delta-method 95 % CI), with the paper's relative value as a diamond wherever one of ``comparisons`` is over
    the first variant in ``metric`` (Table 7: rows (b)-(d) over (a), from the paper's two reported values)."""
    pairs = [p for p in _arms(runs) if evaluations is None or p[1] in evaluations]
    _need(pd.DataFrame(pairs), f"{metric} per variant")
    labels = _labels(runs)
    names = [_row_label(labels.get(v, v), ev) for v, ev in pairs]
    fig = _figure(max(9.0, 2.2 * len(pairs) + 1), 4.0)
    ax, rel = fig.subplots(1, 2)
    for i, (v, ev) in enumerate(pairs):
        vals = _values(runs, v, metric, ev)
        s = mean_ci(vals)
        ax.bar(i, s["mean"], yerr=s["ci95"] if np.isfinite(s["ci95"]) else None, color=_color(i), alpha=0.7,
               capsize=4)
        ax.scatter(np.full(len(vals), i), vals, s=10, color="k", alpha=0.6, zorder=3)
    ax.set_xticks(range(len(pairs)), names, rotation=25, ha="right", fontsize=7)
    _metric_axis(ax, metric)
    ax.set_title(f"ours: mean ± 95 % CI, seeds as dots ({_dataset_note(runs)})", fontsize=9)

    base, base_label = pairs[0][0], names[0]
    markers = _paper_markers(comparisons, base, metric)
    ours_label, drawn = "ours: mean, 95 % CI", 0
    rel.plot([0], [0], "o", color=_OURS)
    for i, (v, ev) in enumerate(pairs[1:], 1):
        r = relative_effect(runs, base, v, metric, "final", ev)
        rel.errorbar(i - 0.1, r["rel_pct"], yerr=_err(r["rel_pct"], r["rel_low_pct"], r["rel_high_pct"]), fmt="o",
                     color=_OURS, capsize=4, label=ours_label)
        ours_label = None
        if ev == "final" and v in markers:
            row = markers[v]
            rel.scatter([i + 0.1], [row["paper_rel_pct"]], **_PAPER, label=None if drawn else _paper_label(row))
            drawn += 1
    rel.set_xticks(range(len(pairs)), names, rotation=25, ha="right", fontsize=7)
    _relative_axis(rel, "the baseline")
    rel.set_title(f"relative to the baseline, {base_label}; " + ("the paper's as diamonds" if drawn else
                                                   "the paper reports none of these pairs"), fontsize=9)
    rel.legend(fontsize=7)
    fig.suptitle(f"{_short(metric)} per variant", fontsize=10)
    return fig


def plot_comparisons(table: pd.DataFrame, dataset: str | None = None) -> Figure:
    """A study's comparisons (:func:`~groupdetr.reporting.stats.comparisons_table`) as a forest plot, one row per
    comparison, ours (dot, Welch 95 % CI) beside the paper's reported delta (diamond). Left: b - a in the metric's
    unit (AP in points); right: relative to a, in % of its mean (ours with a delta-method CI, the paper's from its
    value of a): the axis on which the paper's COCO / nuScenes effects and ours compare in size, not only in
    sign."""
    _need(table, "comparisons")
    n = len(table)
    fig = _figure(9.5, 0.55 * n + 2.0)
    ax, rel = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)[::-1].astype(float)
    units = set(table["unit"]) if "unit" in table else {"points"}
    unit = units.pop() if len(units) == 1 else "the metric's unit"
    for panel, (mid, lo, hi, paper) in ((ax, ("diff", "low", "high", "paper_delta")),
                                        (rel, ("rel_pct", "rel_low_pct", "rel_high_pct", "paper_rel_pct"))):
        ours_label, paper_label = f"ours ({dataset or 'gathered runs'}): mean, 95 % CI", "paper (COCO / nuScenes)"
        for yi, (_, r) in zip(y, table.iterrows()):
            m = float(r[mid]) if mid in r else np.nan
            if np.isfinite(m):
                err = _err(m, float(r[lo]), float(r[hi]))
                panel.errorbar(m, yi + 0.12, xerr=err, fmt="o", color=_OURS, capsize=3, label=ours_label)
                ours_label = None
            p = float(r[paper]) if paper in r and pd.notna(r[paper]) else np.nan
            if np.isfinite(p):
                panel.scatter([p], [yi - 0.12], **_PAPER, label=paper_label)
                paper_label = None
        panel.axvline(0, color="k", lw=0.8)
        panel.grid(alpha=0.3, axis="x")
    ax.set_yticks(y, [f"{r['label']} ({r['metric']})" for _, r in table.iterrows()], fontsize=7)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(f"b - a ({unit})")
    ax.set_title("difference", fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=7)
    rel.set_xlabel(f"b - a ({PERCENT} of a's mean)")
    rel.set_title("relative to a: comparable across data and detectors", fontsize=9)
    fig.suptitle("Effects: ours beside the paper's reported deltas", fontsize=10)
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
    return plot_ap_vs_k(runs, _spec_metric(spec), comparisons=comparisons)


def _draw_ap_vs_epoch(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    variants = _epoch_variants(spec, runs)
    return variants if isinstance(variants, str) else plot_ap_vs_epoch(runs, variants, _spec_metric(spec))


def _draw_per_group_ap(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    variant = spec.get("variant") or next(iter(dict.fromkeys(runs["variant"])))
    if variant not in set(runs["variant"]):
        return f"variant {variant} not gathered"
    return plot_per_group(runs, variant, _spec_metric(spec), spec.get("paper"))


def _draw_instability(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    variants = _epoch_variants(spec, runs)
    return variants if isinstance(variants, str) else plot_instability(runs, variants)


def _draw_variants(spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None) -> Figure | str:
    return plot_variants(runs, _spec_metric(spec), comparisons=comparisons)


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
#: figure kind -> one sentence on what it shows and where the paper's value is (the gathered README's list).
CAPTIONS = {
    "ap_vs_k": "final AP against K (left: mean ± 95 % CI band over seeds, seeds as dots) and relative to K = 1 "
               "(right: % of K = 1's mean, delta-method 95 % CI) with the paper's K = 1 -> 11 gain (Table 3) as a "
               "diamond; the paper's Fig. 9 gives no per-K values",
    "ap_vs_epoch": "AP after each epoch, mean ± 95 % CI band over seeds, one curve per variant (ours only)",
    "per_group_ap": "each group of the model evaluated alone (left: mean ± 95 % CI over seeds) and against the median "
                    "over the groups of the same model, paired by seed (right: % of the median), beside the paper's "
                    "Fig. 4 band (the figure's `paper:` entry: 37.5 ± 0.1 mAP over 11 groups)",
    "instability": "matching instability between consecutive epochs (% of assignments changed), mean ± 95 % CI band "
                   "over seeds; the paper's Fig. 5 gives no numbers, so ours only",
    "variants": "final AP of every variant (left: bars = mean, error bars = 95 % CI, dots = seeds) and relative to "
                "the first variant (right: % of its mean, delta-method 95 % CI), with the paper's relative value as a "
                "diamond wherever a comparison of the study gives it",
    "comparisons": "every comparison b - a as a forest plot: ours (dot, Welch 95 % CI) beside the paper's delta "
                   "(diamond), in the metric's unit (left) and relative to a (right, % of a's mean)",
    "query_augmentation": "one run's val images with, for each ground-truth object, the query every group matched to "
                          "it (the paper's query-augmentation picture)",
}

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
