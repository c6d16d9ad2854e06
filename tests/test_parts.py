"""Model parts by name: initialising a model (all of it or some parts) from a finished run (``model.init_from``)
and freezing parts (``train.freeze``). Re-initialised parts equal a fresh model's bit for bit, frozen parts do not
change and get no optimizer state, and every checkpoint that does not fit is one line naming the file."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from conftest import TINY, random_targets, tiny_config
from groupdetr import names
from groupdetr import rundir as rd
from groupdetr.build import build_all, build_optimizer, loss_weights
from groupdetr.cli import main as cli_main
from groupdetr.config import ConfigError, config_hash, dump_yaml, load_config, to_dict
from groupdetr.engine.checkpoint import load_checkpoint, save_checkpoint
from groupdetr.engine.init_from import InitFromError, load_init_from
from groupdetr.engine.loop import train_step
from groupdetr.model.parts import freeze_parts, model_parts, part_of

ENCODER_SIDE = ("backbone", "input_proj", "encoder")
DECODER_SIDE = ("query_embed", "decoder", "class_embed", "bbox_embed")

#: one model of every kind the parts must cover: decoders, tasks with a head, denoising queries
KINDS = {
    "conditional": {},
    "masks": {"model__task": "instance_segmentation", "model__mask_head__mask_dim": 16},
    "3d": {"model__task": "detection_3d", "data__dataset": "synth"},
    "dab_dn": {"model__decoder": "dab", "model__denoising__enabled": "true"},
    "dab_deformable": {"model__decoder": "dab_deformable", "model__deformable__num_levels": 2,
                       "model__deformable__backbone_levels": 2},
    "dino": {"model__decoder": "dino", "model__deformable__num_levels": 2, "model__deformable__backbone_levels": 2},
}


def build(seed: int, **kv):
    cfg = tiny_config(**kv)
    torch.manual_seed(seed)
    return cfg, build_all(cfg)[0]


def fake_run(run, seed: int = 1, epoch: int = 3, **kv):
    """A finished run directory holding a model of ``seed`` (no training: the contract's files only)."""
    cfg, model = build(seed, **kv)
    run.mkdir(parents=True)
    (run / rd.CONFIG).write_text(dump_yaml(cfg))
    rd.atomic_write_json(run / rd.MANIFEST, {"config_hash": config_hash(cfg), "seed": seed})
    save_checkpoint(run / rd.CHECKPOINT, {"model": model.state_dict(), "epoch": epoch, "config": to_dict(cfg),
                                          "config_hash": config_hash(cfg), "model_config": to_dict(cfg.model)})
    rd.atomic_write_json(run / rd.METRICS, {"epoch": epoch, "config_hash": config_hash(cfg), "bbox/AP": 0.1})
    return cfg, model


def init_from(run, parts=None, seed: int = 0, **kv):
    """(config, model built with ``seed`` and started from ``run``, manifest record)."""
    extra = {"model__init_from__run": str(run)}
    if parts is not None:
        extra["model__init_from__parts"] = "[" + ",".join(parts) + "]"
    cfg, model = build(seed, **extra, **kv)
    return cfg, model, load_init_from(model, cfg.model.init_from)


def same(a: torch.nn.Module, b: torch.nn.Module, parts) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if part_of(k) in parts]
    assert keys, parts
    return all(torch.equal(sa[k], sb[k]) for k in keys)


# ---------------------------------------------------------------------------------------------
# the names


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_parts_are_the_models_top_level_modules(kind):
    """Every top-level module is a part (names.MODEL_PARTS), no tensor belongs to two parts, and the parts
    cover every parameter: loading or freezing parts by name reaches the whole model, nothing twice."""
    _, model = build(0, **KINDS[kind])
    children = [name for name, _ in model.named_children()]
    assert set(children) <= set(names.MODEL_PARTS) and set(model_parts(model)) == set(children)
    owners = {}
    for key, t in model.state_dict(keep_vars=True).items():
        owners.setdefault(id(t), set()).add(part_of(key))
    assert all(len(o) == 1 for o in owners.values())
    assert {part_of(n) for n, _ in model.named_parameters()} == set(children)


