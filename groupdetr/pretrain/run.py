"""``groupdetr pretrain``: pretrain a backbone on boxes, once per set of inputs, into the cache.

Why (README, "Backbone pretraining"): the paper starts from an ImageNet-pretrained ResNet-50, and
DETR-family detectors trained from scratch on small data stay in their early plateau for a very long
time. No ImageNet weights exist on our machines, so the project pretrains the backbone itself on a
dense pretext task that needs nothing but boxes (``groupdetr.pretrain.targets``), on the training split
of the dataset (or of a larger one named in ``pretrain.dataset`` / ``pretrain.root``).

Deterministic on CPU for a seed (deterministic algorithms, seeded data order and augmentation,
``num_workers`` from ``data.num_workers``); atomic (the cache entry is written to a temporary folder
and renamed into place; a concurrent builder that loses the race discards its copy).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from groupdetr.config import PRETRAIN_WEIGHTS, Config
from groupdetr.data import build_loader
from groupdetr.data.coco import CocoDetection, DatasetError, split_paths
from groupdetr.data.transforms import build_transforms
from groupdetr import rundir as rd
from groupdetr.engine.checkpoint import save_checkpoint
from groupdetr.model.backbone import WeightsError
from groupdetr.pretrain.cache import (PRETEXT_VERSION, RECORD, WEIGHTS, PretrainSpec, cache_key, dataset_fingerprint, entry_dir,
                                      file_sha256, pretrain_spec, read_record)
from groupdetr.pretrain.network import pretext_backbone
from groupdetr.pretrain.pretext import LOSS_KEYS, PretextNet, pretext_losses, pretext_metrics, stage_targets

__all__ = ["pretrain", "resolve_backbone_weights", "weights_provenance", "export_copy", "summary_line"]

log = logging.getLogger("groupdetr.pretrain")

MAX_EVAL_IMAGES = 512  # held-out images scored after pretraining


def _dataset(spec: PretrainSpec, split: str, augment: bool) -> CocoDetection:
    image_dir, ann_file = split_paths(**spec.split_location(split))
    transforms = build_transforms(spec.augmentation, "train" if augment else "val", spec.image_size)
    return CocoDetection(image_dir, ann_file, transforms)


def _device(cfg: Config) -> torch.device:
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _cycle(dataset, spec: PretrainSpec, num_workers: int):
    """Batches forever: epoch e is shuffled from (seed, e), as the trainer does."""
    batch = spec.settings["batch_size"]
    drop_last = len(dataset) >= batch
    epoch = 0
    while True:
        epoch += 1
        yield from build_loader(dataset, batch, shuffle=True, num_workers=num_workers,
                                seed=spec.settings["seed"] * 1_000_003 + epoch, drop_last=drop_last)


def _weighted(losses: dict, settings: dict) -> torch.Tensor:
    return sum(settings[f"{k}_weight"] * losses[k] for k in LOSS_KEYS)


def _train(net: PretextNet, spec: PretrainSpec, dataset, device, num_workers: int, log_every: int) -> dict:
    settings, steps = spec.settings, spec.settings["steps"]
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    category_ids = dataset.category_ids
    strides = net.backbone.stage_strides
    window = {k: [] for k in LOSS_KEYS}
    bar = tqdm(total=steps, desc="pretrain", dynamic_ncols=True, leave=False) if sys.stderr.isatty() else None
    start = time.perf_counter()
    net.train()
    for step, (images, _pad, targets) in enumerate(_cycle(dataset, spec, num_workers), 1):
        preds = net(images.to(device))
        tgts = [dataclasses.replace(t, **{f.name: getattr(t, f.name).to(device) for f in dataclasses.fields(t)})
                for t in stage_targets(preds, targets, category_ids, strides)]
        losses = pretext_losses(preds, tgts, len(category_ids))
        loss = _weighted(losses, settings)
        if not torch.isfinite(loss):
            raise RuntimeError(f"pretraining diverged at step {step}: loss {loss.item()} (lower pretrain.lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k in LOSS_KEYS:
            window[k] = (window[k] + [losses[k].item()])[-100:]
        running = {k: sum(v) / len(v) for k, v in window.items()}
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
        elif step % log_every == 0 or step == steps:
            elapsed = time.perf_counter() - start
            log.info("pretrain [%d/%d] %s, %.0f s elapsed, eta %.0f s", step, steps,
                     ", ".join(f"{k} {v:.4f}" for k, v in running.items()), elapsed, elapsed / step * (steps - step))
        if step == steps:
            break
    if bar is not None:
        bar.close()
    return {f"train_{k}": round(v, 5) for k, v in running.items()}


@torch.no_grad()
def _held_out(net: PretextNet, dataset, device) -> dict:
    """Metrics of the last (coarsest) stage over at most MAX_EVAL_IMAGES images, no augmentation."""
    net.eval()
    subset = torch.utils.data.Subset(dataset, range(min(len(dataset), MAX_EVAL_IMAGES)))
    totals: dict[str, float] = {}
    losses = {k: 0.0 for k in LOSS_KEYS}
    batches = 0
    for images, _pad, targets in build_loader(subset, 16, shuffle=False, num_workers=0, seed=0):
        preds = net(images.to(device))
        tgts = stage_targets(preds, targets, dataset.category_ids, net.backbone.stage_strides)
        preds = [p.cpu() for p in preds]
        for k, v in pretext_losses(preds, tgts, len(dataset.category_ids)).items():
            losses[k] += v.item()
        for k, v in pretext_metrics(preds[-1], tgts[-1], len(dataset.category_ids)).items():
            totals[k] = totals.get(k, 0.0) + v
        batches += 1
    batches = max(batches, 1)
    return {**{f"heldout_{k}": round(v / batches, 5) for k, v in losses.items()},
            "heldout_cell_accuracy": round(totals["correct"] / max(totals["cells"], 1), 5),
            "heldout_foreground_iou": round(totals["fg_inter"] / max(totals["fg_union"], 1), 5),
            "heldout_extent_l1": round(totals["extent_l1"] / max(totals["extent_cells"], 1), 5),
            "heldout_images": len(subset)}


def _provenance() -> dict:
    from groupdetr.engine.trainer import git_state

    commit, dirty = git_state()
    import torchvision

    return {"git_commit": commit, "git_dirty": dirty, "versions": {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}}


def _cached(entry: Path) -> Path | None:
    """The weights of a complete cache entry, verified against the checksum in its record."""
    weights, record = entry / WEIGHTS, read_record(entry / WEIGHTS)
    if not weights.is_file() or record is None:
        return None
    if file_sha256(weights) != record.get("weights_sha256"):
        raise WeightsError(f"pretrained weights {weights} do not match the checksum in {entry / RECORD}; "
                           "delete that folder to pretrain again")
    return weights


def pretrain(cfg: Config, force: bool = False) -> tuple[Path, dict, bool]:
    """Pretrain the backbone of ``cfg`` per its ``pretrain`` section, or find it in the cache.

    Returns ``(weights path, record, built)``; ``built`` is False for a cache hit. ``force`` retrains
    and replaces the cache entry.
    """
    spec = pretrain_spec(cfg)
    train_set = _dataset(spec, "train", augment=True)
    fingerprint = dataset_fingerprint(train_set.image_dir, train_set.ann_file)
    entry = entry_dir(spec, fingerprint["fingerprint"])
    if not force and (hit := _cached(entry)) is not None:
        return hit, read_record(hit), False
    device = _device(cfg)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.set_flush_denormal(True)
    torch.manual_seed(spec.settings["seed"])
    net = PretextNet(pretext_backbone(cfg.model.backbone), len(train_set.category_ids)).to(device)
    log.info("pretraining %s on %s (%d images, %d px) for %d steps -> %s", spec.backbone["name"], spec.source,
             len(train_set), spec.image_size, spec.settings["steps"], entry)
    t0 = time.perf_counter()
    train_metrics = _train(net, spec, train_set, device, cfg.data.num_workers, cfg.train.log_every)
    seconds = time.perf_counter() - t0
    try:
        held_out = _dataset(spec, "val", augment=False)
    except DatasetError:  # no val split: score the training images, unaugmented
        held_out = _dataset(spec, "train", augment=False)
    metrics = {**train_metrics, **_held_out(net, held_out, device)}
    state = net.backbone.export()
    record = {
        "key": cache_key(spec, fingerprint["fingerprint"]), "pretext_version": PRETEXT_VERSION,
        "backbone": spec.backbone, "settings": spec.settings, "image_size": spec.image_size,
        "dataset": {"name": spec.dataset, "root": spec.root, "source": spec.source, "augmentation": spec.augmentation,
                    "categories": train_set.category_ids, **fingerprint},
        "steps": spec.settings["steps"], "seed": spec.settings["seed"], "metrics": metrics,
        "seconds": round(seconds, 1), "steps_per_second": round(spec.settings["steps"] / seconds, 3),
        "device": str(device), "threads": torch.get_num_threads(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **_provenance(),
    }
    _write_entry(entry, state, record, replace=force)
    return entry / WEIGHTS, read_record(entry / WEIGHTS), True


def _write_entry(entry: Path, state: dict, record: dict, replace: bool) -> None:
    """Write weights and record into a temporary sibling folder, then rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        save_checkpoint(tmp / WEIGHTS, state, checksum=False)  # the record holds its sha256
        record["weights_sha256"] = file_sha256(tmp / WEIGHTS)
        rd.atomic_write_json(tmp / RECORD, record)
        tmp.chmod(rd.dir_mode())  # mkdtemp's folder is private; the cache entry gets a plain mkdir's mode
        if replace and entry.exists():
            shutil.rmtree(entry)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process finished the same pretraining first: same inputs, keep theirs
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_copy(weights: Path, out: Path) -> Path:
    """Copy a cache entry's weights and record to ``out`` and ``out.with_suffix('.json')``, atomically
    (the workflow names its pretrained backbone by a path known before the dataset exists)."""
    rd.atomic_write_bytes(out, Path(weights).read_bytes())
    record = read_record(weights)
    if record is not None:
        rd.atomic_write_json(out.with_suffix(".json"), record)
    return out


