"""``groupdetr train``: one engine for a 2-minute CPU run and a multi-GPU COCO run.

Reliability rules (issue #4):
- the run directory (``groupdetr.rundir``) is the only state; rerunning the same command
  resumes from the last finished epoch, and a finished run (``metrics.json``) is not retrained;
- randomness is re-seeded at every epoch from (seed, epoch, rank) and the data order from
  (seed, epoch), so an epoch computes the same thing whether or not the process was restarted
  before it: on CPU the final metrics of a resumed run equal those of an uninterrupted one;
- a run directory with another config, or a checkpoint of another model, is refused with one line
  and left untouched, unless ``restart`` is asked for.
- divergence (issue 14): a NaN or infinity in a step's outputs (checked before the matcher) or loss, or
  in the weights at the end of an epoch, stops the run with one line naming the epoch and iteration; the
  run directory still ends at its last good epoch, so a rerun resumes there (and diverges the same way).

Reliability rules (issue #14):
- one writer at a time: the main process holds the run directory's lock (``rundir.run_lock``) while it
  writes, and a second ``groupdetr train`` (or an evaluation) of the same directory is refused meanwhile;
- a kill at any point leaves a directory that the same command resumes or starts cleanly: temporaries
  of cut writes are removed, a config without a manifest means nothing ran yet, and ``restart`` always
  starts over, whatever the directory holds;
- a damaged file (a checkpoint that is not what was written, torn JSON) is refused with one line naming
  it, never loaded as if it were fine; a torn last line of ``log.jsonl`` past the checkpoint is dropped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DistributedSampler

import groupdetr
from groupdetr.build import build_all, build_optimizer, loss_weights
from groupdetr.config import Config, ModelConfig, config_hash, dump_yaml, from_dict, resolved, to_dict
from groupdetr.data import build_dataset, build_loader
from groupdetr.data.coco import resolve_num_classes
from groupdetr import rundir as rd
from groupdetr.engine.checkpoint import load_checkpoint, save_checkpoint
from groupdetr.engine.distributed import DistInfo, all_gather_objects, barrier, init_distributed
from groupdetr.engine.board import Board, epoch_scalars, global_step, step_scalars
from groupdetr.engine.init_from import load_init_from
from groupdetr.engine.loop import epoch_iterations, evaluate, matching_instability, train_one_epoch
from groupdetr.engine.memory import peak_memory_mib
from groupdetr.engine.progress import RunClock
from groupdetr.model.parts import freeze_parts
from groupdetr.errors import DatasetError, NonFiniteLoss, RunError, UsageError, first_line
from groupdetr.pretrain.run import resolve_backbone_weights, weights_provenance
from groupdetr.tasks import TASKS

__all__ = ["RunError", "train", "make_loader", "check_batch_size", "check_run_dir", "seed_everything", "flush_denormals", "git_state", "peak_memory_mib", "manifest"]

log = logging.getLogger("groupdetr.engine")


def seed_everything(seed: int, epoch: int, rank: int) -> None:
    """Seed torch, numpy and random for one epoch of one rank."""
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % 2**31
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def flush_denormals(device: torch.device) -> None:
    """On CPU, treat denormal floats as zero. Softmax over large attention logits (e.g. PETR's
    camera-aware positions early in training) produces denormals, and x86 arithmetic on them is up
    to ~50x slower: a 3D-head step took 3 s instead of 0.06 s. Values below 1e-38 do not matter here."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(groupdetr.__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_state() -> tuple[str | None, bool]:
    """(commit of the package's checkout or None, whether its tree has uncommitted changes)."""
    return _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain"))


