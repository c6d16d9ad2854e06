"""``groupdetr eval``: evaluate a run directory or a checkpoint, with any group (paper Fig. 4)."""
from __future__ import annotations

import dataclasses
from pathlib import Path


from groupdetr.build import build_all
from groupdetr.config import Config, apply_overrides, from_dict, to_dict
from groupdetr.config import validate as validate_config
from groupdetr.data import build_dataset
from groupdetr.engine import rundir as rd
from groupdetr.engine.distributed import init_distributed
from groupdetr.engine.loop import evaluate
from groupdetr.engine.trainer import RunError, flush_denormals, make_loader
from groupdetr.tasks import TASKS, yaw_periods

__all__ = ["evaluate_run"]


def _load(target: Path) -> tuple[Path, dict]:
    path = target / rd.CHECKPOINT if target.is_dir() else target
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        return path, rd.load_checkpoint(path)
    except Exception as e:
        raise RunError(f"{path} cannot be loaded as a groupdetr checkpoint ({str(e).splitlines()[0]})") from None


def evaluate_run(target: str | Path, group: int | None = None, overrides: list[str] | None = None,
                 out: str | Path | None = None) -> dict:
    """Evaluate the checkpoint of ``target`` (a run dir or a checkpoint file) on the val split.

    ``group`` selects the group evaluated alone (``model.eval_group``); ``overrides`` may change
    anything but the model's architecture (data root, postprocess, ...). Results go to ``out``, by
    default ``<run>/eval/group{g}.json`` when ``target`` is a run dir and there are no overrides.
    """
    target = Path(target)
    path, ckpt = _load(target)
    if "config" not in ckpt or "model" not in ckpt:
        raise RunError(f"{path} is not a groupdetr checkpoint (no config or model state)")
    extra = list(overrides or []) + ([f"model.eval_group={group}"] if group is not None else [])
    cfg = validate_config(from_dict(Config, apply_overrides(ckpt["config"], extra)))
    changed = {k for k, v in to_dict(cfg.model).items() if k != "eval_group" and v != ckpt["model_config"].get(k)}
    if changed:
        raise RunError(f"overrides change the architecture of the checkpoint (model.{', model.'.join(sorted(changed))})")
    info = init_distributed(cfg.device)
    flush_denormals(info.device)
    val = build_dataset(cfg, "val")
    periods = yaw_periods(cfg.model.task, val.coco.dataset["categories"])
    # every parameter comes from the checkpoint: no initial backbone weights file is needed
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=None)))
    model, _, postprocess = build_all(build_cfg, periods)
    model.load_state_dict(ckpt["model"])
    model.to(info.device)
    stats = evaluate(model, postprocess, make_loader(val, cfg, info, 0, False), info.device, val.coco,
                     cfg.train.eval_backend, cfg.train.amp, info.is_main, cfg.train.log_every,
                     TASKS[cfg.model.task].iou_types, periods)
    result = {"checkpoint": str(path), "epoch": int(ckpt["epoch"]), "eval_group": cfg.model.eval_group,
              "overrides": list(overrides or []), **stats}
    if out is None and target.is_dir() and not overrides:
        out = target / rd.EVAL_DIR / f"group{cfg.model.eval_group}.json"
    if out is not None and info.is_main:
        rd.atomic_write_json(Path(out), result)
    return result
