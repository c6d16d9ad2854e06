"""Bad input is refused early with one line (issue 14, "Reliability"): config values, ``--out`` paths,
the modes of atomically written files, the workflow's seeds.

Each case here once got through: a traceback deep in the optimizer or the scheduler, a silently wrong
run, or an overwritten result. The README's "What survives what" lists them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import types
import typing
from pathlib import Path

import pytest

from groupdetr import rundir as rd
from groupdetr.cli import main
from groupdetr import config as config_module
from groupdetr.config import Config, ConfigError, load_config

# ---------------------------------------------------------------------------------------------
# config values


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
    ("optim.lr=.nan", "optim.lr must be finite and > 0, got nan"),
    ("optim.lr=.inf", "optim.lr must be finite and > 0, got inf"),
    ("optim.lr_backbone=-1e-5", "optim.lr_backbone must be > 0, got -1e-05"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0, got -1.0"),
    ("optim.clip_max_norm=-1", "optim.clip_max_norm must be >= 0 (0: no clipping), got -1.0"),
    ("optim.lr_drop=0", "optim.lr_drop must be >= 1, got 0"),
    ("optim.epochs=0", "optim.epochs must be >= 1, got 0"),
    ("optim.batch_size=0", "optim.batch_size must be >= 1, got 0"),
    ("model.dropout=1", "model.dropout must be in [0, 1), got 1.0"),
    ("model.prior_prob=1", "model.prior_prob must be in (0, 1), got 1.0"),
    ("matcher.focal_alpha=1.5", "matcher.focal_alpha must be in [0, 1], got 1.5"),
    ("loss.weight_giou=-2", "loss.weight_giou must be >= 0, got -2.0"),
    ("model.denoising.label_noise=2", "model.denoising.label_noise must be in [0, 1], got 2.0"),
    ("model.backbone.channels=[8,0]", "model.backbone.channels[1] must be >= 1, got 0"),
    ("train.max_iters_per_epoch=0", "train.max_iters_per_epoch must be >= 1 (or null: the full epoch), got 0"),
    ("pretrain.lr=-1", "pretrain.lr must be > 0, got -1.0"),
    ("seed=-1", "seed must be >= 0, got -1"),
    ("data.synth.seed=-3", "data.synth.seed must be >= 0, got -3"),
    ("device=tpu", "device: 'tpu' is not one of auto, cpu, cuda"),
    ("optim.epochs=1.5e0", "optim.epochs: expected int, got '1.5e0'"),
])
def test_out_of_range_values_are_refused_at_load_time(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("cpu_small", [override])
    assert str(e.value) == message


def test_a_refused_value_is_one_line_and_exit_code_2(capsys):
    assert main(["config", "-c", "cpu_small", "--set", "optim.lr_drop=0"]) == 2
    assert capsys.readouterr().err == "groupdetr: config error: optim.lr_drop must be >= 1, got 0\n"


@pytest.mark.parametrize("override, key, value", [
    ("optim.lr=1e-3", "optim.lr", 1e-3),  # YAML 1.1 reads 1e-3 as a string
    ("optim.epochs=1e2", "optim.epochs", 100),  # an int written in float notation, exactly integral
    ("model.num_queries=3.0", "model.num_queries", 3),
    ("data.synth.num_train=1E3", "data.synth.num_train", 1000),
    ("optim.clip_max_norm=0", "optim.clip_max_norm", 0.0),  # 0 is "no clipping", allowed
    ("model.enc_layers=0", "model.enc_layers", 0),
    ("postprocess.nms_iou=null", "postprocess.nms_iou", None),
])
def test_values_as_users_write_them_are_accepted(override, key, value):
    got = load_config("cpu_small", [override])
    for part in key.split("."):
        got = getattr(got, part)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("raw", ["1.5", "1e-1", "2.5e0"])
def test_an_int_field_takes_no_fraction(raw):
    with pytest.raises(ConfigError, match="model.num_queries: expected int"):
        load_config("cpu_small", [f"model.num_queries={raw}"])


def _numeric_fields(cls=Config, prefix: str = ""):
    """``(dotted key, field)`` of every int, float, optional or tuple-of-numbers field, sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, f"{prefix}{f.name}.")
            continue
        args = set(typing.get_args(tp)) if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple) else {tp}
        if args & {int, float}:
            yield prefix + f.name, f


