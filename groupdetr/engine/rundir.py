"""The run-directory contract: fixed file names and schemas, every file written atomically.

The schema of every file is documented in one place: docs/run-directory.md.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["CONFIG", "MANIFEST", "LOG", "METRICS", "CHECKPOINT", "EVAL_DIR",
           "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "append_jsonl", "read_jsonl",
           "save_checkpoint", "load_checkpoint"]

CONFIG, MANIFEST, LOG, METRICS, CHECKPOINT, EVAL_DIR = (
    "config.yaml", "manifest.json", "log.jsonl", "metrics.json", "checkpoint.pth", "eval")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: readers
    see the old file or the new one, never a torn one, even if the process is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def append_jsonl(path: Path, record: dict, keep_epochs_below: int | None = None) -> None:
    """Append one record, rewriting the file atomically. ``keep_epochs_below`` first drops records
    of epochs >= it (after a resume, an epoch logged but not checkpointed is logged again)."""
    rows = read_jsonl(path)
    if keep_epochs_below is not None:
        rows = [r for r in rows if r.get("epoch", 0) < keep_epochs_below]
    rows.append(record)
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers only."""
    return torch.load(path, map_location="cpu", weights_only=True)
