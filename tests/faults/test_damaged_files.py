"""Damaged files of a run directory are refused with one line naming them (issue 14, item 4).

Before: a zero-byte checkpoint crashed the error handler itself (IndexError, in train and eval); 64 flipped
bytes inside a weight tensor loaded silently and the run finished with other weights; a torn log.jsonl,
manifest.json or metrics.json was a JSON traceback; temporaries of atomic writes cut short stayed forever.
"""
from __future__ import annotations

import json
import zipfile

import pytest
import torch

from groupdetr import rundir as rd
from groupdetr.engine.checkpoint import CheckpointDamaged, load_checkpoint, save_checkpoint
from groupdetr.errors import RunError
from run_fixtures import (contents, copy_run, finished, log_without_timings, one_line_refusal, run_cli,  # noqa: F401
                          synth_root, train_argv)


def _flip_inside_a_tensor(path, count=64):
    """Flip ``count`` bytes in the middle of the largest tensor's storage of the checkpoint ``path``:
    the zip's structure stays whole."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    header = info.header_offset
    name_len, extra_len = int.from_bytes(raw[header + 26:header + 28], "little"), int.from_bytes(raw[header + 28:header + 30], "little")
    start = header + 30 + name_len + extra_len + info.file_size // 2
    for i in range(start, start + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("command", ["train", "eval"])
def test_an_empty_checkpoint_is_one_line(finished, synth_root, tmp_path, capsys, command):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,) if command == "train" else ())
    (run / rd.CHECKPOINT).write_bytes(b"")
    (run / rd.CHECKSUM).unlink()  # not even the record helps: the load itself must not crash
    before = contents(run)
    argv = train_argv(run, synth_root) if command == "train" else ["eval", str(run), "--group", "0"]
    rc, err = run_cli(capsys, argv)
    one_line_refusal(rc, err, f"{run / rd.CHECKPOINT} cannot be loaded", "(the file is empty)")
    assert contents(run) == before


def test_flipped_bytes_in_a_weight_tensor_are_refused(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,))
    _flip_inside_a_tensor(run / rd.CHECKPOINT)
    before = contents(run)
    for argv in (train_argv(run, synth_root), ["eval", str(run), "--group", "0"]):
        rc, err = run_cli(capsys, argv)
        one_line_refusal(rc, err, f"{run / rd.CHECKPOINT} cannot be loaded",
                         f"is not the {(finished / rd.CHECKSUM).read_text()[:12]}... recorded in {rd.CHECKSUM}")
    assert contents(run) == before
    # the control: torch alone loads the damaged file without a word, with other weights
    damaged = torch.load(run / rd.CHECKPOINT, weights_only=True)["model"]
    good = load_checkpoint(finished / rd.CHECKPOINT)["model"]
    assert damaged.keys() == good.keys() and any(not torch.equal(damaged[k], good[k]) for k in good)


def test_the_checksum_record_follows_every_write(tmp_path):
    path = tmp_path / rd.CHECKPOINT
    save_checkpoint(path, {"w": torch.ones(3)})
    save_checkpoint(path, {"w": torch.zeros(3)})
    assert load_checkpoint(path)["w"].sum() == 0
    record = (tmp_path / rd.CHECKSUM).read_text().splitlines()
    assert len(record) == 1 and record[0].endswith(f"  {rd.CHECKPOINT}")  # sha256sum -c reads it
    (tmp_path / rd.CHECKSUM).write_text("not a record\n")
    with pytest.raises(CheckpointDamaged, match=f"its checksum record {rd.CHECKSUM} is damaged"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "plain.pth", {"w": torch.ones(1)}, checksum=False)  # the pretraining cache's
    assert not (tmp_path / "plain.pth.sha256").exists() and load_checkpoint(tmp_path / "plain.pth")["w"] == 1


@pytest.mark.parametrize("name, torn", [(rd.MANIFEST, '{\n "command": ["groupdetr", "tr'),
                                        (rd.METRICS, '{"epoch": 2, "bb')])
def test_torn_json_files_are_one_line(finished, synth_root, tmp_path, capsys, name, torn):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,) if name == rd.MANIFEST else ())
    (run / name).write_text(torn)
    before = contents(run)
    rc, err = run_cli(capsys, train_argv(run, synth_root))
    one_line_refusal(rc, err, f"{run / name} is damaged (not valid JSON: ", "pass --restart to start over")
    assert contents(run) == before


def test_a_torn_last_log_line_past_the_checkpoint_is_dropped_on_resume(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,))
    with open(run / rd.LOG, "a") as f:
        f.write('{"epoch": 3, "lo')  # cut short
    assert run_cli(capsys, train_argv(run, synth_root))[0] == 0
    assert log_without_timings(run) == log_without_timings(finished)
    assert json.loads((run / rd.METRICS).read_text()) == json.loads((finished / rd.METRICS).read_text())


def test_a_torn_log_line_the_run_needs_is_refused(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,))
    lines = (run / rd.LOG).read_text().splitlines()
    (run / rd.LOG).write_text(lines[0] + "\n" + lines[1][:30])  # epoch 2, the checkpoint's, cut short
    before = contents(run)
    rc, err = run_cli(capsys, train_argv(run, synth_root))
    one_line_refusal(rc, err, f"{run / rd.LOG} is damaged (its last line is cut short", "before the checkpoint's epoch 2")
    (run / rd.LOG).write_text(lines[0][:30] + "\n" + lines[1] + "\n")  # a bad line before the last: damage
    rc, err = run_cli(capsys, train_argv(run, synth_root))
    one_line_refusal(rc, err, f"{run / rd.LOG} is damaged (line 1 is not a JSON record")
    (run / rd.LOG).write_text(before[rd.LOG].decode())
    assert contents(run) == before


def test_json_readers_name_the_file(tmp_path):
    path = tmp_path / rd.LOG
    path.write_text('{"epoch": 1}\n{"epoch": 2, "x"\n')
    assert rd.read_jsonl_records(path) == ([{"epoch": 1}], '{"epoch": 2, "x"')
    with pytest.raises(RunError, match=f"{path} is damaged \\(its last line is cut short"):
        rd.read_jsonl(path)
    path.write_text('[1]\n{"epoch": 2}\n')
    with pytest.raises(RunError, match="line 1 is not a JSON record: a list, not an object"):
        rd.read_jsonl(path)
    assert rd.read_jsonl(tmp_path / "absent.jsonl") == []
    (tmp_path / "m.json").write_bytes(b"\xff\xfe")
    with pytest.raises(RunError, match="m.json is damaged \\(not valid JSON"):
        rd.read_json(tmp_path / "m.json")


def test_stale_temporaries_are_removed_on_resume_and_only_they(finished, synth_root, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", drop=(rd.METRICS,))
    (run / rd.EVAL_DIR).mkdir()
    stale = [run / ".checkpoint.pth.k1llme_9.tmp", run / ".log.jsonl.abcd1234",  # with and without the suffix
             run / rd.EVAL_DIR / ".group1.json.zz9_0ab1.tmp"]
    kept = [run / ".notes.txt.abcd1234.tmp", run / "notes.txt", run / rd.EVAL_DIR / "group1.json"]
    for p in stale + kept:
        p.write_text("x")
    assert rd.stale_temporaries(run) == sorted(stale[:2]) + stale[2:]
    assert run_cli(capsys, train_argv(run, synth_root))[0] == 0
    assert not any(p.exists() for p in stale) and all(p.read_text() == "x" for p in kept)
    # a folder that holds no run is never cleaned: refused, untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / ".config.yaml.abcd1234.tmp").write_text("x")
    (other / "data.csv").write_text("x")
    rc, err = run_cli(capsys, train_argv(other, synth_root))
    one_line_refusal(rc, err, f"{other} is not empty and holds no run")
    assert sorted(p.name for p in other.iterdir()) == [".config.yaml.abcd1234.tmp", "data.csv"]
