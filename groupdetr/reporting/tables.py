"""Paper-style tables of a study, their LaTeX floats, and the text of its gathered ``README.md``.

- :func:`results_table`: one row per (variant, evaluation), "mean ± CI" per metric, each column headed with its
  unit (``AP (points)``: the long table's units, :mod:`groupdetr.reporting.units`) and rounded by
  :func:`decimals`; :func:`comparisons_display` the same for a study's comparisons beside the paper's deltas;
  :func:`to_markdown`, :func:`to_latex` render any table's columns (a captioned ``table`` float with a label for
  LaTeX; :func:`table_caption`, :func:`comparisons_caption` say what the numbers are).
- ``_readme``: the gathered folder's ``README.md`` (provenance, results, comparisons or effects, the
  K sweep and per-group sections, per-epoch AP, the list of files), ending with :data:`NOT_COCO` or
  :data:`NOT_PAPER_DATA` for runs on the embedded benchmark.

**Decimals.** One number of decimals per column (:func:`decimals`): the fewest, between 1 and 3, at which every CI
half-width of the column shows two significant digits (a column without CIs: every mean one), and the means use
the same; so 19.6 ± 1.0 keeps one decimal while 0.021 ± 0.004 shows three, and nothing reads "0.0 ± 0.0". A
non-zero number that would still round to zero gets the decimals it needs to show one digit (up to 3).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from groupdetr.errors import GatherError
from groupdetr.reporting.runs import _GROUP_EVAL
from groupdetr.reporting.stats import (_labels, _row_label, flattening_point, per_epoch_table, per_group_offsets,
                                       per_group_summary)
from groupdetr.reporting.units import PERCENT, metric_unit, with_unit

if TYPE_CHECKING:
    from groupdetr.studies import Study

__all__ = ["TABLE_METRICS", "NOT_COCO", "NOT_PAPER_DATA", "MAX_DECIMALS", "decimals", "fmt", "results_table",
           "comparisons_display", "table_caption", "comparisons_caption", "latex_label", "to_markdown", "to_latex"]

#: metrics of the paper-style table (paper Tables 3, 7: AP, AP50, AP75, APs, APm, APl).
TABLE_METRICS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl")
#: the warning every result on the embedded benchmark carries.
NOT_COCO = ("AP on the embedded benchmark is not COCO AP: compare effects between variants, "
            "not absolute values (and not with the paper's numbers).")
#: the same warning for studies of other heads or with the paper's deltas beside ours (Tables 5-6, Fig. 8).
NOT_PAPER_DATA = ("Scores on the embedded benchmark are not COCO or nuScenes scores: compare the signs of effects "
                  "with the paper's deltas, not their sizes or absolute values.")
#: the most decimals a table shows
MAX_DECIMALS = 3


def _short(metric: str) -> str:
    return metric.split("/", 1)[-1]


def _shows(x: float, d: int, digits: int) -> bool:
    """|x| rounded to ``d`` decimals shows at least ``digits`` significant digits."""
    return len(f"{abs(x):.{d}f}".replace(".", "").lstrip("0")) >= digits


def _needed(x: float, digits: int) -> int:
    return next((d for d in range(1, MAX_DECIMALS + 1) if _shows(x, d, digits)), MAX_DECIMALS)


def decimals(half_widths: Iterable[float], means: Iterable[float] = ()) -> int:
    """Decimals of one column: the fewest (1 to :data:`MAX_DECIMALS`) at which every finite, non-zero CI half-width
    shows two significant digits; without any, at which every non-zero mean shows one."""
    halves = [abs(float(h)) for h in half_widths if np.isfinite(h) and h != 0]
    if halves:
        return max(_needed(h, 2) for h in halves)
    return max((_needed(float(m), 1) for m in means if np.isfinite(m) and m != 0), default=1)


def fmt(x: float, d: int, signed: bool = False) -> str:
    """``x`` with ``d`` decimals ("+" for ``signed``), "–" when not finite; a non-zero ``x`` that would round to
    zero gets the decimals (up to :data:`MAX_DECIMALS`) that show one digit of it, so no effect reads "-0.0"."""
    if x is None or not np.isfinite(x):
        return "–"
    if x != 0:
        d = max(d, _needed(x, 1))
    return f"{x:+.{d}f}" if signed else f"{x:.{d}f}"


def _p(p: float) -> str:
    """A p-value with two significant digits ("< 0.001" below)."""
    if p is None or not np.isfinite(p):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return np.format_float_positional(p, precision=2, unique=False, fractional=False, trim="k")


def _metric_columns(metrics: Sequence[str]) -> list[str]:
    """Column names of ``metrics`` with their unit: the stat alone (``AP (points)``) when all share one family,
    else the full key (``bbox/AP (points)``, ``3d/ATE (m)``), so two families' ``AP`` never collide."""
    families = {m.split("/", 1)[0] for m in metrics}
    return [with_unit(_short(m) if len(families) == 1 else m, metric_unit(m)[1]) for m in metrics]


