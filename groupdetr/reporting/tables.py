"""Paper-style tables of a study and the text of its gathered ``README.md``.

- :func:`results_table`: one row per (variant, evaluation), "mean ± CI" per metric in points (x 100);
  :func:`to_markdown`, :func:`to_latex` render any table's columns; :func:`as_points` turns the score
  columns of a statistics table into points.
- ``_readme``: the gathered folder's ``README.md`` (provenance, results, comparisons or effects, the
  K sweep and per-group sections, per-epoch AP, the list of files), ending with :data:`NOT_COCO` or
  :data:`NOT_PAPER_DATA` for runs on the embedded benchmark.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from groupdetr.errors import GatherError
from groupdetr.reporting.runs import _GROUP_EVAL
from groupdetr.reporting.stats import _labels, _row_label, flattening_point, per_epoch_table, per_group_summary

if TYPE_CHECKING:
    from groupdetr.studies import Study

__all__ = ["TABLE_METRICS", "NOT_COCO", "NOT_PAPER_DATA", "as_points", "results_table", "to_markdown", "to_latex"]

#: metrics of the paper-style table (paper Tables 3, 7: AP, AP50, AP75, APs, APm, APl).
TABLE_METRICS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl")
#: the warning every result on the embedded benchmark carries.
NOT_COCO = ("AP on the embedded benchmark is not COCO AP: compare effects between variants, "
            "not absolute values (and not with the paper's numbers).")
#: the same warning for studies of other heads or with the paper's deltas beside ours (Tables 5-6, Fig. 8).
NOT_PAPER_DATA = ("Scores on the embedded benchmark are not COCO or nuScenes scores: compare the signs of effects "
                  "with the paper's deltas, not their sizes or absolute values.")


def _short(metric: str) -> str:
    return metric.split("/", 1)[-1]


def _cell(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f}" if not np.isfinite(half) else f"{100 * mean:.1f} ± {100 * half:.1f}"


#: columns of the statistics tables (:mod:`groupdetr.reporting.stats`) that hold AP-like values in [0, 1]
#: (or differences of them).
_SCORE_COLUMNS = ("mean", "std", "sem", "ci95", "low", "high", "diff", "diff_to_best", "mean_a", "mean_b",
                  "paper_delta")


def as_points(table: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy of ``table`` with its score columns (``mean``, ``ci95``, ``low``, ``high``, ``diff`` ...,
    or ``columns``) x 100, i.e. in AP points as the paper reports them."""
    out = table.copy()
    for c in columns if columns is not None else [c for c in _SCORE_COLUMNS if c in table.columns]:
        out[c] = 100 * out[c].astype(float)
    return out


def _metric_columns(metrics: Sequence[str]) -> list[str]:
    """Column names of ``metrics``: the stat alone (``AP``) when all share one family, else the full key
    (``bbox/AP``, ``segm/AP``, ``3d/NDS``), so two families' ``AP`` never collide."""
    families = {m.split("/", 1)[0] for m in metrics}
    return [_short(m) if len(families) == 1 else m for m in metrics]


def results_table(summary: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
                  evaluations: Sequence[str] | None = None) -> pd.DataFrame:
    """Paper-style table: one row per (variant, evaluation) with "mean ± ci" in points (x 100,
    one decimal; the CI half-width, or the mean alone with one seed; "–" where undefined, e.g. a
    variant without that metric).

    Columns: ``Row`` (paper row), ``Variant`` (label, "+ <evaluation>" for extra evaluations),
    ``n`` (seeds), then one per metric (``AP``, ``AP50`` ...; the full key, e.g. ``segm/AP``, when
    ``metrics`` span several families). Index: (variant, evaluation). ``evaluations`` keeps only
    those evaluations (default: all).
    """
    s = summary if evaluations is None else summary[summary["evaluation"].isin(evaluations)]
    rows, index = [], []
    for (variant, evaluation), g in s.groupby(["variant", "evaluation"], sort=False):
        by_metric = g.set_index("metric")
        first = g.iloc[0]
        row = {"Row": "" if pd.isna(first["paper_row"]) else str(first["paper_row"]),
               "Variant": _row_label(str(first["label"]), evaluation), "n": int(g["n"].max())}
        for m, col in zip(metrics, _metric_columns(metrics)):
            row[col] = (_cell(by_metric.at[m, "mean"], by_metric.at[m, "ci95"]) if m in by_metric.index else "–")
        rows.append(row)
        index.append((variant, evaluation))
    cols = ["Row", "Variant", "n", *_metric_columns(metrics)]
    if not any(r["Row"] for r in rows):  # a study without paper rows (a sweep): no empty column
        cols.remove("Row")
    return pd.DataFrame(rows, columns=cols, index=pd.MultiIndex.from_tuples(index, names=["variant", "evaluation"])
                        if index else None)


