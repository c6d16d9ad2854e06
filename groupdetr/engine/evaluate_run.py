"""``groupdetr eval``: evaluate a run directory or a checkpoint, with any group (paper Fig. 4)."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from groupdetr.build import build_all
from groupdetr.config import Config, ModelConfig, apply_overrides, from_dict, resolved, to_dict
from groupdetr.config import validate as validate_config
from groupdetr.data import build_dataset
from groupdetr import rundir as rd
from groupdetr.engine.checkpoint import load_checkpoint
from groupdetr.engine.distributed import init_distributed
from groupdetr.engine.loop import evaluate, evaluate_groups
from groupdetr.engine.trainer import RunError, flush_denormals, make_loader
from groupdetr.errors import first_line
from groupdetr.names import ISOLATING_SELF_ATTENTION
from groupdetr.tasks import TASKS

__all__ = ["evaluate_run", "evaluate_groups_run", "load_run_model", "reading_run"]


def _checkpoint_path(target: Path) -> Path:
    """The checkpoint of ``target``: a run directory's, or ``target`` itself."""
    return target / rd.CHECKPOINT if target.is_dir() else target


def _load(target: Path) -> tuple[Path, dict]:
    path = _checkpoint_path(target)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        return path, load_checkpoint(path)
    except Exception as e:
        raise RunError(f"{path} cannot be loaded as a groupdetr checkpoint ({first_line(e)})") from None


def reading_run(target: Path):
    """The shared lock of the run directory holding the evaluated checkpoint (:func:`groupdetr.rundir.run_lock`),
    held while it is read and the results written: never beside ``groupdetr train`` writing that directory,
    which is refused meanwhile. A checkpoint outside a run directory is read without it."""
    run = _checkpoint_path(target).parent
    if not (run / rd.CONFIG).is_file():
        return contextlib.nullcontext()
    return rd.run_lock(run, what="evaluation", shared=True)


def load_run_model(target: Path, overrides: list[str], group: int | None):
    """The checkpoint of ``target`` (a run dir or a checkpoint file) as evaluation sees it: ``(path, ckpt, cfg,
    model, postprocess, val, info)``, the config with ``overrides`` (and ``model.eval_group``), the model in
    eval mode on the device with the checkpoint's weights, its postprocess, the val split and the device info.
    Overrides that change the architecture are refused (RunError, one line)."""
    path, ckpt = _load(target)
    if "config" not in ckpt or "model" not in ckpt:
        raise RunError(f"{path} is not a groupdetr checkpoint (no config or model state)")
    extra = list(overrides) + ([f"model.eval_group={group}"] if group is not None else [])
    cfg = validate_config(from_dict(Config, apply_overrides(ckpt["config"], extra)))
    stored = resolved(ModelConfig, ckpt.get("model_config"))  # fields added since it was written: defaults
    if stored is None:
        raise RunError(f"{path}: its model config cannot be read as today's model config")
    changed = {k for k, v in to_dict(cfg.model).items() if k != "eval_group" and v != stored.get(k)}
    if changed:
        raise RunError(f"overrides change the architecture of the checkpoint (model.{', model.'.join(sorted(changed))})")
    info = init_distributed(cfg.device)
    flush_denormals(info.device)
    val = build_dataset(cfg, "val")
    # every parameter comes from the checkpoint: no initial backbone weights file is needed
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=None)))
    model, _, postprocess = build_all(build_cfg, val.coco.dataset["categories"])
    model.load_state_dict(ckpt["model"])
    model.to(info.device).eval()
    return path, ckpt, cfg, model, postprocess, val, info


def _prepare(target: Path, overrides: list[str], group: int | None):
    """:func:`load_run_model` with the task's scorers of the val set and the val loader: ``(path, ckpt, cfg,
    model, postprocess, scorers, loader, info)``."""
    path, ckpt, cfg, model, postprocess, val, info = load_run_model(target, overrides, group)
    loader = make_loader(val, cfg, info, 0, False)
    scorers = TASKS[cfg.model.task].scorers(cfg, val.coco)
    return path, ckpt, cfg, model, postprocess, scorers, loader, info


def _write(stats_file: Path, result: dict, evaluation, detections: bool) -> None:
    """The result JSON of one evaluation, after its detections (:func:`groupdetr.rundir.write_detections`:
    ``<stem>.detections.<kind>.json`` beside it) when ``detections``: a result file means they are there."""
    if detections:
        rd.write_detections(stats_file, evaluation.detections())
    rd.atomic_write_json(stats_file, result)


