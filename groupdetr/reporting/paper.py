"""The paper's reported numbers (``results/paper/reported.csv``, 276 rows, each with its source),
reshaped for the tables we regenerate. Pure functions of a DataFrame; :func:`write_paper_tables`
writes the small CSVs under ``results/paper/`` that notebooks read.

Side by side with ours (the gathered studies of :mod:`groupdetr.reporting.study`):
:func:`table7_comparison`, :func:`rank_agreement` and :func:`table7_claims` (Table 7),
:func:`main_results_comparison` (Tables 3-4), :func:`reported_value` (Fig. 4, Fig. 9 ...),
:func:`heads_comparison` (Tables 5-6 beside ``ablation_heads``) and :func:`fig8_comparison` (Fig. 8 beside
``ablation_dn``), both through :func:`effects_vs_paper`: the paper's delta beside our effect with its Welch
95 % CI and whether the signs match, every row labelled :data:`BENCHMARK`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

__all__ = ["COLUMNS", "TABLE7_VARIANTS", "TABLE7_CLAIMS", "BENCHMARK", "HEADS_ROWS", "FIG8_ARMS", "FIG8_EFFECTS",
           "load_reported", "table7", "main_results", "table5", "table6", "fig8", "write_paper_tables",
           "reported_value", "table7_comparison", "rank_agreement", "table7_claims", "main_results_comparison",
           "effects_vs_paper", "heads_comparison", "fig8_comparison"]

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


def _gains(reported: pd.DataFrame, table: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Baseline and "w/ Group DETR" rows of ``table`` side by side: one row per (detector, backbone, epochs,
    metric) in the transcription's order, with ``baseline``, ``group_detr``, ``gain`` (rounded to the
    paper's 0.1) and ``source`` (the longer of the two rows' sources: it carries any caveat)."""
    t = reported[(reported["table"] == table) & reported["metric"].isin(metrics)].copy()
    if t.empty:
        raise ValueError(f"reported numbers: no rows of table {table!r} with metric in {list(metrics)}")
    t["arm"] = np.where(t["setting"].str.contains("w/ Group DETR"), "group_detr", "baseline")
    keys = ["detector", "backbone", "epochs", "metric"]
    rows = []
    for key, g in t.groupby(keys, sort=False):
        arms = g.set_index("arm")["value"]
        if set(arms.index) != {"baseline", "group_detr"} or len(arms) != 2:
            raise ValueError(f"reported numbers: {table} {dict(zip(keys, key))}: expected one baseline and one "
                             f"w/ Group DETR row, found {list(arms.index)}")
        rows.append({"table": table, **dict(zip(keys, key)), "baseline": float(arms["baseline"]),
                     "group_detr": float(arms["group_detr"]),
                     "gain": round(float(arms["group_detr"] - arms["baseline"]), 1),
                     "source": max(g["source"].astype(str), key=len)})
    return pd.DataFrame(rows)


