"""Engine: run-directory contract, exact resume after a real kill, refusals, NaN stop, torchrun."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY, cocoeval_file
from groupdetr.cli import main
from groupdetr.config import load_config
from groupdetr.data.coco import dataset_paths
from groupdetr import rundir as rd
from groupdetr.engine.checkpoint import load_checkpoint
from groupdetr.engine.evaluate_run import _prepare, evaluate_groups_run, evaluate_run
from groupdetr.engine.loop import _predict
from groupdetr.engine.trainer import RunError, train
from groupdetr.synth.writer import generate

TIMING_KEYS = {"seconds", "eval_seconds", "peak_memory_mib"}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine") / "synth"
    cfg = load_config("cpu_small", ["data.synth.num_train=16", "data.synth.num_val=8", "data.image_size=64"])
    generate(cfg.data, root)
    return root


def overrides(root, epochs=3, **kv):
    extra = [f"{k.replace('__', '.')}={v}" for k, v in kv.items()]
    return TINY + ["model.num_classes=9", "model.num_groups=3", f"data.root={root}", "data.image_size=64",
                   f"optim.epochs={epochs}", "optim.batch_size=4", "train.log_every=1"] + extra


def cli(out, ovr, *extra):
    cmd = [sys.executable, "-m", "groupdetr", "train", "--out", str(out), *extra]
    for o in ovr:
        cmd += ["--set", o]
    return cmd


def log_without_timings(run):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rd.read_jsonl(run / rd.LOG)]


def model_state(run):
    return load_checkpoint(run / rd.CHECKPOINT)["model"]


def test_resume_after_kill_equals_uninterrupted_run(synth_root, tmp_path):
    ovr = overrides(synth_root, epochs=6)
    straight = tmp_path / "straight"
    subprocess.run(cli(straight, ovr), check=True, capture_output=True, text=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed, ovr), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (killed / rd.CHECKPOINT).is_file() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(killed / rd.CHECKPOINT)["epoch"]
    assert 1 <= done < 6 and not (killed / rd.METRICS).exists()  # really interrupted

    resumed = subprocess.run(cli(killed, ovr), check=True, capture_output=True, text=True)
    assert f"resuming {killed} after epoch {done}" in resumed.stderr
    assert json.loads((killed / rd.METRICS).read_text()) == json.loads((straight / rd.METRICS).read_text())
    assert log_without_timings(killed) == log_without_timings(straight)
    a, b = model_state(killed), model_state(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((killed / rd.MANIFEST).read_text())
    assert len(manifest["resumed"]) == 1 and manifest["config_hash"] == json.loads((straight / rd.METRICS).read_text())["config_hash"]
    # plain progress lines (stderr is not a terminal)
    assert "epoch 6 [4/4]" in resumed.stderr and "eta" in resumed.stderr


def test_finished_run_is_not_retrained_and_other_config_is_refused(synth_root, tmp_path):
    run = tmp_path / "run"
    cfg = load_config("cpu_small", overrides(synth_root, epochs=1))
    first = train(cfg, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert train(cfg, run) == first
    other = load_config("cpu_small", overrides(synth_root, epochs=1, model__num_groups=2))
    with pytest.raises(RunError, match="holds a run with another config \\(differs in: model.num_groups"):
        train(other, run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert train(other, run, restart=True)["epoch"] == 1
    assert "num_groups: 2" in (run / rd.CONFIG).read_text()


def test_schema_of_run_directory(synth_root, tmp_path):
    run = tmp_path / "run"
    train(load_config("cpu_small", overrides(synth_root, epochs=2)), run)
    assert {p.name for p in run.iterdir()} == {rd.CONFIG, rd.MANIFEST, rd.LOG, rd.METRICS, rd.CHECKPOINT, rd.CHECKSUM,
                                               "detections.bbox.json", rd.TENSORBOARD}
    log = rd.read_jsonl(run / rd.LOG)
    assert [r["epoch"] for r in log] == [1, 2]
    for key in ("lr", "lr_backbone", "loss", "loss_ce", "loss_bbox_0", "seconds", "eval_seconds", "peak_memory_mib",
                "matching_instability", "bbox/AP", "iterations"):
        assert key in log[1], key
    assert log[0]["matching_instability"] is None and 0 <= log[1]["matching_instability"] <= 1
    manifest = json.loads((run / rd.MANIFEST).read_text())
    assert {"config_hash", "command", "git_commit", "versions", "device", "seed", "world_size"} <= set(manifest)
    assert manifest["git_dirty"] == bool(manifest["git_changes"])  # the flag says what it is about
    ckpt = load_checkpoint(run / rd.CHECKPOINT)
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"]["num_groups"] == 3


def test_git_changes_name_what_makes_a_checkout_dirty(tmp_path, monkeypatch):
    from groupdetr.engine import trainer

    lines = [f" M f{i}.py" for i in range(60)]
    monkeypatch.setattr(trainer, "_git", lambda *args: "\n".join(lines) if args[0] == "status" else "abc")
    changes = trainer.git_changes()
    assert changes[:2] == [" M f0.py", " M f1.py"] and len(changes) == 51 and changes[-1] == "... and 10 more"
    monkeypatch.setattr(trainer, "_git", lambda *args: "")
    assert trainer.git_changes() == [] and trainer.git_state()[1] is False




def test_eval_any_group_and_refusals(synth_root, tmp_path):
    run = tmp_path / "run"
    train(load_config("cpu_small", overrides(synth_root, epochs=1)), run)
    r = evaluate_run(run, group=2)
    assert r["eval_group"] == 2 and "bbox/AP" in r
    assert json.loads((run / rd.EVAL_DIR / "group2.json").read_text()) == r
    with pytest.raises(RunError, match="change the architecture"):
        evaluate_run(run, overrides=["model.hidden_dim=64"])
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot be loaded"):
        evaluate_run(bogus)
    # a checkpoint of another model in a run dir of this config
    other = tmp_path / "other"
    train(load_config("cpu_small", overrides(synth_root, epochs=1, model__hidden_dim=16)), other)
    victim = tmp_path / "victim"
    train(load_config("cpu_small", overrides(synth_root, epochs=1)), victim)
    (victim / rd.METRICS).unlink()
    os.replace(other / rd.CHECKPOINT, victim / rd.CHECKPOINT)
    os.replace(other / rd.CHECKSUM, victim / rd.CHECKSUM)  # whole, with its record: only the model differs
    saved = (victim / rd.CHECKPOINT).read_bytes()
    with pytest.raises(RunError, match="checkpoint of another model"):
        train(load_config("cpu_small", overrides(synth_root, epochs=1)), victim)
    assert (victim / rd.CHECKPOINT).read_bytes() == saved


def test_a_checkpoint_from_before_a_model_field_existed_is_evaluated(synth_root, tmp_path):
    """A field added to the model config since a checkpoint was written (``model.deformable``,
    ``model.denoising.contrastive`` for the study runs of 2026-11-29) takes its default and is no architecture
    change: ``groupdetr eval`` (and ``visualize``) used to refuse such a checkpoint ("overrides change the
    architecture ... model.deformable, model.denoising") without any override."""
    from groupdetr.engine.checkpoint import save_checkpoint
    from groupdetr.engine.evaluate_run import load_run_model

    run = tmp_path / "run"
    train(load_config("cpu_small", overrides(synth_root, epochs=1, train__max_iters_per_epoch=1)), run)
    ckpt = load_checkpoint(run / rd.CHECKPOINT)
    del ckpt["model_config"]["deformable"], ckpt["model_config"]["denoising"]["contrastive"]
    save_checkpoint(run / rd.CHECKPOINT, ckpt)
    _, _, cfg, model, *_ = load_run_model(run, [], 1)
    assert cfg.model.eval_group == 1 and not model.training
    with pytest.raises(RunError, match=r"change the architecture of the checkpoint \(model.hidden_dim\)"):
        load_run_model(run, ["model.hidden_dim=64"], None)
    ckpt["model_config"]["bogus"] = 1
    save_checkpoint(run / rd.CHECKPOINT, ckpt)
    with pytest.raises(RunError, match="its model config cannot be read"):
        load_run_model(run, [], None)


def _rescored(synth_root, results_file) -> dict:
    """``bbox/<stat>`` of a box results file scored by plain pycocotools against the val annotations."""
    stats = cocoeval_file(dataset_paths("synth", synth_root, "val")[1], results_file, "bbox")
    return {f"bbox/{k}": v for k, v in stats.items()}


def _stats(result: dict) -> dict:
    return {k: v for k, v in result.items() if "/" in k}


def test_every_evaluation_writes_its_detections_for_load_res(synth_root, tmp_path, capsys):
    """Training keeps its final evaluation's detections (those of metrics.json) and no other epoch's; every
    `groupdetr eval` writes them beside its stats, each group's in a per-group job; all of them score with plain
    pycocotools against the val annotations to the stats written beside them, exactly."""
    run = tmp_path / "run"
    metrics = train(load_config("cpu_small", overrides(synth_root, epochs=2, train__max_iters_per_epoch=2)), run)
    assert "bbox/AP" in rd.read_jsonl(run / rd.LOG)[0]  # epoch 1 was evaluated too, and left no detections
    assert sorted(p.name for p in run.rglob("*detections*")) == ["detections.bbox.json"]
    assert _rescored(synth_root, run / "detections.bbox.json") == _stats(metrics)
    # every (query, class) of the evaluated group's 7 queries and 9 classes (fewer than num_select) on each of
    # the 8 val images (this tiny model scores ~0: the exact re-scoring of non-trivial stats is
    # tests/test_evaluation_coco.py's)
    assert len(json.loads((run / "detections.bbox.json").read_text())) == 8 * 7 * 9
    single = evaluate_run(run, group=1)
    assert _rescored(synth_root, run / "eval" / "group1.detections.bbox.json") == _stats(single)
    both = evaluate_groups_run(run, groups=[2, 0], out=tmp_path / "sub" / "two.json")
    for g in (2, 0):
        assert _rescored(synth_root, tmp_path / "sub" / f"group{g}.detections.bbox.json") == both["stats"][str(g)]
    assert main(["eval", str(run), "--groups", "1", "--out", str(tmp_path / "none" / "one.json"), "--no-detections"]) == 0
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == ["group1.json", "one.json"]
    capsys.readouterr()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("task, kinds", [("instance_segmentation", ["bbox", "segm"]), ("detection_3d", ["3d", "bbox"])])
def test_masks_and_3d_boxes_are_written_in_their_formats(synth_root, tmp_path, task, kinds):
    """The mask task's detections: boxes, and masks as COCO RLE (no bbox: loadRes sizes them by the mask); the
    3D task's: boxes, and 3D boxes (groupdetr.evaluation.det3d's format) that score against the annotation file
    with that module's readers as the training scored them."""
    from groupdetr.evaluation.det3d import evaluate_3d, from_3d_results, ground_truth_3d, yaw_periods_from_categories

    run = tmp_path / "run"
    metrics = train(load_config("cpu_small", overrides(synth_root, epochs=1, train__max_iters_per_epoch=1,
                                                       model__task=task)), run)
    assert sorted(p.name for p in run.glob("detections.*")) == [f"detections.{k}.json" for k in kinds]
    val = dataset_paths("synth", synth_root, "val")[1]
    for kind in ("bbox", "segm"):
        if kind in kinds:
            assert {f"{kind}/{k}": v for k, v in cocoeval_file(val, run / f"detections.{kind}.json", kind).items()} == \
                {k: v for k, v in metrics.items() if k.startswith(f"{kind}/")}
    if task == "instance_segmentation":
        masks = json.loads((run / "detections.segm.json").read_text())
        assert "bbox" not in masks[0] and set(masks[0]["segmentation"]) == {"size", "counts"}
    if task == "detection_3d":
        ann = json.loads(val.read_text())
        ids = sorted(img["id"] for img in ann["images"])
        results = json.loads((run / "detections.3d.json").read_text())
        again = evaluate_3d(ground_truth_3d(ann, ids), from_3d_results(results, ids),
                            yaw_periods_from_categories(ann["categories"]))
        expected = {k: v for k, v in metrics.items() if k.startswith("3d/")}
        # the engine scored float32 ground truth (the model's inputs), the file holds float64
        assert {f"3d/{k}": v for k, v in again.items() if k != "per_class"} == pytest.approx(expected, abs=1e-6, nan_ok=True)


@pytest.mark.parametrize("attention, one_pass", [("separate", True), ("shared", False)])
def test_every_group_in_one_job_equals_each_group_evaluated_alone(synth_root, tmp_path, attention, one_pass):
    """`groupdetr eval RUN --group all`: one job, one forward per batch when self-attention keeps the groups
    apart (K passes otherwise), and for every group the file `--group g` writes, stat for stat."""
    run = tmp_path / "run"
    train(load_config("cpu_small", overrides(synth_root, epochs=2, model__self_attention=attention)), run)
    alone = {g: evaluate_run(run, group=g, out=tmp_path / f"alone{g}.json") for g in range(3)}
    index = evaluate_groups_run(run)
    assert index["groups"] == [0, 1, 2] and index["one_pass"] is one_pass and index["epoch"] == 2
    assert json.loads(rd.eval_file(run, "groups").read_text())["files"] == {"0": "group0.json", "1": "group1.json",
                                                                            "2": "group2.json"}
    for g in range(3):
        together = json.loads(rd.eval_file(run, f"group{g}").read_text())
        assert together.keys() == alone[g].keys() and together["eval_group"] == g
        stats = [k for k in together if "/" in k]
        assert [together[k] for k in stats] == pytest.approx([alone[g][k] for k in stats], abs=1e-6), g
    # the stats of a 2-epoch tiny model are mostly 0: compare the detections themselves, group by group.
    # With shared self-attention the groups of one forward see each other (hence one pass per group there).
    _, _, _, model, post, scorers, loader, info = _prepare(run, [], None)
    every = _predict(model, post, loader, info.device, scorers, False, False, 50, (0, 1, 2))
    for g in range(3):
        (single,) = _predict(model, post, loader, info.device, scorers, False, False, 50, (g,))
        assert every[g][0].keys() == single[0].keys()
        if not one_pass:
            assert every[g][0] != single[0]
            continue
        for image_id, dets in single[0].items():
            mine = every[g][0][image_id]
            assert [d["category_id"] for d in mine] == [d["category_id"] for d in dets] and len(dets) > 0
            assert [d["score"] for d in mine] == pytest.approx([d["score"] for d in dets], abs=1e-5)
            assert [c for d in mine for c in d["bbox"]] == pytest.approx([c for d in dets for c in d["bbox"]], abs=1e-3)
        if g:
            assert every[g][0] != every[0][0]  # the groups' detections differ: each slot is its own group
    # a subset, to a named index; a group that does not exist is refused
    sub = evaluate_groups_run(run, groups=[2, 0], out=tmp_path / "sub" / "two.json")
    assert sub["files"] == {"2": "group2.json", "0": "group0.json"} and (tmp_path / "sub" / "group2.json").is_file()
    with pytest.raises(RunError, match="group 3 does not exist"):
        evaluate_groups_run(run, groups=[0, 3])


def test_nan_loss_stops_with_iteration_and_keeps_last_good_checkpoint(synth_root, tmp_path, monkeypatch):
    import groupdetr.engine.loop as loop

    calls = {"n": 0}
    real = loop.weight_losses

    def poisoned(losses, weights):
        calls["n"] += 1
        total = real(losses, weights)
        return total * float("nan") if calls["n"] == 7 else total  # epoch 2 (4 iterations/epoch), iteration 3

    monkeypatch.setattr(loop, "weight_losses", poisoned)
    run = tmp_path / "run"
    with pytest.raises(loop.NonFiniteLoss, match="non-finite loss \\(nan\\) at epoch 2, iteration 3"):
        train(load_config("cpu_small", overrides(synth_root, epochs=3)), run)
    assert load_checkpoint(run / rd.CHECKPOINT)["epoch"] == 1 and not (run / rd.METRICS).exists()


def test_board_scalars_are_the_weighted_terms_the_lrs_and_the_epoch_record():
    from groupdetr.engine.board import epoch_scalars, global_step, step_scalars

    weights = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    losses = {"loss_ce": 0.5, "loss_bbox": 0.1, "loss_giou": 0.25, "loss_bbox_0": 0.2, "loss": 3.0}
    scalars = step_scalars(losses, weights, {"lr": 1e-4, "lr_backbone": 1e-5})
    assert scalars == {"loss/total": 3.0, "loss/loss_ce": 1.0, "loss/loss_bbox": 0.5, "loss/loss_giou": 0.5,
                       "loss/loss_bbox_0": 1.0, "lr/lr": 1e-4, "lr/lr_backbone": 1e-5}
    assert sum(v for k, v in scalars.items() if k.startswith("loss/loss")) == scalars["loss/total"]
    record = {"epoch": 2, "lr": 1e-4, "lr_backbone": 1e-5, "loss": 2.5, "loss_ce": 0.5, "iterations": 4,
              "seconds": 3.0, "eval_seconds": 1.5, "peak_memory_mib": 100.0, "matching_instability": None,
              "bbox/AP": 0.25, "3d/AOE": float("nan")}
    assert epoch_scalars(record) == {"epoch/loss": 2.5, "epoch/loss_ce": 0.5, "time/train_seconds": 3.0,
                                     "time/eval_seconds": 1.5, "memory/peak_mib": 100.0, "bbox/AP": 0.25}
    assert epoch_scalars({**record, "matching_instability": 0.125})["matching/instability"] == 0.125
    assert [global_step(e, i, 4) for e, i in ((1, 1), (1, 4), (2, 1), (3, 4))] == [1, 4, 5, 12]


def _curves(run, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value)]}`` of a run's TensorBoard files, read by the loader of ``tensorboard
    --load_fast=false``; ``purge=False`` keeps what a restart marker hides."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(run / rd.TENSORBOARD), size_guidance={"tensors": 0}, purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def test_tensorboard_curves_and_a_resumed_run_continues_them(synth_root, tmp_path, monkeypatch):
    """Per-iteration losses and learning rates, per-epoch stats and IS, against the iteration count; a run that
    stopped in epoch 2 (after writing that epoch's first step) and was resumed ends with the same curves as an
    uninterrupted one, each step once (the resumed run's restart marker hides the stopped attempt's steps);
    --no-tensorboard writes none."""
    import groupdetr.engine.loop as loop

    ovr = overrides(synth_root, epochs=2, train__max_iters_per_epoch=3)
    straight = tmp_path / "straight"
    train(load_config("cpu_small", ovr), straight)
    curves = _curves(straight)
    assert [step for step, _ in curves["loss/total"]] == [1, 2, 3, 4, 5, 6]
    assert {"loss/loss_ce", "loss/loss_bbox_0", "lr/lr", "lr/lr_backbone", "epoch/loss", "time/eval_seconds"} <= set(curves)
    log = rd.read_jsonl(straight / rd.LOG)
    def at(tag):  # {step: value}; TensorBoard keeps float32
        return {step: pytest.approx(value, rel=1e-6) for step, value in curves[tag]}

    assert at("bbox/AP") == {3: log[0]["bbox/AP"], 6: log[1]["bbox/AP"]}  # the epochs' evaluations
    assert at("bbox/AR100") == {3: log[0]["bbox/AR100"], 6: log[1]["bbox/AR100"]}
    assert at("matching/instability") == {6: log[1]["matching_instability"]}  # from epoch 2
    assert at("epoch/loss") == {3: log[0]["loss"], 6: log[1]["loss"]}
    assert at("lr/lr")[1] == log[0]["lr"]

    calls = {"n": 0}
    real = loop.weight_losses

    def poisoned(losses, weights):  # epoch 2, iteration 2: NaN (step 4 is written, then the run stops)
        calls["n"] += 1
        return real(losses, weights) * (float("nan") if calls["n"] == 5 else 1.0)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:
        m.setattr(loop, "weight_losses", poisoned)
        with pytest.raises(loop.NonFiniteLoss, match="epoch 2, iteration 2"):
            train(load_config("cpu_small", ovr), resumed)
    assert [step for step, _ in _curves(resumed)["loss/total"]] == [1, 2, 3, 4]
    train(load_config("cpu_small", ovr), resumed)
    assert len(list((resumed / rd.TENSORBOARD).iterdir())) == 2  # one event file per process
    again = _curves(resumed)
    assert again.keys() == curves.keys()
    for tag in curves:
        if not tag.startswith("time/") and tag != "memory/peak_mib":
            assert again[tag] == curves[tag], tag  # CPU: the same values, step for step
    raw = [step for step, _ in _curves(resumed, purge=False)["loss/total"]]
    assert raw == [1, 2, 3, 4, 4, 5, 6]  # without the marker, the stopped attempt's step 4 shows twice

    quiet = tmp_path / "quiet"
    train(load_config("cpu_small", overrides(synth_root, epochs=1, train__max_iters_per_epoch=1)), quiet, tensorboard=False)
    assert not (quiet / rd.TENSORBOARD).exists()


