"""Tiny fixtures for the run-directory fault tests (issue 14, items 2-4): a rendered benchmark of 16 + 8
scenes at 64 px, a 2-epoch run of the tiny model on it (seconds, in-process), copies of it in any state.

Imported by each test module of this folder (not a conftest: ``tests/conftest.py`` is imported as
``conftest`` by other modules, and a second one would shadow it).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import TINY
from groupdetr import rundir as rd
from groupdetr.cli import main
from groupdetr.config import load_config

#: what the tests read of a run: every file but the timings of log.jsonl (they differ between two runs)
TIMING_KEYS = {"seconds", "eval_seconds", "peak_memory_mib"}


def overrides(root: Path, **kv) -> list[str]:
    """The tiny run: K = 3, d 32, 2 decoder layers, 7 queries per group, 2 epochs of 2 iterations of batch 4,
    evaluated after the last epoch only; ``kv`` as in ``tests/conftest.tiny_config``."""
    extra = [f"{k.replace('__', '.')}={v}" for k, v in kv.items()]
    return TINY + ["model.num_classes=9", "model.num_groups=3", f"data.root={root}", "data.image_size=64",
                   "optim.epochs=2", "optim.batch_size=4", "train.max_iters_per_epoch=2", "train.eval_every=2",
                   "train.log_every=100"] + extra


def config(root: Path, **kv):
    return load_config("cpu_small", overrides(root, **kv))


def train_argv(out: Path, root: Path, *extra: str, **kv) -> list[str]:
    """``groupdetr train`` of the tiny run into ``out`` (arguments for :func:`groupdetr.cli.main`)."""
    argv = ["train", "-c", "cpu_small", "--out", str(out)]
    for o in overrides(root, **kv):
        argv += ["--set", o]
    return argv + list(extra)


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of ``groupdetr ARGV`` in this process (stdout dropped)."""
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def one_line_refusal(rc: int, err: str, *fragments: str) -> None:
    """A refusal: exit code 2 and one line ``groupdetr: ...`` holding every fragment (log lines of the
    run before it, if any, come first)."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert rc == 2, err
    assert last.startswith("groupdetr: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in last, (f, last)


def contents(run: Path) -> dict[str, bytes]:
    """Every file under ``run`` (relative name -> bytes)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def log_without_timings(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rd.read_jsonl(run / rd.LOG)]


def copy_run(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of run ``src`` at ``dst`` without the files ``drop`` (e.g. ``metrics.json``: a run killed after
    its last checkpoint, which the same command finishes without training)."""
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from groupdetr.synth.writer import generate

    root = tmp_path_factory.mktemp("faults") / "synth"
    cfg = load_config("cpu_small", ["data.synth.num_train=16", "data.synth.num_val=8", "data.image_size=64"])
    generate(cfg.data, root, workers=1)
    return root


@pytest.fixture(scope="module")
def finished(synth_root, tmp_path_factory):
    """A finished tiny run (read it, never write it: copy it with :func:`copy_run`)."""
    from groupdetr.engine.trainer import train

    run = tmp_path_factory.mktemp("finished") / "run"
    train(config(synth_root), run)
    return run