def table5(reported: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 5 (multi-view 3D detection, nuScenes val, VoVNetV2, 24 ep): PETR and PETR v2, NDS and mAP,
    baseline vs w/ Group DETR. Columns: table, detector, backbone, epochs, metric, baseline, group_detr,
    gain, source."""
    return _gains(reported, "Table5", ("NDS", "mAP"))


def table6(reported: pd.DataFrame, metrics: tuple[str, ...] = ("mask mAP",)) -> pd.DataFrame:
    """Paper Table 6 (Mask2Former R50 instance segmentation, COCO val2017): mask mAP at 12 and 50 epochs,
    baseline vs w/ Group DETR (``metrics`` may add ``mask APs``/``APm``/``APl``, whose column order the
    transcription notes as assumed). Columns as :func:`table5`."""
    return _gains(reported, "Table6", metrics)


#: Fig. 8 (DAB-DETR R50, 12 ep, COCO): our ``ablation_dn`` variants -> (detector, arm) of paper Table 3, whose
#: DN-DETR is DAB-DETR with denoising queries. Fig. 8 itself is a plot; only its "+1.5" is in the text (row Fig8).
FIG8_ARMS = {"dab": ("DAB-DETR", "baseline"), "dab_dn": ("DN-DETR", "baseline"),
             "dab_group": ("DAB-DETR", "group_detr"), "dab_dn_group": ("DN-DETR", "group_detr")}
#: the effects of Fig. 8: (effect, variant a, variant b), each mean(b) - mean(a).
FIG8_EFFECTS = (
    ("DN over DAB-DETR", "dab", "dab_dn"),
    ("Group DETR over DAB-DETR", "dab", "dab_group"),
    ("DN on top of Group DETR (Fig. 8)", "dab_group", "dab_dn_group"),
    ("Group DETR on top of DN", "dab_dn", "dab_dn_group"),
    ("DN and Group DETR over DAB-DETR", "dab", "dab_dn_group"),
)


def fig8(reported: pd.DataFrame) -> pd.DataFrame:
    """The effects of Fig. 8 (:data:`FIG8_EFFECTS`) in the paper's numbers: per effect a, b, paper_a and
    paper_b (Table 3 mAP of the arms, :data:`FIG8_ARMS`), paper_delta (paper_b - paper_a, 0.1 points),
    stated (the "+1.5" of the text on Fig. 8 for DN on top of Group DETR, NaN elsewhere) and source."""
    t3 = _gains(reported, "Table3", ("mAP",))
    t3 = t3[(t3["backbone"] == "ResNet-50") & (t3["epochs"] == 12)].set_index("detector")
    mAP = {v: float(t3.at[det, arm]) for v, (det, arm) in FIG8_ARMS.items()}
    stated = reported_value(reported, "Fig8", "mAP_gain_over_GroupDETR")
    rows = []
    for name, a, b in FIG8_EFFECTS:
        is_fig8 = (a, b) == ("dab_group", "dab_dn_group")
        rows.append({"effect": name, "a": a, "b": b, "paper_a": mAP[a], "paper_b": mAP[b],
                     "paper_delta": round(mAP[b] - mAP[a], 1), "stated": stated if is_fig8 else math.nan,
                     "source": "Table 3 (R50, 12 ep, COCO val2017 mAP)" + ("; text on Fig. 8 (Sec. 3.2)" if is_fig8
                                                                           else "")})
    return pd.DataFrame(rows)


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


# ---------------------------------------------------------------------------------------------
# other heads (Tables 5-6) and DN on top of groups (Fig. 8): the paper's delta beside our effect

#: what every reproduced number of these comparisons is measured on.
BENCHMARK = "embedded benchmark, not nuScenes/COCO"

#: paper rows -> our ``ablation_heads`` comparison: (table, paper metric) -> (variant a, variant b, our metric).
#: Table 3's C-DETR row is the 2D control (the same detector core with the box head).
HEADS_ROWS = {
    ("Table3", "mAP"): ("det2d_K1", "det2d_K11", "bbox/AP"),
    ("Table5", "NDS"): ("det3d_K1", "det3d_K11", "3d/NDS"),
    ("Table5", "mAP"): ("det3d_K1", "det3d_K11", "3d/mAP"),
    ("Table6", "mask mAP"): ("seg_K1", "seg_K11", "segm/AP"),
}


def effects_vs_paper(rows: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """Our effect beside each paper delta. ``rows`` has columns ``a``, ``b``, ``metric`` (ours) and
    ``paper_delta`` (points); ``runs`` is a gathered long table (:func:`groupdetr.reporting.study.collect`),
    or None when the study is not gathered.

    Adds ``ours_delta``, ``ours_low``, ``ours_high`` (mean(b) - mean(a) of the final ``metric`` and its
    Welch 95 % CI, points), ``n_a``, ``n_b`` (seeds; 0 = not gathered), ``p_value``, ``significant``,
    ``sign_match`` (sign of ours = sign of the paper's; None without ours), ``confirms_paper``
    (significant on the paper's side; None with fewer than two seeds on a side) and ``benchmark``
    (:data:`BENCHMARK`).
    """
    from groupdetr.reporting.study import effect

    present = set() if runs is None else set(runs["variant"])
    out = []
    for r in rows.to_dict("records"):
        res = {"ours_delta": math.nan, "ours_low": math.nan, "ours_high": math.nan, "n_a": 0, "n_b": 0,
               "p_value": math.nan, "significant": False, "sign_match": None, "confirms_paper": None}
        if {r["a"], r["b"]} <= present:
            e = effect(runs, r["a"], r["b"], r["metric"])
            res.update(ours_delta=100 * e["diff"], ours_low=100 * e["low"], ours_high=100 * e["high"], n_a=e["n_a"],
                       n_b=e["n_b"], p_value=e["p_value"], significant=e["significant"])
            if np.isfinite(e["diff"]):
                match = bool(np.sign(e["diff"]) == np.sign(r["paper_delta"]))
                res["sign_match"] = match
                if e["n_a"] > 1 and e["n_b"] > 1:
                    res["confirms_paper"] = bool(e["significant"] and match)
        out.append({**r, **res, "benchmark": BENCHMARK})
    return pd.DataFrame(out)


def heads_comparison(reported: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """Paper Tables 5 (PETR, PETR v2: NDS, mAP), 6 (Mask2Former mask mAP, 12 and 50 ep) and the 2D control
    (Table 3, C-DETR R50 12 ep mAP) beside our ``ablation_heads`` effect K=11 - K=1 of the same head
    (:data:`HEADS_ROWS`). One row per paper row: table, paper_model, paper_metric, paper_baseline,
    paper_group_detr, paper_delta, then a, b, metric and the columns of :func:`effects_vs_paper`."""
    t3 = _gains(reported, "Table3", ("mAP",))
    t3 = t3[(t3["detector"] == "C-DETR") & (t3["backbone"] == "ResNet-50") & (t3["epochs"] == 12)]
    paper_rows = pd.concat([t3, table5(reported), table6(reported)], ignore_index=True)
    rows = []
    for r in paper_rows.itertuples(index=False):
        a, b, metric = HEADS_ROWS[(r.table, r.metric)]
        rows.append({"table": r.table, "paper_model": f"{r.detector} ({r.backbone}, {int(r.epochs)} ep)",
                     "paper_metric": r.metric, "paper_baseline": r.baseline, "paper_group_detr": r.group_detr,
                     "paper_delta": r.gain, "a": a, "b": b, "metric": metric})
    return effects_vs_paper(pd.DataFrame(rows), runs)


def fig8_comparison(reported: pd.DataFrame, runs: pd.DataFrame | None, metric: str = "bbox/AP") -> pd.DataFrame:
    """The effects of Fig. 8 (:func:`fig8`) beside ours on ``ablation_dn`` (final ``metric``): one row per
    effect with effect, a, b, paper_a, paper_b, paper_delta, stated, then the columns of
    :func:`effects_vs_paper`."""
    rows = fig8(reported).drop(columns="source").assign(metric=metric)
    return effects_vs_paper(rows, runs)
