"""One study's run directories -> the long table every other reporting module reads.

Reads only the run-directory contract (``docs/run-directory.md``) of
``{runs}/{study}/{variant}/seed{seed}``: ``config.yaml``, ``manifest.json``, ``log.jsonl``,
``metrics.json`` and ``eval/{name}.json``. :func:`collect` returns one row per (variant, seed,
evaluation, epoch, metric) with the columns :data:`COLUMNS` (the provenance :data:`PROVENANCE`, then
``evaluation``, ``epoch``, ``metric``, ``unit``, ``value``): the run directories' values converted once into
the reports' units (:func:`groupdetr.reporting.units.metric_unit`: AP in points, x 100). Every reader raises
one :class:`GatherError` line naming the offending path.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from groupdetr.errors import GatherError
from groupdetr.reporting.units import in_units
from groupdetr.rundir import CONFIG, LOG, MANIFEST, METRICS, eval_file

if TYPE_CHECKING:
    from groupdetr.studies import Study

__all__ = ["PROVENANCE", "COLUMNS", "collect"]

#: provenance columns on every row of :func:`collect`, in order.
PROVENANCE = ("study", "variant", "label", "paper_row", "seed", "run_dir", "config_hash", "git_commit", "git_dirty",
              "recipe", "dataset", "detector", "backbone", "num_groups", "num_queries", "assignment",
              "self_attention", "task", "decoder", "denoising", "init_from", "frozen", "eval_group", "nms_iou", "epochs",
              "device", "world_size", "groupdetr_version")
#: every column of :func:`collect`.
COLUMNS = PROVENANCE + ("evaluation", "epoch", "metric", "unit", "value")

#: ``evaluation`` of a run's group ``g`` evaluated alone (``eval/group<g>.json``).
_GROUP_EVAL = re.compile(r"^group(\d+)$")
_BACKBONE_NAMES = {"resnet50": "ResNet-50"}
# Decoder family -> the detector's name in the paper's tables (DN-DETR = DAB-DETR + denoising queries).
_DETECTOR_NAMES = {"conditional": "C-DETR", "dab": "DAB-DETR"}


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
        # a run started from another run's weights, or with frozen parts, is no plain training from scratch
        "init_from": (model.get("init_from") or {}).get("run"),
        "frozen": ",".join((cfg.get("train") or {}).get("freeze") or ()),
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

    ``value`` is in the reports' unit named by ``unit`` (:func:`~groupdetr.reporting.units.metric_unit`: COCO and
    3D scores x 100 in points, matching instability in %, 3D errors in m / rad, seconds in s ...); everything after
    this function (statistics, tables, figures, the gathered CSVs) works in these units.
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
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "unit"])
    return in_units(df.astype({"seed": int, "epoch": int, "value": float}), ["value"])