def results_table(summary: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
                  evaluations: Sequence[str] | None = None) -> pd.DataFrame:
    """Paper-style table: one row per (variant, evaluation) with "mean ± ci" in the metric's unit (AP in points;
    the CI half-width, or the mean alone with one seed; "–" where undefined, e.g. a variant without that metric),
    each column rounded to its :func:`decimals`.

    Columns: ``Row`` (paper row), ``Variant`` (label, "+ <evaluation>" for extra evaluations),
    ``n`` (seeds), then one per metric headed with its unit (``AP (points)``, ``AP50 (points)`` ...; the full key,
    e.g. ``segm/AP (points)``, when ``metrics`` span several families). Index: (variant, evaluation).
    ``evaluations`` keeps only those evaluations (default: all).
    """
    s = summary if evaluations is None else summary[summary["evaluation"].isin(evaluations)]
    shown = s[s["metric"].isin(metrics)]
    digits = {m: decimals(g["ci95"], g["mean"]) for m, g in shown.groupby("metric")}
    rows, index = [], []
    for (variant, evaluation), g in s.groupby(["variant", "evaluation"], sort=False):
        by_metric = g.set_index("metric")
        first = g.iloc[0]
        row = {"Row": "" if pd.isna(first["paper_row"]) else str(first["paper_row"]),
               "Variant": _row_label(str(first["label"]), evaluation), "n": int(g["n"].max())}
        for m, col in zip(metrics, _metric_columns(metrics)):
            if m not in by_metric.index or not np.isfinite(by_metric.at[m, "mean"]):
                row[col] = "–"
                continue
            mean, half = by_metric.at[m, "mean"], by_metric.at[m, "ci95"]
            row[col] = fmt(mean, digits[m]) + (f" ± {fmt(half, digits[m])}" if np.isfinite(half) else "")
        rows.append(row)
        index.append((variant, evaluation))
    cols = ["Row", "Variant", "n", *_metric_columns(metrics)]
    if not any(r["Row"] for r in rows):  # a study without paper rows (a sweep): no empty column
        cols.remove("Row")
    return pd.DataFrame(rows, columns=cols, index=pd.MultiIndex.from_tuples(index, names=["variant", "evaluation"])
                        if index else None)


def _numeric(column: pd.Series) -> bool:
    """Right-align a column whose cells all read as numbers ("30.2 ± 0.8", "+1.0", "[+0.7, +1.3]", "–")."""
    return len(column) > 0 and all(re.match(r"^[-+<\[ ]*[0-9–]", str(v)) for v in column)


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown of a table's columns (index left out); numbers right-aligned."""
    cols = [str(c) for c in table.columns]

    def esc(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    numeric = [_numeric(table[c]) for c in table.columns]
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in table.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$",
                  ">": r"$>$"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("–", "--").replace("×", r"$\times$")


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``tabular`` (in a ``table`` float when ``caption`` is given) of a table's columns."""
    cols = [str(c) for c in table.columns]
    spec = "".join("r" if _numeric(table[c]) else "l" for c in table.columns)
    body = [" & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    body += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in table.itertuples(index=False, name=None)]
    tabular = "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule", *body, r"\bottomrule", r"\end{tabular}"])
    if caption is None:
        return tabular + "\n"
    parts = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}"]
    if label:
        parts.append(rf"\label{{{label}}}")
    return "\n".join([*parts, tabular, r"\end{table}"]) + "\n"


def _commits(runs: pd.DataFrame) -> list[str]:
    per_run = runs.drop_duplicates("run_dir")
    out = []
    for commit, g in per_run.groupby(per_run["git_commit"].fillna("unknown").astype(str), sort=True):
        dirty = int(g["git_dirty"].fillna(False).astype(bool).sum())
        note = f"{dirty} of {len(g)} with uncommitted changes" if dirty else "clean"
        out.append(f"`{commit}` ({len(g)} runs, {note})")
    return out


