"""Gather one study's finished runs into the tables and figures a paper needs.

Reads only the run-directory contract (``docs/run-directory.md``) of
``{runs}/{study}/{variant}/seed{seed}``: ``config.yaml``, ``manifest.json``, ``log.jsonl``,
``metrics.json`` and ``eval/{name}.json``. Everything after :func:`collect` is a pure function of
its long table, so notebooks can rebuild any table or figure from ``runs.csv`` alone.

- :func:`collect`: one row per (variant, seed, evaluation, epoch, metric) with provenance columns.
- :func:`summarize`: mean and Student-t 95 % CI over seeds; :func:`effect`: Welch 95 % CI of a
  difference; :func:`effects_table`, :func:`comparisons_table` (a study's declared comparisons beside the
  paper's deltas), :func:`flattening_point`, :func:`per_group_summary`.
- :func:`results_table`, :func:`to_markdown`, :func:`to_latex`: the paper-style table (AP x 100).
- ``plot_*``: matplotlib figures (object API, no pyplot state; PNG via Agg).
- :func:`gather`: all of the above written atomically into one folder; :func:`read_gathered`,
  :func:`read_comparisons`.

This module imports neither torch nor the model: notebooks that read gathered results stay light.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats as st

from groupdetr.reporting import GatherError
from groupdetr.rundir import CONFIG, LOG, MANIFEST, METRICS, eval_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from groupdetr.studies import Comparison, Study

__all__ = [
    "GatherError",
    "PROVENANCE",
    "COLUMNS",
    "COMPARISON_COLUMNS",
    "TABLE_METRICS",
    "NOT_COCO",
    "NOT_PAPER_DATA",
    "collect",
    "mean_ci",
    "summarize",
    "effect",
    "effects_table",
    "comparisons_table",
    "flattening_point",
    "per_group_summary",
    "per_epoch_table",
    "as_points",
    "results_table",
    "to_markdown",
    "to_latex",
    "plot_ap_vs_k",
    "plot_ap_vs_epoch",
    "plot_per_group",
    "plot_instability",
    "plot_variants",
    "plot_comparisons",
    "gather",
    "read_gathered",
    "read_comparisons",
    "find_gathered",
    "read_all_gathered",
]


#: provenance columns on every row of :func:`collect`, in order.
PROVENANCE = ("study", "variant", "label", "paper_row", "seed", "run_dir", "config_hash", "git_commit", "git_dirty",
              "recipe", "dataset", "detector", "backbone", "num_groups", "num_queries", "assignment",
              "self_attention", "task", "decoder", "denoising", "eval_group", "nms_iou", "epochs", "device",
              "world_size", "groupdetr_version")
#: every column of :func:`collect`.
COLUMNS = PROVENANCE + ("evaluation", "epoch", "metric", "value")
#: metrics of the paper-style table (paper Tables 3, 7: AP, AP50, AP75, APs, APm, APl).
TABLE_METRICS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl")
#: columns of :func:`comparisons_table` (``comparisons.csv``), in order.
COMPARISON_COLUMNS = ("comparison", "label", "a", "b", "metric", "n_a", "n_b", "mean_a", "mean_b", "diff", "low",
                      "high", "dof", "p_value", "significant", "mde80", "sign", "paper_table", "paper_delta", "paper_note",
                      "sign_match", "confirms_paper")
#: the warning every result on the embedded benchmark carries.
NOT_COCO = ("AP on the embedded benchmark is not COCO AP: compare effects between variants, "
            "not absolute values (and not with the paper's numbers).")
#: the same warning for studies of other heads or with the paper's deltas beside ours (Tables 5-6, Fig. 8).
NOT_PAPER_DATA = ("Scores on the embedded benchmark are not COCO or nuScenes scores: compare the signs of effects "
                  "with the paper's deltas, not their sizes or absolute values.")

_GROUP_EVAL = re.compile(r"^group(\d+)$")
_BACKBONE_NAMES = {"resnet50": "ResNet-50"}
# Decoder family -> the detector's name in the paper's tables (DN-DETR = DAB-DETR + denoising queries).
_DETECTOR_NAMES = {"conditional": "C-DETR", "dab": "DAB-DETR"}


# ---------------------------------------------------------------------------------------------
# collect


def _read_mapping(path: Path, kind: str) -> dict:
    """A run file that must hold a mapping (``kind``: "JSON" or "YAML"); one GatherError line otherwise."""
    if not path.is_file():
        raise GatherError(f"{path}: missing")
    try:
        data = json.loads(path.read_text()) if kind == "JSON" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise GatherError(f"{path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise GatherError(f"{path}: expected a {'JSON object' if kind == 'JSON' else 'mapping'}")
    return data


def _read_json(path: Path) -> dict:
    return _read_mapping(path, "JSON")


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        raise GatherError(f"{path}: missing")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise GatherError(f"{path}:{i}: not valid JSON ({e})") from None
    return rows


def _get(tree: dict, dotted: str, where: Path) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise GatherError(f"{where}: no key {dotted}")
        node = node[part]
    return node


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _metric_value(key: str, value: float) -> float:
    # COCO reports -1 for a stat without any ground truth (e.g. APs when nothing is small): not a score.
    return math.nan if "/" in key and value < 0 else float(value)


def _stats(record: dict) -> dict[str, float]:
    """The evaluation stats of a metrics/eval record (keys like ``bbox/AP``)."""
    return {k: _metric_value(k, v) for k, v in record.items() if "/" in k and _is_number(v)}


def _override_value(overrides: Iterable[str], key: str) -> tuple[bool, Any]:
    found, value = False, None
    for item in overrides:
        k, sep, v = str(item).partition("=")
        if sep and k.strip() == key:
            found, value = True, yaml.safe_load(v)
    return found, value


def _check_overrides(cfg: dict, overrides: Sequence[str], path: Path) -> None:
    """A run directory must hold the variant it is filed under: each override's value is in its config
    (``model.backbone.weights: pretrain`` matches the pretrained file's path the workflow passes instead)."""
    from groupdetr.config import PRETRAIN_WEIGHTS

    for item in overrides:
        key, _, text = item.partition("=")
        want = yaml.safe_load(text)
        have = _get(cfg, key, path)
        if isinstance(want, (list, tuple)):
            want = list(want)
        if key.strip() == "model.backbone.weights" and want == PRETRAIN_WEIGHTS and isinstance(have, str):
            continue  # the workflow hands every such run the pretrained file itself (its path)
        if have != want and not (_is_number(have) and _is_number(want) and math.isclose(have, want)):
            raise GatherError(f"{path}: {key} is {have!r} but the variant sets {want!r}; "
                              f"this run directory holds another variant")


def _detector(model: dict) -> str:
    """The detector as the paper's tables name it (C-DETR, DAB-DETR, DN-DETR; -DC5 = dilated last stage).
    Configs written before the decoder and denoising switches existed are Conditional DETR without DN."""
    decoder = model.get("decoder", "conditional")
    name = _DETECTOR_NAMES.get(decoder, decoder)
    if decoder == "dab" and (model.get("denoising") or {}).get("enabled"):
        name = "DN-DETR"
    return name + ("-DC5" if (model.get("backbone") or {}).get("dilation") else "")


def _denoising(model: dict) -> str:
    """``none``, or the denoising queries' sharing (``per_group``, ``shared``)."""
    dn = model.get("denoising") or {}
    return str(dn.get("sharing", "per_group")) if dn.get("enabled") else "none"


def _provenance(study: Study, variant, seed: int, run: Path, cfg: dict, manifest: dict) -> dict:
    cfg_path = run / CONFIG
    backbone = _get(cfg, "model.backbone.name", cfg_path)
    model = cfg.get("model") or {}
    return {
        "study": study.name, "variant": variant.name, "label": variant.label, "paper_row": variant.paper_row,
        "seed": seed, "run_dir": str(run), "config_hash": manifest.get("config_hash"),
        "git_commit": manifest.get("git_commit"), "git_dirty": manifest.get("git_dirty"),
        "recipe": _get(cfg, "name", cfg_path), "dataset": _get(cfg, "data.dataset", cfg_path),
        "detector": _detector(model),
        "backbone": _BACKBONE_NAMES.get(backbone, backbone),
        "num_groups": _get(cfg, "model.num_groups", cfg_path), "num_queries": _get(cfg, "model.num_queries", cfg_path),
        "assignment": _get(cfg, "matcher.assignment", cfg_path),
        "self_attention": _get(cfg, "model.self_attention", cfg_path),
        "task": model.get("task", "detection"), "decoder": model.get("decoder", "conditional"),
        "denoising": _denoising(model),
        "eval_group": _get(cfg, "model.eval_group", cfg_path), "nms_iou": _get(cfg, "postprocess.nms_iou", cfg_path),
        "epochs": _get(cfg, "optim.epochs", cfg_path), "device": manifest.get("device"),
        "world_size": manifest.get("world_size"),
        "groupdetr_version": (manifest.get("versions") or {}).get("groupdetr"),
    }


def _run_rows(study: Study, variant, seed: int, runs_root: Path) -> list[dict]:
    run = study.run_path(runs_root, variant.name, seed)
    metrics_path = run / METRICS
    if not metrics_path.is_file():
        what = "run not finished" if run.is_dir() else "run missing"
        raise GatherError(f"{metrics_path}: missing ({what}: study {study.name}, variant {variant.name}, seed {seed})")
    metrics = _read_json(metrics_path)
    manifest = _read_json(run / MANIFEST)
    cfg_path = run / CONFIG
    cfg = _read_mapping(cfg_path, "YAML")
    if metrics.get("config_hash") != manifest.get("config_hash"):
        raise GatherError(f"{metrics_path}: config_hash {metrics.get('config_hash')} differs from the manifest's "
                          f"{manifest.get('config_hash')}; the run directory mixes two runs")
    _check_overrides(cfg, variant.overrides, cfg_path)
    base = _provenance(study, variant, seed, run, cfg, manifest)
    final_epoch = int(_get(metrics, "epoch", metrics_path))
    stats = _stats(metrics)
    if not stats:
        raise GatherError(f"{metrics_path}: no evaluation stats (keys like bbox/AP)")
    rows = [{**base, "evaluation": "final", "epoch": final_epoch, "metric": k, "value": v} for k, v in stats.items()]
    for record in _read_log(run / LOG):
        epoch = int(_get(record, "epoch", run / LOG))
        for k, v in record.items():
            if k != "epoch" and _is_number(v):  # nulls (matching_instability of epoch 1) are left out
                rows.append({**base, "evaluation": "epoch", "epoch": epoch, "metric": k, "value": _metric_value(k, v)})
    for ev in study.evaluations_for(variant.name, int(base["num_groups"])):
        path = eval_file(run, ev.name)
        if not path.is_file():
            raise GatherError(f"{path}: missing (evaluation {ev.name} of study {study.name}, variant {variant.name}, "
                              f"seed {seed})")
        record = _read_json(path)
        epoch = int(_get(record, "epoch", path))
        if epoch != final_epoch:
            raise GatherError(f"{path}: evaluates the checkpoint of epoch {epoch} but the run finished at epoch "
                              f"{final_epoch}; evaluate it again")
        info = dict(base)
        if "eval_group" in record:
            info["eval_group"] = record["eval_group"]
        found, nms = _override_value(record.get("overrides") or ev.overrides, "postprocess.nms_iou")
        if found:
            info["nms_iou"] = nms
        ev_stats = _stats(record)
        if not ev_stats:
            raise GatherError(f"{path}: no evaluation stats (keys like bbox/AP)")
        rows += [{**info, "evaluation": ev.name, "epoch": epoch, "metric": k, "value": v} for k, v in ev_stats.items()]
    return rows


def _select_variants(study: Study, variants: Sequence[str] | None) -> list:
    if variants is None:
        return list(study.variants.values())
    unknown = [v for v in variants if v not in study.variants]
    if unknown:
        raise GatherError(f"study {study.name}: unknown variant(s) {', '.join(unknown)} "
                          f"(known: {', '.join(study.variants)})")
    return [study.variants[v] for v in variants]


def collect(study: Study, runs_root: str | Path, seeds: Sequence[int] | None = None,
            variants: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table of every finished run of ``study`` under ``runs_root``.

    One row per (variant, seed, evaluation, epoch, metric) with the columns :data:`COLUMNS`:

    - ``evaluation == "final"``: ``metrics.json`` (``epoch`` = the last epoch);
    - ``evaluation == "epoch"``: every numeric field of every ``log.jsonl`` row (``loss``, ``seconds``,
      ``matching_instability``, ``bbox/AP`` ...; nulls, i.e. the instability of epoch 1, are left out);
    - ``evaluation == <name>``: ``eval/<name>.json`` of each extra evaluation of the study
      (``group3``, ``nms``), whose ``eval_group`` and ``nms_iou`` columns hold the evaluated values.

    COCO's -1 (a stat without ground truth) becomes NaN. Provenance (config hash, git commit, recipe,
    dataset, K, N, assignment, self-attention, device, version ...) comes from ``config.yaml`` and
    ``manifest.json``. ``seeds`` defaults to the study's seeds, ``variants`` to all, in study order.

    Raises:
        GatherError: one line naming the path of a missing run (no ``metrics.json``), a missing
            evaluation file, or a run directory holding another variant or a stale evaluation.
    """
    runs_root = Path(runs_root)
    seeds = list(study.seeds if seeds is None else seeds)
    if not seeds:
        raise GatherError(f"study {study.name}: no seeds to gather")
    rows: list[dict] = []
    for variant in _select_variants(study, variants):
        for seed in seeds:
            rows += _run_rows(study, variant, int(seed), runs_root)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"seed": int, "epoch": int, "value": float})


# ---------------------------------------------------------------------------------------------
# statistics


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
      so :func:`as_points` turns both into points), ``paper_table``, ``paper_note``;
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


# ---------------------------------------------------------------------------------------------
# tables


def _short(metric: str) -> str:
    return metric.split("/", 1)[-1]


def _cell(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f}" if not np.isfinite(half) else f"{100 * mean:.1f} ± {100 * half:.1f}"


#: columns of this module's tables that hold AP-like values in [0, 1] (or differences of them).
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


# ---------------------------------------------------------------------------------------------
# figures (matplotlib object API: no pyplot global state, no GUI; savefig renders with Agg)


def _figure(width: float = 5.0, height: float = 3.4) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=120)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _curve(sel: pd.DataFrame, x: str) -> pd.DataFrame:
    """mean_ci of ``value`` per ``x`` (sorted)."""
    rows = [{x: key, **mean_ci(g["value"])} for key, g in sel.groupby(x, sort=True)]
    return pd.DataFrame(rows)


def _metric_axis(ax, metric: str, scale: float) -> None:
    ax.set_ylabel(f"{metric} x 100" if scale == 100 else metric)
    ax.grid(alpha=0.3)


def _need(sel: pd.DataFrame, what: str) -> None:
    if sel.empty:
        raise GatherError(f"no data for {what}")


def _dataset_note(runs: pd.DataFrame) -> str:
    ds = sorted(set(runs["dataset"].dropna().astype(str)))
    return ", ".join(ds) if ds else "?"


def plot_ap_vs_k(runs: pd.DataFrame, metric: str = "bbox/AP", evaluation: str = "final") -> Figure:
    """Mean ``metric`` vs the number of groups K over seeds, with the 95 % CI band and each seed as a
    dot (paper Fig. 9)."""
    sel = runs[(runs["evaluation"] == evaluation) & (runs["metric"] == metric)]
    _need(sel, f"{metric} vs K")
    fig = _figure()
    ax = fig.add_subplot()
    c = _curve(sel, "num_groups")
    ax.fill_between(c["num_groups"], 100 * c["low"], 100 * c["high"], color=_color(0), alpha=0.2, lw=0,
                    label="95 % CI")
    ax.plot(c["num_groups"], 100 * c["mean"], "o-", color=_color(0), label="mean over seeds")
    seeds = sorted(sel["seed"].unique())
    jitter = {s: (i - (len(seeds) - 1) / 2) * 0.08 for i, s in enumerate(seeds)}
    ax.scatter(sel["num_groups"] + sel["seed"].map(jitter), 100 * sel["value"], s=10, color="k", alpha=0.5,
               zorder=3, label="one seed")
    ax.set_xticks(sorted(sel["num_groups"].unique()))
    ax.set_xlabel("number of groups K")
    _metric_axis(ax, metric, 100)
    ax.set_title(f"{_short(metric)} vs K ({_dataset_note(sel)}; paper Fig. 9)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _per_epoch(runs: pd.DataFrame, variants: Sequence[str] | None, metric: str, ylabel: str, title: str,
               scale: float) -> Figure:
    sel = runs[(runs["evaluation"] == "epoch") & (runs["metric"] == metric)]
    variants = list(variants) if variants is not None else list(dict.fromkeys(runs["variant"]))
    labels = _labels(runs)
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for i, v in enumerate(variants):
        sv = sel[sel["variant"] == v]
        if sv.empty:
            continue
        c = _curve(sv, "epoch")
        ax.fill_between(c["epoch"], scale * c["low"], scale * c["high"], color=_color(i), alpha=0.2, lw=0)
        ax.plot(c["epoch"], scale * c["mean"], "o-", ms=3, color=_color(i),
                label=f"{labels.get(v, v)} (n={int(c['n'].max())})")
        drawn += 1
    _need(sel[sel["variant"].isin(variants)], f"{metric} per epoch of {', '.join(variants)}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if drawn:
        ax.legend(fontsize=8)
    return fig


def plot_ap_vs_epoch(runs: pd.DataFrame, variants: Sequence[str] | None = None, metric: str = "bbox/AP") -> Figure:
    """``metric`` per epoch (``log.jsonl``), mean with the 95 % CI band over seeds, one curve per variant
    (convergence)."""
    return _per_epoch(runs, variants, metric, f"{metric} x 100", f"Convergence ({_dataset_note(runs)})", 100)


def plot_instability(runs: pd.DataFrame, variants: Sequence[str] | None = None) -> Figure:
    """Matching instability between consecutive epochs (DN-DETR's IS; paper Fig. 5), mean with the
    95 % CI band over seeds, one curve per variant."""
    return _per_epoch(runs, variants, "matching_instability", "matching instability",
                      "Matching instability between epochs (paper Fig. 5)", 1)


def plot_per_group(runs: pd.DataFrame, variant: str, metric: str = "bbox/AP") -> Figure:
    """``metric`` of each group of ``variant`` evaluated alone: mean ± 95 % CI over seeds, seeds as dots,
    the median over groups as a line (paper Fig. 4)."""
    table, spread = per_group_summary(runs, variant, metric)
    sel = runs[(runs["variant"] == variant) & (runs["metric"] == metric) & runs["evaluation"].str.match(_GROUP_EVAL)]
    fig = _figure()
    ax = fig.add_subplot()
    yerr = 100 * table["ci95"].fillna(0)
    ax.errorbar(table["group"], 100 * table["mean"], yerr=yerr, fmt="o", color=_color(0), capsize=3,
                label="mean ± 95 % CI")
    groups = sel["evaluation"].str.extract(_GROUP_EVAL, expand=False).astype(int)
    ax.scatter(groups, 100 * sel["value"], s=10, color="k", alpha=0.4, zorder=3, label="one seed")
    ax.axhline(100 * spread["median"], color=_color(1), ls="--", lw=1,
               label=f"median {100 * spread['median']:.1f} ± {100 * spread['half_range']:.1f} (half range)")
    ax.set_xticks(table["group"])
    ax.set_xlabel("group evaluated alone")
    _metric_axis(ax, metric, 100)
    ax.set_title(f"Each group of {_labels(runs).get(variant, variant)} alone (paper Fig. 4)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_variants(runs: pd.DataFrame, metric: str = "bbox/AP", evaluations: Sequence[str] | None = None) -> Figure:
    """Bar chart of the final ``metric`` of every variant and extra evaluation (per-group ones left
    out), mean with 95 % CI error bars, seeds as dots (paper Table 7)."""
    pairs = [p for p in _arms(runs) if evaluations is None or p[1] in evaluations]
    _need(pd.DataFrame(pairs), f"{metric} per variant")
    labels = _labels(runs)
    fig = _figure(max(5.0, 1.3 * len(pairs) + 1), 3.8)
    ax = fig.add_subplot()
    for i, (v, ev) in enumerate(pairs):
        vals = _values(runs, v, metric, ev)
        s = mean_ci(vals)
        ax.bar(i, 100 * s["mean"], yerr=100 * s["ci95"] if np.isfinite(s["ci95"]) else None, color=_color(i),
               alpha=0.7, capsize=4)
        ax.scatter(np.full(len(vals), i), 100 * vals, s=10, color="k", alpha=0.6, zorder=3)
    ax.set_xticks(range(len(pairs)), [_row_label(labels.get(v, v), ev) for v, ev in pairs], rotation=20, ha="right",
                  fontsize=8)
    _metric_axis(ax, metric, 100)
    ax.set_title(f"{_short(metric)} per variant, mean ± 95 % CI ({_dataset_note(runs)})", fontsize=10)
    return fig


def plot_comparisons(table: pd.DataFrame, dataset: str | None = None) -> Figure:
    """A study's comparisons (:func:`comparisons_table`): our difference b - a (x 100) with its Welch 95 % CI
    beside the paper's reported delta (diamond), one pair per comparison. The paper's numbers come from
    COCO / nuScenes, ours from ``dataset``: compare signs, not sizes."""
    _need(table, "comparisons")
    fig = _figure(max(5.0, 1.1 * len(table) + 1.5), 3.8)
    ax = fig.add_subplot()
    ours_label, paper_label = "ours: mean ± 95 % CI (Welch)", "paper (COCO / nuScenes)"
    for i, r in enumerate(table.itertuples(index=False)):
        if np.isfinite(r.diff):
            err = [[100 * (r.diff - r.low)], [100 * (r.high - r.diff)]] if np.isfinite(r.low) else None
            ax.errorbar(i - 0.12, 100 * r.diff, yerr=err, fmt="o", color=_color(0), capsize=4, label=ours_label)
            ours_label = None
        if np.isfinite(r.paper_delta):
            ax.scatter(i + 0.12, 100 * r.paper_delta, marker="D", color=_color(1), zorder=3, label=paper_label)
            paper_label = None
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(table)), [f"{r.label}\n({r.metric})" for r in table.itertuples(index=False)],
                  rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("difference b - a, x 100")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"Effects: ours ({dataset or 'gathered runs'}) beside the paper's reported deltas", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _draw(kind: str, spec: dict, runs: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> Figure | str:
    """The figure ``kind`` of a study's ``figures`` entry, or a reason why it cannot be drawn."""
    present = set(runs["variant"])
    metric = spec.get("metric", "bbox/AP")
    if kind == "ap_vs_k":
        return plot_ap_vs_k(runs, metric)
    if kind == "variants":
        return plot_variants(runs, metric)
    if kind == "comparisons":
        if comparisons is None or not np.isfinite(comparisons["diff"].to_numpy(dtype=float)).any():
            return "no comparison has both of its variants gathered"
        return plot_comparisons(comparisons, _dataset_note(runs))
    if kind == "per_group_ap":
        variant = spec.get("variant") or next(iter(dict.fromkeys(runs["variant"])))
        if variant not in present:
            return f"variant {variant} not gathered"
        return plot_per_group(runs, variant, metric)
    if kind in ("ap_vs_epoch", "instability"):
        variants = [v for v in spec.get("variants", list(dict.fromkeys(runs["variant"]))) if v in present]
        if not variants:
            return f"none of {', '.join(spec['variants'])} gathered"
        if kind == "instability":
            return plot_instability(runs, variants)
        return plot_ap_vs_epoch(runs, variants, metric)
    raise GatherError(f"unknown figure kind {kind!r}")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# gather


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


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Put the finished ``tmp`` folder at ``out_dir``: a reader sees the old complete folder or the
    new complete one, never a mix. An existing ``out_dir`` (empty or a previous gather) is replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GatherError(f"{out_dir}: exists and is not a directory")
    try:
        os.rename(tmp, out_dir)  # atomic when out_dir is absent or an empty directory
        return
    except OSError:
        if not out_dir.is_dir():
            raise
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
    os.rename(out_dir, old / "previous")
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old / "previous", out_dir)  # put the previous gather back
        os.rmdir(old)
        raise
    shutil.rmtree(old, ignore_errors=True)


def gather(study: Study, runs_root: str | Path, out_dir: str | Path, seeds: Sequence[int] | None = None,
           variants: Sequence[str] | None = None, command: Sequence[str] | None = None) -> list[Path]:
    """Gather ``study`` into ``out_dir``: ``runs.csv``, ``summary.csv``, ``effects.csv``, ``comparisons.csv``
    (studies that declare ``comparisons``, :func:`comparisons_table`), ``table.md``, ``table.tex`` (columns:
    ``study.metrics``, default :data:`TABLE_METRICS`), one PNG per entry of ``study.figures``
    (``<kind>.png``) and ``README.md``.

    Everything is built in a temporary sibling folder and renamed onto ``out_dir`` at the end, so
    ``out_dir`` is either untouched (any error) or complete; it may exist (empty, or an earlier
    gather, which is replaced). ``command`` is recorded in the README. Returns the written paths.

    Raises:
        GatherError: as :func:`collect` (before anything is written).
    """
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    runs = collect(study, runs_root, seeds, variants)
    summary = summarize(runs)
    table = results_table(summary, study.metrics or TABLE_METRICS)
    effects = effects_table(runs)
    comparisons = comparisons_table(runs, study.comparisons) if study.comparisons else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        files: dict[str, bytes] = {
            "runs.csv": runs.to_csv(index=False, lineterminator="\n").encode(),
            "summary.csv": summary.to_csv(index=False, lineterminator="\n").encode(),
            "effects.csv": effects.to_csv(index=False, lineterminator="\n").encode(),
            **({"comparisons.csv": comparisons.to_csv(index=False, lineterminator="\n").encode()}
               if comparisons is not None else {}),
            "table.md": to_markdown(table).encode(),
            "table.tex": to_latex(table).encode(),
        }
        skipped: dict[str, str] = {}
        for kind, spec in study.figures.items():
            fig = _draw(kind, spec or {}, runs, comparisons)
            if isinstance(fig, str):
                skipped[kind] = fig
            else:
                files[f"{kind}.png"] = _png(fig)
        files["README.md"] = _readme(study, runs, table, effects, runs_root, list(files), skipped, command,
                                     comparisons).encode()
        from groupdetr.rundir import atomic_write_bytes  # fsynced: the swapped-in folder is durable

        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        tmp.chmod(0o755)  # mkdtemp makes it private; the gathered folder is for everyone to read
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in files]


