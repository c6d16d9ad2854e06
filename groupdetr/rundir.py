"""The run-directory contract: where a study's runs live, fixed file names, every file written atomically.

The one place that spells it (the engine, the gatherer, the study specification and the workflow's rules
all read it from here); torch-free, so reading a run directory or planning a workflow imports no torch.
The schema of every file is documented in docs/run-directory.md; checkpoints, the only torch files, are
written and read by :mod:`groupdetr.engine.checkpoint`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from groupdetr.errors import RunError, UsageError, first_line

__all__ = ["CONFIG", "MANIFEST", "LOG", "METRICS", "CHECKPOINT", "CHECKSUM", "EVAL_DIR", "LOCK", "RUN_FILES", "TENSORBOARD",
           "DETECTIONS", "run_dir", "eval_file", "detections_file", "write_detections", "run_detections", "is_run_name",
           "is_run_file", "check_eval_out", "umask", "file_mode", "dir_mode", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "append_jsonl", "write_jsonl", "read_jsonl", "read_jsonl_records", "read_json",
           "is_temporary", "stale_temporaries", "remove_stale_temporaries", "run_entries", "RunBusy", "run_lock"]

CONFIG, MANIFEST, LOG, METRICS, CHECKPOINT, EVAL_DIR = (
    "config.yaml", "manifest.json", "log.jsonl", "metrics.json", "checkpoint.pth", "eval")
#: the sha256 of ``checkpoint.pth``, recorded when it is written (``sha256sum -c`` format)
CHECKSUM = CHECKPOINT + ".sha256"
#: the lock file: held (``flock``) by the process writing the run directory, removed when it lets go
LOCK = ".lock"
#: the files of a run directory that only ``groupdetr train`` writes (an evaluation writes under ``eval/``)
RUN_FILES = (CONFIG, MANIFEST, LOG, METRICS, CHECKPOINT, CHECKSUM)
#: the folder of a run's TensorBoard event files (``groupdetr train``, rank 0; ``tensorboard --logdir``)
TENSORBOARD = "tensorboard"
#: the detections of training's final evaluation (the one ``metrics.json`` holds), one file per kind of
#: result: ``bbox``, ``segm`` (COCO results), ``3d`` (:mod:`groupdetr.evaluation.det3d`)
DETECTIONS = "detections.{kind}.json"
_RUN_DETECTIONS = re.compile(r"^detections\.[A-Za-z0-9_]+\.json$")
#: the suffix of an atomic write's temporary file (``.<name>.<8 random characters>.tmp`` beside ``<name>``)
TMP_SUFFIX = ".tmp"


def run_dir(runs: str | Path, study: str, variant: str, seed: int | str) -> Path:
    """The run directory of one (study, variant, seed): ``{runs}/{study}/{variant}/seed{seed}`` (``seed`` may be
    a wildcard such as ``"{seed}"``)."""
    return Path(runs) / study / variant / f"seed{seed}"


def eval_file(run: str | Path, name: str) -> Path:
    """The file of the extra evaluation ``name`` of a finished run (``groupdetr eval --out``)."""
    return Path(run) / EVAL_DIR / f"{name}.json"


def detections_file(stats: str | Path, kind: str) -> Path:
    """Where the detections of the evaluation whose stats are in file ``stats`` go, one file per ``kind``
    (``bbox``, ``segm``, ``3d``), beside it: ``detections.<kind>.json`` beside ``metrics.json`` (training's
    final evaluation), ``<stem>.detections.<kind>.json`` beside any other (``eval/group0.json`` ->
    ``eval/group0.detections.bbox.json``)."""
    stats = Path(stats)
    if stats.name == METRICS:
        return stats.with_name(DETECTIONS.format(kind=kind))
    stem = stats.name[:-len(".json")] if stats.name.endswith(".json") else stats.name
    return stats.with_name(f"{stem}.detections.{kind}.json")


def write_detections(stats: str | Path, detections: dict[str, list]) -> list[Path]:
    """Write each kind's results list (``{kind: [result, ...]}``) to its :func:`detections_file` beside
    ``stats``, atomically, as compact JSON (about 145 bytes a box detection: 100 per image make 7 MB for 500
    images). Returns the files. Write them before the stats file: a stats file means its detections are there."""
    files = []
    for kind, results in detections.items():
        path = detections_file(stats, kind)
        atomic_write_text(path, json.dumps(results, separators=(",", ":")))
        files.append(path)
    return files


def run_detections(run: str | Path) -> list[Path]:
    """The :data:`DETECTIONS` files of training's final evaluation in run directory ``run``."""
    run = Path(run)
    return sorted(p for p in run.iterdir() if p.is_file() and _RUN_DETECTIONS.match(p.name)) if run.is_dir() else []