def _one_unit(units: Iterable[str]) -> str | None:
    """The unit every row shares, or None when they differ."""
    found = set(units)
    return found.pop() if len(found) == 1 else None


def comparisons_display(table: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """A study's comparisons (:func:`~groupdetr.reporting.stats.comparisons_table`) as a table to read or paste:
    our difference b - a with its Welch 95 % CI and p, the same relative to mean(a) (% of a), the paper's delta and
    the same relative to its baseline, beside each other. Headers carry the unit (when the rows share one; else
    each metric cell does). Markdown (default) adds n, significance, the detectable difference and the sign
    match; ``latex`` keeps what a paper's table holds (CI in the difference's cell, the paper's source)."""
    unit = _one_unit(table["unit"]) if "unit" in table else None
    u = f" ({unit})" if unit else ""
    halves = (table["high"] - table["low"]) / 2
    d = decimals(halves, table["diff"])
    rel_d = decimals((table["rel_high_pct"] - table["rel_low_pct"]) / 2, table["rel_pct"])
    paper_d = decimals([], table["paper_delta"])
    paper_rel_d = decimals([], table["paper_rel_pct"])

    def ci(lo, hi, digits):
        return f"[{fmt(lo, digits, True)}, {fmt(hi, digits, True)}]" if np.isfinite(lo) else "–"

    metric = table["metric"] if unit else [with_unit(m, un) for m, un in zip(table["metric"], table["unit"])]
    ours = [fmt(x, d, True) for x in table["diff"]]
    cis = [ci(lo, hi, d) for lo, hi in zip(table["low"], table["high"])]
    rel = [fmt(x, rel_d, True) + (f" {ci(lo, hi, rel_d)}" if np.isfinite(lo) else "")
           for x, lo, hi in zip(table["rel_pct"], table["rel_low_pct"], table["rel_high_pct"])]
    paper = [fmt(x, paper_d, True) for x in table["paper_delta"]]
    paper_rel = [fmt(x, paper_rel_d, True) for x in table["paper_rel_pct"]]
    if latex:
        return pd.DataFrame({
            "Comparison": table["label"], "Metric": metric,
            f"Ours b - a{u} [95 % CI]": [o if c == "–" else f"{o} {c}" for o, c in zip(ours, cis)],
            "p": [_p(p) for p in table["p_value"]], f"Ours (% of a) [95 % CI]": rel,
            f"Paper b - a{u}": paper, "Paper (% of a)": paper_rel, "Paper": table["paper_table"].fillna("–")})

    def yes_no(v):
        return "–" if pd.isna(v) else ("yes" if v else "no")

    return pd.DataFrame({
        "Comparison": table["label"], "Metric": metric, f"Ours b - a{u}": ours, "95 % CI": cis,
        "p": [_p(p) for p in table["p_value"]],
        "n": [f"{a}, {b}" for a, b in zip(table["n_a"], table["n_b"])],
        "Significant": ["yes" if sig else ("–" if not np.isfinite(x) else "no")
                        for sig, x in zip(table["significant"], table["diff"])],
        f"Detectable at 80 % power{u}": [f"±{fmt(m, d)}" if np.isfinite(m) else "–" for m in table["mde80"]],
        "Ours (% of a) [95 % CI]": rel,
        "Paper": table["paper_table"].fillna("–"), f"Paper Δ{u}": paper, "Paper (% of a)": paper_rel,
        "Same sign": [yes_no(v) for v in table["sign_match"]]})


def latex_label(study: str, what: str | None = None) -> str:
    """``tab:<study>`` (``_`` as ``-``), with ``-<what>`` for a second table of the study."""
    return "tab:" + study.replace("_", "-") + (f"-{what}" if what else "")


_DATASETS = {"coco": "COCO val2017", "synth": "the embedded synthetic benchmark (not COCO)"}


def _datasets(runs: pd.DataFrame) -> str:
    names = sorted(set(runs["dataset"].dropna().astype(str)))
    return ", ".join(_DATASETS.get(n, n) for n in names) or "unknown data"


def _seeds_phrase(runs: pd.DataFrame) -> str:
    """"5 seeds (0-4)" when every variant has the same seeds, else "the seeds in column n"."""
    final = runs[runs["evaluation"] == "final"].drop_duplicates(["variant", "seed"])
    per_variant = {v: tuple(sorted(g["seed"])) for v, g in final.groupby("variant")}
    seeds = set(per_variant.values())
    if len(seeds) != 1:
        return "the number of seeds in column n"
    (only,) = seeds
    return f"{len(only)} seed{'s' if len(only) != 1 else ''} ({', '.join(map(str, only))})"


def _units_phrase(metrics: Sequence[str]) -> str:
    """"AP, AP50 in points (× 100)"; one clause per unit."""
    by_unit: dict[tuple[str, float], list[str]] = {}
    for m in metrics:
        scale, unit = metric_unit(m)
        by_unit.setdefault((unit, scale), []).append(_short(m))
    return "; ".join(f"{', '.join(ms)} in {u}" + (" (× 100)" if scale == 100 else "")
                     for (u, scale), ms in by_unit.items())


def table_caption(study: Study, runs: pd.DataFrame, metrics: Sequence[str]) -> str:
    """What a study's results table shows, for its LaTeX float: the study and the paper artefact, the data, the
    seeds, what ± means and the units."""
    what = f"{study.description}" + (f" (cf. paper {study.paper})" if study.paper else "")
    return (f"{what}, on {_datasets(runs)}, {_seeds_phrase(runs)} per row. Mean ± 95 % CI half-width over seeds "
            f"(Student t, n - 1 dof; the mean alone with one seed); {_units_phrase(metrics)}.")


def comparisons_caption(study: Study, runs: pd.DataFrame) -> str:
    """What a study's comparisons table shows, for its LaTeX float."""
    return (f"Effects of {study.name}" + (f" (cf. paper {study.paper})" if study.paper else "") + f" on "
            f"{_datasets(runs)}, {_seeds_phrase(runs)} per arm: ours is mean(b) - mean(a) of the final metric over "
            "seeds with its Welch 95 % CI and two-sided p, and the same in % of mean(a) (delta-method 95 % CI). "
            "Paper: its reported difference and the same in % of its value of a (its detectors and data, COCO or "
            "nuScenes): compare signs and relative sizes.")


def _per_epoch_markdown(runs: pd.DataFrame, metric: str = "bbox/AP") -> list[str]:
    """README section: ``metric`` per epoch, mean over seeds (nothing if no epoch was evaluated)."""
    try:
        table = per_epoch_table(runs, metric)
    except GatherError:
        return []
    epochs = [c for c in table.columns if isinstance(c, int)]
    shown = pd.DataFrame({"Variant": table["label"], "n": table["n"],
                          **{f"ep {c}": [fmt(v, decimals([], table[c])) for v in table[c]] for c in epochs}})
    return [f"## {with_unit(metric, metric_unit(metric)[1])} per epoch (mean over seeds)", "",
            to_markdown(shown).rstrip("\n"), ""]


def _k_and_groups_markdown(runs: pd.DataFrame, metric: str = "bbox/AP", paper_fig4: dict | None = None) -> list[str]:
    """README sections of a K sweep (where AP-vs-K flattens, paper Fig. 9) and of per-group evaluations
    (every group alike, paper Fig. 4, beside ``paper_fig4``'s median and spread when given); nothing for studies
    that have neither."""
    lines: list[str] = []
    unit = metric_unit(metric)[1]
    final = runs[(runs["evaluation"] == "final") & (runs["metric"] == metric)]
    per_k = final.groupby("num_groups")["variant"].nunique() if "num_groups" in final else pd.Series(dtype=int)
    if len(per_k) > 2 and (per_k == 1).all():
        flat = flattening_point(runs, metric)
        t = flat["table"]
        where = (f"K = {flat['k']}: no larger K is significantly below the best (K = {flat['best_k']})"
                 if flat["k"] is not None else "not judged (a K has fewer than two seeds)")
        d = decimals((t["high"] - t["low"]) / 2, t["diff_to_best"])
        lines += ["## Where AP flattens with K (paper Fig. 9)", "", f"{where}; Welch 95 % CI of each K's "
                  f"difference to the best K, {with_unit(metric, unit)}:", "",
                  to_markdown(pd.DataFrame({
                      "K": t["K"], f"mean ({unit})": [fmt(m, d) for m in t["mean"]],
                      f"diff to best [95 % CI] ({unit})": [
                          f"{fmt(x, d, True)} [{fmt(lo, d, True)}, {fmt(hi, d, True)}]"
                          for x, lo, hi in zip(t["diff_to_best"], t["low"], t["high"])],
                      "below best": ["yes" if b else "no" for b in t["below_best"]]})).rstrip("\n"), ""]
    grouped = runs[runs["evaluation"].astype(str).str.match(_GROUP_EVAL) & (runs["metric"] == metric)]
    for variant in dict.fromkeys(grouped["variant"]):
        table, spread = per_group_summary(runs, variant, metric)
        if "within_group0_ci" not in spread:
            continue
        offsets, _ = per_group_offsets(runs, variant, metric)
        worst = float(offsets["pct_mean"].abs().max())
        paper = ""
        if paper_fig4:
            m, pm = float(paper_fig4["median"]), float(paper_fig4["spread"])
            paper = (f" Paper ({paper_fig4['table']}, COCO): {m:g} ± {pm:g} over 11 groups, ± {100 * pm / m:.2f} % "
                     "of its median.")
        lines += [f"## Every group alike (paper Fig. 4): {variant}", "",
                  f"Each of the {spread['num_groups']} groups evaluated alone ({metric} in {unit}): median "
                  f"{spread['median']:.2f}, range {spread['min']:.2f} to {spread['max']:.2f} "
                  f"(± {spread['half_range']:.2f}); group 0's seed 95 % CI [{spread['group0_low']:.2f}, "
                  f"{spread['group0_high']:.2f}] holds the mean of {spread['within_group0_ci']} of "
                  f"{spread['num_groups']} groups. Against the median over groups of the same model (paired by seed), "
                  f"the groups' mean offsets stay within ± {worst:.2f} % of it.{paper}", ""]
    return lines


def _readme(study: Study, runs: pd.DataFrame, table: pd.DataFrame, effects: pd.DataFrame, runs_root: Path,
            files: list[str], skipped: dict[str, str], command: Sequence[str] | None,
            comparisons: pd.DataFrame | None = None, captions: dict[str, str] | None = None) -> str:
    per_run = runs.drop_duplicates("run_dir")
    seeds = sorted(per_run["seed"].unique().tolist())
    variants = list(dict.fromkeys(per_run["variant"]))
    captions = captions or {}

    def values(col: str) -> str:
        return ", ".join(sorted({str(v) for v in per_run[col].dropna()})) or "unknown"

    datasets = set(per_run["dataset"].astype(str))
    cmd = " ".join(command) if command else (f"groupdetr gather --study {study.name} --runs {runs_root} "
                                            f"--seeds {' '.join(map(str, seeds))}")
    lines = [f"# {study.name}", "", study.description, ""]
    if study.paper:
        lines += [f"Reproduces paper artefact: **{study.paper}** (Group DETR, Chen et al., ICCV 2023).", ""]
    lines += [
        f"- Runs: {len(variants)} variants x seeds {seeds} = {len(per_run)} runs, "
        f"`{runs_root}/{study.name}/<variant>/seed<s>`",
        *[f"- `{v.name}` reuses the runs of `{'/'.join(v.reuse)}` (the same experiment, config checked equal): "
          f"`{runs_root}/{'/'.join(v.reuse)}/seed<s>`" for v in study.variants.values()
          if v.reuse is not None and v.name in variants],
        f"- Recipe: {values('recipe')}; dataset: {values('dataset')}; epochs: {values('epochs')}",
        f"- Device: {values('device')}; world size: {values('world_size')}; groupdetr {values('groupdetr_version')}",
        f"- Git commits of the runs: {'; '.join(_commits(runs))}",
        "- Config hash of each run: column `config_hash` of `runs.csv`",
        f"- Gathered by: `{cmd}`",
        "",
        "## Results",
        "",
        "Mean ± 95 % CI half-width over seeds (Student t, n - 1 dof), each column in the unit of its header "
        "(AP in points, x 100)" + ("." if study.metrics is None else "; – : the variant has no such metric."),
        "",
        to_markdown(table).rstrip("\n"),
        "",
    ]
    if comparisons is not None:
        lines += ["## Comparisons the study reports", "",
                  "Ours: mean(b) - mean(a) of the final metric over seeds, with a Welch 95 % CI and its two-sided p; "
                  "significant = the CI excludes 0; detectable: the smallest true difference these seeds detect "
                  "with 80 % power; % of a: the difference relative to mean(a), delta-method 95 % CI. Paper Δ: the "
                  "paper's reported difference, and relative to its value of a (COCO / nuScenes, the paper's "
                  "detectors): compare the sign and the relative size, not the absolute one.", "",
                  to_markdown(comparisons_display(comparisons)).rstrip("\n"), ""]
        notes = [f"- `{r.comparison}` ({r.label}): {r.b} - {r.a}; paper {r.paper_table}: {r.paper_note}"
                 for r in comparisons.itertuples(index=False) if isinstance(r.paper_note, str)]
        lines += [*notes, ""] if notes else []
    elif not effects.empty:
        base = effects["baseline"].iloc[0]
        metric = effects["metric"].iloc[0]
        unit = metric_unit(metric)[1]
        d = decimals((effects["high"] - effects["low"]) / 2, effects["diff"])
        rel_d = decimals((effects["rel_high_pct"] - effects["rel_low_pct"]) / 2, effects["rel_pct"])
        lines += [f"## Effects over {_labels(runs).get(base, base)} ({with_unit(metric, unit)})", "",
                  "Difference of means with a Welch 95 % CI; significant = the CI excludes 0; % of the baseline: "
                  "the same relative to its mean (delta-method 95 % CI).", ""]
        eff = pd.DataFrame({
            "Variant": effects["label"],
            f"diff ({unit})": [fmt(x, d, True) for x in effects["diff"]],
            "95 % CI": [f"[{fmt(lo, d, True)}, {fmt(hi, d, True)}]" if np.isfinite(lo) else "–"
                        for lo, hi in zip(effects["low"], effects["high"])],
            f"{PERCENT} of the baseline [95 % CI]": [
                fmt(x, rel_d, True) + (f" [{fmt(lo, rel_d, True)}, {fmt(hi, rel_d, True)}]" if np.isfinite(lo) else "")
                for x, lo, hi in zip(effects["rel_pct"], effects["rel_low_pct"], effects["rel_high_pct"])],
            "significant": ["yes" if s else "no" for s in effects["significant"]]})
        lines += [to_markdown(eff).rstrip("\n"), ""]
    lines += _k_and_groups_markdown(runs, paper_fig4=(study.figures.get("per_group_ap") or {}).get("paper"))
    lines += _per_epoch_markdown(runs)
    lines += ["## Files", "",
              "Every number in these files is in the unit its `unit` column or header names "
              "(`groupdetr.reporting.units.metric_unit`): COCO AP / AR and the 3D mAP / NDS in points (x 100, as the "
              "paper reports them), matching instability in %, 3D errors in m (ATE) and rad (AOE), ASE as 1 - IoU, "
              "training time in s, memory in MiB; relative effects (`*_pct`) in % of the baseline's mean.", "",
              "- `runs.csv`: long table, one row per (variant, seed, evaluation, epoch, metric), with `unit` and "
              "provenance",
              "- `summary.csv`: n, mean, std, sem, 95 % CI per (variant, evaluation, metric), with `unit`",
              "- `effects.csv`: effects over the baseline, Welch 95 % CI, with `unit`, and relative to the baseline "
              "(`rel_pct`, `rel_low_pct`, `rel_high_pct`)"]
    if comparisons is not None:
        lines += ["- `comparisons.csv`: the comparisons above in the metric's `unit` (`diff`, `low`, `high`, `mde80`, "
                  "and the paper's `paper_delta`, points for AP), relative to a (`rel_pct` ..., `paper_rel_pct` from "
                  "the paper's `paper_a`), sign, sign_match, confirms_paper",
                  "- `comparisons.tex`: the comparisons as a LaTeX `table` float with caption and label"]
    lines += ["- `table.md`: the results table above; `table.tex`: the same as a LaTeX `table` float (booktabs) with "
              "caption and label"]
    lines += [f"- `{f}`: {captions.get(f[:-4], 'figure ' + f[:-4])}" for f in files if f.endswith(".png")]
    lines += [f"- figure {k} not drawn: {why}" for k, why in skipped.items()]
    lines += ["", "Read them in a notebook with `groupdetr.reporting.study.read_gathered`.", ""]
    if datasets - {"coco"}:
        lines += [f"**{NOT_COCO if study.metrics is None and comparisons is None else NOT_PAPER_DATA}**", ""]
    else:
        lines += ["AP is COCO val2017 bbox AP.", ""]
    return "\n".join(lines)