def _numeric(column: pd.Series) -> bool:
    """Right-align a column whose cells all read as numbers ("30.2 ± 0.8", "+1.0", "[+0.7, +1.3]", "–")."""
    return len(column) > 0 and all(re.match(r"^[-+\[]*[0-9–]", str(v)) for v in column)


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
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


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


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}" if np.isfinite(x) else "–"


def _comparisons_markdown(table: pd.DataFrame) -> str:
    def ci(lo, hi):
        return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" if np.isfinite(lo) else "–"

    def yes_no(v):
        return "–" if pd.isna(v) else ("yes" if v else "no")

    shown = pd.DataFrame({
        "Comparison": table["label"], "Metric": table["metric"], "Ours (b - a)": [_signed(d) for d in table["diff"]],
        "95 % CI": [ci(lo, hi) for lo, hi in zip(table["low"], table["high"])],
        "n": [f"{a}, {b}" for a, b in zip(table["n_a"], table["n_b"])],
        "Significant": ["yes" if sig else ("–" if not np.isfinite(d) else "no")
                        for sig, d in zip(table["significant"], table["diff"])],
        "Detectable (80 % power)": [f"±{100 * m:.1f}" if np.isfinite(m) else "–" for m in table["mde80"]],
        "Paper": table["paper_table"].fillna("–"), "Paper Δ": [_signed(d) for d in table["paper_delta"]],
        "Same sign": [yes_no(v) for v in table["sign_match"]]})
    return to_markdown(shown)


def _per_epoch_markdown(runs: pd.DataFrame, metric: str = "bbox/AP") -> list[str]:
    """README section: ``metric`` x 100 per epoch, mean over seeds (nothing if no epoch was evaluated)."""
    try:
        table = per_epoch_table(runs, metric)
    except GatherError:
        return []
    shown = pd.DataFrame({"Variant": table["label"], "n": table["n"],
                          **{f"ep {c}": [f"{100 * v:.1f}" if np.isfinite(v) else "–" for v in table[c]]
                             for c in table.columns if isinstance(c, int)}})
    return [f"## {metric} x 100 per epoch (mean over seeds)", "", to_markdown(shown).rstrip("\n"), ""]


def _k_and_groups_markdown(runs: pd.DataFrame, metric: str = "bbox/AP") -> list[str]:
    """README sections of a K sweep (where AP-vs-K flattens, paper Fig. 9) and of per-group evaluations
    (every group alike, paper Fig. 4); nothing for studies that have neither."""
    lines: list[str] = []
    final = runs[(runs["evaluation"] == "final") & (runs["metric"] == metric)]
    per_k = final.groupby("num_groups")["variant"].nunique() if "num_groups" in final else pd.Series(dtype=int)
    if len(per_k) > 2 and (per_k == 1).all():
        flat = flattening_point(runs, metric)
        where = (f"K = {flat['k']}: no larger K is significantly below the best (K = {flat['best_k']})"
                 if flat["k"] is not None else "not judged (a K has fewer than two seeds)")
        lines += ["## Where AP flattens with K (paper Fig. 9)", "", f"{where}; Welch 95 % CI of each K's "
                  f"difference to the best K, {metric} x 100:", "",
                  to_markdown(pd.DataFrame({
                      "K": flat["table"]["K"], "mean": [f"{100 * m:.1f}" for m in flat["table"]["mean"]],
                      "diff to best [95 % CI]": [f"{_signed(d)} [{_signed(lo)}, {_signed(hi)}]"
                                                 for d, lo, hi in zip(flat["table"]["diff_to_best"],
                                                                      flat["table"]["low"], flat["table"]["high"])],
                      "below best": ["yes" if b else "no" for b in flat["table"]["below_best"]]})).rstrip("\n"), ""]
    grouped = runs[runs["evaluation"].astype(str).str.match(_GROUP_EVAL) & (runs["metric"] == metric)]
    for variant in dict.fromkeys(grouped["variant"]):
        table, spread = per_group_summary(runs, variant, metric)
        if "within_group0_ci" not in spread:
            continue
        lines += [f"## Every group alike (paper Fig. 4): {variant}", "",
                  f"Each of the {spread['num_groups']} groups evaluated alone: median {100 * spread['median']:.2f}, "
                  f"range {100 * spread['min']:.2f} to {100 * spread['max']:.2f} (± {100 * spread['half_range']:.2f}); "
                  f"group 0's seed 95 % CI [{100 * spread['group0_low']:.2f}, {100 * spread['group0_high']:.2f}] "
                  f"holds the mean of {spread['within_group0_ci']} of {spread['num_groups']} groups "
                  "(paper: 37.5 ± 0.1 mAP over 11 groups).", ""]
    return lines


