"""``model.init_from``: start a model from a finished run's checkpoint, all of it or named parts.

The model is built first, exactly as a fresh one of the same seed, and the chosen parts are then overwritten
from the source run's ``checkpoint.pth``; so a part that is not loaded is bit for bit what a fresh model of that
seed holds (paper Table 1 retrains the decoder from scratch on top of a trained encoder). Only a finished run
is a source (``metrics.json`` present: its weights no longer change), read under its shared lock. Every
refusal is one :class:`InitFromError` line naming the file and the problem, raised before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from groupdetr import rundir as rd
from groupdetr.config import InitFromConfig
from groupdetr.engine.checkpoint import load_checkpoint_with_digest
from groupdetr.errors import InitFromError, RunError, first_line
from groupdetr.model.parts import MODEL_PARTS, check_present, model_parts, part_keys, part_of

__all__ = ["InitFromError", "load_init_from", "read_source", "fit_parts"]


def _shape(t) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def read_source(run: Path) -> tuple[dict, dict, Path, str]:
    """(checkpoint, manifest, checkpoint path, checkpoint sha256) of the finished run ``run``."""
    if not run.is_dir():
        raise InitFromError(f"model.init_from.run {run}: no such run directory")
    for name in (rd.METRICS, rd.MANIFEST, rd.CHECKPOINT):
        if not (run / name).is_file():
            why = "the run is not finished" if name == rd.METRICS else "not a run directory of groupdetr train"
            raise InitFromError(f"{run / name}: missing ({why}); model.init_from.run must name a finished run")
    path = run / rd.CHECKPOINT
    try:
        with rd.run_lock(run, what="init_from", shared=True):
            manifest = rd.read_json(run / rd.MANIFEST)
            ckpt, digest = load_checkpoint_with_digest(path)
    except RunError as e:  # a torn manifest, or a writer holding the run (it is being retrained)
        raise InitFromError(f"model.init_from.run: {e}") from None
    except Exception as e:  # an empty, damaged or foreign checkpoint
        raise InitFromError(f"{path}: cannot be loaded ({first_line(e)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise InitFromError(f"{path}: not a groupdetr checkpoint (no model state)")
    return ckpt, manifest, path, digest


def fit_parts(model: nn.Module, state: dict, parts: tuple[str, ...], path: Path) -> dict:
    """The entries of ``state`` (the source's state dict) for ``parts``, checked against ``model``: every key
    of those parts present on both sides with the same shape. One InitFromError line naming ``path`` and the
    first key that does not fit."""
    source_parts = {part_of(k) for k in state}
    for part in parts:
        if part not in source_parts:
            raise InitFromError(f"{path}: has no part {part!r} (its parts: {', '.join(_ordered(source_parts))})")
    mine = model.state_dict()
    wanted, given = part_keys(mine, parts), part_keys(state, parts)
    missing = [k for k in wanted if k not in state]
    if missing:
        raise InitFromError(f"{path}: no {missing[0]} (the checkpoint's {part_of(missing[0])} is another "
                            f"architecture{f'; {len(missing) - 1} more keys missing' if len(missing) > 1 else ''})")
    extra = [k for k in given if k not in mine]
    if extra:
        raise InitFromError(f"{path}: {extra[0]} has no place in this model's {part_of(extra[0])} "
                            f"(another architecture)")
    for k in wanted:
        if state[k].shape != mine[k].shape:
            raise InitFromError(f"{path}: {k} is {_shape(state[k])} in the checkpoint but {_shape(mine[k])} in this "
                                f"model (another architecture; load other parts, e.g. leave out query_embed when K "
                                f"differs)")
    return {k: state[k] for k in wanted}


def _ordered(parts: set[str]) -> list[str]:
    """``parts`` (names found in a state dict) in :data:`MODEL_PARTS` order, unknown names last."""
    return [p for p in MODEL_PARTS if p in parts] + sorted(parts - set(MODEL_PARTS))


def load_init_from(model: nn.Module, init: InitFromConfig) -> dict | None:
    """Load ``init.parts`` (None: every part of ``model``, and the source must have no other) from the finished
    run ``init.run`` into ``model`` (on the CPU, before it moves to its device); None when ``init.run`` is
    None. Returns the record for the new run's manifest: ``run``, ``parts``, ``config_hash`` (the source's,
    from its manifest), ``checkpoint``, ``checkpoint_sha256`` and ``epoch``."""
    if init.run is None:
        return None
    run = Path(init.run)
    parts = init.parts if init.parts is not None else model_parts(model)
    check_present(model, parts, "model.init_from.parts")
    ckpt, manifest, path, digest = read_source(run)
    state = ckpt["model"]
    if init.parts is None:
        other = sorted({part_of(k) for k in state} - set(parts))
        if other:
            raise InitFromError(f"{path}: holds part {other[0]!r}, which this model does not have; "
                                f"name the parts to load in model.init_from.parts")
    loaded = fit_parts(model, state, tuple(parts), path)
    model.load_state_dict({**model.state_dict(), **loaded})
    return {"run": str(run), "parts": list(parts), "config_hash": manifest.get("config_hash"),
            "checkpoint": str(path), "checkpoint_sha256": digest, "epoch": ckpt.get("epoch")}