def test_cli_errors_are_one_line(synth_root, tmp_path):
    missing = subprocess.run(cli(tmp_path / "r", overrides(tmp_path / "nowhere", epochs=1)), capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("groupdetr: dataset error: dataset root not found")


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth_root, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "groupdetr", "train", "--out", str(run)]
    for o in overrides(synth_root, epochs=2):
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = rd.read_jsonl(run / rd.LOG)
    assert [r["epoch"] for r in log] == [1, 2] and log[0]["iterations"] == 2  # 16 images / (2 ranks x 4)
    assert json.loads((run / rd.MANIFEST).read_text())["world_size"] == 2
    assert (run / rd.METRICS).is_file()
    assert len(list((run / rd.TENSORBOARD).iterdir())) == 1  # rank 0's events alone


def test_progress_bar_on_terminal_and_lines_otherwise(monkeypatch, capsys, caplog):
    import logging

    from groupdetr.engine.progress import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert list(progress(range(5), 5, "epoch 1", every=2)) == list(range(5))
    bar = capsys.readouterr().err
    assert "epoch 1:   0%|" in bar and "0/5 [00:00<?" in bar  # tqdm bar: progress, elapsed<remaining (ETA)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with caplog.at_level(logging.INFO, logger="groupdetr.engine"):
        assert list(progress(range(5), 5, "epoch 1", every=2)) == list(range(5))
    assert [r.getMessage().split(" ", 3)[:3] for r in caplog.records] == [["epoch", "1", "[2/5]"], ["epoch", "1", "[4/5]"], ["epoch", "1", "[5/5]"]]
    assert all("eta" in r.getMessage() for r in caplog.records)


