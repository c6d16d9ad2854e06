"""Typed, frozen configuration with YAML recipes shipped in the package.

A recipe is a YAML file in ``groupdetr/recipes`` (or any path) holding a small diff over the
defaults below, optionally over another recipe (``base: <recipe>``). Dotted overrides
(``model.num_groups=3``) apply on top. Unknown keys are rejected with the closest valid name;
wrong types and invalid values (K < 1, N < 1, unknown enum) raise :class:`ConfigError` with one
line naming the key.

Every numeric field declares the values it accepts in its ``metadata`` (:func:`_range` and its
shorthands), every enum field its names (:func:`_choices`); :func:`validate` checks them all, then the
checks that relate several fields.

Names (house rule 1): ``model.num_groups`` is K, ``model.num_queries`` is N **per group**; K*N is
derived, never configured.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from groupdetr import names

__all__ = [
    "ConfigError",
    "Config",
    "ModelConfig",
    "BackboneConfig",
    "InitFromConfig",
    "MatcherConfig",
    "LossConfig",
    "PostprocessConfig",
    "DataConfig",
    "SynthConfig",
    "OptimConfig",
    "TrainConfig",
    "PretrainConfig",
    "PRETRAIN_WEIGHTS",
    "SPLIT_PATH_KEYS",
    "resolve_augmentation",
    "Range",
    "load_config",
    "from_dict",
    "validate",
    "check_fields",
    "check_parts",
    "to_dict",
    "resolved",
    "apply_overrides",
    "override_args",
    "read_override_file",
    "config_hash",
    "list_recipes",
    "dump_yaml",
]


#: the value of ``model.backbone.weights`` that asks for the ``pretrain`` section's cached weights
PRETRAIN_WEIGHTS = "pretrain"


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming the offending key."""


def _choices(*values) -> dict:
    """Field metadata of an enum field: the value must be one of ``values``."""
    return {"choices": tuple(values)}


