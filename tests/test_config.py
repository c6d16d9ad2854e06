"""Typed configs: recipes, overrides, and one-line errors for bad input."""
import subprocess
import sys

import pytest

from groupdetr.cli import main
from groupdetr.config import Config, ConfigError, config_hash, list_recipes, load_config


def test_shipped_recipes_load_and_paper_recipe_is_the_paper():
    assert {"cpu_small", "paper_cdetr_r50_12ep", "paper_cdetr_r50_50ep"} <= set(list_recipes())
    for name in list_recipes():
        load_config(name)
    c = load_config("paper_cdetr_r50_12ep")
    m, o = c.model, c.optim
    assert (m.backbone.name, m.num_groups, m.num_queries, m.hidden_dim, m.nheads) == ("resnet50", 11, 300, 256, 8)
    assert (m.enc_layers, m.dec_layers, m.dim_feedforward, m.dropout, m.prior_prob) == (6, 6, 2048, 0.1, 0.01)
    assert (o.lr, o.lr_backbone, o.weight_decay, o.clip_max_norm, o.epochs, o.lr_drop) == (1e-4, 1e-5, 1e-4, 0.1, 12, 11)
    assert (c.matcher.cost_class, c.matcher.cost_bbox, c.matcher.cost_giou) == (2, 5, 2)
    assert (c.loss.weight_class, c.loss.weight_bbox, c.loss.weight_giou) == (2, 5, 2)
    assert c.postprocess.num_select == 100 and c.matcher.assignment == "group" and m.self_attention == "separate"
    fifty = load_config("paper_cdetr_r50_50ep")
    assert (fifty.optim.epochs, fifty.optim.lr_drop, fifty.model.num_groups) == (50, 40, 11)


def test_overrides_are_typed():
    c = load_config("cpu_small", ["model.num_groups=3", "postprocess.nms_iou=0.7", "model.backbone.channels=[8,16]"])
    assert c.model.num_groups == 3 and c.postprocess.nms_iou == 0.7 and c.model.backbone.channels == (8, 16)
    assert isinstance(load_config("cpu_small", ["optim.lr=1"]).optim.lr, float)
    assert load_config("cpu_small", ["postprocess.nms_iou=null"]).postprocess.nms_iou is None
    # YAML 1.1 reads 1e-3 (no dot) as a string: as users write it, it is a float all the same
    o = load_config("cpu_small", ["optim.lr=1e-3", "optim.lr_backbone=2E-4", "optim.weight_decay=+5e-05"]).optim
    assert (o.lr, o.lr_backbone, o.weight_decay) == (1e-3, 2e-4, 5e-5)
    for bad in ("1e", "e-3", "abc", "1.2.3"):
        with pytest.raises(ConfigError, match="optim.lr: expected float"):
            load_config("cpu_small", [f"optim.lr={bad}"])


def test_config_hash_tracks_content():
    a, b = load_config("cpu_small"), load_config("cpu_small", ["model.num_groups=3"])
    assert config_hash(a) == config_hash(load_config("cpu_small")) != config_hash(b)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.num_groupz=3", "unknown config key 'model.num_groupz' (did you mean 'model.num_groups'?)"),
        ("model.num_groups=0", "model.num_groups must be >= 1, got 0"),
        ("model.num_queries=0", "model.num_queries must be >= 1, got 0"),
        ("model.num_groups=two", "model.num_groups: expected int, got 'two'"),
        ("model.self_attention=grouped", "model.self_attention: 'grouped' is not one of separate, shared"),
        ("matcher.assignment=many", "matcher.assignment: 'many' is not one of"),
        ("model.eval_group=11", "model.eval_group must be in [0, 10]"),
        ("matcher.assignment=one_to_one", "matcher.assignment=one_to_one needs model.num_groups=1 (got 11)"),
        ("postprocess.nms_iou=1.5", "postprocess.nms_iou must be in (0, 1]"),
        ("model.dropout=true", "model.dropout: expected float, got True"),
        ("modle.num_groups=3", "unknown config key 'modle' (did you mean 'model'?)"),
        ("num_groups", "is not of the form key=value"),
    ],
)
def test_bad_values_fail_with_one_clear_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("cpu_small", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'cpu_smal' \\(did you mean 'cpu_small'\\?\\)"):
        load_config("cpu_smal")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_user_yaml_with_base(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: cpu_small\nmodel: {num_groups: 5}\n")
    c = load_config(str(f))
    assert c.model.num_groups == 5 and c.model.hidden_dim == 128 and c.name == "mine"


def test_defaults_equal_the_paper_recipe_model():
    assert load_config("paper_cdetr_r50_12ep").model == Config().model


def test_cli_prints_config_and_reports_errors_in_one_line(capsys):
    assert main(["config", "--config", "cpu_small", "--set", "model.num_groups=2"]) == 0
    assert "num_groups: 2" in capsys.readouterr().out
    assert main(["config", "--set", "model.num_groups=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "groupdetr: config error: model.num_groups must be >= 1, got 0"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "groupdetr", "recipes"], capture_output=True, text=True, check=True)
    assert "paper_cdetr_r50_12ep" in out.stdout


@pytest.mark.parametrize("override", ["model.enc_layers=0", "data.num_workers=0"])
def test_zero_is_valid_where_it_makes_sense(override):
    load_config("cpu_small", [override])


def test_negative_counts_are_rejected():
    with pytest.raises(ConfigError, match="model.enc_layers must be >= 0, got -1"):
        load_config("cpu_small", ["model.enc_layers=-1"])
