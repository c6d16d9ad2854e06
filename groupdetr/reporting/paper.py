"""The paper's reported numbers (``results/paper/reported.csv``, 276 rows, each with its source), reshaped
into the shapes of its tables: pure functions of a DataFrame, nothing of ours. :func:`write_paper_tables`
writes the small CSVs under ``results/paper/`` that notebooks read.

Our effects beside the paper's deltas are not here: each study's ``comparisons:`` in
``workflows/config/studies.yaml`` states its paper delta (the one source; a test checks it against this
transcription) and ``groupdetr gather`` writes it beside our effect into ``comparisons.csv``. The joins of
our gathered runs with these tables (Table 7 by the study's ``paper_row``, Tables 3-4 by detector, backbone
and epochs) are in :mod:`groupdetr.reporting.versus`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "load_reported", "table7", "table1", "table2", "training_cost", "main_results", "gains", "table5",
           "table6", "write_paper_tables", "reported_value"]

COLUMNS = ("table", "setting", "detector", "backbone", "epochs", "K", "assignment", "self_attention", "dn", "task",
           "metric", "value", "source")

_AP = ["mAP", "APs", "APm", "APl"]


def load_reported(path: str | Path) -> pd.DataFrame:
    """Read the transcription; fails with one line if a column is missing."""
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df


def table7(reported: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 7 (C-DETR R50, 12 ep): one row per row (a)-(d) with mAP, APs, APm, APl, K, assignment,
    self_attention, source. A study names the paper row each of its variants stands for (``paper_row``)."""
    t = reported[reported["table"] == "Table7"].copy()
    t["row"] = t["setting"].str.extract(r"\(([a-d])\)", expand=False)
    wide = t.pivot_table(index="row", columns="metric", values="value", aggfunc="first")[_AP]
    info = t.groupby("row").first()[["K", "assignment", "self_attention", "source"]]
    out = wide.join(info).reset_index()
    return out.sort_values("row").reset_index(drop=True)


