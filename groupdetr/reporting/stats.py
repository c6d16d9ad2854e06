"""Statistics over seeds of a study's long table (:func:`groupdetr.reporting.runs.collect`).

- :func:`mean_ci`, :func:`summarize`: mean and Student-t 95 % CI over seeds (n = 1 gives NaN, never 0).
- :func:`effect`: mean(b) - mean(a) with a Welch 95 % CI, p-value and the difference detectable with
  80 % power; :func:`effects_table` (every variant over a baseline), :func:`comparisons_table` (a
  study's declared comparisons beside the paper's deltas, columns :data:`COMPARISON_COLUMNS`).
- :func:`flattening_point` (where AP-vs-K flattens), :func:`per_epoch_table`, :func:`per_group_summary`.

Every function is pure: a DataFrame in, a DataFrame or dict out; scores stay fractions (x 100 is
:func:`groupdetr.reporting.tables.as_points`).
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

if TYPE_CHECKING:
    from groupdetr.studies import Comparison

__all__ = ["COMPARISON_COLUMNS", "mean_ci", "summarize", "effect", "effects_table", "comparisons_table",
           "flattening_point", "per_epoch_table", "per_group_summary"]

#: columns of :func:`comparisons_table` (``comparisons.csv``), in order.
COMPARISON_COLUMNS = ("comparison", "label", "a", "b", "metric", "n_a", "n_b", "mean_a", "mean_b", "diff", "low",
                      "high", "dof", "p_value", "significant", "mde80", "sign", "paper_table", "paper_delta",
                      "paper_note", "sign_match", "confirms_paper")


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
    n, mean, std, sem, ci95 (half-width), low, high (Student t, n - 1 dof; n = 1 gives NaN), with
    label, paper_row, num_groups, eval_group and nms_iou. Variants keep their study order.

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
                    "metric": metric, **mean_ci(g["value"])})
    cols = ["study", "variant", "label", "paper_row", "num_groups", "evaluation", "eval_group", "nms_iou", "metric",
            "n", "mean", "std", "sem", "ci95", "low", "high"]
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

    Returns ``diff``, ``low``, ``high``, ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``dof``, ``p_value``
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
    return {"a": a, "b": b, "metric": metric, "evaluation_a": evaluation_a, "evaluation_b": evaluation_b,
            "mean_a": ma, "mean_b": mb, "diff": diff, "low": low, "high": high, "n_a": na, "n_b": nb,
            "dof": dof, "p_value": p, "significant": significant, "mde80": mde}


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
    first variant), per-group evaluations left out. One row each, in study order."""
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
        rows.append({"variant": variant, "evaluation": evaluation, "label": _row_label(labels[variant], evaluation),
                     "baseline": baseline, **{k: e[k] for k in ("metric", "mean_a", "mean_b", "diff", "low", "high",
                                                                 "n_a", "n_b", "p_value", "significant")}})
    return pd.DataFrame(rows)


def comparisons_table(runs: pd.DataFrame, comparisons: Mapping[str, Comparison] | Iterable[Comparison]) -> pd.DataFrame:
    """A study's declared comparisons (``comparisons:`` of its YAML entry) on its gathered runs, one row each
    in declaration order, with the columns :data:`COMPARISON_COLUMNS`:

    - ``diff`` = mean(``b``) - mean(``a``) of the final ``metric`` over seeds, with ``low``/``high`` of
      its Welch 95 % CI, ``dof``, ``p_value``, ``significant`` (the CI excludes 0) as :func:`effect`;
      ``sign`` (+1, 0, -1) of ``diff``;
    - ``paper_delta``: the paper's reported delta in the *same units as* ``diff`` (the YAML's points / 100,
      so :func:`~groupdetr.reporting.tables.as_points` turns both into points), ``paper_table``, ``paper_note``;
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
        row: dict[str, Any] = {"comparison": c.name, "label": c.label, "a": c.a, "b": c.b, "metric": c.metric}
        try:
            if {c.a, c.b} <= present:
                e = effect(runs, c.a, c.b, c.metric)
                row.update({k: e[k] for k in ("n_a", "n_b", "mean_a", "mean_b", "diff", "low", "high", "dof",
                                              "p_value", "significant", "mde80")})
            else:
                sides = {}
                for side, v in (("a", c.a), ("b", c.b)):
                    x = _values(final, v, c.metric, "final") if v in present else np.array([])
                    sides[f"n_{side}"], sides[f"mean_{side}"] = len(x), (float(x.mean()) if len(x) else math.nan)
                row.update(sides, diff=math.nan, low=math.nan, high=math.nan, dof=math.nan, p_value=math.nan,
                           significant=False, mde80=math.nan)
        except GatherError as err:
            raise GatherError(f"comparison {c.name}: {err}") from None
        diff = row["diff"]
        paper = math.nan if c.paper_delta is None else c.paper_delta / 100
        sign = int(np.sign(diff)) if np.isfinite(diff) else pd.NA
        match = bool(sign == np.sign(paper)) if np.isfinite(diff) and np.isfinite(paper) else pd.NA
        known = row["n_a"] > 1 and row["n_b"] > 1 and np.isfinite(paper)
        row.update(sign=sign, paper_table=c.paper_table, paper_delta=paper, paper_note=c.paper_note, sign_match=match,
                   confirms_paper=bool(row["significant"] and match) if known else pd.NA)
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