def test_run_eta_counts_the_iterations_and_evaluations_left():
    from groupdetr.engine.progress import RunClock, evaluations_left, format_duration, run_eta

    # evaluated after epochs 2, 4 and the last (5); while epoch 2 trains, those three are due
    assert [evaluations_left(e, 5, 2) for e in range(1, 6)] == [3, 3, 2, 2, 1]
    assert evaluations_left(1, 12, 1) == 12 and evaluations_left(3, 12, 5) == 3  # 5, 10, 12
    # epoch 2 of 5, 4 of 10 iterations done: 6 + 3 x 10 iterations at 1 s, 3 evaluations at 30 s
    assert run_eta(2, 4, 5, 10, 2, 1.0, 30.0) == (36 + 90, True)
    assert run_eta(2, 4, 5, 10, 2, 1.0, None) == (36, False)  # no evaluation timed yet: a lower bound
    assert run_eta(5, 10, 5, 10, 2, 1.0, 30.0) == (30, True)  # the last iteration: the final evaluation left
    assert [format_duration(s) for s in (0, 59.6, 3725, 75 * 3600 + 123)] == ["0:00:00", "0:01:00", "1:02:05", "75:02:03"]
    # the clock: seconds per iteration over everything this process trained, evaluation seconds averaged,
    # those of a resumed run's log included
    clock = RunClock(epochs=3, per_epoch=4, eval_every=1, evaluation_seconds=[10.0])
    assert clock.eta(1)(2, 1.0) == (0.5 * (2 + 2 * 4) + 3 * 10.0, True)
    clock.add_epoch(seconds=2.0, iterations=4, evaluation_seconds=20.0)
    assert clock.eta(2)(4, 3.0) == ((2.0 + 3.0) / 8 * 4 + 2 * 15.0, True)
    assert RunClock(3, 4, 1).eta(1)(4, 2.0) == (0.5 * 8, False)