def is_run_name(name: str) -> bool:
    """Whether ``name`` is one that only ``groupdetr train`` writes in a run directory: :data:`RUN_FILES`
    and the :data:`DETECTIONS` of its final evaluation."""
    return name in RUN_FILES or _RUN_DETECTIONS.match(name) is not None


def is_run_file(path: str | Path) -> bool:
    """Whether ``path`` is one of a run directory's own files (:func:`is_run_name`): such a name in a folder
    that holds any of :data:`RUN_FILES`. Only ``groupdetr train`` writes those."""
    path = Path(path)
    return is_run_name(path.name) and any((path.parent / name).exists() for name in RUN_FILES)


def check_eval_out(out: str | Path, checkpoint: str | Path) -> Path:
    """``out`` of an evaluation of ``checkpoint``, refused (UsageError, one line) when writing it would
    destroy something: an existing folder, the checkpoint itself, or a run directory's own file (a finished
    run's ``metrics.json`` is the result of its training, not of an extra evaluation)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the result file, e.g. {eval_file(out, 'name')}")
    if is_run_file(out):
        raise UsageError(f"--out {out} is a file of the run directory {out.parent} (only `groupdetr train` writes "
                         f"{', '.join(RUN_FILES)}, {DETECTIONS.format(kind='<kind>')}); write the evaluation "
                         f"elsewhere, e.g. {eval_file(out.parent, 'name')}")
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
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
    write_jsonl(path, [*rows, record])


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSON lines, atomically (the whole file is replaced)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _damaged(path: Path, why: str) -> RunError:
    return RunError(f"{path} is damaged ({why})")


def read_jsonl_records(path: Path) -> tuple[list[dict], str | None]:
    """The records of a JSON-lines file (none when it does not exist) and its torn last line: the text of
    a last line that is not a JSON object (a write cut short), else None. A bad line before the last is
    damage, not a cut: RunError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return [], None
    lines = [(n, line) for n, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1)
             if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row = e
        if not isinstance(row, dict):
            if i == len(lines) - 1:
                return rows, line
            why = first_line(row) if isinstance(row, Exception) else f"a {type(row).__name__}, not an object"
            raise _damaged(path, f"line {n} is not a JSON record: {why}")
        rows.append(row)
    return rows, None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (none when it does not exist); a torn last line is a RunError
    naming the file (the trainer repairs one before resuming: :func:`read_jsonl_records`)."""
    rows, torn = read_jsonl_records(path)
    if torn is not None:
        raise _damaged(path, f"its last line is cut short: {torn[:40]!r}")
    return rows


def read_json(path: Path) -> dict:
    """A JSON object file of the run directory; a torn or damaged one is a RunError naming it (one line)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _damaged(path, f"not valid JSON: {first_line(e)}") from None
    if not isinstance(obj, dict):
        raise _damaged(path, f"a JSON {type(obj).__name__}, not an object")
    return obj


# ---------------------------------------------------------------------------------------------
# what a kill leaves: temporaries of atomic writes cut short, a lock file nobody holds

