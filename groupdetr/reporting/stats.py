"""Statistics over seeds of a study's long table (:func:`groupdetr.reporting.runs.collect`).

- :func:`mean_ci`, :func:`summarize`: mean and Student-t 95 % CI over seeds (n = 1 gives NaN, never 0).
- :func:`effect`: mean(b) - mean(a) with a Welch 95 % CI, p-value and the difference detectable with
  80 % power; :func:`relative_effect`: the same difference in % of mean(a) (delta-method CI), the axis on
  which effects of different metrics, baselines and datasets compare; :func:`effects_table` (every variant
  over a baseline), :func:`comparisons_table` (a study's declared comparisons beside the paper's deltas,
  columns :data:`COMPARISON_COLUMNS`).
- :func:`flattening_point` (where AP-vs-K flattens), :func:`per_epoch_table`, :func:`epochs_to_reach` (when a
  run leaves the plateau), :func:`per_group_summary`,
  :func:`per_group_offsets` (each group against the median of its own model, paper Fig. 4).

Every function is pure: a DataFrame in, a DataFrame or dict out. Values are in the long table's units
(:func:`groupdetr.reporting.units.metric_unit`: AP in points), and so are means, CIs and differences; every output
table names them in a ``unit`` column.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as st

from groupdetr.errors import GatherError
from groupdetr.reporting.runs import _GROUP_EVAL
from groupdetr.reporting.units import PERCENT, metric_unit

if TYPE_CHECKING:
    from groupdetr.studies import Comparison

__all__ = ["COMPARISON_COLUMNS", "mean_ci", "summarize", "effect", "relative_effect", "ratio_ci", "effects_table",
           "comparisons_table", "flattening_point", "per_epoch_table", "epochs_to_reach", "per_group_summary",
           "per_group_offsets"]

#: columns of :func:`comparisons_table` (``comparisons.csv``), in order.
COMPARISON_COLUMNS = ("comparison", "label", "a", "b", "metric", "unit", "n_a", "n_b", "mean_a", "mean_b", "diff",
                      "low", "high", "dof", "p_value", "significant", "mde80", "rel_pct", "rel_low_pct",
                      "rel_high_pct", "sign", "paper_table", "paper_a", "paper_delta", "paper_rel_pct", "paper_note",
                      "sign_match", "confirms_paper")


def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """n, mean, std (ddof 1), sem and the Student-t CI (n - 1 dof) of the finite ``values``.

    ``ci95`` is the half-width; ``low``/``high`` the bounds. With n = 1 the spread is unknown: std,
    sem and the CI are NaN (never 0).
    """
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    sem = std / math.sqrt(n) if n > 1 else math.nan
    half = float(st.t.ppf(0.5 + level / 2, n - 1) * sem) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "sem": sem, "ci95": half, "low": mean - half, "high": mean + half}


def _scores(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["evaluation"] != "epoch"]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Over seeds, per (variant, evaluation, metric) of the non-``epoch`` rows of :func:`collect`:
    n, mean, std, sem, ci95 (half-width), low, high (Student t, n - 1 dof; n = 1 gives NaN), in the metric's
    ``unit``, with label, paper_row, num_groups, eval_group and nms_iou. Variants keep their study order.

    Raises:
        GatherError: a seed appears twice for one (variant, evaluation, metric).
    """
    out = []
    keys = ["variant", "evaluation", "metric"]
    for (variant, evaluation, metric), g in _scores(runs).groupby(keys, sort=False):
        if not g["seed"].is_unique:
            raise GatherError(f"variant {variant}, evaluation {evaluation}, {metric}: seed(s) "
                              f"{sorted(set(g['seed'][g['seed'].duplicated()]))} appear more than once")
        first = g.iloc[0]
        out.append({"study": first["study"], "variant": variant, "label": first["label"],
                    "paper_row": first["paper_row"], "num_groups": first["num_groups"],
                    "evaluation": evaluation, "eval_group": first["eval_group"], "nms_iou": first["nms_iou"],
                    "metric": metric, "unit": metric_unit(metric)[1], **mean_ci(g["value"])})
    cols = ["study", "variant", "label", "paper_row", "num_groups", "evaluation", "eval_group", "nms_iou", "metric",
            "unit", "n", "mean", "std", "sem", "ci95", "low", "high"]
    return pd.DataFrame(out, columns=cols)


