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

__all__ = ["paper_rows", "table7_comparison", "rank_agreement", "main_results_comparison"]


def _ours(summary: pd.DataFrame, variant: str, evaluation: str, metric: str) -> dict:
    s = summary[(summary["variant"] == variant) & (summary["evaluation"] == evaluation) & (summary["metric"] == metric)]
    if s.empty:
        return {"ours": math.nan, "ours_ci": math.nan, "ours_low": math.nan, "ours_high": math.nan, "n": 0}
    r = s.iloc[0]
    return {"ours": 100 * r["mean"], "ours_ci": 100 * r["ci95"], "ours_low": 100 * r["low"],
            "ours_high": 100 * r["high"], "n": int(r["n"])}


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


def table7_comparison(paper7: pd.DataFrame, summary: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Table 7 rows (a)-(d) beside our ``ablation_assignment`` summary, each joined with the variant
    whose ``paper_row`` (in the study spec) names it.

    One row per paper row (our ``final`` evaluation) plus one per extra evaluation of that variant
    (e.g. naive one-to-many + nms, which the paper does not report: ``paper_mAP`` NaN). Columns:
    row, variant (None where no variant stands for the row), evaluation, setting, paper_mAP, ours / ours_ci /
    ours_low / ours_high (``metric`` x 100: mean, 95 % CI half-width and bounds), n (seeds; 0 = not run),
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
    NaN / 0 where nothing was reproduced. Runs gathered twice (same config hash and seed) count once.
    """
    keys = ["detector", "backbone", "epochs"]
    final = runs[(runs["evaluation"] == "final") & (runs["metric"] == metric) & (runs["dataset"] == "coco")]
    final = final.drop_duplicates(["config_hash", "seed"])
    baseline = final["num_groups"] == 1  # one group: every assignment is DETR's one-to-one matching
    group = (final["num_groups"] == 11) & (final["assignment"] == "group") & (final["self_attention"] == "separate")
    out = main.copy()
    for arm, mask in (("baseline", baseline), ("group_detr", group)):
        means = _arm_means(final, mask).rename(columns={"mean": f"ours_{arm}_mAP", "n": f"n_{arm}"})
        means[f"ours_{arm}_mAP"] = 100 * means[f"ours_{arm}_mAP"].astype(float)
        means["epochs"] = means["epochs"].astype(out["epochs"].dtype)
        out = out.merge(means, on=keys, how="left")
        out[f"n_{arm}"] = out[f"n_{arm}"].fillna(0).astype(int)
        out[f"delta_{arm}"] = out[f"ours_{arm}_mAP"] - out[f"{arm}_mAP"]
    out["ours_gain"] = out["ours_group_detr_mAP"] - out["ours_baseline_mAP"]
    return out