def git_changes(limit: int = 50) -> list[str]:
    """The uncommitted changes of the package's checkout, as ``git status --porcelain`` lines (at most
    ``limit``, then a count of the rest): what a run's ``git_dirty`` flag is about."""
    lines = (_git("status", "--porcelain") or "").splitlines()
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def manifest(cfg: Config, info: DistInfo, command: list[str]) -> dict:
    import torchvision

    return {
        "config_hash": config_hash(cfg), "command": command, "seed": cfg.seed,
        "git_commit": git_state()[0], "git_dirty": git_state()[1], "git_changes": git_changes(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__, "groupdetr": groupdetr.__version__},
        "device": torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else platform.processor() or "cpu",
        "world_size": info.world_size,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "resumed": [],
    }


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _diff_keys(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(prefix + k)
    return keys


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; a run directory is a folder (choose another --out)")


def _readable(read, path: Path):
    """``read(path)``, a damaged file refused with the way out (one line naming it)."""
    try:
        return read(path)
    except RunError as e:
        raise RunError(f"{e}; pass --restart to start over") from None


def _nothing_ran(out: Path, entries: list[str]) -> bool:
    """Whether ``entries`` of ``out`` are what a kill before the manifest leaves: the config alone (and an
    empty ``eval/`` folder of a run being cleared by ``--restart``)."""
    return all(name == rd.CONFIG or (name == rd.EVAL_DIR and not rd.run_entries(out / name)) for name in entries)


def check_run_dir(out: Path, cfg: Config, restart: bool) -> str:
    """State of ``out`` for ``cfg``: "new", "resume" or "finished"; reads only. Raises RunError (nothing
    touched) when the directory holds another config or a damaged file and ``restart`` is not set, or holds
    something that is not a run; UsageError when ``out`` is a file. What a kill leaves (the temporaries of
    cut atomic writes, a lock file nobody holds, a config written before the manifest) resumes or starts
    cleanly; ``restart`` starts over whatever the directory holds."""
    _check_out(out)
    entries = rd.run_entries(out)
    if not entries or restart:
        return "new"
    cfg_file = out / rd.CONFIG
    if not cfg_file.is_file():
        raise RunError(f"{out} is not empty and holds no run ({rd.CONFIG} missing); choose another --out")
    try:
        old = from_dict(Config, yaml.safe_load(cfg_file.read_text()))
    except Exception as e:  # a damaged or foreign config file is a refusal, not a crash
        raise RunError(f"{cfg_file} is not a readable groupdetr config ({first_line(e)}); pass --restart to start over") from None
    if config_hash(old) != config_hash(cfg):
        keys = ", ".join(_diff_keys(to_dict(old), to_dict(cfg))[:6])
        raise RunError(f"{out} holds a run with another config (differs in: {keys}); pass --restart to start over")
    if not (out / rd.MANIFEST).is_file():
        if _nothing_ran(out, entries):  # killed between config.yaml and manifest.json
            return "new"
        raise RunError(f"{out / rd.MANIFEST} is missing (the run's provenance); pass --restart to start over")
    _readable(rd.read_json, out / rd.MANIFEST)
    if (out / rd.METRICS).is_file():
        _readable(rd.read_json, out / rd.METRICS)
        return "finished"
    _readable(rd.read_jsonl_records, out / rd.LOG)  # a damaged line before the last; a torn last one is judged on resume
    return "resume"


def _clear(out: Path) -> None:
    """Remove the run's files, ``config.yaml`` last: a kill part-way leaves a directory that the same
    ``--restart`` clears again, and that nothing but ``--restart`` takes for a run to resume."""
    for name in (rd.CHECKPOINT, rd.CHECKSUM, rd.LOG, rd.METRICS):
        (out / name).unlink(missing_ok=True)
    for f in rd.run_detections(out):
        f.unlink()
    shutil.rmtree(out / rd.TENSORBOARD, ignore_errors=True)
    (out / rd.MANIFEST).unlink(missing_ok=True)
    eval_dir = out / rd.EVAL_DIR
    if eval_dir.is_dir():
        for f in eval_dir.iterdir():
            f.unlink()
        eval_dir.rmdir()
    (out / rd.CONFIG).unlink(missing_ok=True)


def _repair_log(out: Path, start: int) -> list[dict] | None:
    """Records to rewrite ``log.jsonl`` with before resuming after epoch ``start``, when its last line is
    torn (a write cut short): the records before it, if they reach the checkpoint's epoch (the torn
    one was of a later epoch, which runs again); None when the log is whole. A torn line the run needs is
    a RunError (one line)."""
    path = out / rd.LOG
    rows, torn = _readable(rd.read_jsonl_records, path)
    if torn is None:
        return None
    last = rows[-1].get("epoch", 0) if rows else 0
    if last < start:
        raise RunError(f"{path} is damaged (its last line is cut short, and the whole lines end at epoch {last}, "
                       f"before the checkpoint's epoch {start}); pass --restart to start over")
    log.warning("%s: dropping its torn last line (%r); the epoch after %d runs again", path, torn[:40], start)
    return [r for r in rows if r.get("epoch", 0) <= start]


def _restore(ckpt: dict, cfg: Config, model, optimizer, scheduler, path: Path) -> tuple[int, dict]:
    # The checkpoint's configs are read as config.yaml is (check_run_dir): a field added since it was written
    # takes its default, so a run started before a new config field existed resumes after it.
    if resolved(ModelConfig, ckpt.get("model_config")) != to_dict(cfg.model):
        raise RunError(f"{path} is a checkpoint of another model; it does not match model.* of this config")
    stored = resolved(Config, ckpt.get("config"))
    if (stored is None or stored != to_dict(cfg)) and ckpt.get("config_hash") != config_hash(cfg):
        raise RunError(f"{path} was written under another config; pass --restart to start over")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return int(ckpt["epoch"]), ckpt.get("matching", {})


def make_loader(dataset, cfg: Config, info: DistInfo, epoch: int, train: bool):
    """Loader of one epoch: order from (seed, epoch); a DistributedSampler shards it under torchrun."""
    seed = cfg.seed * 1_000_003 + epoch
    sampler = None
    if info.world_size > 1:
        sampler = DistributedSampler(dataset, shuffle=train, seed=cfg.seed, drop_last=train)
        sampler.set_epoch(epoch)
    return build_loader(dataset, cfg.optim.batch_size, shuffle=train, num_workers=cfg.data.num_workers, seed=seed,
                        drop_last=train, sampler=sampler)


def check_batch_size(num_images: int, batch_size: int, world_size: int, ann_file: Path) -> None:
    """Refuse (DatasetError, one line) a batch larger than a process's share of the training split. The
    training loader drops an incomplete last batch (``drop_last``, as DETR: every step sees a full batch, and
    a resumed epoch the same batches), so such an epoch would run no step at all."""
    per_process = num_images // world_size
    if batch_size > per_process:
        share = f", {per_process} per process of {world_size}" if world_size > 1 else ""
        raise DatasetError(f"optim.batch_size={batch_size} is larger than the train split ({num_images} images in "
                           f"{ann_file}{share}): an epoch would run no step (the last incomplete batch is "
                           "dropped); " + (f"set optim.batch_size <= {per_process}" if per_process else
                                           "use fewer processes than images"))


def _locked(out: Path, shared: bool = False):
    """The run directory's lock for this process: the main process's (``RANK`` 0, or no torchrun) alone,
    since the other ranks write nothing there."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return rd.run_lock(out, what="training", shared=shared)


def train(cfg: Config, out: str | Path, command: list[str] | None = None, restart: bool = False,
          tensorboard: bool = True) -> dict:
    """Train ``cfg`` into run directory ``out`` (resuming, or returning a finished run's metrics), holding
    its lock; another process writing it is a refusal (:class:`groupdetr.rundir.RunBusy`). A
    ``model.num_classes: null`` is derived from the training annotations first, so the run directory records
    the number and a rerun of the same command finds its own run. ``tensorboard``:
    write TensorBoard curves to ``out/tensorboard`` (:mod:`groupdetr.engine.board`). It changes nothing the
    run computes, so it is an argument, not a config key (which would enter the config's hash)."""
    out = Path(out)
    cfg = resolve_num_classes(cfg)
    _check_out(out)  # before the lock makes a folder
    if not restart:
        with _locked(out, shared=True):  # a finished run is only read: evaluations of it may go on
            if check_run_dir(out, cfg, restart) == "finished":
                log.info("%s is finished; nothing to do", out)
                return rd.read_json(out / rd.METRICS)
    with _locked(out):
        return _train(cfg, out, command, restart, tensorboard)


def _train(cfg: Config, out: Path, command: list[str] | None, restart: bool, tensorboard: bool) -> dict:
    """:func:`train`, holding the lock."""
    state = check_run_dir(out, cfg, restart)
    if state == "finished":
        log.info("%s is finished; nothing to do", out)
        return rd.read_json(out / rd.METRICS)
    info = init_distributed(cfg.device)
    if info.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    flush_denormals(info.device)
    train_ds, val_ds = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    check_batch_size(len(train_ds), cfg.optim.batch_size, info.world_size, train_ds.ann_file)
    ckpt_path = out / rd.CHECKPOINT
    resuming = state == "resume" and ckpt_path.is_file()
    build_cfg = _initial_weights(cfg, info, resuming)
    torch.manual_seed(cfg.seed)
    model, criterion, postprocess = build_all(build_cfg, val_ds.coco.dataset["categories"])
    # model.init_from overwrites the named parts of the fresh model (the rest stays as this seed made it); a
    # resumed run's checkpoint holds every parameter. Frozen parts are set before the optimizer sees them.
    started_from = None if resuming else load_init_from(model, cfg.model.init_from)
    freeze_parts(model, cfg.train.freeze)
    scorers = TASKS[cfg.model.task].scorers(cfg, val_ds.coco)
    model.to(info.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.optim.lr_drop, gamma=0.1)
    start, matching = 0, {}
    if resuming:
        try:
            ckpt = load_checkpoint(ckpt_path)
        except Exception as e:
            raise RunError(f"{ckpt_path} cannot be loaded ({first_line(e)}); pass --restart to start over") from None
        start, matching = _restore(ckpt, cfg, model, optimizer, scheduler, ckpt_path)
        log.info("resuming %s after epoch %d", out, start)
    repaired = _repair_log(out, start) if state == "resume" else None
    if info.is_main:
        for tmp in rd.remove_stale_temporaries(out):
            log.info("removed %s, the temporary of a write cut short", tmp)
        if state == "new":
            _clear(out)
            out.mkdir(parents=True, exist_ok=True)
            rd.atomic_write_text(out / rd.CONFIG, dump_yaml(cfg))
            rd.atomic_write_json(out / rd.MANIFEST, {**manifest(cfg, info, command or sys.argv),
                                                     "backbone_weights": weights_provenance(build_cfg.model.backbone.weights),
                                                     "init_from": started_from})
        else:
            if repaired is not None:
                rd.write_jsonl(out / rd.LOG, repaired)
            m = rd.read_json(out / rd.MANIFEST)
            m.setdefault("resumed", []).append(dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
            if m.get("config_hash") != config_hash(cfg):
                # the same config (check_run_dir compared them field by field) hashed with fields added since the
                # run started: metrics.json will carry the new hash, so the manifest does too, keeping the old one
                m.setdefault("config_hash_before", []).append(m.get("config_hash"))
                m["config_hash"] = config_hash(cfg)
            rd.atomic_write_json(out / rd.MANIFEST, m)
    barrier()
    net = torch.nn.parallel.DistributedDataParallel(model) if info.world_size > 1 else model
    weights = loss_weights(cfg)
    # Killed after the last checkpoint but before metrics.json: the last logged stats are final.
    logged = rd.read_jsonl(out / rd.LOG)
    stats = {k: v for k, v in (logged or [{}])[-1].items() if "/" in k}
    per_epoch = epoch_iterations(make_loader(train_ds, cfg, info, 1, True), cfg.train.max_iters_per_epoch)
    # TensorBoard, by the main process, from the step after the checkpoint (see Board on what becomes of the
    # steps that a killed attempt wrote past it)
    writes_board = tensorboard and info.is_main and start < cfg.optim.epochs
    board = Board(out / rd.TENSORBOARD if writes_board else None, first_step=global_step(start + 1, 1, per_epoch))
    # the run's ETA on the progress, evaluations timed by the epochs logged before a resume included
    clock = RunClock(cfg.optim.epochs, per_epoch, cfg.train.eval_every,
                     [r["eval_seconds"] for r in logged if any("/" in k for k in r)])
    with board:
        for epoch in range(start + 1, cfg.optim.epochs + 1):
            seed_everything(cfg.seed, epoch, info.rank)
            if info.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(info.device)
            t0 = time.perf_counter()
            try:
                means, current, iters = train_one_epoch(
                    net, criterion, weights, optimizer, make_loader(train_ds, cfg, info, epoch, True), info.device,
                    epoch, cfg.optim.clip_max_norm, cfg.train.max_iters_per_epoch, cfg.train.amp, cfg.train.log_every,
                    info.is_main, on_step=_step_logger(board, optimizer, weights, epoch, per_epoch),
                    eta=clock.eta(epoch))
            except NonFiniteLoss as e:
                raise NonFiniteLoss(f"{e}; {diverged_hint(out, epoch - 1)}") from None
            seconds = time.perf_counter() - t0
            lrs = [g["lr"] for g in optimizer.param_groups]
            scheduler.step()
            current = _merge(current)
            record = {"epoch": epoch, "lr": lrs[0], "lr_backbone": lrs[-1], **means, "iterations": iters,
                      "seconds": round(seconds, 3),
                      "matching_instability": matching_instability(matching, current) if matching else None}
            matching = current
            t1 = time.perf_counter()
            evaluation = None
            if epoch % cfg.train.eval_every == 0 or epoch == cfg.optim.epochs:
                evaluation = evaluate(model, postprocess, make_loader(val_ds, cfg, info, epoch, False), info.device,
                                      scorers, cfg.train.amp, info.is_main, cfg.train.log_every)
                stats = evaluation.stats
                record.update(stats)
            record["eval_seconds"] = round(time.perf_counter() - t1, 3)
            clock.add_epoch(seconds, iters, record["eval_seconds"] if evaluation is not None else None)
            record["peak_memory_mib"] = round(peak_memory_mib(info.device), 1)
            if info.is_main and evaluation is not None and epoch == cfg.optim.epochs:
                # Only the final evaluation's detections are kept (those of metrics.json): one set per run, ~7 MB
                # of boxes on the benchmark's 500 validation images, where every epoch's would multiply it by the
                # epochs. Written before the log records the epoch, so a logged final epoch has them.
                rd.write_detections(out / rd.METRICS, evaluation.detections())
            if info.is_main:
                board.scalars(epoch_scalars(record), global_step(epoch, iters, per_epoch))
                board.flush()  # the curves on disk reach the checkpoint's epoch
                rd.append_jsonl(out / rd.LOG, record, keep_epochs_below=epoch)
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "config_hash": config_hash(cfg), "model_config": to_dict(cfg.model),
                    "config": to_dict(cfg), "matching": matching})
                primary = TASKS[cfg.model.task].primary_metric
                log.info("epoch %d/%d: loss %.4f, %s%.1f s", epoch, cfg.optim.epochs, means["loss"],
                         f"{primary} {stats[primary]:.4f}, " if primary in record else "", seconds)
            barrier()
    final = {"epoch": cfg.optim.epochs, "config_hash": config_hash(cfg), **stats}
    if info.is_main:
        rd.atomic_write_json(out / rd.METRICS, final)
    barrier()
    return final


def _step_logger(board: Board, optimizer, weights: dict, epoch: int, per_epoch: int):
    """``on_step`` of :func:`train_one_epoch` that adds each iteration's losses and learning rates to
    ``board``; None without a board."""
    if not board.enabled:
        return None

    def on_step(iteration: int, values: dict) -> None:
        lrs = {"lr": optimizer.param_groups[0]["lr"], "lr_backbone": optimizer.param_groups[-1]["lr"]}
        board.scalars(step_scalars(values, weights, lrs), global_step(epoch, iteration, per_epoch))

    return on_step


def diverged_hint(out: Path, finished: int) -> str:
    """What is left after training diverged in epoch ``finished + 1``, and what to do: the run directory
    still ends at its last finished epoch (its checkpoint was written before the failing epoch began)."""
    if finished == 0:
        return f"no epoch of {out} finished; lower optim.lr and pass --restart"
    return (f"{out} keeps epoch {finished} and its checkpoint (rerunning resumes there); lower optim.lr "
            "and pass --restart to start over")


def _initial_weights(cfg: Config, info: DistInfo, resuming: bool) -> Config:
    """The config to build the model from: ``model.backbone.weights: pretrain`` resolved to the cached
    pretrained backbone (pretrained here, by the main process, if not cached yet); when resuming, no
    initial weights at all (the checkpoint holds every parameter)."""
    if resuming:
        return dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=None)))
    if info.is_main:
        resolve_backbone_weights(cfg, build=True)
    barrier()
    return resolve_backbone_weights(cfg, build=False)


def _merge(matching: dict) -> dict:
    """Union of every rank's matching signatures (each rank saw a different part of the data)."""
    merged = {}
    for part in all_gather_objects(matching):
        merged.update(part)
    return merged