def _values(runs: pd.DataFrame, variant: str, metric: str, evaluation: str) -> np.ndarray:
    sel = runs[(runs["variant"] == variant) & (runs["evaluation"] == evaluation) & (runs["metric"] == metric)]
    if sel.empty:
        raise GatherError(f"no {metric} of variant {variant!r}, evaluation {evaluation!r} in the gathered runs")
    x = sel["value"].to_numpy(dtype=float)
    return x[np.isfinite(x)]


def effect(runs: pd.DataFrame, a: str, b: str, metric: str = "bbox/AP", evaluation_a: str = "final",
           evaluation_b: str = "final", level: float = 0.95) -> dict[str, Any]:
    """mean(b) - mean(a) over seeds with a Welch CI (unequal variances, Welch-Satterthwaite dof).

    Returns ``diff``, ``low``, ``high`` (in the metric's ``unit``), ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``dof``, ``p_value``
    (two-sided Welch t-test), ``significant`` (the CI excludes 0; False when it is unknown, i.e.
    a side has fewer than two seeds) and ``mde80``: the power reached, as the smallest true difference
    this design (these seeds, the observed spreads) detects with 80 % power at the CI's level,
    ``(t_{1 - alpha/2} + t_{0.8}) * se`` (NaN when unknown).
    """
    xa, xb = _values(runs, a, metric, evaluation_a), _values(runs, b, metric, evaluation_b)
    na, nb = len(xa), len(xb)
    ma, mb = (float(xa.mean()) if na else math.nan), (float(xb.mean()) if nb else math.nan)
    diff = mb - ma
    low = high = dof = p = mde = math.nan
    if na > 1 and nb > 1:
        va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
        se = math.sqrt(va + vb)
        if se == 0:  # no spread at all: the difference is exact
            low = high = diff
            p = 0.0 if diff != 0 else 1.0
        else:
            dof = float((va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)))
            half = float(st.t.ppf(0.5 + level / 2, dof)) * se
            low, high = diff - half, diff + half
            p = float(2 * st.t.sf(abs(diff) / se, dof))
            mde = float(st.t.ppf(0.5 + level / 2, dof) + st.t.ppf(0.8, dof)) * se
    significant = bool(np.isfinite(low) and (low > 0 or high < 0))
    return {"a": a, "b": b, "metric": metric, "unit": metric_unit(metric)[1], "evaluation_a": evaluation_a,
            "evaluation_b": evaluation_b, "mean_a": ma, "mean_b": mb, "diff": diff, "low": low, "high": high, "n_a": na, "n_b": nb,
            "dof": dof, "p_value": p, "significant": significant, "mde80": mde}