def _readme(study: Study, runs: pd.DataFrame, table: pd.DataFrame, effects: pd.DataFrame, runs_root: Path,
            files: list[str], skipped: dict[str, str], command: Sequence[str] | None,
            comparisons: pd.DataFrame | None = None) -> str:
    per_run = runs.drop_duplicates("run_dir")
    seeds = sorted(per_run["seed"].unique().tolist())
    variants = list(dict.fromkeys(per_run["variant"]))

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
        "Mean ± 95 % CI half-width over seeds (Student t, n - 1 dof), "
        + ("AP x 100." if study.metrics is None else "scores x 100 (– : the variant has no such metric)."),
        "",
        to_markdown(table).rstrip("\n"),
        "",
    ]
    if comparisons is not None:
        lines += ["## Comparisons the study reports", "",
                  "Ours: mean(b) - mean(a) of the final metric over seeds, x 100, with a Welch 95 % CI; significant = "
                  "the CI excludes 0; detectable: the smallest true difference these seeds detect with 80 % "
                  "power. Paper Δ: the paper's reported difference (COCO / nuScenes, the paper's "
                  "detectors): compare the sign, not the size.", "",
                  _comparisons_markdown(comparisons).rstrip("\n"), ""]
        notes = [f"- `{r.comparison}` ({r.label}): {r.b} - {r.a}; paper {r.paper_table}: {r.paper_note}"
                 for r in comparisons.itertuples(index=False) if isinstance(r.paper_note, str)]
        lines += [*notes, ""] if notes else []
    elif not effects.empty:
        base = effects["baseline"].iloc[0]
        lines += [f"## Effects over {_labels(runs).get(base, base)} ({effects['metric'].iloc[0]} x 100)", "",
                  "Difference of means with a Welch 95 % CI; significant = the CI excludes 0.", ""]
        eff = pd.DataFrame({
            "Variant": effects["label"],
            "diff": [f"{100 * d:+.1f}" for d in effects["diff"]],
            "95 % CI": [f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" if np.isfinite(lo) else "–"
                        for lo, hi in zip(effects["low"], effects["high"])],
            "significant": ["yes" if s else "no" for s in effects["significant"]]})
        lines += [to_markdown(eff).rstrip("\n"), ""]
    lines += _k_and_groups_markdown(runs)
    lines += _per_epoch_markdown(runs)
    lines += ["## Files", "",
              "- `runs.csv`: long table, one row per (variant, seed, evaluation, epoch, metric), with provenance",
              "- `summary.csv`: n, mean, std, sem, 95 % CI per (variant, evaluation, metric)",
              "- `effects.csv`: effects over the baseline, Welch 95 % CI"]
    if comparisons is not None:
        lines += ["- `comparisons.csv`: the comparisons above (differences as fractions, x 100 = points; "
                  "paper_delta likewise), sign, sign_match, confirms_paper"]
    lines += ["- `table.md`, `table.tex`: the results table above"]
    lines += [f"- `{f}`: figure {f[:-4]}" for f in files if f.endswith(".png")]
    lines += [f"- figure {k} not drawn: {why}" for k, why in skipped.items()]
    lines += ["", "Read them in a notebook with `groupdetr.reporting.study.read_gathered`.", ""]
    if datasets - {"coco"}:
        lines += [f"**{NOT_COCO if study.metrics is None and comparisons is None else NOT_PAPER_DATA}**", ""]
    else:
        lines += ["AP is COCO val2017 bbox AP.", ""]
    return "\n".join(lines)