def test_progress_shows_the_running_loss_and_the_run_eta(monkeypatch, capsys, caplog):
    import logging

    from groupdetr.engine.progress import WINDOW, Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    bar = Progress(range(25), 25, "epoch 2", every=10, eta=lambda done, elapsed: (3725.0 + 25 - done, True))
    with caplog.at_level(logging.INFO, logger="groupdetr.engine"):
        for i in bar:
            bar.add_loss(float(i))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" ", 3)[:3] for line in lines] == [["epoch", "2", "[10/25]"], ["epoch", "2", "[20/25]"],
                                                           ["epoch", "2", "[25/25]"]]
    assert lines[0].startswith("epoch 2 [10/25] loss 4.5000, ") and " it/s, " in lines[0]
    assert lines[0].endswith(", run eta 1:02:20") and ", eta " in lines[0]
    assert f"loss {sum(range(25 - WINDOW, 25)) / WINDOW:.4f}" in lines[2]  # the mean of the last WINDOW
    caplog.clear()
    unknown = Progress(range(2), 2, "epoch 1", every=1, eta=lambda done, elapsed: (60.0, False))
    with caplog.at_level(logging.INFO, logger="groupdetr.engine"):
        list(unknown)
    assert caplog.records[-1].getMessage().endswith("run eta >0:01:00 (+eval)")
    # on a terminal, the same on tqdm's bar (shown at its next refresh)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    capsys.readouterr()
    bar = Progress(range(3), 3, "epoch 2", every=10, eta=lambda done, elapsed: (125.0, True))
    for i in bar:
        bar.add_loss(2.0)
        time.sleep(0.15)  # past tqdm's minimum refresh interval
    assert "loss 2.0000, run eta 0:02:05" in capsys.readouterr().err
