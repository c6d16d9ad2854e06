"""The run-directory contract: where a study's runs live, fixed file names, every file written atomically.

The one place that spells it (the engine, the gatherer, the study specification and the workflow's rules
all read it from here); torch-free, so reading a run directory or planning a workflow imports no torch.
The schema of every file is documented in docs/run-directory.md; checkpoints, the only torch files, are
written and read by :mod:`groupdetr.engine.checkpoint`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from groupdetr.errors import UsageError

__all__ = ["CONFIG", "MANIFEST", "LOG", "METRICS", "CHECKPOINT", "EVAL_DIR", "RUN_FILES", "run_dir", "eval_file",
           "is_run_file", "check_eval_out", "umask", "file_mode", "dir_mode", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "append_jsonl", "read_jsonl"]

CONFIG, MANIFEST, LOG, METRICS, CHECKPOINT, EVAL_DIR = (
    "config.yaml", "manifest.json", "log.jsonl", "metrics.json", "checkpoint.pth", "eval")
#: the files of a run directory that only ``groupdetr train`` writes (an evaluation writes under ``eval/``)
RUN_FILES = (CONFIG, MANIFEST, LOG, METRICS, CHECKPOINT)


def run_dir(runs: str | Path, study: str, variant: str, seed: int | str) -> Path:
    """The run directory of one (study, variant, seed): ``{runs}/{study}/{variant}/seed{seed}`` (``seed`` may be
    a wildcard such as ``"{seed}"``)."""
    return Path(runs) / study / variant / f"seed{seed}"


def eval_file(run: str | Path, name: str) -> Path:
    """The file of the extra evaluation ``name`` of a finished run (``groupdetr eval --out``)."""
    return Path(run) / EVAL_DIR / f"{name}.json"


def is_run_file(path: str | Path) -> bool:
    """Whether ``path`` is one of a run directory's own files (:data:`RUN_FILES`): such a name in a folder
    that holds any of them. Only ``groupdetr train`` writes those."""
    path = Path(path)
    return path.name in RUN_FILES and any((path.parent / name).exists() for name in RUN_FILES)


def check_eval_out(out: str | Path, checkpoint: str | Path) -> Path:
    """``out`` of an evaluation of ``checkpoint``, refused (UsageError, one line) when writing it would
    destroy something: an existing folder, the checkpoint itself, or a run directory's own file (a finished
    run's ``metrics.json`` is the result of its training, not of an extra evaluation)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the result file, e.g. {eval_file(out, 'name')}")
    if is_run_file(out):
        raise UsageError(f"--out {out} is a file of the run directory {out.parent} (only `groupdetr train` writes "
                         f"{', '.join(RUN_FILES)}); write the evaluation elsewhere, e.g. {eval_file(out.parent, 'name')}")
    if out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise UsageError(f"--out {out} is the checkpoint being evaluated; name another file")
    return out


def umask() -> int:
    """The process's umask (read from /proc on Linux, which changes nothing; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a plain ``mkdir`` gives a new folder: 0o777 less the umask (``mkdtemp`` gives 0o700, which a
    folder renamed into place must not keep)."""
    return 0o777 & ~umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: readers
    see the old file or the new one, never a torn one, even if the process is killed. The file gets the
    mode a plain ``open()`` would give it (:func:`file_mode`), not ``mkstemp``'s private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, file_mode())
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
