"""Training and data faults (issue 14, items 1 and 6): divergence, and datasets that cannot train or be evaluated.

Each case once got through as a traceback (scipy's ``matrix contains invalid numeric entries`` from the
matcher, a ``KeyError`` after a 0-iteration epoch, a DataLoader worker's traceback) or as a silently
meaningless result (every AP 0.0 on an empty validation split). The README's "What survives what" lists them.
Runs here are tiny (64 px, d=32, 7 queries, K=3) and in-process unless the console command is the point.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from groupdetr import rundir as rd
from groupdetr.cli import main
from groupdetr.config import load_config
from groupdetr.engine import trainer
from groupdetr.engine.checkpoint import load_checkpoint
from groupdetr.errors import NonFiniteLoss
from test_engine import cli, overrides, synth_root  # noqa: F401 (synth_root: the 16+8 scene fixture)


def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def _poison(monkeypatch, at_call: int, where: str):
    """Make the ``at_call``-th training forward of the next model built diverge: NaN boxes in its outputs
    (``where="outputs"``), or finite outputs and loss but NaN gradients (``where="gradients"``), so that the
    optimizer step leaves NaN weights behind."""
    real = trainer.build_all

    def build(*args, **kwargs):
        model, criterion, post = real(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, outputs):
            if not module.training:
                return None
            calls["n"] += 1
            if calls["n"] != at_call:
                return None
            if where == "outputs":
                return {**outputs, "pred_boxes": outputs["pred_boxes"] * float("nan")}
            outputs["pred_logits"].register_hook(lambda grad: grad * float("nan"))
            return None

        model.register_forward_hook(hook)
        return model, criterion, post

    monkeypatch.setattr(trainer, "build_all", build)


# ---------------------------------------------------------------------------------------------
# divergence (item 1)


def test_non_finite_names_every_diverged_output():
    from groupdetr.engine.loop import non_finite

    outputs = {"pred_logits": torch.zeros(1, 2, 3), "pred_boxes": torch.tensor([[[0.5, float("inf"), 1, 1]]]),
               "num_groups": 3, "aux_outputs": [{"pred_logits": torch.full((1, 2, 3), float("nan")),
                                                 "pred_boxes": torch.zeros(1, 2, 4)}],
               "dn_outputs": {"pred_boxes": torch.zeros(1, 1, 4), "aux_outputs": []}}
    assert non_finite(outputs) == ["pred_boxes", "aux_outputs[0].pred_logits"]
    outputs["pred_boxes"][0, 0, 1] = 0.5
    outputs["aux_outputs"][0]["pred_logits"].zero_()
    assert non_finite(outputs) == [] and non_finite({"num_groups": 1}) == []


def test_a_huge_learning_rate_stops_before_the_matcher_with_one_line(synth_root, tmp_path, capsys):
    """``optim.lr=1e6``: the outputs go non-finite within a few steps; before, scipy's Hungarian solver
    raised ``ValueError: matrix contains invalid numeric entries`` in a 29-line traceback naming no epoch."""
    run = tmp_path / "run"
    args = ["train", "-c", "cpu_small", "--out", str(run)]
    for o in overrides(synth_root, epochs=2, optim__lr="1000000.0", train__max_iters_per_epoch=4):
        args += ["--set", o]
    assert main(args) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("groupdetr: non-finite model outputs (pred_logits, ") and "at epoch 1, iteration " in err
    assert err.endswith(f"no epoch of {run} finished; lower optim.lr and pass --restart")
    # nothing finished, nothing claimed; the TensorBoard curves show the steps before the divergence
    assert {p.name for p in run.iterdir()} == {rd.CONFIG, rd.MANIFEST, rd.TENSORBOARD}


def test_divergence_keeps_the_last_good_epoch_and_a_rerun_fails_the_same_way(synth_root, tmp_path, monkeypatch):
    cfg = load_config("cpu_small", overrides(synth_root, epochs=3))
    run = tmp_path / "run"
    message = (f"non-finite model outputs \\(pred_boxes\\) at epoch 2, iteration 3: "
               f"training diverged; {run} keeps epoch 1 and its checkpoint \\(rerunning resumes there\\)")
    _poison(monkeypatch, 7, "outputs")  # epoch 2 (4 iterations an epoch), iteration 3
    with pytest.raises(NonFiniteLoss, match=message):
        trainer.train(cfg, run)
    kept = _files(run)
    assert load_checkpoint(run / rd.CHECKPOINT)["epoch"] == 1 and not (run / rd.METRICS).exists()
    assert [r["epoch"] for r in rd.read_jsonl(run / rd.LOG)] == [1]
    _poison(monkeypatch, 3, "outputs")  # the rerun resumes after epoch 1: its 3rd step is epoch 2, iteration 3
    with pytest.raises(NonFiniteLoss, match=message):
        trainer.train(cfg, run)
    after = _files(run)
    assert after.pop(rd.MANIFEST) != kept.pop(rd.MANIFEST)  # the manifest records the resume, and nothing else moved
    assert after == kept


def test_weights_left_non_finite_by_an_epochs_last_step_are_not_checkpointed(synth_root, tmp_path, monkeypatch):
    """Finite outputs and loss, NaN gradients at the last step of epoch 1: the weights are NaN when the
    epoch ends, and the checkpoint would keep them (the next forward catches it only in the next epoch)."""
    run = tmp_path / "run"
    _poison(monkeypatch, 4, "gradients")
    with pytest.raises(NonFiniteLoss, match="non-finite parameters \\(.+\\) after epoch 1, iteration 4: training "
                                            "diverged; no epoch of .* finished"):
        trainer.train(load_config("cpu_small", overrides(synth_root, epochs=2)), run)
    assert not (run / rd.CHECKPOINT).exists() and not (run / rd.LOG).exists()


# ---------------------------------------------------------------------------------------------
# data (item 6)


def _dataset(synth_root, tmp_path, split=None, edit=None):
    """A copy of the tiny benchmark whose ``split`` annotation file went through ``edit(data)``."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    if split is not None:
        ann = root / "annotations" / f"instances_{split}.json"
        data = json.loads(ann.read_text())
        edit(data)
        ann.write_text(json.dumps(data))
    return root


