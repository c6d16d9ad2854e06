"""The paper's reported numbers (``results/paper/reported.csv``, 276 rows, each with its source),
reshaped for the tables we regenerate. Pure functions of a DataFrame; :func:`write_paper_tables`
writes the small CSVs under ``results/paper/`` that notebooks read.

Side by side with ours (the gathered studies of :mod:`groupdetr.reporting.study`):
:func:`table7_comparison`, :func:`rank_agreement` and :func:`table7_claims` (Table 7),
:func:`main_results_comparison` (Tables 3-4), :func:`reported_value` (Fig. 4, Fig. 9 ...).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

__all__ = ["COLUMNS", "TABLE7_VARIANTS", "TABLE7_CLAIMS", "load_reported", "table7", "main_results",
           "write_paper_tables", "reported_value", "table7_comparison", "rank_agreement", "table7_claims",
           "main_results_comparison"]

COLUMNS = ("table", "setting", "detector", "backbone", "epochs", "K", "assignment", "self_attention", "dn", "task",
           "metric", "value", "source")

# Paper Table 7 rows -> the variant names of our assignment study (config overrides live in the workflow).
TABLE7_VARIANTS = {
    "a": "one_to_one",  # baseline, 300 queries
    "b": "naive_one_to_many",  # one joint assignment over 3300 queries, all kept at inference
    "c": "group_shared_sa",  # group-wise assignment, self-attention across all groups
    "d": "group_detr",  # group-wise assignment + separate self-attention
}
_AP = ["mAP", "APs", "APm", "APl"]


def load_reported(path: str | Path) -> pd.DataFrame:
    """Read the transcription; fails with one line if a column is missing."""
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df


def table7(reported: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 7 (C-DETR R50, 12 ep): one row per variant (a)-(d) with mAP, APs, APm, APl, source."""
    t = reported[reported["table"] == "Table7"].copy()
    t["row"] = t["setting"].str.extract(r"\(([a-d])\)", expand=False)
    wide = t.pivot_table(index="row", columns="metric", values="value", aggfunc="first")[_AP]
    info = t.groupby("row").first()[["K", "assignment", "self_attention", "source"]]
    out = wide.join(info).reset_index()
    out.insert(1, "variant", out["row"].map(TABLE7_VARIANTS))
    return out.sort_values("row").reset_index(drop=True)


