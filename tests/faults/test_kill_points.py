"""A kill at any point leaves a directory that the same command resumes or starts cleanly (issue 14, item 3).

Before: killed while config.yaml was written, the rerun was refused ("not empty and holds no run"); killed
between config.yaml and manifest.json, every rerun was a FileNotFoundError; an unreadable config.yaml was
refused even with --restart, which the refusal itself recommends.

The kills are simulated: one uninterrupted run records the run directory as a kill would leave it inside and
after every atomic write (a temporary file half written beside the files written so far, the lock file held
by nobody) and after every removal of ``--restart``; each state is then rebuilt in a fresh folder and the
same command run on it, in this process. It must finish with the uninterrupted run's weights, log and
metrics (CPU training is exactly resumable, tests/test_engine.py).
"""
from __future__ import annotations

import json
import pathlib
from pathlib import Path

import pytest
import torch

from groupdetr import rundir as rd
from groupdetr.engine.checkpoint import load_checkpoint
from groupdetr.engine.trainer import train
from run_fixtures import (config, contents, copy_run, finished, log_without_timings, one_line_refusal, run_cli,  # noqa: F401
                          synth_root, train_argv)


def _snapshot(run: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``run``."""
    return {str(p.relative_to(run)): (p.read_bytes() if p.is_file() else None) for p in sorted(run.rglob("*"))}


def _rebuild(state: dict[str, bytes | None], run: Path) -> Path:
    run.mkdir(parents=True)
    for name, data in state.items():
        if data is None:
            (run / name).mkdir(parents=True, exist_ok=True)
        else:
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_bytes(data)
    return run


def _record_kill_points(monkeypatch, run: Path, go) -> list[tuple[str, dict]]:
    """``(label, state)`` of each point where a kill could stop ``go()`` writing ``run``: inside each atomic
    write (its temporary half written; the first one also just created), after it, and after each file
    removal in the run directory."""
    states: list[tuple[str, dict]] = []
    real_write, real_unlink = rd.atomic_write_bytes, pathlib.Path.unlink
    count: dict[str, int] = {}

    def write(path, data):
        path = Path(path)
        name = str(path.relative_to(run))
        count[name] = count.get(name, 0) + 1
        label = f"{name} #{count[name]}"
        before = _snapshot(run) if run.exists() else {}
        tmp = str(path.with_name(f".{path.name}.k1ll3d00{rd.TMP_SUFFIX}").relative_to(run))
        if not states:
            states.append((f"before anything but the lock, {label}", before))
            states.append((f"inside {label}, temporary just created", {**before, tmp: b""}))
        states.append((f"inside {label}, temporary half written", {**before, tmp: bytes(data[:len(data) // 2])}))
        real_write(path, data)
        states.append((f"after {label}", _snapshot(run)))

    def unlink(self, missing_ok=False):
        existed = self.exists()
        real_unlink(self, missing_ok=missing_ok)
        if existed and run in self.parents and self.name != rd.LOCK:
            states.append((f"after removing {self.relative_to(run)}", _snapshot(run)))

    with monkeypatch.context() as m:
        m.setattr(rd, "atomic_write_bytes", write)
        m.setattr(pathlib.Path, "unlink", unlink)
        go()
    return states


def _weights(run: Path) -> dict:
    return load_checkpoint(run / rd.CHECKPOINT)["model"]


def _resumes_to(reference: Path, states, tmp_path: Path, go) -> None:
    """Rebuild each state, run ``go(run)`` on it, and compare with ``reference``; every failure is listed."""
    ref_metrics, ref_log, ref_weights = json.loads((reference / rd.METRICS).read_text()), log_without_timings(reference), _weights(reference)
    failures = []
    for i, (label, state) in enumerate(states):
        run = _rebuild(state, tmp_path / f"kill{i}")
        try:
            metrics = go(run)
            weights = _weights(run)
            ok = (metrics == ref_metrics == json.loads((run / rd.METRICS).read_text())
                  and log_without_timings(run) == ref_log and all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
                  and rd.run_entries(run) == sorted(p.name for p in reference.iterdir())
                  and not rd.stale_temporaries(run) and not (run / rd.LOCK).exists())
            if not ok:
                failures.append(f"{label}: finished with other results or files ({sorted(p.name for p in run.iterdir())})")
        except Exception as e:  # noqa: BLE001 - every kill point is reported, not only the first
            failures.append(f"{label}: {type(e).__name__}: {e}")
    assert failures == []


@pytest.mark.slow
def test_the_same_command_resumes_after_a_kill_at_any_point(synth_root, tmp_path, monkeypatch):
    cfg = config(synth_root)
    straight = tmp_path / "straight"
    states = _record_kill_points(monkeypatch, straight, lambda: train(cfg, straight))
    labels = [label for label, _ in states]
    assert {"inside config.yaml #1, temporary half written", "after config.yaml #1",  # killed before the manifest
            "inside checkpoint.pth #2, temporary half written", "after checkpoint.pth.sha256 #3",
            "inside metrics.json #1, temporary half written"} <= set(labels)
    assert "inside detections.bbox.json #1, temporary half written" in labels  # the final evaluation's
    # config, manifest, 2 x (log, record, checkpoint, record), detections, metrics
    assert len(labels) == 2 + 2 * 12
    _resumes_to(straight, states, tmp_path, lambda run: train(cfg, run))


@pytest.mark.slow
def test_restart_starts_over_after_a_kill_at_any_point(finished, synth_root, tmp_path, monkeypatch):
    """``--restart`` into a finished run of another config (K=2, with an evaluation), killed while clearing
    it or writing the new run's first files; the same ``--restart`` command starts over every time."""
    cfg = config(synth_root)
    other = tmp_path / "other"
    train(config(synth_root, model__num_groups=2), other)
    rd.atomic_write_json(rd.eval_file(other, "group1"), {"bbox/AP": 0.0})
    states = _record_kill_points(monkeypatch, other, lambda: train(cfg, other, restart=True))
    labels = [label for label, _ in states]
    first_manifest = labels.index("after manifest.json #1")
    assert labels[:3] == ["after removing checkpoint.pth", "after removing checkpoint.pth.sha256", "after removing log.jsonl"]
    assert "after removing eval/group1.json" in labels and "after removing detections.bbox.json" in labels
    assert [label for label in labels if label.startswith("after removing")][-1] == "after removing config.yaml"
    _resumes_to(other, states[:first_manifest + 1], tmp_path, lambda run: train(cfg, run, restart=True))


def test_restart_starts_over_whatever_the_directory_holds(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    (run / rd.CONFIG).write_text("model: [unclosed\n")
    before = contents(run)
    rc, err = run_cli(capsys, train_argv(run, synth_root))
    one_line_refusal(rc, err, f"{run / rd.CONFIG} is not a readable groupdetr config", "pass --restart to start over")
    assert contents(run) == before
    assert run_cli(capsys, train_argv(run, synth_root, "--restart"))[0] == 0
    assert json.loads((run / rd.METRICS).read_text()) == json.loads((finished / rd.METRICS).read_text())


def test_a_config_without_a_manifest_beside_other_files_is_refused(finished, synth_root, tmp_path, capsys):
    """What no kill leaves (the manifest is written before anything else and removed after the rest): a
    config and a checkpoint without the manifest is refused, not resumed without provenance."""
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS, rd.MANIFEST))
    before = contents(run)
    rc, err = run_cli(capsys, train_argv(run, synth_root))
    one_line_refusal(rc, err, f"{run / rd.MANIFEST} is missing", "pass --restart")
    assert contents(run) == before