def resolve_backbone_weights(cfg: Config, build: bool = True) -> Config:
    """``cfg`` with ``model.backbone.weights: pretrain`` replaced by the cached weights' path
    (pretrained first when ``build`` and not cached); any other value is returned unchanged."""
    if cfg.model.backbone.weights != PRETRAIN_WEIGHTS:
        return cfg
    if build:
        path, _record, _built = pretrain(cfg)
    else:
        spec = pretrain_spec(cfg)
        image_dir, ann_file = split_paths(**spec.split_location("train"))
        path = _cached(entry_dir(spec, dataset_fingerprint(image_dir, ann_file)["fingerprint"]))
        if path is None:
            raise WeightsError(f"no pretrained backbone in {spec.cache} for this config: run `groupdetr pretrain` first")
    backbone = dataclasses.replace(cfg.model.backbone, weights=str(path))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))


def weights_provenance(path: str | None) -> dict | None:
    """What a run's manifest records about its initial backbone weights: path, sha256, and the
    pretraining record's key, dataset fingerprint, steps and held-out metrics when one is beside it."""
    if path is None:
        return None
    info = {"path": str(path), "sha256": file_sha256(path)}
    record = read_record(path)
    if record is not None:
        info["pretrain"] = {k: record.get(k) for k in ("key", "steps", "seed", "image_size", "metrics", "seconds")}
        info["pretrain"]["dataset_fingerprint"] = record.get("dataset", {}).get("fingerprint")
    return info


def summary_line(path: Path, record: dict, built: bool) -> str:
    """The one-line summary the CLI prints."""
    m = record.get("metrics", {})
    what = f"pretrained in {record.get('seconds', math.nan):.0f} s" if built else "found in the cache"
    return (f"{record['backbone']['name']} {what} ({record['steps']} steps on {record['dataset']['num_images']} "
            f"images of {record['dataset'].get('source', record['dataset']['root'])}): held-out cell accuracy {m.get('heldout_cell_accuracy', math.nan):.3f}, "
            f"foreground IoU {m.get('heldout_foreground_iou', math.nan):.3f}, extent L1 "
            f"{m.get('heldout_extent_l1', math.nan):.4f} -> {path}")