def main_results(reported: pd.DataFrame) -> pd.DataFrame:
    """Paper Tables 3-4: per (table, detector, backbone, epochs) the baseline mAP, the mAP with Group
    DETR, the gain, and the source."""
    t = reported[reported["table"].isin(["Table3", "Table4"]) & (reported["metric"] == "mAP")].copy()
    t["arm"] = t["setting"].str.contains("w/ Group DETR").map({True: "group_detr", False: "baseline"})
    keys = ["table", "detector", "backbone", "epochs"]
    wide = t.pivot_table(index=keys, columns="arm", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    wide["gain"] = (wide["group_detr"] - wide["baseline"]).round(1)
    sources = t.groupby(keys)["source"].first().reset_index()
    return wide.merge(sources, on=keys).rename(columns={"baseline": "baseline_mAP", "group_detr": "group_detr_mAP"})


def write_paper_tables(reported: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``table7.csv`` and ``main_results.csv`` (Tables 3-4) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (("table7.csv", table7(reported)), ("main_results.csv", main_results(reported))):
        path = out_dir / name
        frame.to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# the paper beside our gathered runs


def reported_value(reported: pd.DataFrame, table: str, metric: str) -> float:
    """The one reported number of ``table`` (e.g. ``Fig4``) and ``metric`` (``mAP_median_over_groups``).

    Raises:
        ValueError: none or several rows match.
    """
    rows = reported[(reported["table"] == table) & (reported["metric"] == metric)]
    if len(rows) != 1:
        raise ValueError(f"reported numbers: {len(rows)} rows for table {table!r}, metric {metric!r} (expected 1)")
    return float(rows["value"].iloc[0])


def _ours(summary: pd.DataFrame, variant: str, evaluation: str, metric: str) -> dict:
    s = summary[(summary["variant"] == variant) & (summary["evaluation"] == evaluation) & (summary["metric"] == metric)]
    if s.empty:
        return {"ours": math.nan, "ours_ci": math.nan, "ours_low": math.nan, "ours_high": math.nan, "n": 0}
    r = s.iloc[0]
    return {"ours": 100 * r["mean"], "ours_ci": 100 * r["ci95"], "ours_low": 100 * r["low"],
            "ours_high": 100 * r["high"], "n": int(r["n"])}


def table7_comparison(paper7: pd.DataFrame, summary: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Table 7 rows (a)-(d) beside our ``ablation_assignment`` summary.

    One row per paper row (our ``final`` evaluation) plus one per extra evaluation of that variant
    (e.g. naive one-to-many + nms, which the paper does not report: ``paper_mAP`` NaN). Columns:
    row, variant, evaluation, setting, paper_mAP, ours / ours_ci / ours_low / ours_high (``metric``
    x 100: mean, 95 % CI half-width and bounds), n (seeds; 0 = not run), paper_rank, our_rank (1 =
    best, among the final rows of variants we ran).
    """
    labels = summary.drop_duplicates("variant").set_index("variant")["label"].to_dict() if len(summary) else {}
    rows = []
    for _, p in paper7.sort_values("row").iterrows():
        variant = p["variant"]
        evaluations = ["final"] + [e for e in dict.fromkeys(summary.loc[summary["variant"] == variant, "evaluation"])
                                   if e != "final"]
        for ev in evaluations:
            label = str(labels.get(variant, variant))
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


#: the qualitative claims of Table 7: (claim, variant a, variant b, expected sign of mean(b) - mean(a)).
TABLE7_CLAIMS = (
    ("naive one-to-many is far below one-to-one (far: under half of it)", "one_to_one", "naive_one_to_many", -1),
    ("group assignment with shared SA is above one-to-one", "one_to_one", "group_shared_sa", +1),
    ("shared SA is below separate SA (Group DETR)", "group_detr", "group_shared_sa", -1),
    ("Group DETR is above one-to-one", "one_to_one", "group_detr", +1),
)


def table7_claims(runs: pd.DataFrame, paper7: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Does each claim of :data:`TABLE7_CLAIMS` hold in the paper and in our runs?

    Ours holds when the Welch 95 % CI of mean(b) - mean(a) excludes 0 on the expected side (and,
    for "far below", mean(b) < mean(a) / 2); None when a variant was not run or has one seed only.
    Differences are in points (x 100); ``ratio`` = b / a.
    """
    from groupdetr.reporting.study import GatherError, effect

    paper = paper7.set_index("variant")["mAP"]
    rows = []
    for claim, a, b, sign in TABLE7_CLAIMS:
        far = "far below" in claim
        p_diff, p_ratio = paper[b] - paper[a], paper[b] / paper[a]
        row = {"claim": claim, "a": a, "b": b, "paper_diff": round(float(p_diff), 1), "paper_ratio": float(p_ratio),
               "paper_holds": bool(np.sign(p_diff) == sign and (not far or p_ratio < 0.5))}
        try:
            e = effect(runs, a, b, metric)
        except GatherError:
            row.update(ours_diff=math.nan, ours_low=math.nan, ours_high=math.nan, ours_ratio=math.nan, n_a=0, n_b=0,
                       ours_holds=None)
        else:
            ratio = e["mean_b"] / e["mean_a"] if e["mean_a"] else math.nan
            known = e["n_a"] > 1 and e["n_b"] > 1
            holds = e["significant"] and np.sign(e["diff"]) == sign and (not far or ratio < 0.5)
            row.update(ours_diff=100 * e["diff"], ours_low=100 * e["low"], ours_high=100 * e["high"], ours_ratio=ratio,
                       n_a=e["n_a"], n_b=e["n_b"], ours_holds=bool(holds) if known else None)
        rows.append(row)
    return pd.DataFrame(rows)


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
    baseline = (final["num_groups"] == 1) & (final["assignment"] == "one_to_one")
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