def test_every_numeric_field_declares_its_range_and_the_defaults_are_in_it():
    fields = dict(_numeric_fields())
    assert {"optim.lr", "optim.lr_drop", "model.num_groups", "model.backbone.channels", "seed"} <= set(fields)
    missing = [key for key, f in fields.items() if not isinstance(f.metadata.get("range"), config_module.Range)]
    assert missing == []
    check_fields = config_module.check_fields
    check_fields(Config())  # the defaults are valid
    for name in ("cpu_small", "paper_cdetr_r50_12ep"):
        check_fields(load_config(name))


def test_a_config_built_in_code_is_checked_too():
    cfg = Config()
    bad = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=math.nan))
    with pytest.raises(ConfigError, match="optim.lr must be finite and > 0, got nan"):
        config_module.validate(bad)


def test_cuda_without_a_gpu_is_one_line_when_training_starts(tmp_path, monkeypatch, capsys):
    """Reading the config cannot know the machine (and imports no torch): ``device=cuda`` loads, and
    training refuses it before anything is built or written."""
    import torch

    assert load_config("cpu_small", ["device=cuda"]).device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "-c", "cpu_small", "--set", "device=cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("groupdetr: config error: device=cuda but this machine has no usable CUDA GPU")
    assert err.count("\n") == 1 and not out.exists()


# ---------------------------------------------------------------------------------------------
# --out paths

#: the files of a run directory that only training writes (the contract's names, spelt out here so the
#: test reads the contract rather than trusting it)
RUN_FILES = ("config.yaml", "manifest.json", "log.jsonl", "metrics.json", "checkpoint.pth")