def test_every_part_name_is_used_by_some_model():
    used = set()
    for kv in KINDS.values():
        used |= set(model_parts(build(0, **kv)[1]))
    assert used == set(names.MODEL_PARTS)


@pytest.mark.parametrize("override, message", [
    ("train.freeze=[backbone,encodr]", "train.freeze: unknown part 'encodr' (did you mean 'encoder'?)"),
    ("train.freeze=[zzz]", "train.freeze: unknown part 'zzz' (parts: backbone, input_proj, encoder"),
    ("train.freeze=[encoder,encoder]", "train.freeze: part 'encoder' named twice"),
    ("model.init_from.parts=[decodr]", "model.init_from.parts needs model.init_from.run"),
    ("model.init_from.run=''", "model.init_from.run is empty"),
])
def test_unknown_or_misused_part_names_are_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("cpu_small", [override])
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.init_from.parts: unknown part 'decodr' \\(did you mean 'decoder'"):
        load_config("cpu_small", ["model.init_from.run=r", "model.init_from.parts=[decodr]"])


def test_cli_refuses_an_unknown_part_with_one_line(capsys):
    assert cli_main(["config", "-c", "cpu_small", "--set", "train.freeze=[encodr]"]) == 2
    err = capsys.readouterr().err
    assert err == "groupdetr: config error: train.freeze: unknown part 'encodr' (did you mean 'encoder'?)\n"


def test_defaults_change_nothing():
    cfg = load_config("cpu_small")
    assert cfg.model.init_from.run is None and cfg.model.init_from.parts is None and cfg.train.freeze == ()
    (_, a), (_, b) = build(0), build(0)
    assert load_init_from(a, cfg.model.init_from) is None and same(a, b, model_parts(a))
    assert freeze_parts(a, cfg.train.freeze) == [] and all(p.requires_grad for p in a.parameters())


# ---------------------------------------------------------------------------------------------
# init_from


def test_named_parts_come_from_the_run_and_the_rest_is_a_fresh_model(tmp_path):
    """Table 1's start: encoder side from a trained model, decoder side re-initialised exactly as a fresh model
    of the same seed builds it (bit for bit), with K changed (query_embed is not loaded)."""
    run = tmp_path / "src"
    _, source = fake_run(run, seed=1, model__num_groups=1)
    cfg, model, record = init_from(run, ENCODER_SIDE, seed=0, model__num_groups=3)
    _, fresh = build(0, model__num_groups=3)
    assert same(model, source, ENCODER_SIDE)
    assert same(model, fresh, DECODER_SIDE)  # the re-initialised decoder is the fresh model's
    assert not same(model, fresh, ("encoder",)) and not same(source, fresh, ("decoder",))  # the checks can fail
    digest = hashlib.sha256((run / rd.CHECKPOINT).read_bytes()).hexdigest()
    assert record == {"run": str(run), "parts": list(ENCODER_SIDE), "config_hash": json.loads(
        (run / rd.MANIFEST).read_text())["config_hash"], "checkpoint": str(run / rd.CHECKPOINT),
                      "checkpoint_sha256": digest, "epoch": 3}
    assert cfg.model.init_from.parts == ENCODER_SIDE


def test_the_whole_model_by_default(tmp_path):
    run = tmp_path / "src"
    _, source = fake_run(run, seed=1)
    _, model, record = init_from(run, seed=0)
    assert same(model, source, model_parts(model)) and record["parts"] == list(model_parts(model))


def _refusal(run, parts=None, **kv) -> str:
    with pytest.raises(InitFromError) as e:
        init_from(run, parts, **kv)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_a_run_that_does_not_fit_is_one_line_naming_the_file(tmp_path):
    assert _refusal(tmp_path / "nowhere") == f"model.init_from.run {tmp_path / 'nowhere'}: no such run directory"
    run = tmp_path / "src"
    fake_run(run, seed=1, model__num_groups=1)
    # K = 3 has another query_embed: its shape is named
    text = _refusal(run, ("encoder", "query_embed"), model__num_groups=3)
    assert text.startswith(f"{run / rd.CHECKPOINT}: query_embed.weight is [7, 32] in the checkpoint but [21, 32]")
    # another width: the first key of the encoder that does not fit
    assert "in the checkpoint but" in _refusal(run, ("encoder",), model__hidden_dim=16, model__nheads=2,
                                                model__num_groups=1)
    # a part the source does not have, or this model does not have
    assert _refusal(run, ("head",), model__task="instance_segmentation", model__mask_head__mask_dim=16,
                    model__num_groups=1).startswith(f"{run / rd.CHECKPOINT}: has no part 'head' (its parts: backbone")
    with pytest.raises(ConfigError, match="model.init_from.parts: this model has no part 'label_embed'"):
        init_from(run, ("label_embed",), model__num_groups=1)
    # the whole model of a source with a part this model lacks
    seg = tmp_path / "seg"
    fake_run(seg, seed=1, model__task="instance_segmentation", model__mask_head__mask_dim=16)
    assert "holds part 'head', which this model does not have" in _refusal(seg)
    # unfinished, missing checkpoint, damaged and empty checkpoints
    (run / rd.METRICS).rename(run / "m")
    assert _refusal(run, ("encoder",), model__num_groups=1) == (
        f"{run / rd.METRICS}: missing (the run is not finished); model.init_from.run must name a finished run")
    (run / "m").rename(run / rd.METRICS)
    data = bytearray((run / rd.CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / rd.CHECKPOINT).write_bytes(bytes(data))
    text = _refusal(run, ("encoder",), model__num_groups=1)
    assert text.startswith(f"{run / rd.CHECKPOINT}: cannot be loaded (sha256 ") and "the file is damaged" in text
    (run / rd.CHECKPOINT).write_bytes(b"")
    assert _refusal(run, ("encoder",), model__num_groups=1) == f"{run / rd.CHECKPOINT}: cannot be loaded (the file is empty)"
    (run / rd.CHECKPOINT).unlink()
    assert _refusal(run, ("encoder",), model__num_groups=1).startswith(f"{run / rd.CHECKPOINT}: missing")


# ---------------------------------------------------------------------------------------------
# freeze


def test_frozen_parts_do_not_change_and_have_no_optimizer_state(images, pad_mask):
    cfg, model = build(0, model__num_groups=3, train__freeze="[backbone,input_proj,encoder]")
    frozen = freeze_parts(model, cfg.train.freeze)
    assert frozen and {part_of(n) for n in frozen} == set(ENCODER_SIDE)
    _, criterion, _ = build_all(cfg)
    optimizer = build_optimizer(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for step in range(3):
        train_step(model, criterion, loss_weights(cfg), optimizer, images, pad_mask,
                   random_targets(2, cfg.model.num_classes, seed=step), clip=0.1)
    after = model.state_dict()
    for k in before:
        if part_of(k) in ENCODER_SIDE:
            assert torch.equal(before[k], after[k]), k  # bit for bit, buffers included
    assert not same_state(before, after, DECODER_SIDE)  # the rest trained (the check can fail)
    params = dict(model.named_parameters())
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for name in frozen:
        assert not params[name].requires_grad and params[name].grad is None
        assert id(params[name]) not in in_optimizer and params[name] not in optimizer.state
    assert len(optimizer.state) == sum(p.requires_grad for p in model.parameters())


def same_state(a: dict, b: dict, parts) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if part_of(k) in parts)


def test_freezing_a_part_the_model_lacks_is_one_line():
    cfg, model = build(0, train__freeze="[head]")
    with pytest.raises(ConfigError) as e:
        freeze_parts(model, cfg.train.freeze)
    assert str(e.value) == ("train.freeze: this model has no part 'head' (its parts: backbone, input_proj, encoder, "
                            "query_embed, decoder, class_embed, bbox_embed)")


def test_no_freeze_is_the_optimizer_of_before():
    cfg, model = build(0)
    assert freeze_parts(model, ()) == []
    groups = build_optimizer(model, cfg).param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


# ---------------------------------------------------------------------------------------------
# in the trainer


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from groupdetr.synth.writer import generate

    root = tmp_path_factory.mktemp("parts") / "synth"
    generate(load_config("cpu_small", ["data.synth.num_train=8", "data.synth.num_val=4", "data.image_size=64"]).data,
             root)
    return root


def run_overrides(root, *extra):
    return TINY + ["model.num_classes=9", f"data.root={root}", "data.image_size=64", "optim.epochs=1",
                   "optim.batch_size=4", "train.max_iters_per_epoch=2", "model.num_groups=1", *extra]


def test_a_run_started_from_another_keeps_its_frozen_encoder(synth_root, tmp_path):
    from groupdetr.engine.trainer import train

    base = tmp_path / "base"
    train(load_config("cpu_small", run_overrides(synth_root)), base)
    out = tmp_path / "b"
    cfg = load_config("cpu_small", run_overrides(synth_root, "model.num_groups=3", f"model.init_from.run={base}",
                                                 "model.init_from.parts=[backbone,input_proj,encoder]",
                                                 "train.freeze=[backbone,input_proj,encoder]", "seed=7"))
    train(cfg, out)
    manifest = rd.read_json(out / rd.MANIFEST)
    record = manifest["init_from"]
    assert record["run"] == str(base) and record["config_hash"] == rd.read_json(base / rd.MANIFEST)["config_hash"]
    assert record["checkpoint_sha256"] == hashlib.sha256((base / rd.CHECKPOINT).read_bytes()).hexdigest()
    start, end = load_checkpoint(base / rd.CHECKPOINT)["model"], load_checkpoint(out / rd.CHECKPOINT)["model"]
    assert all(torch.equal(start[k], end[k]) for k in start if part_of(k) in ENCODER_SIDE)
    assert not all(torch.equal(start[k], end[k]) for k in start if part_of(k) == "decoder")
    assert rd.read_json(tmp_path / "b" / rd.METRICS)["config_hash"] == manifest["config_hash"]
    fresh = tmp_path / "fresh"
    train(load_config("cpu_small", run_overrides(synth_root)), fresh)
    assert rd.read_json(fresh / rd.MANIFEST)["init_from"] is None  # the same schema without init_from


def test_a_checkpoint_from_before_the_new_fields_resumes_and_evaluates(synth_root, tmp_path):
    """Runs started before model.init_from and train.freeze existed: their checkpoints' configs lack the
    fields, which read as their defaults, so they resume and are evaluated as before."""
    from groupdetr.engine.evaluate_run import _prepare
    from groupdetr.engine.trainer import _restore

    from groupdetr.engine.trainer import RunError, train

    run = tmp_path / "old"
    cfg = load_config("cpu_small", run_overrides(synth_root))
    train(cfg, run)
    ckpt = load_checkpoint(run / rd.CHECKPOINT)
    del ckpt["model_config"]["init_from"], ckpt["config"]["model"]["init_from"], ckpt["config"]["train"]["freeze"]
    ckpt["config_hash"] = "0" * 16  # hashed without the fields
    save_checkpoint(run / rd.CHECKPOINT, ckpt)
    _prepare(run, [], None)  # not refused as "overrides change the architecture"
    model = build_all(cfg)[0]
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.optim.lr_drop)
    assert _restore(ckpt, cfg, model, optimizer, scheduler, run / rd.CHECKPOINT)[0] == 1
    other = load_config("cpu_small", run_overrides(synth_root, "train.freeze=[encoder]"))
    with pytest.raises(RunError, match="written under another config"):
        _restore(ckpt, other, model, optimizer, scheduler, run / rd.CHECKPOINT)
    # killed after its last checkpoint, resumed under today's fields: the manifest takes the hash metrics.json gets
    (run / rd.METRICS).unlink()
    manifest = rd.read_json(run / rd.MANIFEST)
    rd.atomic_write_json(run / rd.MANIFEST, {**manifest, "config_hash": "0" * 16})
    train(cfg, run)
    manifest = rd.read_json(run / rd.MANIFEST)
    assert manifest["config_hash_before"] == ["0" * 16] and len(manifest["resumed"]) == 1
    assert manifest["config_hash"] == rd.read_json(run / rd.METRICS)["config_hash"] == config_hash(cfg)
