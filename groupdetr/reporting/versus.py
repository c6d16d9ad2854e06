"""Our gathered runs joined with the paper's reshaped tables (:mod:`groupdetr.reporting.paper`), keyed by what
the study spec and the run configs say, never by variant names written here: Table 7 by each variant's
``paper_row``, Tables 3-4 by detector, backbone and epochs of runs on COCO. (Our effects beside the paper's
deltas are each study's ``comparisons:``, written by ``groupdetr gather`` into ``comparisons.csv``.)
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats as st

from groupdetr.errors import GatherError

__all__ = ["paper_rows", "table7_comparison", "table1_comparison", "table2_comparison", "fig7_comparison",
           "rank_agreement", "main_results_comparison"]


def _ours(summary: pd.DataFrame, variant: str, evaluation: str, metric: str) -> dict:
    s = summary[(summary["variant"] == variant) & (summary["evaluation"] == evaluation) & (summary["metric"] == metric)]
    if s.empty:
        return {"ours": math.nan, "ours_ci": math.nan, "ours_low": math.nan, "ours_high": math.nan, "n": 0}
    r = s.iloc[0]
    return {"ours": r["mean"], "ours_ci": r["ci95"], "ours_low": r["low"], "ours_high": r["high"], "n": int(r["n"])}


def paper_rows(summary: pd.DataFrame) -> dict[str, str]:
    """Paper row -> our variant, as the study spec says (each variant's ``paper_row``, e.g. ``"(a)"`` -> ``a``);
    variants without one are left out. Raises GatherError when two variants claim one row."""
    out: dict[str, str] = {}
    if summary is None or not len(summary) or "paper_row" not in summary:
        return out
    for variant, row in summary.drop_duplicates("variant")[["variant", "paper_row"]].itertuples(index=False):
        if isinstance(row, str) and row.strip():
            key = row.strip().strip("()")
            if key in out:
                raise GatherError(f"variants {out[key]!r} and {variant!r} both say paper_row {row!r}")
            out[key] = variant
    return out


def table1_comparison(paper1: pd.DataFrame, summary: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Table 1 rows (a)-(c) (:func:`groupdetr.reporting.paper.table1`) beside our ``ablation_enhancement``
    summary, joined by each variant's ``paper_row``: the columns of :func:`table7_comparison` (the starting model
    has no paper row: it is the study's own row of the summary)."""
    return table7_comparison(paper1, summary, metric)


def table2_comparison(paper2: pd.DataFrame, times: pd.DataFrame, detector: str = "C-DETR", schedule: int = 12,
                      metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Table 2's rows of ``detector`` at the 1x ``schedule`` (:func:`groupdetr.reporting.paper.table2`) beside
    our training-time study (:func:`groupdetr.reporting.cost.training_time_table`), joined by each variant's
    ``paper_row`` (the arm: baseline, baseline longer, w/ Group). Columns: arm, paper_epochs, paper_hours,
    paper_time_vs_1x (hours over the 1x baseline's), paper_mAP, variant (None: not run), label, epochs,
    train_hours, time_vs_1x (ours, over our first variant's), ours, ours_ci (``metric`` in points, as the paper's), n."""
    p = paper2[(paper2["detector"] == detector) & (paper2["schedule"] == schedule)]
    if p.empty:
        raise GatherError(f"the paper's Table 2 has no rows of {detector} at {schedule} epochs")
    base_hours = float(p.loc[p["arm"] == "baseline", "train_hours"].iloc[0])
    ours = times.set_index("paper_row") if len(times) else pd.DataFrame()
    rows = []
    for r in p.itertuples(index=False):
        o = ours.loc[r.arm] if r.arm in ours.index else None
        rows.append({"arm": r.arm, "paper_epochs": int(r.epochs), "paper_hours": float(r.train_hours),
                     "paper_time_vs_1x": float(r.train_hours) / base_hours, "paper_mAP": float(r.mAP),
                     "variant": None if o is None else o["variant"], "label": None if o is None else o["label"],
                     "epochs": math.nan if o is None else int(o["epochs"]),
                     "train_hours": math.nan if o is None else float(o["train_hours"]),
                     "time_vs_1x": math.nan if o is None else float(o["time_vs_first"]),
                     "ours": math.nan if o is None else float(o[metric]),
                     "ours_ci": math.nan if o is None else float(o[f"{metric}_ci95"]),
                     "n": 0 if o is None else int(o["n"])})
    return pd.DataFrame(rows)


def fig7_comparison(cost: pd.DataFrame, paper_cost: pd.DataFrame, detector: str = "C-DETR") -> pd.DataFrame:
    """Our cost against K (:func:`groupdetr.reporting.cost.cost_vs_k`) with the paper's values of ``detector``
    beside it where it reports them (:func:`groupdetr.reporting.paper.training_cost`: K = 1 and 11):
    ``paper_time_vs_K1`` (minutes per epoch over K = 1's) and ``paper_extra_memory_gb``; NaN at other K."""
    p = paper_cost[paper_cost["detector"] == detector][["K", "min_per_epoch", "time_vs_K1", "extra_memory_gb"]]
    p = p.rename(columns={"min_per_epoch": "paper_min_per_epoch", "time_vs_K1": "paper_time_vs_K1",
                          "extra_memory_gb": "paper_extra_memory_gb"})
    return cost.merge(p, on="K", how="left")


def table7_comparison(paper7: pd.DataFrame, summary: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Table 7 rows (a)-(d) beside our ``ablation_assignment`` summary, each joined with the variant
    whose ``paper_row`` (in the study spec) names it.

    One row per paper row (our ``final`` evaluation) plus one per extra evaluation of that variant
    (e.g. naive one-to-many + nms, which the paper does not report: ``paper_mAP`` NaN). Columns:
    row, variant (None where no variant stands for the row), evaluation, setting, paper_mAP, ours / ours_ci /
    ours_low / ours_high (``metric`` in points like the paper's: mean, 95 % CI half-width and bounds), n (seeds;
    0 = not run),
    paper_rank, our_rank (1 = best, among the final rows of variants we ran).
    """
    labels = summary.drop_duplicates("variant").set_index("variant")["label"].to_dict() if len(summary) else {}
    variant_of = paper_rows(summary)
    rows = []
    for _, p in paper7.sort_values("row").iterrows():
        variant = variant_of.get(p["row"])
        evaluations = ["final"] + [e for e in dict.fromkeys(summary.loc[summary["variant"] == variant, "evaluation"])
                                   if e != "final"]
        for ev in evaluations:
            label = str(labels[variant]) if variant in labels else f"paper row ({p['row']}), not run"
            rows.append({"row": p["row"], "variant": variant, "evaluation": ev,
                         "setting": label if ev == "final" else f"{label} + {ev}",
                         "paper_mAP": float(p["mAP"]) if ev == "final" else math.nan,
                         **_ours(summary, variant, ev, metric)})
    out = pd.DataFrame(rows)
    ranked = (out["evaluation"] == "final") & (out["n"] > 0)
    out["paper_rank"] = out["paper_mAP"].where(ranked).rank(ascending=False, method="min")
    out["our_rank"] = out["ours"].where(ranked).rank(ascending=False, method="min")
    return out


def rank_agreement(comparison: pd.DataFrame) -> dict:
    """Order of the Table 7 rows, best first, in the paper and in ours (rows we ran, final
    evaluation): ``paper_order``, ``our_order`` (lists of rows), ``same_order`` and Kendall's tau."""
    r = comparison[(comparison["evaluation"] == "final") & (comparison["n"] > 0)]
    paper_order = r.sort_values("paper_mAP", ascending=False)["row"].tolist()
    our_order = r.sort_values("ours", ascending=False)["row"].tolist()
    tau = float(st.kendalltau(r["paper_mAP"], r["ours"]).statistic) if len(r) > 1 else math.nan
    return {"paper_order": paper_order, "our_order": our_order, "same_order": paper_order == our_order,
            "kendall_tau": tau}


def _trained_from_scratch(runs: pd.DataFrame) -> pd.Series:
    """Rows of runs that trained every part from its usual start: not started from another run
    (``model.init_from``), nothing frozen (``train.freeze``). Runs gathered before those columns existed are."""
    started = runs["init_from"].notna() if "init_from" in runs else pd.Series(False, index=runs.index)
    frozen = runs["frozen"].fillna("").astype(str).ne("") if "frozen" in runs else pd.Series(False, index=runs.index)
    return ~(started | frozen)


def _arm_means(final: pd.DataFrame, arm: pd.Series) -> pd.DataFrame:
    keys = ["detector", "backbone", "epochs"]
    sel = final[arm]
    if sel.empty:
        return pd.DataFrame(columns=[*keys, "mean", "n"])
    return sel.groupby(keys, as_index=False)["value"].agg(mean="mean", n="count")


def main_results_comparison(main: pd.DataFrame, runs: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Tables 3-4 (:func:`main_results`) with our reproduction beside them.

    A reproduction is the mean over seeds of the final ``metric`` of gathered runs on
    ``dataset == coco`` with the row's detector, backbone and epochs: baseline = K 1 with one-to-one
    assignment, Group DETR = K 11 with group assignment and separate self-attention. Adds
    ``ours_baseline_mAP``, ``ours_group_detr_mAP``, ``ours_gain``, ``delta_baseline``,
    ``delta_group_detr`` (ours - paper, mAP points) and ``n_baseline``, ``n_group_detr`` (seeds);
    NaN / 0 where nothing was reproduced. Runs gathered twice (same config hash and seed) count once; runs started
    from another run or with frozen parts (Table 1's) are no reproduction of these rows.
    """
    keys = ["detector", "backbone", "epochs"]
    final = runs[(runs["evaluation"] == "final") & (runs["metric"] == metric) & (runs["dataset"] == "coco")]
    final = final[_trained_from_scratch(final)]
    final = final.drop_duplicates(["config_hash", "seed"])
    baseline = final["num_groups"] == 1  # one group: every assignment is DETR's one-to-one matching
    group = (final["num_groups"] == 11) & (final["assignment"] == "group") & (final["self_attention"] == "separate")
    out = main.copy()
    for arm, mask in (("baseline", baseline), ("group_detr", group)):
        means = _arm_means(final, mask).rename(columns={"mean": f"ours_{arm}_mAP", "n": f"n_{arm}"})
        means[f"ours_{arm}_mAP"] = means[f"ours_{arm}_mAP"].astype(float)
        means["epochs"] = means["epochs"].astype(out["epochs"].dtype)
        out = out.merge(means, on=keys, how="left")
        out[f"n_{arm}"] = out[f"n_{arm}"].fillna(0).astype(int)
        out[f"delta_{arm}"] = out[f"ours_{arm}_mAP"] - out[f"{arm}_mAP"]
    out["ours_gain"] = out["ours_group_detr_mAP"] - out["ours_baseline_mAP"]
    return out