def read_gathered(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, summary)`` of a folder written by :func:`gather` (for notebooks).

    Raises:
        GatherError: the folder holds no gathered study (one line saying how to make it).
    """
    out_dir = Path(out_dir)
    for name in ("runs.csv", "summary.csv"):
        if not (out_dir / name).is_file():
            raise GatherError(f"{out_dir / name}: missing; this study has not been gathered yet "
                              f"(run the workflow, or `groupdetr gather --study {out_dir.name} --out {out_dir}`)")
    text = {"paper_row": "string", "label": "string", "variant": "string", "evaluation": "string",
            "metric": "string"}
    runs = pd.read_csv(out_dir / "runs.csv", dtype={**text, "git_commit": "string", "run_dir": "string",
                                                   "config_hash": "string"})
    summary = pd.read_csv(out_dir / "summary.csv", dtype=text)
    return runs, summary


def read_comparisons(out_dir: str | Path) -> pd.DataFrame:
    """``comparisons.csv`` of a folder written by :func:`gather` (columns :data:`COMPARISON_COLUMNS`).

    Raises:
        GatherError: the study is not gathered, or declares no comparisons (one line).
    """
    out_dir = Path(out_dir)
    path = out_dir / "comparisons.csv"
    if not path.is_file():
        why = ("this study has not been gathered yet" if not (out_dir / "runs.csv").is_file()
               else "the study declares no comparisons (or was gathered before it did; gather it again)")
        raise GatherError(f"{path}: missing; {why}")
    text = {c: "string" for c in ("comparison", "label", "a", "b", "metric", "paper_table", "paper_note")}
    return pd.read_csv(path, dtype={**text, "significant": "boolean", "sign": "Int64", "sign_match": "boolean",
                                    "confirms_paper": "boolean"})


def find_gathered(results_root: str | Path) -> dict[str, Path]:
    """``{study: folder}`` of every gathered study directly under ``results_root`` (folders with a
    ``runs.csv``), sorted by name."""
    root = Path(results_root)
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "runs.csv").is_file() and (p / "summary.csv").is_file()}


def read_all_gathered(results_root: str | Path) -> pd.DataFrame:
    """The long tables of every gathered study under ``results_root``, concatenated (an empty table
    with :data:`COLUMNS` when none is gathered)."""
    frames = [read_gathered(p)[0] for p in find_gathered(results_root).values()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
