"""One writer per run directory (issue 14, item 2).

Before: ``groupdetr train --restart`` with another config into a directory where a run was training went
ahead; the first run kept writing, and the directory ended with the K=2 config.yaml and manifest beside the
K=3 run's checkpoint, log and metrics, reported "finished". Now the run directory's lock (``flock`` on
``RUN/.lock``, docs/run-directory.md) refuses a second writer with one line while the first holds it, and
the lock of a killed process does not block.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from groupdetr import rundir as rd
from run_fixtures import (config, contents, copy_run, finished, one_line_refusal, run_cli, synth_root,  # noqa: F401
                          train_argv)


def _hold(run, kind):
    """Hold ``RUN/.lock`` as the contract spells it (``flock``, exclusive for a writer, shared for a reader),
    through a descriptor of this test's own."""
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, kind | fcntl.LOCK_NB)
    return fd


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,))  # a run the same command would continue
    before = contents(run)
    fd = _hold(run, fcntl.LOCK_EX)
    try:
        for extra, kv in ((["--restart"], {"model__num_groups": 2}), ([], {})):  # another config; the same command
            rc, err = run_cli(capsys, train_argv(run, synth_root, *extra, **kv))
            one_line_refusal(rc, err, f"{run} is in use by another groupdetr process")
        rc, err = run_cli(capsys, ["eval", str(run), "--group", "1"])  # a reader waits for the writer too
        one_line_refusal(rc, err, "is in use")
    finally:
        os.close(fd)
    after = contents(run)
    assert after.pop(".lock") == b"" and after == before  # the holder's lock file is the holder's business


def test_readers_share_the_directory_and_keep_writers_out(finished, synth_root, tmp_path, capsys):
    from groupdetr.engine.evaluate_run import evaluate_run

    run = copy_run(finished, tmp_path / "run")
    fd = _hold(run, fcntl.LOCK_SH)  # an evaluation in progress
    try:
        assert evaluate_run(run, group=1)["eval_group"] == 1  # a second evaluation goes on beside it
        rc, err = run_cli(capsys, train_argv(run, synth_root, "--restart", model__num_groups=2))
        one_line_refusal(rc, err, "is in use by another groupdetr process")
        assert "num_groups: 3" in (run / rd.CONFIG).read_text()
        assert run_cli(capsys, train_argv(run, synth_root))[0] == 0  # a finished run is only read
    finally:
        os.close(fd)


def test_the_lock_of_a_killed_process_does_not_block(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from groupdetr import rundir as rd\n"
                               "with rd.run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        rc, err = run_cli(capsys, train_argv(run, synth_root))
        one_line_refusal(rc, err, "is in use", f"pid {holder.pid} on ", "training since ")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / rd.LOCK).is_file()  # left behind by the kill, held by nobody
    assert run_cli(capsys, train_argv(run, synth_root))[0] == 0
    assert (run / rd.METRICS).is_file() and not (run / rd.LOCK).exists()


def test_a_stale_lock_file_leaves_a_finished_run_finished(finished, synth_root, tmp_path):
    from groupdetr.engine.trainer import check_run_dir

    run = copy_run(finished, tmp_path / "run")
    (run / rd.LOCK).write_text('{"pid": 1, "what": "training"}')  # a kill between metrics.json and letting go
    assert check_run_dir(run, config(synth_root), restart=False) == "finished"
    assert rd.run_entries(run) == sorted(p.name for p in finished.iterdir())


def test_the_lock_leaves_no_trace(tmp_path):
    new = tmp_path / "a" / "b" / "run"
    with rd.run_lock(new) as lock:
        assert lock == new / ".lock" and lock.is_file()
        with pytest.raises(rd.RunBusy, match=f"{new} is in use by another groupdetr process \\(pid {os.getpid()} "):
            with rd.run_lock(new, shared=True):
                pass
    assert not (tmp_path / "a").exists()  # the folders it made, empty again, are gone
    new.mkdir(parents=True)
    (new / "kept.txt").write_text("x")
    with rd.run_lock(new, shared=True):
        with rd.run_lock(new, shared=True):  # readers share
            pass
    assert [p.name for p in new.iterdir()] == ["kept.txt"]