def _number(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: an interval (either end may be open or absent); for a tuple
    field, each item. A float must also be finite. ``note`` says what a boundary value means."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)`` ... plus the note, e.g. ``>= 0 (0: no clipping)``."""
        if self.high is None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.low is None:
            text = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        else:
            text = (f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                    f"{_number(self.high)}{')' if self.high_open else ']'}")
        return f"{text} ({self.note})" if self.note else text

    def message(self, key: str, value: float) -> str:
        """The one-line refusal of ``value`` for ``key``."""
        finite = "finite and " if isinstance(value, float) and not math.isfinite(value) else ""
        return f"{key} must be {finite}{self.describe()}, got {value}"


def _range(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           note: str = "") -> dict:
    """Field metadata of a numeric field: the interval its value (each item of a tuple) must lie in."""
    return {"range": Range(low, high, low_open, high_open, note)}


def _at_least(low: float, note: str = "") -> dict:
    """``value >= low``: counts (``>= 1``), sizes, weights and rates that may be 0 (``>= 0``)."""
    return _range(low, note=note)


def _positive() -> dict:
    """``value > 0`` (and finite): learning rates, lengths."""
    return _range(0, low_open=True)


def _fraction(high_open: bool = False) -> dict:
    """A probability or fraction in ``[0, 1]`` (``[0, 1)`` with ``high_open``)."""
    return _range(0, 1, high_open=high_open)


@dataclass(frozen=True)
class BackboneConfig:
    name: str = field(default="resnet50", metadata=_choices(*names.BACKBONES))
    # Initial backbone weights: null (random init), a local state-dict file (ImageNet weights for a
    # ResNet, or a `groupdetr pretrain` output for any backbone), or "pretrain": the box-only pretext
    # pretraining described by the `pretrain` section, taken from its cache (built on first use).
    weights: str | None = None
    train_backbone: bool = True
    dilation: bool = False  # DC5 variants
    # small_cnn only: one stride-2 stage per entry
    channels: tuple[int, ...] = field(default=(32, 64, 128, 256), metadata=_at_least(1))
    depth: int = field(default=1, metadata=_at_least(1))  # small_cnn only: conv layers per stage


@dataclass(frozen=True)
class MaskHeadConfig:
    """Instance segmentation head (task ``instance_segmentation``): per-query mask embeddings
    against per-pixel embeddings of a light pixel decoder (Mask2Former's idea)."""

    mask_dim: int = field(default=256, metadata=_at_least(1))  # width of the mask and pixel embeddings
    stride: int = field(default=4, metadata=_at_least(1))  # output stride of the pixel decoder (per-pixel embeddings)


@dataclass(frozen=True)
class Box3DHeadConfig:
    """3D detection head (task ``detection_3d``) and its camera-aware positional encoding (PETR)."""

    depth_bins: int = field(default=16, metadata=_at_least(1))  # points per camera ray of the PETR frustum
    depth_min: float = field(default=1.0, metadata=_positive())  # metres, nearest frustum point
    depth_max: float = field(default=20.0, metadata=_positive())  # metres, farthest frustum point


@dataclass(frozen=True)
class DenoisingConfig:
    """DN-DETR denoising queries (needs an anchor-box decoder, ``dab`` or ``dab_deformable``); training only."""

    enabled: bool = False
    # budget per denoising set: copies = max(1, num_queries // max #GT in the batch)
    num_queries: int = field(default=100, metadata=_at_least(1))
    label_noise: float = field(default=0.2, metadata=_fraction())  # probability of flipping a label to a random class
    # DN-DETR's lambda: centre shift <= lambda*wh/2, size scale in [1-lambda, 1+lambda]
    box_noise: float = field(default=0.4, metadata=_fraction())
    sharing: str = field(default="per_group", metadata=_choices(*names.DN_SHARING))
    contrastive: bool = False  # DINO's contrastive denoising: each copy also holds negatives (no object)


@dataclass(frozen=True)
class DeformableConfig:
    """Multi-scale deformable attention (``model.decoder=dab_deformable``; Deformable DETR's defaults)."""

    num_levels: int = field(default=4, metadata=_at_least(1))  # levels the encoder and cross-attention read
    # of which the last backbone stages; the rest are extra stride-2 levels
    backbone_levels: int = field(default=3, metadata=_at_least(1))
    enc_points: int = field(default=4, metadata=_at_least(1))  # sampling points per head and level, encoder
    dec_points: int = field(default=4, metadata=_at_least(1))  # ... and decoder cross-attention


@dataclass(frozen=True)
class InitFromConfig:
    """Start from a finished run (``model.init_from``): its whole model, or the named parts, loaded from that run
    directory's checkpoint when training starts. A part is a top-level module of the detector, named as the
    model names it (:data:`groupdetr.names.MODEL_PARTS`: ``backbone``, ``input_proj``, ``encoder``,
    ``query_embed``, ``decoder``, ``class_embed``, ``bbox_embed`` ...). Parts not loaded start exactly as in a
    fresh model of the same seed. The new run's ``manifest.json`` records the source run, its config hash and
    the checkpoint's sha256; a run that is missing, unfinished, damaged or does not fit is refused with one
    line. Resuming reads nothing from it (the run's own checkpoint holds every parameter)."""

    run: str | None = None  # a finished run directory (checkpoint.pth, manifest.json, metrics.json); null: none
    parts: tuple[str, ...] | None = None  # null: every part of the model; else names of names.MODEL_PARTS


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = BackboneConfig()
    hidden_dim: int = field(default=256, metadata=_at_least(1))
    nheads: int = field(default=8, metadata=_at_least(1))
    enc_layers: int = field(default=6, metadata=_at_least(0))
    dec_layers: int = field(default=6, metadata=_at_least(1))
    dim_feedforward: int = field(default=2048, metadata=_at_least(1))
    dropout: float = field(default=0.1, metadata=_fraction(high_open=True))
    # sigmoid classes; category ids index the logits (DETR convention: 91 for COCO, whose largest id is 90).
    # null: the training annotations' largest category id + 1, read when training starts and recorded so
    num_classes: int | None = field(default=91, metadata=_at_least(
        1, note="or null: the largest category id of the training annotations + 1"))
    num_queries: int = field(default=300, metadata=_at_least(1))  # N, per group
    num_groups: int = field(default=11, metadata=_at_least(1))  # K
    self_attention: str = field(default="separate", metadata=_choices(*names.SELF_ATTENTION))
    eval_group: int = field(default=0, metadata=_at_least(0))  # group used at inference (paper Fig. 4 evaluates each)
    prior_prob: float = field(default=0.01, metadata=_range(0, 1, low_open=True, high_open=True))
    aux_loss: bool = True
    task: str = field(default="detection", metadata=_choices(*names.TASKS))
    decoder: str = field(default="conditional", metadata=_choices(*names.DECODERS))
    # transformer initialisation (``groupdetr.model.transformer.INITS``): the authors' xavier init, or
    # PyTorch's defaults (kept as an ablation)
    init: str = field(default="authors", metadata=_choices(*names.INITS))
    mask_head: MaskHeadConfig = MaskHeadConfig()
    box3d_head: Box3DHeadConfig = Box3DHeadConfig()
    denoising: DenoisingConfig = DenoisingConfig()
    deformable: DeformableConfig = DeformableConfig()
    init_from: InitFromConfig = InitFromConfig()  # initial weights from a finished run (all of it or some parts)


@dataclass(frozen=True)
class MatcherConfig:
    assignment: str = field(default="group", metadata=_choices(*names.ASSIGNMENTS))
    cost_class: float = field(default=2.0, metadata=_at_least(0))
    cost_bbox: float = field(default=5.0, metadata=_at_least(0))
    cost_giou: float = field(default=2.0, metadata=_at_least(0))
    focal_alpha: float = field(default=0.25, metadata=_fraction())
    focal_gamma: float = field(default=2.0, metadata=_at_least(0))
    # instance segmentation: sigmoid BCE of the mask logits (Mask2Former)
    cost_mask: float = field(default=5.0, metadata=_at_least(0))
    cost_dice: float = field(default=5.0, metadata=_at_least(0))  # instance segmentation: dice
    # points sampled per mask for the mask costs (Mask2Former); all pixels if fewer
    mask_points: int = field(default=12544, metadata=_at_least(1))


@dataclass(frozen=True)
class LossConfig:
    weight_class: float = field(default=2.0, metadata=_at_least(0))
    weight_bbox: float = field(default=5.0, metadata=_at_least(0))
    weight_giou: float = field(default=2.0, metadata=_at_least(0))
    focal_alpha: float = field(default=0.25, metadata=_fraction())
    focal_gamma: float = field(default=2.0, metadata=_at_least(0))
    weight_mask: float = field(default=5.0, metadata=_at_least(0))  # instance segmentation (Mask2Former's weights)
    weight_dice: float = field(default=5.0, metadata=_at_least(0))
    # points sampled per matched mask for the mask losses; all pixels if fewer
    mask_points: int = field(default=12544, metadata=_at_least(1))
    # 3D: projected centre (L1, normalised image coordinates)
    weight_center: float = field(default=5.0, metadata=_at_least(0))
    weight_depth: float = field(default=1.0, metadata=_at_least(0))  # 3D: L1 of log depth
    weight_dims: float = field(default=1.0, metadata=_at_least(0))  # 3D: L1 of log dimensions
    # 3D: L1 of (sin, cos) of the yaw scaled to its class period
    weight_yaw: float = field(default=1.0, metadata=_at_least(0))


@dataclass(frozen=True)
class PostprocessConfig:
    num_select: int = field(default=100, metadata=_at_least(1))
    nms_iou: float | None = field(default=None, metadata=_range(0, 1, low_open=True, note="or null: no NMS"))
    nms_candidates: int = field(default=1000, metadata=_at_least(1))


@dataclass(frozen=True)
class SynthConfig:
    """The embedded benchmark (``groupdetr synth``); image side is ``data.image_size``."""

    num_train: int = field(default=2000, metadata=_at_least(1))
    num_val: int = field(default=500, metadata=_at_least(1))
    min_objects: int = field(default=3, metadata=_at_least(0))
    max_objects: int = field(default=12, metadata=_at_least(0))
    # probability that an object is placed right behind an earlier one
    occlusion: float = field(default=0.3, metadata=_fraction())
    clutter: int = field(default=4, metadata=_at_least(0))  # distractor decals on the ground per image
    noise: float = field(default=0.02, metadata=_fraction())  # pixel noise std (fraction of 0..255)
    # objects showing fewer pixels are rendered but not annotated
    min_visible_pixels: int = field(default=16, metadata=_at_least(1))
    seed: int = field(default=0, metadata=_at_least(0))


#: the keys of ``data`` (and ``pretrain``, train split only) that name a split of a ``coco_json`` dataset
SPLIT_PATH_KEYS = ("train_images", "train_annotations", "val_images", "val_annotations")


@dataclass(frozen=True)
class DataConfig:
    """The dataset and how its images are fed. ``coco`` and ``synth`` are read from ``root`` in their fixed
    layouts; ``coco_json`` (any COCO-format dataset) from the four split paths. Relative paths are relative
    to the working directory, as every path of the config."""

    dataset: str = field(default="coco", metadata=_choices(*names.DATASETS))
    root: str | None = None  # dataset root (COCO 2017 layout, or a rendered benchmark); not read by coco_json
    train_images: str | None = None  # coco_json: folder of the training images (file_name is relative to it)
    train_annotations: str | None = None  # coco_json: COCO JSON of the training split
    val_images: str | None = None  # coco_json: folder of the validation images
    val_annotations: str | None = None  # coco_json: COCO JSON of the validation split
    # groupdetr.data.transforms.PRESETS; auto: the dataset's own (names.DATASET_AUGMENTATION)
    augmentation: str = field(default=names.AUTO_AUGMENTATION, metadata=_choices(names.AUTO_AUGMENTATION,
                                                                               *names.AUGMENTATIONS))
    num_workers: int = field(default=2, metadata=_at_least(0))
    # the short side every split is seen at: validation resizes to it, training augments around it (DETR's
    # scales are stated for 800 and scale with it); the side of the square rendered images (synth)
    image_size: int = field(default=800, metadata=_at_least(16))
    synth: SynthConfig = SynthConfig()


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(default=1e-4, metadata=_positive())
    # > 0 like lr; to keep the backbone fixed, set model.backbone.train_backbone=false
    lr_backbone: float = field(default=1e-5, metadata=_positive())
    weight_decay: float = field(default=1e-4, metadata=_at_least(0))
    batch_size: int = field(default=2, metadata=_at_least(1))  # per process
    epochs: int = field(default=12, metadata=_at_least(1))
    lr_drop: int = field(default=11, metadata=_at_least(1))  # lr x0.1 after this many epochs
    # max total gradient norm; 0 turns clipping off (a negative value is refused, never read as "off")
    clip_max_norm: float = field(default=0.1, metadata=_at_least(0, note="0: no clipping"))


@dataclass(frozen=True)
class TrainConfig:
    """Engine settings (``groupdetr train``)."""

    amp: bool = False  # bf16 autocast on CUDA; ignored on CPU
    eval_every: int = field(default=1, metadata=_at_least(1))  # evaluate every n epochs (and always after the last)
    # iterations between plain log lines when stderr is not a terminal
    log_every: int = field(default=50, metadata=_at_least(1))
    # cap for smoke runs (tiny workflows, CI); None = full epoch
    max_iters_per_epoch: int | None = field(default=None, metadata=_at_least(1, note="or null: the full epoch"))
    eval_backend: str = field(default="pycocotools", metadata=_choices(*names.COCO_BACKENDS))
    # parts of the model (names.MODEL_PARTS) kept as they start: requires_grad off, left out of the optimizer
    # (no optimizer state), unchanged by training (e.g. [backbone, input_proj, encoder]: paper Table 1)
    freeze: tuple[str, ...] = ()


@dataclass(frozen=True)
class PretrainConfig:
    """Box-only backbone pretraining (``groupdetr pretrain``; used by ``model.backbone.weights:
    pretrain``). A dense pretext task on a COCO-format training split: per backbone cell and stage,
    the class occupancy, a centre heatmap and the box extent (``groupdetr.pretrain``)."""

    dataset: str | None = None  # null: the training split of data.*; else a dataset name (with `root`, or the paths)
    root: str | None = None  # root of that dataset (its train split is read; boxes only)
    train_images: str | None = None  # pretrain.dataset=coco_json: its training images ...
    train_annotations: str | None = None  # ... and their COCO JSON (boxes only are read)
    image_size: int | None = field(default=None, metadata=_at_least(16, note="or null: data.image_size"))
    steps: int = field(default=1500, metadata=_at_least(1))
    batch_size: int = field(default=16, metadata=_at_least(1))
    lr: float = field(default=1e-3, metadata=_positive())
    weight_decay: float = field(default=1e-4, metadata=_at_least(0))
    seed: int = field(default=0, metadata=_at_least(0))
    # soft cross-entropy of the class occupancy (background + classes)
    occupancy_weight: float = field(default=1.0, metadata=_at_least(0))
    # binary cross-entropy of the class-agnostic centre heatmap
    center_weight: float = field(default=1.0, metadata=_at_least(0))
    # L1 of the distances to the box edges, inside boxes
    extent_weight: float = field(default=1.0, metadata=_at_least(0))
    cache: str = "data/pretrained"  # content-addressed cache of pretrained weights (not part of the key)


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    seed: int = field(default=42, metadata=_at_least(0))
    # auto: CUDA when present, else CPU; cuda without a GPU is refused when training or evaluation starts
    device: str = field(default="auto", metadata=_choices(*names.DEVICES))
    model: ModelConfig = ModelConfig()
    matcher: MatcherConfig = MatcherConfig()
    loss: LossConfig = LossConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    pretrain: PretrainConfig = PretrainConfig()


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _integral(value: Any) -> int | None:
    """The integer that a float or a float-like string (``1e3``, ``2.0``) writes exactly, else None
    (``1.5``, ``1e-3``, ``nan``, booleans and anything else)."""
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        exact = Decimal(value.strip())  # exact, so 1e30 is 10**30 and 1.0000000000000001 is not integral
        return int(exact) if exact == exact.to_integral_value() else None
    return None


def _coerce(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is tuple:
        (item, _ell) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        integral = _integral(value)
        if integral is not None:
            return integral  # 1e3 (a string to YAML 1.1) or 1000.0: the integer it writes exactly
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users write it that way
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a (partial) nested dict; defaults fill the rest."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(fields)})"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        value = _coerce(value, hints[key], prefix + key)
        choices = fields[key].metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{prefix}{key}: {value!r} is not one of {', '.join(choices)}")
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """Plain nested dict (tuples as lists), suitable for YAML/JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def resolved(cls, data: Any) -> dict | None:
    """``data`` (a stored config section, e.g. a checkpoint's ``model_config``) read as section ``cls`` and
    written back (:func:`to_dict`): fields added since it was written get their defaults, so it compares equal
    to the same config resolved today. None when it is not a readable ``cls``."""
    try:
        return to_dict(from_dict(cls, data))
    except (ConfigError, TypeError):
        return None


def config_hash(cfg: Config) -> str:
    """Short stable hash of the resolved config (sha256 of canonical JSON)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# recipes and overrides


def list_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("groupdetr.recipes").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path) -> dict:
    """Read a YAML mapping from a Path or a package resource."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


def _recipe_dict(name_or_path: str, seen: tuple = ()) -> dict:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = _read_yaml(path)
    else:
        res = resources.files("groupdetr.recipes") / f"{name_or_path}.yaml"
        if not res.is_file():
            close = difflib.get_close_matches(name_or_path, list_recipes(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (recipes: {', '.join(list_recipes())})"
            raise ConfigError(f"unknown recipe '{name_or_path}'{hint}")
        data = _read_yaml(res)
    base = data.pop("base", None)
    data.setdefault("name", path.stem)  # a recipe is named after its own file unless it says
    if base is None:
        return data
    if base in seen:
        raise ConfigError(f"recipe inheritance loops through '{base}'")
    return _deep_merge(_recipe_dict(base, seen + (name_or_path,)), data)


def _deep_merge(base: dict, diff: dict) -> dict:
    out = dict(base)
    for k, v in diff.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"model.num_groups": 3}`` -> ``["model.num_groups=3"]`` (values as YAML flow scalars): the dotted
    overrides a mapping stands for (a study's ``overrides:``, a file of ``--set-from``)."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, str):
            text = value
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            if text.endswith("\n..."):
                text = text[: -len("\n...")]
            text = text.removesuffix("...").strip()
        args.append(f"{key}={text}")
    return args


def read_override_file(path: str | Path) -> list[str]:
    """The dotted overrides of a file written for ``groupdetr train --set-from`` (e.g. the equal-training-time
    schedule the workflow derives): a YAML mapping whose ``overrides`` entry maps dotted keys to values; any
    other entry is its record of where they came from (``derived``). One ConfigError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--set-from {path}: no such file")
    data = _read_yaml(path)
    overrides = data.get("overrides")
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"--set-from {path}: expected a mapping 'overrides' of dotted keys to values")
    return override_args(overrides)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted ``key=value`` overrides; values are parsed as YAML (``3``, ``null``, ``[1,2]``)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}") from None
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: '{p}' is not a section")
        node[parts[-1]] = value
    return data