#: ``.<name>.<mkstemp's 8 characters>`` with or without :data:`TMP_SUFFIX` (files written before it existed)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(\.tmp)?$")


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is the temporary file of an atomic write of one of the run directory's files: of
    a run file's name (:func:`is_run_name`) in the run directory, of a ``*.json`` in its ``eval/`` folder."""
    path = Path(path)
    m = _TEMPORARY.match(path.name)
    if m is None:
        return False
    if path.parent.name == EVAL_DIR:
        return m["name"].endswith(".json")
    return is_run_name(m["name"])


def stale_temporaries(run: str | Path) -> list[Path]:
    """The temporaries of :func:`is_temporary` in ``run`` and its ``eval/`` folder. Only the holder of the
    run's lock alone may call them stale (:func:`remove_stale_temporaries`)."""
    run = Path(run)
    found = []
    for folder in (run, run / EVAL_DIR):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file() and is_temporary(p))
    return found


def remove_stale_temporaries(run: str | Path) -> list[Path]:
    """Remove the temporaries of atomic writes cut short by a kill (:func:`stale_temporaries`); returns them.
    Call it holding :func:`run_lock` exclusively: a live writer's temporary is not stale."""
    found = stale_temporaries(run)
    for p in found:
        p.unlink(missing_ok=True)
    return found


def run_entries(run: str | Path) -> list[str]:
    """The names in ``run`` that a kill cannot have left there: everything but the lock file and the
    temporaries of atomic writes. A folder whose only entries are those is empty to a new run."""
    run = Path(run)
    if not run.is_dir():
        return []
    return sorted(p.name for p in run.iterdir() if p.name != LOCK and not (p.is_file() and is_temporary(p)))


# ---------------------------------------------------------------------------------------------
# one writer at a time


class RunBusy(RunError):
    """Another process holds the run directory's lock; the message names it (one line)."""


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its holder wrote it (best effort: the file may be empty or gone)."""
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "an evaluation or a process that has not said who it is"
    return f"pid {info.get('pid')} on {info.get('host')}, {info.get('what')} since {info.get('since')}"


def _flock(fd: int, shared: bool) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _open_locked(lock: Path, shared: bool) -> int | None:
    """An open descriptor of ``lock`` holding ``flock`` (shared or exclusive), or None when another process
    holds a conflicting lock. Retries when the file was removed or replaced between open and lock (its
    last holder removes it on the way out), so two processes never hold locks on different files."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
        if not _flock(fd, shared):
            os.close(fd)
            return None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(run: str | Path, what: str = "training", shared: bool = False) -> Iterator[Path]:
    """Hold the lock of run directory ``run`` (created if absent) for the ``with`` block, or refuse with
    :class:`RunBusy` (one line naming the holder) at once when another process holds it.

    Exclusive for a writer of the run's files (``groupdetr train``); ``shared`` for readers that write only
    their own files (``groupdetr eval``: several at once, never beside a writer; in a folder it may not
    write to, a reader goes on without the lock). The lock is ``flock`` on
    :data:`LOCK` in ``run``: the kernel lets go when its holder dies, so a killed process's lock never blocks
    (its file may stay behind, and means nothing). The last holder removes the file, and folders this call
    created are removed again if they are left empty (a refused command leaves nothing behind)."""
    run = Path(run)
    created = []
    for folder in (run, *run.parents):
        if folder.exists():
            break
        created.append(folder)
    lock = run / LOCK
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(lock, shared)
    except OSError as e:
        if not shared or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield lock  # a reader of a folder it cannot write to (a read-only copy of a run) reads it unlocked
        return
    if fd is None:
        _remove_empty(created)
        raise RunBusy(f"{run} is in use by another groupdetr process ({_holder(lock)}); wait for it to finish "
                      f"or stop it (a killed process's lock does not count)")
    try:
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                     "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}).encode())
        yield lock
    finally:
        # unlink only while holding it alone: a shared holder upgrades, and leaves the file to the others if
        # it cannot (a lock file nobody holds is harmless)
        if shared and not _flock(fd, False):
            os.close(fd)
        else:
            lock.unlink(missing_ok=True)
            os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