def ratio_ci(xa: Iterable[float], xb: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """(mean(b) - mean(a)) / mean(a) in %, with its CI by the delta method, of the finite values ``xa``, ``xb``.

    With R = mean(b) / mean(a), Var(R) ~ (s_b^2 / n_b + R^2 s_a^2 / n_a) / mean(a)^2; the CI is
    100 (R - 1 ± t se) with the Welch-Satterthwaite dof of those two terms (a's spread counts through the
    ratio, so the interval is wider than the difference's CI divided by mean(a) whenever a varies). Returns
    ``rel_pct``, ``rel_low_pct``, ``rel_high_pct`` and ``rel_dof``: NaN when a side is empty or mean(a) is not
    positive (a relative change of a score that is not above zero is undefined), bounds NaN with fewer than
    two values on a side, equal to ``rel_pct`` when neither side varies.
    """
    a, b = np.asarray(list(xa), dtype=float), np.asarray(list(xb), dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    na, nb = len(a), len(b)
    nan = {"rel_pct": math.nan, "rel_low_pct": math.nan, "rel_high_pct": math.nan, "rel_dof": math.nan}
    if not na or not nb or not a.mean() > 0:
        return nan
    ma, r = float(a.mean()), float(b.mean() / a.mean())
    rel = 100 * (r - 1)
    if na < 2 or nb < 2:
        return {**nan, "rel_pct": rel}
    ca, cb = r ** 2 * a.var(ddof=1) / na / ma ** 2, b.var(ddof=1) / nb / ma ** 2
    se = math.sqrt(ca + cb)
    if se == 0:
        return {"rel_pct": rel, "rel_low_pct": rel, "rel_high_pct": rel, "rel_dof": math.nan}
    dof = float((ca + cb) ** 2 / (ca ** 2 / (na - 1) + cb ** 2 / (nb - 1)))
    half = 100 * float(st.t.ppf(0.5 + level / 2, dof)) * se
    return {"rel_pct": rel, "rel_low_pct": rel - half, "rel_high_pct": rel + half, "rel_dof": dof}


def relative_effect(runs: pd.DataFrame, a: str, b: str, metric: str = "bbox/AP", evaluation_a: str = "final",
                    evaluation_b: str = "final", level: float = 0.95) -> dict[str, Any]:
    """:func:`effect`'s difference in % of mean(a), with a delta-method CI (:func:`ratio_ci`): the axis on which
    our effects and the paper's (its two reported values) compare although the scores differ in size."""
    out = ratio_ci(_values(runs, a, metric, evaluation_a), _values(runs, b, metric, evaluation_b), level)
    return {"a": a, "b": b, "metric": metric, "unit": PERCENT, **out}


def _arms(runs: pd.DataFrame, include_groups: bool = False) -> list[tuple[str, str]]:
    """(variant, evaluation) pairs of the scored rows, in order; per-group evaluations optional."""
    arms = _scores(runs)[["variant", "evaluation"]].drop_duplicates()
    pairs = list(arms.itertuples(index=False, name=None))
    return [p for p in pairs if include_groups or not _GROUP_EVAL.match(p[1])]


def _labels(runs: pd.DataFrame) -> dict[str, str]:
    return dict(runs[["variant", "label"]].drop_duplicates("variant").itertuples(index=False, name=None))


def _row_label(label: str, evaluation: str) -> str:
    return label if evaluation == "final" else f"{label} + {evaluation}"


def effects_table(runs: pd.DataFrame, baseline: str | None = None, metric: str = "bbox/AP") -> pd.DataFrame:
    """:func:`effect` of every (variant, evaluation) over ``baseline``'s final score (default: the
    first variant), per-group evaluations left out, in the metric's ``unit`` and relative to the baseline's mean
    (``rel_pct``, ``rel_low_pct``, ``rel_high_pct``: :func:`relative_effect`). One row each, in study order."""
    pairs = _arms(runs)
    if not pairs:
        raise GatherError("no scored runs")
    baseline = baseline or pairs[0][0]
    labels = _labels(runs)
    rows = []
    for variant, evaluation in pairs:
        if (variant, evaluation) == (baseline, "final"):
            continue
        e = effect(runs, baseline, variant, metric, "final", evaluation)
        r = relative_effect(runs, baseline, variant, metric, "final", evaluation)
        rows.append({"variant": variant, "evaluation": evaluation, "label": _row_label(labels[variant], evaluation),
                     "baseline": baseline, **{k: e[k] for k in ("metric", "unit", "mean_a", "mean_b", "diff", "low",
                                                                 "high", "n_a", "n_b", "p_value", "significant")},
                     **{k: r[k] for k in ("rel_pct", "rel_low_pct", "rel_high_pct")}})
    return pd.DataFrame(rows)


def comparisons_table(runs: pd.DataFrame, comparisons: Mapping[str, Comparison] | Iterable[Comparison]) -> pd.DataFrame:
    """A study's declared comparisons (``comparisons:`` of its YAML entry) on its gathered runs, one row each
    in declaration order, with the columns :data:`COMPARISON_COLUMNS`:

    - ``diff`` = mean(``b``) - mean(``a``) of the final ``metric`` over seeds in its ``unit`` (AP: points), with
      ``low``/``high`` of its Welch 95 % CI, ``dof``, ``p_value``, ``significant`` (the CI excludes 0) as
      :func:`effect`; ``sign`` (+1, 0, -1) of ``diff``;
    - ``rel_pct``, ``rel_low_pct``, ``rel_high_pct``: the same difference in % of mean(``a``) with its CI
      (:func:`relative_effect`);
    - ``paper_delta``: the paper's reported delta in the same unit (the YAML's ``delta``, points for AP),
      ``paper_a``: the paper's value of ``a`` (its ``base``), ``paper_rel_pct`` = 100 paper_delta / paper_a
      (NaN without a base), ``paper_table``, ``paper_note``;
    - ``sign_match``: ``sign`` equals the sign of ``paper_delta`` (NA without a paper delta or a difference);
    - ``confirms_paper``: significant *and* on the paper's side (NA when a side has fewer than two seeds
      or the paper gives no delta).

    A comparison whose variant was not gathered (a narrowed study) keeps its row, with n 0 and NaN.

    Raises:
        GatherError: a gathered variant has no ``metric`` at all (one line naming the comparison).
    """
    comps = list(comparisons.values()) if isinstance(comparisons, Mapping) else list(comparisons)
    present = set(runs["variant"])
    final = runs[runs["evaluation"] == "final"]
    rows = []
    for c in comps:
        row: dict[str, Any] = {"comparison": c.name, "label": c.label, "a": c.a, "b": c.b, "metric": c.metric,
                               "unit": metric_unit(c.metric)[1]}
        try:
            if {c.a, c.b} <= present:
                e = effect(runs, c.a, c.b, c.metric)
                row.update({k: e[k] for k in ("n_a", "n_b", "mean_a", "mean_b", "diff", "low", "high", "dof",
                                              "p_value", "significant", "mde80")})
                r = relative_effect(runs, c.a, c.b, c.metric)
                row.update({k: r[k] for k in ("rel_pct", "rel_low_pct", "rel_high_pct")})
            else:
                sides = {}
                for side, v in (("a", c.a), ("b", c.b)):
                    x = _values(final, v, c.metric, "final") if v in present else np.array([])
                    sides[f"n_{side}"], sides[f"mean_{side}"] = len(x), (float(x.mean()) if len(x) else math.nan)
                row.update(sides, diff=math.nan, low=math.nan, high=math.nan, dof=math.nan, p_value=math.nan,
                           significant=False, mde80=math.nan, rel_pct=math.nan, rel_low_pct=math.nan,
                           rel_high_pct=math.nan)
        except GatherError as err:
            raise GatherError(f"comparison {c.name}: {err}") from None
        diff = row["diff"]
        paper = math.nan if c.paper_delta is None else float(c.paper_delta)
        base = math.nan if c.paper_base is None else float(c.paper_base)
        sign = int(np.sign(diff)) if np.isfinite(diff) else pd.NA
        match = bool(sign == np.sign(paper)) if np.isfinite(diff) and np.isfinite(paper) else pd.NA
        known = row["n_a"] > 1 and row["n_b"] > 1 and np.isfinite(paper)
        row.update(sign=sign, paper_table=c.paper_table, paper_a=base, paper_delta=paper,
                   paper_rel_pct=100 * paper / base if base > 0 else math.nan, paper_note=c.paper_note,
                   sign_match=match, confirms_paper=bool(row["significant"] and match) if known else pd.NA)
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    return out.astype({"n_a": int, "n_b": int, "significant": bool, "sign": "Int64", "sign_match": "boolean",
                       "confirms_paper": "boolean"})


def flattening_point(runs: pd.DataFrame, metric: str = "bbox/AP", evaluation: str = "final") -> dict[str, Any]:
    """Where the AP-vs-K curve flattens: the smallest K from which no larger K is significantly
    below the best K (Welch 95 % CI of the difference to the best excludes 0 from below).

    Returns ``k`` (None when some K has fewer than two seeds: flatness cannot be judged), ``best_k``
    and ``table`` (per K: variant, n, mean, diff to the best, low, high, below_best).
    """
    sel = runs[(runs["evaluation"] == evaluation) & (runs["metric"] == metric)]
    if sel.empty:
        raise GatherError(f"no {metric} ({evaluation}) in the gathered runs")
    per_k = sel.groupby("num_groups", sort=True)["variant"].unique()
    if any(len(v) > 1 for v in per_k):
        raise GatherError("several variants share one K; flattening_point needs a K sweep")
    variants = [(int(k), v[0]) for k, v in per_k.items()]
    means = {v: float(np.nanmean(_values(runs, v, metric, evaluation))) for _, v in variants}
    best = max(means, key=means.get)
    rows = []
    for k, v in variants:
        e = effect(runs, best, v, metric, evaluation, evaluation)
        rows.append({"K": k, "variant": v, "n": e["n_b"], "mean": e["mean_b"], "diff_to_best": e["diff"],
                     "low": e["low"], "high": e["high"], "below_best": e["significant"] and e["diff"] < 0})
    table = pd.DataFrame(rows)
    k_flat = None
    if (table["n"] >= 2).all():
        below = table["below_best"].to_numpy()
        for i in range(len(table)):
            if not below[i:].any():
                k_flat = int(table["K"].iloc[i])
                break
    best_k = int(table.loc[table["variant"] == best, "K"].iloc[0])
    return {"k": k_flat, "best_k": best_k, "metric": metric, "table": table}


def per_epoch_table(runs: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """``metric`` of every epoch logged in ``log.jsonl``, mean over seeds: one row per variant (study
    order, with ``label`` and ``n`` seeds), one column per epoch (convergence in numbers)."""
    sel = runs[(runs["evaluation"] == "epoch") & (runs["metric"] == metric)]
    if sel.empty:
        raise GatherError(f"no {metric} per epoch in the gathered runs")
    order = list(dict.fromkeys(runs["variant"]))
    means = sel.pivot_table(index="variant", columns="epoch", values="value", aggfunc="mean")
    n = sel.groupby("variant")["seed"].nunique()
    labels = _labels(runs)
    table = means.reindex([v for v in order if v in means.index])
    table.columns = [int(c) for c in table.columns]
    table.insert(0, "n", n.reindex(table.index).astype(int))
    table.insert(0, "label", [labels.get(v, v) for v in table.index])
    return table.reset_index()


def epochs_to_reach(runs: pd.DataFrame, threshold: float, metric: str = "bbox/AP") -> pd.DataFrame:
    """How fast each variant leaves DETR's early plateau: per run, the first logged epoch whose ``metric`` (in the
    long table's unit, AP in points) is at least ``threshold``. One row per variant (study order): ``label``,
    ``n`` seeds, ``reached`` (seeds that got there within their schedule), ``first_epoch`` per seed (a tuple in
    seed order, NaN where never), and ``mean``/``ci95`` of the epoch over the seeds that reached it (NaN when
    fewer than one, or two for the CI). A seed that never reaches it is not counted as the last epoch: ``reached``
    says how many did."""
    sel = runs[(runs["evaluation"] == "epoch") & (runs["metric"] == metric)]
    if sel.empty:
        raise GatherError(f"no {metric} per epoch in the gathered runs")
    labels = _labels(runs)
    rows = []
    for variant in dict.fromkeys(runs["variant"]):
        v = sel[sel["variant"] == variant]
        if v.empty:
            continue
        firsts = []
        for _, g in v.sort_values("epoch").groupby("seed", sort=True):
            hit = g.loc[g["value"] >= threshold, "epoch"]
            firsts.append(float(hit.iloc[0]) if len(hit) else math.nan)
        reached = [e for e in firsts if not math.isnan(e)]
        s = mean_ci(reached)
        rows.append({"variant": variant, "label": labels.get(variant, variant), "n": len(firsts),
                     "reached": len(reached), "first_epoch": tuple(firsts), "mean": s["mean"], "ci95": s["ci95"],
                     "threshold": threshold, "unit": metric_unit(metric)[1]})
    return pd.DataFrame(rows)


def per_group_summary(runs: pd.DataFrame, variant: str, metric: str = "bbox/AP") -> tuple[pd.DataFrame, dict]:
    """Each group of ``variant`` evaluated alone (paper Fig. 4): per group n, mean, ci95, low, high,
    and a dict of the spread over groups of the group means: median, min, max, half_range
    ((max - min) / 2, the paper's "± 0.1"), num_groups."""
    sel = runs[(runs["variant"] == variant) & (runs["metric"] == metric) & runs["evaluation"].str.match(_GROUP_EVAL)]
    if sel.empty:
        raise GatherError(f"no per-group evaluations (eval/group<g>.json) of variant {variant!r}")
    rows = []
    for ev, g in sel.groupby("evaluation", sort=False):
        rows.append({"group": int(_GROUP_EVAL.match(ev).group(1)), **mean_ci(g["value"])})
    table = pd.DataFrame(rows).sort_values("group").reset_index(drop=True)
    means = table["mean"].to_numpy()
    spread = {"median": float(np.median(means)), "min": float(means.min()), "max": float(means.max()),
              "half_range": float((means.max() - means.min()) / 2), "num_groups": len(table)}
    if (table["group"] == 0).any():  # paper Fig. 4: every group alike = each group's mean inside group 0's seed CI
        g0 = table[table["group"] == 0].iloc[0]
        inside = (table["mean"] >= g0["low"]) & (table["mean"] <= g0["high"])
        spread.update(group0_low=float(g0["low"]), group0_high=float(g0["high"]),
                      within_group0_ci=int(inside.sum()))
    return table, spread


def per_group_offsets(runs: pd.DataFrame, variant: str, metric: str = "bbox/AP") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each group of ``variant`` evaluated alone against the median over the groups *of the same model* (paper
    Fig. 4: one model, 37.5 ± 0.1 mAP): per seed, ``offset`` = the group's ``metric`` minus that seed's median
    over groups (in the metric's unit) and ``offset_pct`` = the same in % of that median. Pairing by seed takes
    out what moves every group of a model together (the seed), leaving the spread between groups.

    Returns ``(per_group, per_seed)``: per group n, mean, ci95, low, high of ``offset`` and ``pct_mean``,
    ``pct_ci95``, ``pct_low``, ``pct_high`` of ``offset_pct`` (Student t over seeds); per (seed, group) the
    value, the seed's median, offset and offset_pct.
    """
    sel = runs[(runs["variant"] == variant) & (runs["metric"] == metric) & runs["evaluation"].str.match(_GROUP_EVAL)]
    if sel.empty:
        raise GatherError(f"no per-group evaluations (eval/group<g>.json) of variant {variant!r}")
    per_seed = sel[["seed", "evaluation", "value"]].copy()
    per_seed["group"] = per_seed.pop("evaluation").str.extract(_GROUP_EVAL, expand=False).astype(int)
    per_seed["median"] = per_seed.groupby("seed")["value"].transform("median")
    per_seed["offset"] = per_seed["value"] - per_seed["median"]
    per_seed["offset_pct"] = 100 * per_seed["offset"] / per_seed["median"].where(per_seed["median"] > 0)
    per_seed = per_seed.sort_values(["group", "seed"]).reset_index(drop=True)[
        ["seed", "group", "value", "median", "offset", "offset_pct"]]
    rows = []
    for group, g in per_seed.groupby("group", sort=True):
        s, p = mean_ci(g["offset"]), mean_ci(g["offset_pct"])
        rows.append({"group": int(group), "n": s["n"], "mean": s["mean"], "ci95": s["ci95"], "low": s["low"],
                     "high": s["high"], "pct_mean": p["mean"], "pct_ci95": p["ci95"], "pct_low": p["low"],
                     "pct_high": p["high"]})
    return pd.DataFrame(rows), per_seed
