"""Equal training time (paper Table 2): the longer schedule derived from finished runs' logged seconds, the file
`groupdetr train --set-from` reads, and their one-line refusals."""
from __future__ import annotations

import json

import pytest

from groupdetr import rundir as rd
from groupdetr.cli import main as cli_main
from groupdetr.config import ConfigError, load_config, read_override_file
from groupdetr.equal_time import equal_time_schedule, train_seconds, write_schedule
from groupdetr.errors import RunError
from study_fixtures import make_run


def timed_run(path, seconds: list[float], lr_drop: int | None = None):
    """A finished fake run whose epochs took ``seconds`` to train (its schedule: len(seconds) epochs)."""
    extra = [] if lr_drop is None else [f"optim.lr_drop={lr_drop}"]
    make_run(path, extra, seed=0, ap=0.3, epochs=len(seconds))
    rows = rd.read_jsonl(path / rd.LOG)
    rd.write_jsonl(path / rd.LOG, [{**r, "seconds": s} for r, s in zip(rows, seconds)])
    return path


def test_the_schedule_matches_the_reference_time_rounded_up(tmp_path):
    # the paper's C-DETR numbers: 12 ep take 4.6 h at K = 1 and 5.6 h at K = 11 -> 14.6 epochs -> 15 (Table 2: 15 ep)
    to = [timed_run(tmp_path / f"k11_{s}", [5.6 / 12 * 3600] * 12, lr_drop=11) for s in range(2)]
    measured = [timed_run(tmp_path / f"k1_{s}", [4.6 / 12 * 3600 * (1 + 0.01 * (s - 0.5) * 2)] * 12, lr_drop=11)
                for s in range(2)]
    schedule = equal_time_schedule(to, measured)
    assert schedule["overrides"] == {"optim.epochs": 15, "optim.lr_drop": 14}  # the drop keeps its distance from the end
    d = schedule["derived"]
    assert d["T_to"] == pytest.approx(5.6 * 3600) and d["t_measured_per_epoch"] == pytest.approx(4.6 / 12 * 3600)
    assert d["epochs_to_match"] == pytest.approx(14.61, abs=0.01) and (d["E"], d["lr_drop_at_E"]) == (12, 11)
    assert [r["run"] for r in d["to"]] == [str(r) for r in to] and d["measured_on"][0]["epochs"] == 12


def test_the_schedule_is_never_shorter_and_exact_ratios_do_not_round_up(tmp_path):
    fast = timed_run(tmp_path / "fast", [1.0, 1.0, 1.0, 1.0], lr_drop=3)
    slow = timed_run(tmp_path / "slow", [2.0, 2.0, 2.0, 2.0], lr_drop=3)
    assert equal_time_schedule([fast], [slow])["overrides"] == {"optim.epochs": 4, "optim.lr_drop": 3}  # not 2
    assert equal_time_schedule([slow], [fast])["overrides"] == {"optim.epochs": 8, "optim.lr_drop": 7}  # exactly 8
    assert train_seconds(slow) == (8.0, 4)
    no_drop = timed_run(tmp_path / "no_drop", [1.0] * 4, lr_drop=100)  # no drop within 4 epochs: none within 8 either
    assert equal_time_schedule([slow], [no_drop])["overrides"] == {"optim.epochs": 8, "optim.lr_drop": 104}


def test_unusable_runs_are_one_line(tmp_path):
    run = timed_run(tmp_path / "r", [1.0, 1.0])
    (run / rd.METRICS).unlink()
    with pytest.raises(RunError, match="metrics.json: missing; the training time of an unfinished run is not known"):
        train_seconds(run)
    short = timed_run(tmp_path / "short", [1.0, 1.0])
    rd.write_jsonl(short / rd.LOG, rd.read_jsonl(short / rd.LOG)[:1])
    with pytest.raises(RunError, match="log.jsonl: expected the training seconds of 2 epochs, found 1 of 1"):
        train_seconds(short)
    a, b = timed_run(tmp_path / "a", [1.0] * 2, lr_drop=1), timed_run(tmp_path / "b", [1.0] * 3, lr_drop=2)
    with pytest.raises(RunError, match="the measured runs have different schedules"):
        equal_time_schedule([a], [a, b])


def test_the_schedule_file_is_what_train_set_from_reads(tmp_path, capsys):
    to, measured = timed_run(tmp_path / "to", [3.0] * 3), timed_run(tmp_path / "m", [2.0] * 3)
    out = tmp_path / "schedule.yaml"
    assert cli_main(["equal-time", "--to", str(to), "--measured-on", str(measured), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: optim.epochs=5 optim.lr_drop=")
    assert read_override_file(out) == ["optim.epochs=5", "optim.lr_drop=17"]  # cpu_small drops after 15 of 20 ...
    assert cli_main(["config", "-c", "cpu_study", "--set", "optim.epochs=3", "--set-from", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "  epochs: 5\n" in shown and "  lr_drop: 17\n" in shown  # after --set
    write_schedule({"overrides": {"optim.epocs": 5}}, out)
    assert cli_main(["config", "-c", "cpu_small", "--set-from", str(out)]) == 2
    assert "did you mean 'optim.epochs'" in capsys.readouterr().err
    out.write_text(json.dumps({"optim.epochs": 5}))
    with pytest.raises(ConfigError, match="expected a mapping 'overrides' of dotted keys to values"):
        read_override_file(out)
    with pytest.raises(ConfigError, match="no such file"):
        load_config("cpu_small", read_override_file(tmp_path / "none.yaml"))
    assert cli_main(["equal-time", "--to", str(tmp_path / "none"), "--measured-on", str(measured), "--out",
                     str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