def table1(reported: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1 (C-DETR R50, encoder from a C-DETR trained 50 ep): rows (a) encoder fixed, decoder retrained
    with one group; (b) encoder fixed, decoder retrained with groups; (c) encoder and decoder retrained with groups.
    One row per row with mAP, APs, APm, APl, K, setting, source (a study says which variant stands for which row
    with ``paper_row``)."""
    t = reported[reported["table"] == "Table1"].copy()
    if t.empty:
        raise ValueError("reported numbers: no rows of table 'Table1'")
    t["K"] = pd.to_numeric(t["K"]).astype(int)
    t["row"] = t["setting"].str.extract(r"\(([a-c])\)", expand=False)
    t["setting"] = t["setting"].str.extract(r"\([a-c]\)\s*(.*)$", expand=False)
    wide = t.pivot_table(index="row", columns="metric", values="value", aggfunc="first")[_AP]
    info = t.groupby("row").first()[["K", "setting", "source"]]
    return wide.join(info).reset_index().sort_values("row").reset_index(drop=True)


#: the arms of Table 2, as its settings name them (and a study's ``paper_row`` says)
TABLE2_ARMS = ("baseline", "baseline longer", "w/ Group")


def table2(reported: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 2 (8x A100, R50, COCO val2017): per detector and 1x schedule (12 or 50 ep), the baseline at 1x,
    the baseline on a longer schedule of about Group DETR's training time, and Group DETR at 1x. Columns:
    detector, schedule (the 1x epochs), arm (:data:`TABLE2_ARMS`), epochs, K, train_hours, mAP, APs, APm, APl,
    source. The longer rows' epochs (15, 60) are the caption's (the transcription notes the mapping as inferred)."""
    t = reported[reported["table"] == "Table2"].copy()
    if t.empty:
        raise ValueError("reported numbers: no rows of table 'Table2'")
    t["arm"] = np.select([t["setting"].str.contains("baseline longer"), t["setting"].str.contains("w/ Group"),
                          t["setting"].str.contains("baseline")], ["baseline longer", "w/ Group", "baseline"], "")
    keys = ["detector", "arm", "epochs"]
    wide = t.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    info = t.groupby(keys, sort=False).agg(K=("K", "first"), source=("source", lambda x: max(x.astype(str), key=len)))
    wide = wide.merge(info.reset_index(), on=keys)
    one_x = wide[wide["arm"] != "baseline longer"]
    # a longer baseline belongs to the largest 1x schedule of its detector not above its own epochs
    wide["schedule"] = [e if arm != "baseline longer" else
                        int(one_x[(one_x["detector"] == d) & (one_x["epochs"] <= e)]["epochs"].max())
                        for d, arm, e in zip(wide["detector"], wide["arm"], wide["epochs"])]
    wide["arm"] = pd.Categorical(wide["arm"], TABLE2_ARMS, ordered=True)
    order = {d: i for i, d in enumerate(dict.fromkeys(t["detector"]))}
    wide = wide.sort_values(["detector", "schedule", "arm"], key=lambda c: c.map(order) if c.name == "detector" else c)
    wide["arm"] = wide["arm"].astype(str)
    wide = wide.astype({"schedule": int, "epochs": int, "K": int})
    cols = ["detector", "schedule", "arm", "epochs", "K", "train_hours_8xA100", *_AP, "source"]
    return wide[cols].rename(columns={"train_hours_8xA100": "train_hours"}).reset_index(drop=True)


def training_cost(reported: pd.DataFrame) -> pd.DataFrame:
    """The paper's training cost against K (Sec. 3.2, Fig. 7): per detector, K = 1 and K = 11, minutes per epoch
    on 8x A100, the time relative to K = 1, and the extra training memory over K = 1 in GB (0 at K = 1 by
    definition; with memory-efficient attention). Columns: detector, K, min_per_epoch, time_vs_K1,
    extra_memory_gb."""
    t = reported[reported["table"].isin(["Sec3.2", "Sec3.2/Fig7"])].copy()
    t["K"] = pd.to_numeric(t["K"]).astype(int)  # the transcription's K column also holds words elsewhere
    if t.empty:
        raise ValueError("reported numbers: no rows of Sec. 3.2 (training time and memory)")
    rows = []
    for detector, g in t.groupby("detector", sort=False):
        minutes = g[g["metric"] == "train_min_per_epoch"].set_index("K")["value"]
        extra = g[g["metric"] == "extra_train_memory_GB"].set_index("K")["value"]
        for k in sorted(set(minutes.index) | set(extra.index) | {1}):
            rows.append({"detector": detector, "K": int(k), "min_per_epoch": float(minutes.get(k, np.nan)),
                         "time_vs_K1": float(minutes.get(k, np.nan) / minutes.get(1, np.nan)),
                         "extra_memory_gb": 0.0 if k == 1 else float(extra.get(k, np.nan))})
    return pd.DataFrame(rows)


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


def gains(reported: pd.DataFrame, table: str, metrics: tuple[str, ...]) -> pd.DataFrame:
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
    return gains(reported, "Table5", ("NDS", "mAP"))


def table6(reported: pd.DataFrame, metrics: tuple[str, ...] = ("mask mAP",)) -> pd.DataFrame:
    """Paper Table 6 (Mask2Former R50 instance segmentation, COCO val2017): mask mAP at 12 and 50 epochs,
    baseline vs w/ Group DETR (``metrics`` may add ``mask APs``/``APm``/``APl``, whose column order the
    transcription notes as assumed). Columns as :func:`table5`."""
    return gains(reported, "Table6", metrics)


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


def reported_value(reported: pd.DataFrame, table: str, metric: str) -> float:
    """The one reported number of ``table`` (e.g. ``Fig4``) and ``metric`` (``mAP_median_over_groups``).

    Raises:
        ValueError: none or several rows match.
    """
    rows = reported[(reported["table"] == table) & (reported["metric"] == metric)]
    if len(rows) != 1:
        raise ValueError(f"reported numbers: {len(rows)} rows for table {table!r}, metric {metric!r} (expected 1)")
    return float(rows["value"].iloc[0])