def check_fields(section, prefix: str = "") -> None:
    """Check every field of ``section`` (a config dataclass; sections within it too) against its own
    metadata: the :class:`Range` of a numeric field (each item of a tuple; ``None`` of an optional field
    passes) and the choices of an enum field. Raises ConfigError with one line naming the key, the value
    and what is allowed."""
    for f in dataclasses.fields(section):
        key, value = prefix + f.name, getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{key}.")
            continue
        choices, allowed = f.metadata.get("choices"), f.metadata.get("range")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        if allowed is None or value is None:
            continue
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, tuple) else [(key, value)]
        for name, item in items:
            if not allowed.contains(item):
                raise ConfigError(allowed.message(name, item))


def check_parts(key: str, parts: tuple[str, ...]) -> None:
    """Refuse (ConfigError, one line naming ``key``) a list of model parts with a name that is not one of
    :data:`groupdetr.names.MODEL_PARTS` (with the closest name), or a name twice. Whether the model of a config
    has the part (``head`` needs a task with a head) is checked when it is built."""
    for part in parts:
        if part not in names.MODEL_PARTS:
            close = difflib.get_close_matches(part, names.MODEL_PARTS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"parts: {', '.join(names.MODEL_PARTS)}"
            raise ConfigError(f"{key}: unknown part {part!r} ({hint})")
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise ConfigError(f"{key}: part {twice[0]!r} named twice")


def validate(cfg: Config) -> Config:
    """Every field against its metadata (:func:`check_fields`), then the checks that relate several
    fields; raises ConfigError with one line."""
    check_fields(cfg)
    m, mt = cfg.model, cfg.matcher
    sy = cfg.data.synth
    if sy.max_objects < sy.min_objects:
        raise ConfigError(f"data.synth.max_objects must be >= data.synth.min_objects ({sy.min_objects}), got {sy.max_objects}")
    if m.hidden_dim % m.nheads or (m.hidden_dim // 2) % 2:
        raise ConfigError(f"model.hidden_dim {m.hidden_dim} must be divisible by nheads {m.nheads} and by 4")
    if not 0 <= m.eval_group < m.num_groups:
        raise ConfigError(f"model.eval_group must be in [0, {m.num_groups - 1}] (num_groups={m.num_groups}), got {m.eval_group}")
    if mt.assignment in names.SINGLE_GROUP_ASSIGNMENTS and m.num_groups != 1:
        raise ConfigError(
            f"matcher.assignment={mt.assignment} needs model.num_groups=1 (got {m.num_groups}); use 'group' for K > 1"
        )
    dn = m.denoising
    if dn.enabled and m.decoder not in names.ANCHOR_DECODERS:
        raise ConfigError(f"model.denoising.enabled needs anchor-box queries: set model.decoder to one of "
                          f"{', '.join(names.ANCHOR_DECODERS)} (got {m.decoder})")
    if m.task not in names.DECODER_TASKS.get(m.decoder, (m.task,)):
        raise ConfigError(f"model.decoder={m.decoder} supports model.task {', '.join(names.DECODER_TASKS[m.decoder])} "
                          f"only, got {m.task}")
    df = m.deformable
    if df.backbone_levels > df.num_levels:
        raise ConfigError(f"model.deformable.backbone_levels must be <= num_levels ({df.num_levels}), got {df.backbone_levels}")
    stride = m.mask_head.stride
    if stride & (stride - 1):
        raise ConfigError(f"model.mask_head.stride must be a power of 2, got {stride}")
    b3 = m.box3d_head
    if not b3.depth_min < b3.depth_max:
        raise ConfigError(f"model.box3d_head.depth_max must be > depth_min ({b3.depth_min}), got {b3.depth_max}")
    if m.task == "detection_3d" and cfg.data.dataset == "coco":
        raise ConfigError("model.task=detection_3d needs 3D annotations; data.dataset=coco has none "
                          "(use synth, or coco_json with 3D labels)")
    if m.backbone.name == "small_cnn" and any(c % 8 for c in m.backbone.channels):
        raise ConfigError(f"model.backbone.channels must be multiples of 8 (GroupNorm), got {list(m.backbone.channels)}")
    _check_dataset_keys(cfg.data.dataset, cfg.data, "data", SPLIT_PATH_KEYS)
    init = m.init_from
    if init.parts is not None:
        if init.run is None:
            raise ConfigError("model.init_from.parts needs model.init_from.run (the finished run to load them from)")
        if not init.parts:
            raise ConfigError("model.init_from.parts is empty; name the parts to load, or null for the whole model")
        check_parts("model.init_from.parts", init.parts)
    if init.run is not None and not init.run.strip():
        raise ConfigError("model.init_from.run is empty; name a run directory, or null to start fresh")
    check_parts("train.freeze", cfg.train.freeze)
    pt = cfg.pretrain
    if pt.dataset not in (None, *names.DATASETS):
        raise ConfigError(f"pretrain.dataset: {pt.dataset!r} is not one of null, {', '.join(names.DATASETS)}")
    if pt.dataset is None:
        given = [k for k in ("root", *SPLIT_PATH_KEYS[:2]) if getattr(pt, k) is not None]
        if given:
            raise ConfigError(f"pretrain.{given[0]} names another dataset to pretrain on: set pretrain.dataset too "
                              "(or leave both unset to pretrain on data.*)")
    else:
        _check_dataset_keys(pt.dataset, pt, "pretrain", SPLIT_PATH_KEYS[:2])
        needed = SPLIT_PATH_KEYS[:2] if pt.dataset == names.BY_PATHS else ("root",)
        missing = [k for k in needed if getattr(pt, k) is None]
        if missing:
            raise ConfigError(f"pretrain.dataset={pt.dataset} needs pretrain.{missing[0]} "
                              f"(set {', '.join('pretrain.' + k for k in needed)})")
    return cfg


def _check_dataset_keys(dataset: str, section, prefix: str, path_keys: tuple[str, ...]) -> None:
    """Refuse a location key that ``dataset`` would ignore: the split paths with a layout dataset (read from
    ``root``), ``root`` with ``coco_json`` (read from the split paths). A key set and silently unread is how a
    run ends up on another dataset than its author meant."""
    if dataset == names.BY_PATHS:
        if section.root is not None:
            raise ConfigError(f"{prefix}.root is not read with {prefix}.dataset={dataset}, whose splits are "
                              f"{', '.join(prefix + '.' + k for k in path_keys)}: set {prefix}.root=null")
        return
    given = [k for k in path_keys if getattr(section, k) is not None]
    if given:
        raise ConfigError(f"{prefix}.{given[0]} is read only with {prefix}.dataset={names.BY_PATHS}; "
                          f"{prefix}.dataset={dataset} is read from {prefix}.root")


def resolve_augmentation(augmentation: str, dataset: str) -> str:
    """The augmentation preset (a name of ``names.AUGMENTATIONS``) that ``data.augmentation`` means for
    ``dataset``: itself, or with ``auto`` the dataset's own (``names.DATASET_AUGMENTATION``)."""
    return names.DATASET_AUGMENTATION[dataset] if augmentation == names.AUTO_AUGMENTATION else augmentation


def load_config(recipe: str, overrides: list[str] | None = None) -> Config:
    """Resolve a recipe name or YAML path plus dotted overrides into a validated :class:`Config`."""
    data = apply_overrides(_recipe_dict(recipe), list(overrides or []))
    return validate(from_dict(Config, data))
