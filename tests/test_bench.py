"""Smoke tests of ``groupdetr bench`` on a tiny cpu_small model (the figures themselves are not checked)."""
from __future__ import annotations

import json

import pytest
import torch

from groupdetr.cli import main

TINY = [
    "bench", "-c", "cpu_small",
    "--set", "model.num_queries=5", "--set", "model.hidden_dim=32", "--set", "model.nheads=2",
    "--set", "model.dim_feedforward=64", "--set", "model.enc_layers=1", "--set", "model.dec_layers=2",
    "--steps", "1", "--batch-size", "2", "--image-size", "64", "--device", "cpu",
    # One thread: with 2 cores shared with other processes, OpenMP threads oversubscribe badly.
    "--threads", "1",
]
TIMES = ("train_step_s", "forward_s", "matching_s", "loss_s", "backward_s", "optim_s", "eval_step_s")


@pytest.fixture(autouse=True)
def keep_num_threads():
    """``--threads`` sets torch's global thread count; restore it for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_in_process_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(TINY + ["--groups", "1", "2", "--no-subprocess", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert set(result["paired"]["eval_ratio"]) == {"separate", "shared"}
    assert all(t > 0 for t in result["paired"]["train_step_s"].values())
    assert set(result["paired"]["self_attention_s"]) == {"separate", "shared"}
    assert sorted((r["self_attention"], r["K"]) for r in rows) == [
        ("separate", 1), ("separate", 2), ("shared", 1), ("shared", 2)]
    for r in rows:
        assert r["total_queries"] == 5 * r["K"]
        assert all(r[key] > 0 for key in TIMES), r
        assert not r["rss_per_config"]
    assert all(r["eval_ratio"] == 1.0 for r in rows if r["K"] == 1)
    printed = capsys.readouterr().out
    assert "eval/K1" in printed and "goals" in printed


@pytest.mark.slow
def test_bench_worker_subprocess(tmp_path):
    out = tmp_path / "bench.json"
    assert main(TINY + ["--groups", "1", "--self-attention", "separate", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["self_attention"], row["K"], row["eval_ratio"]) == ("separate", 1, 1.0)
    assert row["rss_per_config"] and row["peak_rss_mib"] >= row["rss_after_build_mib"] > 0
    assert all(row[key] > 0 for key in TIMES)


@pytest.mark.parametrize("extra", [
    ["model.task=instance_segmentation", "model.mask_head.mask_dim=16"],
    ["model.task=detection_3d"],
    ["model.decoder=dab", "model.denoising.enabled=true"],
    ["model.decoder=dab_deformable"],
    ["model.decoder=dino", "model.denoising.enabled=true"],
])
def test_bench_runs_every_head_and_denoising(extra, tmp_path, capsys):
    """The random batch carries masks and 3D labels, so every task (and DN) is benchmarked alike."""
    out = tmp_path / "bench.json"
    sets = [a for kv in extra for a in ("--set", kv)]
    assert main(TINY + sets + ["--groups", "1", "2", "--self-attention", "separate", "--no-subprocess",
                               "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["K"] for r in rows] == [1, 2] and all(r["train_step_s"] > 0 for r in rows)
    cfg = dict(kv.split("=") for kv in extra)
    assert rows[0]["task"] == cfg.get("model.task", "detection")
    assert rows[0]["denoising"] == ("per_group" if "model.denoising.enabled" in cfg else "none")
    assert f"task {rows[0]['task']}" in capsys.readouterr().out


def test_bench_settings_are_the_options_typed():
    """The parser's defaults and the settings' defaults agree; lists become tuples."""
    import argparse

    from groupdetr.bench_args import BenchSettings, add_bench_args

    parser = argparse.ArgumentParser()
    add_bench_args(parser)
    assert BenchSettings.from_args(parser.parse_args([])) == BenchSettings()
    s = BenchSettings.from_args(parser.parse_args(["--groups", "2", "4", "--set", "model.num_queries=5", "--steps", "3"]))
    assert s.groups == (2, 4) and s.overrides == ("model.num_queries=5",) and s.steps == 3 and not s.worker



def test_amp_applies_on_cuda_only():
    from groupdetr import bench

    cfg = bench.resolve_config(bench.BenchSettings(overrides=("train.amp=true",)), 1, "separate")
    assert bench.amp_for(cfg, torch.device("cuda")) and not bench.amp_for(cfg, torch.device("cpu"))
    cfg = bench.resolve_config(bench.BenchSettings(), 1, "separate")
    assert not bench.amp_for(cfg, torch.device("cuda"))


def test_bench_hands_amp_to_the_train_step_and_the_eval_forward(monkeypatch, tmp_path):
    """With AMP on, the engine's train step gets amp=True and the eval forward runs under autocast, and the
    row says so (a bench that dropped ``train.amp`` timed fp32 under an AMP label). AMP is forced on CPU here,
    where autocast is a no-op, so only the plumbing is checked."""
    from groupdetr import bench

    seen = {"train": [], "eval": []}
    engine_step, real_autocast = bench.engine_train_step, bench.autocast
    monkeypatch.setattr(bench, "amp_for", lambda cfg, device: cfg.train.amp)
    monkeypatch.setattr(bench, "engine_train_step",
                        lambda *a, **kw: seen["train"].append(a[8]) or engine_step(*a, **kw))
    monkeypatch.setattr(bench, "autocast", lambda device, amp: seen["eval"].append(amp) or real_autocast(device, amp))
    out = tmp_path / "bench.json"
    for amp in ("false", "true"):
        seen["train"].clear(), seen["eval"].clear()
        assert main(TINY + ["--set", f"train.amp={amp}", "--groups", "1", "--self-attention", "separate",
                            "--no-subprocess", "--json", str(out)]) == 0
        (row,) = json.loads(out.read_text())["rows"]
        assert row["precision"] == ("bf16 autocast" if amp == "true" else "fp32")
        assert seen["train"] and set(seen["train"]) == {amp == "true"}
        assert seen["eval"] and set(seen["eval"]) == {amp == "true"}