def _finished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in RUN_FILES:
        (run / name).write_text(f"{name} of a finished run\n")
    return run


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("groups", [[], ["--groups", "all"]], ids=["one_group", "all_groups"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_eval_refuses_an_out_that_the_run_directory_owns(tmp_path, capsys, name, groups):
    run = _finished_run(tmp_path)
    before = _contents(run)
    assert main(["eval", str(run), *groups, "--out", str(run / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"groupdetr: --out {run / name} is a file of the run directory {run} ")
    assert err.count("\n") == 1 and _contents(run) == before


def test_eval_refuses_an_out_that_is_a_folder_or_the_checkpoint(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    with pytest.raises(ValueError, match="is the checkpoint being evaluated"):
        rd.check_eval_out(ckpt, ckpt)
    with pytest.raises(ValueError, match="is a folder"):
        rd.check_eval_out(tmp_path, ckpt)
    # a file of that name outside any run directory, and the run's own eval/ folder, are fine
    assert rd.check_eval_out(tmp_path / "metrics.json", ckpt) == tmp_path / "metrics.json"
    run = _finished_run(tmp_path)
    assert rd.check_eval_out(rd.eval_file(run, "nms"), run / "checkpoint.pth") == run / "eval" / "nms.json"
    # the final evaluation's detections are the run's too (an evaluation's go beside its own file)
    with pytest.raises(ValueError, match="is a file of the run directory"):
        rd.check_eval_out(run / "detections.segm.json", run / "checkpoint.pth")
    assert rd.detections_file(rd.eval_file(run, "nms"), "bbox") == run / "eval" / "nms.detections.bbox.json"


def test_train_refuses_an_out_that_is_a_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    assert main(["train", "-c", "cpu_small", "--out", str(notes)]) == 2
    err = capsys.readouterr().err
    assert err == f"groupdetr: --out {notes} is a file; a run directory is a folder (choose another --out)\n"
    assert notes.read_text() == "mine\n"


# ---------------------------------------------------------------------------------------------
# file modes of atomic writes


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def umask(request):
    """Run the test under a given umask (restored afterwards)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path, umask):
    plain = tmp_path / "plain.json"
    plain.write_text("{}\n")
    rd.atomic_write_json(tmp_path / rd.METRICS, {"epoch": 1})
    rd.atomic_write_json(tmp_path / rd.METRICS, {"epoch": 2})  # replacing a file follows the same rule
    rd.append_jsonl(tmp_path / rd.LOG, {"epoch": 1})
    assert _mode(plain) == 0o666 & ~umask
    assert _mode(tmp_path / rd.METRICS) == _mode(tmp_path / rd.LOG) == _mode(plain)
    (tmp_path / "folder").mkdir()
    assert rd.dir_mode() == _mode(tmp_path / "folder") == 0o777 & ~umask


def test_a_folder_renamed_into_place_gets_the_mode_a_plain_mkdir_gives(tmp_path, umask):
    from groupdetr.data.coco import dataset_paths
    from groupdetr.data.derive import derive_dataset

    src = tmp_path / "src"
    for split in ("train", "val"):
        images, ann = dataset_paths("synth", src, split)
        images.mkdir(parents=True)
        (images / "0.png").write_bytes(b"png")
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "0.png", "width": 8, "height": 8}],
                                   "annotations": [], "categories": [{"id": 1, "name": "box"}]}))
    derive_dataset(src, tmp_path / "derived")
    (tmp_path / "plain").mkdir()
    assert _mode(tmp_path / "derived") == _mode(tmp_path / "plain") == 0o777 & ~umask


# ---------------------------------------------------------------------------------------------
# the workflow's settings

REPO = Path(__file__).resolve().parents[1]


def test_the_workflow_readme_seeds_example_passes_the_schema_and_gives_integers():
    """``snakemake --config seeds=[0]`` (workflows/README.md) reaches the schema as ``['0']``: Snakemake reads
    a --config value that is not a plain int or float with YAML's base loader (``snakemake.cli.parse_config``),
    which gives every scalar as a string. The schema accepts strings of digits and the rules turn them into
    integers with :func:`groupdetr.studies.parse_seeds`; checked here without importing or running Snakemake."""
    import jsonschema
    import yaml

    from groupdetr.studies import StudyError, parse_seeds

    def parse_config(entries):  # Snakemake's reading of a --config list value
        return {k: yaml.load(v, Loader=yaml.BaseLoader) for k, v in (e.split("=", 1) for e in entries)}

    assert "--config seeds=[0]" in (REPO / "workflows" / "README.md").read_text()
    given = parse_config(["seeds=[0]"])["seeds"]
    assert given == ["0"]  # what the workflow receives
    schema = yaml.safe_load((REPO / "workflows" / "schemas" / "config.schema.yaml").read_text())
    seeds_schema = jsonschema.Draft202012Validator(schema["properties"]["seeds"])
    for value, seeds in ((given, [0]), (parse_config(["seeds=[0,1,2]"])["seeds"], [0, 1, 2]), ([3, 4], [3, 4]),
                         (7, [7])):  # seeds=7: Snakemake's int parser gives 7
        seeds_schema.validate(value)
        assert parse_seeds(value, "config seeds") == seeds and all(type(s) is int for s in seeds)
    for bad in (["-1"], ["one"], [1.5], [True], []):
        assert not seeds_schema.is_valid(bad)
        with pytest.raises(StudyError, match="config seeds: seeds must be a non-empty list of integers >= 0"):
            parse_seeds(bad, "config seeds")
    with pytest.raises(StudyError, match="config seeds: seeds repeat"):
        parse_seeds(["0", 0], "config seeds")
    # the rules apply it to the settings before anything reads them
    common = (REPO / "workflows" / "rules" / "common.smk").read_text()
    assert common.index('config["seeds"] = settings_seeds(config["seeds"])') < common.index("def study_seeds")