def evaluate_run(target: str | Path, group: int | None = None, overrides: list[str] | None = None,
                 out: str | Path | None = None, detections: bool = True) -> dict:
    """Evaluate the checkpoint of ``target`` (a run dir or a checkpoint file) on the val split.

    ``group`` selects the group evaluated alone (``model.eval_group``); ``overrides`` may change
    anything but the model's architecture (data root, postprocess, ...). Results go to ``out``, by
    default ``<run>/eval/group{g}.json`` when ``target`` is a run dir and there are no overrides; with
    ``detections``, the detections scored go beside it, one file per kind (``<stem>.detections.bbox.json``,
    ``.segm.json``: COCO results; ``.3d.json``), for ``COCO.loadRes`` and other tools.
    """
    target = Path(target)
    if out is not None:  # before anything is loaded: a refused --out costs nothing
        out = rd.check_eval_out(out, _checkpoint_path(target))
    with reading_run(target):
        return _evaluate_run(target, group, overrides, out, detections)


def _evaluate_run(target: Path, group: int | None, overrides: list[str] | None, out: Path | None,
                  detections: bool) -> dict:
    """:func:`evaluate_run`, holding the run's lock."""
    path, ckpt, cfg, model, postprocess, scorers, loader, info = _prepare(target, list(overrides or []), group)
    evaluation = evaluate(model, postprocess, loader, info.device, scorers, cfg.train.amp, info.is_main,
                          cfg.train.log_every)
    result = {"checkpoint": str(path), "epoch": int(ckpt["epoch"]), "eval_group": cfg.model.eval_group,
              "overrides": list(overrides or []), **evaluation.stats}
    if out is None and target.is_dir() and not overrides:
        out = rd.eval_file(target, f"group{cfg.model.eval_group}")
    if out is not None and info.is_main:
        _write(Path(out), result, evaluation, detections)
    return result


def evaluate_groups_run(target: str | Path, groups: Sequence[int] | None = None, overrides: list[str] | None = None,
                        out: str | Path | None = None, detections: bool = True) -> dict:
    """Evaluate each of ``groups`` (default: every group) of the checkpoint of ``target`` alone (paper Fig. 4),
    in one job that loads the model once.

    With a self-attention that keeps groups apart (:data:`groupdetr.names.ISOLATING_SELF_ATTENTION`) all of
    them run in one forward per batch and each is scored from its own slice (``evaluate_groups``); with
    shared self-attention the groups would see each other, so each runs alone, one pass per group. Either
    way group g's result is that of its N queries alone (``evaluate_run(target, group=g)`` for a model that
    keeps one group at inference), written to ``group{g}.json``
    in the folder of ``out`` (default ``<run>/eval/``); ``out`` itself, written last, is the index: the
    groups, their files, whether one pass served them all, and the seconds taken. With ``detections``, each
    group's detections go beside its file (``group{g}.detections.<kind>.json``, as :func:`evaluate_run`).
    """
    target = Path(target)
    overrides = list(overrides or [])
    if out is not None:  # the index; the group files go beside it, named group{g}.json (never a run file)
        out = rd.check_eval_out(out, _checkpoint_path(target))
    with reading_run(target):
        return _evaluate_groups_run(target, groups, overrides, out, detections)


def _evaluate_groups_run(target: Path, groups: Sequence[int] | None, overrides: list[str], out: Path | None,
                         detections: bool) -> dict:
    """:func:`evaluate_groups_run`, holding the run's lock."""
    start = time.perf_counter()
    path, ckpt, cfg, model, postprocess, scorers, loader, info = _prepare(target, overrides, None)
    k = cfg.model.num_groups
    groups = list(range(k)) if groups is None else [int(g) for g in groups]
    for g in groups:
        if not 0 <= g < k:
            raise RunError(f"group {g} does not exist: {path} has num_groups={k}")
    if len(set(groups)) != len(groups):
        raise RunError(f"groups repeat: {groups}")
    one_pass = cfg.model.self_attention in ISOLATING_SELF_ATTENTION
    common = (info.device, scorers)
    options = dict(amp=cfg.train.amp, show=info.is_main, log_every=cfg.train.log_every)
    if one_pass:
        per_group = evaluate_groups(model, postprocess, loader, *common, groups, **options)
    else:  # one forward per group, with only that group's queries
        per_group = {g: evaluate_groups(model, postprocess, loader, *common, (g,), **options)[g] for g in groups}
    if out is None:
        if not target.is_dir():
            raise RunError("evaluating several groups of a checkpoint file needs --out (the index file)")
        out = rd.eval_file(target, "groups")
    out = Path(out)
    files = {}
    for g in groups:
        result = {"checkpoint": str(path), "epoch": int(ckpt["epoch"]), "eval_group": g, "overrides": overrides,
                  **per_group[g].stats}
        files[g] = out.parent / f"group{g}.json"
        if info.is_main:
            _write(files[g], result, per_group[g], detections)
    index = {"checkpoint": str(path), "epoch": int(ckpt["epoch"]), "groups": groups, "overrides": overrides,
             "files": {str(g): f.name for g, f in files.items()}, "one_pass": one_pass,
             "seconds": round(time.perf_counter() - start, 3)}
    if info.is_main:
        rd.atomic_write_json(out, index)
    return {**index, "stats": {str(g): per_group[g].stats for g in groups}}