def _train_cli(root, out, capsys, **kv):
    """``groupdetr train`` of the tiny config in-process: (exit code, stderr lines)."""
    args = ["train", "-c", "cpu_small", "--out", str(out)]
    for o in overrides(root, epochs=1, **kv):
        args += ["--set", o]
    code = main(args)
    return code, capsys.readouterr().err.splitlines()


def _no_images(data):
    data["images"], data["annotations"] = [], []


def _no_objects(data):
    data["annotations"] = []


@pytest.mark.parametrize("split, edit, message", [
    ("train", _no_images, "the train split has no images"),  # before: ValueError: num_samples should be ... 0
    ("val", _no_images, "the val split has no images"),  # before: finished, every AP 0.0
    ("val", _no_objects, "the val split has 8 images but no objects to evaluate against"),  # before: every AP -1.0
], ids=["empty_train", "empty_val", "val_without_objects"])
def test_a_split_with_nothing_in_it_is_refused_at_start(synth_root, tmp_path, capsys, split, edit, message):
    root = _dataset(synth_root, tmp_path, split, edit)
    run = tmp_path / "run"
    code, err = _train_cli(root, run, capsys)
    assert code == 2 and len(err) == 1 and not run.exists()
    assert err[0] == f"groupdetr: dataset error: {root}/annotations/instances_{split}.json: {message}" + (
        f" (data.root={root})" if message.endswith("no images") else " (crowd and degenerate boxes do not count)")


def test_a_batch_larger_than_the_training_split_is_refused_at_start(synth_root, tmp_path, capsys):
    """Before: a 0-iteration epoch was logged and checkpointed, then ``KeyError: 'loss'``, on every rerun too."""
    run = tmp_path / "run"
    code, err = _train_cli(synth_root, run, capsys, optim__batch_size=17)
    assert code == 2 and len(err) == 1 and not run.exists()
    assert err[0] == (f"groupdetr: dataset error: optim.batch_size=17 is larger than the train split (16 images in "
                      f"{synth_root}/annotations/instances_train.json): an epoch would run no step (the last "
                      "incomplete batch is dropped); set optim.batch_size <= 16")
    assert trainer.check_batch_size(16, 16, 1, "f") is None  # one full batch is an epoch
    with pytest.raises(ValueError, match="16 images in f, 8 per process of 2\\): .*set optim.batch_size <= 8"):
        trainer.check_batch_size(16, 9, 2, "f")
    with pytest.raises(ValueError, match="use fewer processes than images"):
        trainer.check_batch_size(1, 1, 2, "f")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_one_line_naming_it_with_or_without_workers(synth_root, tmp_path, capsys, workers):
    """Before, with workers: ``Caught DatasetError in DataLoader worker process 0.`` and the worker's traceback."""
    root = _dataset(synth_root, tmp_path)
    image = root / "train" / "000002.png"
    image.write_bytes(b"")
    code, err = _train_cli(root, tmp_path / "run", capsys, data__num_workers=workers)
    assert code == 2
    assert err[-1] == (f"groupdetr: dataset error: {image}: cannot read image 3 (cannot identify image file "
                       f"'{image}')")
    assert all(line.startswith(tuple("0123456789")) for line in err[:-1])  # progress lines only
