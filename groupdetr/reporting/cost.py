"""Training cost of gathered runs, from their logs (paper Fig. 7 and Table 2): training seconds per iteration,
training time, peak memory.

Every number comes from the per-epoch rows of :func:`groupdetr.reporting.runs.collect` (``log.jsonl``):
``seconds`` (training time of the epoch, evaluation excluded), ``iterations`` (optimisation steps) and
``peak_memory_mib`` (on a GPU, ``torch.cuda.max_memory_allocated`` since the epoch began, training and evaluation;
on a CPU the process's peak resident set so far, which also holds the data and the evaluation). Pure functions of
the long table; nothing is measured here.
"""
from __future__ import annotations

import math

import pandas as pd

from groupdetr.errors import GatherError
from groupdetr.reporting.stats import mean_ci

__all__ = ["COST_METRICS", "run_costs", "cost_vs_k", "training_time_table"]

#: the per-epoch log fields the cost is read from
COST_METRICS = ("seconds", "iterations", "peak_memory_mib")


def run_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run (variant, seed) of a long table: variant, label, paper_row, seed, num_groups, epochs (as
    logged), iterations and train_seconds (sums over epochs), train_hours, sec_per_iter, peak_memory_mib (the
    largest over epochs). Variants keep their order in the table. GatherError when no run logged its seconds."""
    ep = runs[(runs["evaluation"] == "epoch") & runs["metric"].isin(COST_METRICS)]
    if ep.empty:
        raise GatherError("no per-epoch training seconds in the gathered runs (log.jsonl: seconds, iterations)")
    keys = ["variant", "seed"]
    wide = ep.pivot_table(index=[*keys, "epoch"], columns="metric", values="value", aggfunc="first").reset_index()
    per_run = wide.groupby(keys, sort=False).agg(epochs=("epoch", "count"), iterations=("iterations", "sum"),
                                                  train_seconds=("seconds", "sum"),
                                                  peak_memory_mib=("peak_memory_mib", "max")).reset_index()
    info = runs.drop_duplicates(keys)[[*keys, "label", "paper_row", "num_groups"]]
    out = info.merge(per_run, on=keys)
    out["train_hours"] = out["train_seconds"] / 3600
    out["sec_per_iter"] = out["train_seconds"] / out["iterations"]
    return out[["variant", "label", "paper_row", "seed", "num_groups", "epochs", "iterations", "train_seconds",
                "train_hours", "sec_per_iter", "peak_memory_mib"]].reset_index(drop=True)


def _with_ci(frame: pd.DataFrame, by: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Per ``by`` (in order of appearance): n and, per column, the mean and the 95 % CI half-width over seeds."""
    rows = []
    for key, g in frame.groupby(by, sort=False):
        row = {by: key, "n": len(g)}
        for c in columns:
            s = mean_ci(g[c])
            row[c], row[f"{c}_ci95"] = s["mean"], s["ci95"]
        rows.append(row)
    return pd.DataFrame(rows)


def cost_vs_k(runs: pd.DataFrame) -> pd.DataFrame:
    """Paper Fig. 7 from a K study (``ablation_K``): per K, over seeds, the training seconds per iteration and the
    peak memory (mean and 95 % CI half-width), and both relative to K = 1: ``time_vs_K1`` (ratio of the means)
    and ``extra_memory_mib`` (difference of the means; NaN without a K = 1 run). Columns: K, n, sec_per_iter,
    sec_per_iter_ci95, peak_memory_mib, peak_memory_mib_ci95, time_vs_K1, extra_memory_mib."""
    out = _with_ci(run_costs(runs).sort_values("num_groups"), "num_groups", ("sec_per_iter", "peak_memory_mib"))
    out = out.rename(columns={"num_groups": "K"}).astype({"K": int})
    one = out[out["K"] == 1]
    base_time = float(one["sec_per_iter"].iloc[0]) if len(one) else math.nan
    base_mem = float(one["peak_memory_mib"].iloc[0]) if len(one) else math.nan
    out["time_vs_K1"] = out["sec_per_iter"] / base_time
    out["extra_memory_mib"] = out["peak_memory_mib"] - base_mem
    return out.reset_index(drop=True)


def training_time_table(runs: pd.DataFrame, metric: str = "bbox/AP") -> pd.DataFrame:
    """Paper Table 2 from a training-time study: per variant (study order), over seeds, the epochs trained, the
    training time in hours and seconds per iteration (mean, 95 % CI half-width), the time relative to the first
    variant (``time_vs_first``: the baseline at 1x in ``ablation_training_time``) and the final ``metric``
    (in its unit, AP in points: mean, ci95). Columns: variant, label, paper_row, n, epochs, train_hours, train_hours_ci95,
    sec_per_iter, sec_per_iter_ci95, time_vs_first, <metric>, <metric>_ci95."""
    costs = run_costs(runs)
    final = runs[(runs["evaluation"] == "final") & (runs["metric"] == metric)][["variant", "seed", "value"]]
    costs = costs.merge(final.rename(columns={"value": metric}), on=["variant", "seed"], how="left")
    out = _with_ci(costs, "variant", ("train_hours", "sec_per_iter", metric))
    info = costs.groupby("variant", sort=False).agg(label=("label", "first"), paper_row=("paper_row", "first"),
                                                    epochs=("epochs", lambda e: int(e.max()))).reset_index()
    out = info.merge(out, on="variant")
    out["time_vs_first"] = out["train_hours"] / out["train_hours"].iloc[0]
    cols = ["variant", "label", "paper_row", "n", "epochs", "train_hours", "train_hours_ci95", "sec_per_iter",
            "sec_per_iter_ci95", "time_vs_first", metric, f"{metric}_ci95"]
    return out[cols]
