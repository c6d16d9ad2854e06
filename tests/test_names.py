"""The torch-free registry names agree with the registries, and light modules stay light."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from groupdetr import names
from groupdetr.config import Config, ConfigError, load_config


def _registries():
    from groupdetr.data.coco import LAYOUTS
    from groupdetr.data.transforms import PRESETS
    from groupdetr.evaluation.coco import BACKENDS
    from groupdetr.matcher import ASSIGNMENTS
    from groupdetr.model.attention import SELF_ATTENTION
    from groupdetr.model.backbone import BACKBONES
    from groupdetr.model.registry import DECODERS
    from groupdetr.model.transformer import INITS
    from groupdetr.reporting.figures import FIGURES
    from groupdetr.tasks import TASKS

    return {
        "BACKBONES": tuple(BACKBONES), "SELF_ATTENTION": tuple(SELF_ATTENTION), "ASSIGNMENTS": tuple(ASSIGNMENTS),
        "SINGLE_GROUP_ASSIGNMENTS": tuple(k for k, a in ASSIGNMENTS.items() if a.requires_single_group),
        "COCO_BACKENDS": tuple(BACKENDS), "TASKS": tuple(TASKS), "DECODERS": tuple(DECODERS), "INITS": tuple(INITS),
        "DATASETS": (*LAYOUTS, names.BY_PATHS), "FIGURE_KINDS": tuple(FIGURES), "AUGMENTATIONS": tuple(PRESETS),
    } | {"DATASETS (augmentation defaults)": tuple(names.DATASET_AUGMENTATION)}


def test_every_registry_is_keyed_by_its_names():
    for name, keys in _registries().items():
        assert keys == getattr(names, name.split(" ")[0]), name


def _enum_fields(cls=Config, prefix: str = "") -> dict[str, tuple]:
    """``{dotted key: choices}`` of every enum field of the config, sections within sections included."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _enum_fields(hints[f.name], f"{prefix}{f.name}.")
        elif "choices" in f.metadata:
            out[prefix + f.name] = f.metadata["choices"]
    return out


def test_the_config_validates_against_the_names():
    choices = _enum_fields()
    assert choices["model.task"] == names.TASKS and choices["model.decoder"] == names.DECODERS
    assert choices["matcher.assignment"] == names.ASSIGNMENTS and choices["data.dataset"] == names.DATASETS
    assert choices["train.eval_backend"] == names.COCO_BACKENDS and choices["model.init"] == names.INITS
    assert choices["model.self_attention"] == names.SELF_ATTENTION and choices["model.backbone.name"] == names.BACKBONES
    assert choices["model.denoising.sharing"] == names.DN_SHARING
    assert choices["data.augmentation"] == (names.AUTO_AUGMENTATION, *names.AUGMENTATIONS)
    assert set(names.DATASET_AUGMENTATION.values()) <= set(names.AUGMENTATIONS)
    with pytest.raises(ConfigError, match="matcher.assignment=one_to_one needs model.num_groups=1"):
        load_config("cpu_small", ["matcher.assignment=one_to_one"])
    assert load_config("cpu_small", ["matcher.assignment=one_to_one", "model.num_groups=1"]).model.num_groups == 1


@pytest.mark.parametrize("module", ["groupdetr.config", "groupdetr.studies", "groupdetr.names", "groupdetr.cli",
                                    "groupdetr.rundir", "groupdetr.errors", "groupdetr.pretrain.cache",
                                    "groupdetr.reporting.study", "groupdetr.reporting.paper", "groupdetr.reporting.versus",
                                    "groupdetr.reporting.runs", "groupdetr.reporting.stats",
                                    "groupdetr.reporting.tables", "groupdetr.reporting.figures",
                                    "groupdetr.reporting.gather", "groupdetr.reporting.cost", "groupdetr.equal_time"])
def test_light_modules_import_no_heavy_library(module):
    """Reading a config or a study file (and starting the CLI) imports neither torch, torchvision nor
    pycocotools: every Snakemake parse and `groupdetr --help` pays only for what it uses."""
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'torchvision', 'pycocotools') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
