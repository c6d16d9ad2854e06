"""Typed, frozen configuration with YAML recipes shipped in the package.

A recipe is a YAML file in ``groupdetr/recipes`` (or any path) holding a small diff over the
defaults below, optionally over another recipe (``base: <recipe>``). Dotted overrides
(``model.num_groups=3``) apply on top. Unknown keys are rejected with the closest valid name;
wrong types and invalid values (K < 1, N < 1, unknown enum) raise :class:`ConfigError` with one
line naming the key.

Names (house rule 1): ``model.num_groups`` is K, ``model.num_queries`` is N **per group**; K*N is
derived, never configured.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
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
    "MatcherConfig",
    "LossConfig",
    "PostprocessConfig",
    "DataConfig",
    "SynthConfig",
    "OptimConfig",
    "TrainConfig",
    "PretrainConfig",
    "PRETRAIN_WEIGHTS",
    "load_config",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "config_hash",
    "list_recipes",
    "dump_yaml",
]


#: the value of ``model.backbone.weights`` that asks for the ``pretrain`` section's cached weights
PRETRAIN_WEIGHTS = "pretrain"


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming the offending key."""


def _choices(*values) -> dict:
    return {"choices": tuple(values)}


@dataclass(frozen=True)
class BackboneConfig:
    name: str = field(default="resnet50", metadata=_choices(*names.BACKBONES))
    # Initial backbone weights: null (random init), a local state-dict file (ImageNet weights for a
    # ResNet, or a `groupdetr pretrain` output for any backbone), or "pretrain": the box-only pretext
    # pretraining described by the `pretrain` section, taken from its cache (built on first use).
    weights: str | None = None
    train_backbone: bool = True
    dilation: bool = False  # DC5 variants
    channels: tuple[int, ...] = (32, 64, 128, 256)  # small_cnn only: one stride-2 stage per entry
    depth: int = 1  # small_cnn only: conv layers per stage


@dataclass(frozen=True)
class MaskHeadConfig:
    """Instance segmentation head (task ``instance_segmentation``): per-query mask embeddings
    against per-pixel embeddings of a light pixel decoder (Mask2Former's idea)."""

    mask_dim: int = 256  # width of the mask and pixel embeddings
    stride: int = 4  # output stride of the pixel decoder (per-pixel embeddings)


@dataclass(frozen=True)
class Box3DHeadConfig:
    """3D detection head (task ``detection_3d``) and its camera-aware positional encoding (PETR)."""

    depth_bins: int = 16  # points per camera ray of the PETR frustum
    depth_min: float = 1.0  # metres, nearest frustum point
    depth_max: float = 20.0  # metres, farthest frustum point


@dataclass(frozen=True)
class DenoisingConfig:
    """DN-DETR denoising queries (needs ``model.decoder=dab``); training only."""

    enabled: bool = False
    num_queries: int = 100  # budget per denoising set: copies = max(1, num_queries // max #GT in the batch)
    label_noise: float = 0.2  # probability of flipping a label to a random class
    box_noise: float = 0.4  # DN-DETR's lambda: centre shift <= lambda*wh/2, size scale in [1-lambda, 1+lambda]
    sharing: str = field(default="per_group", metadata=_choices(*names.DN_SHARING))


@dataclass(frozen=True)
class DeformableConfig:
    """Multi-scale deformable attention (``model.decoder=dab_deformable``; Deformable DETR's defaults)."""

    num_levels: int = 4  # feature levels the encoder and the decoder's cross-attention read
    backbone_levels: int = 3  # of which the last backbone stages; the rest are extra stride-2 levels
    enc_points: int = 4  # sampling points per head and level in the encoder
    dec_points: int = 4  # ... and in the decoder's cross-attention


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = BackboneConfig()
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_classes: int = 91
    num_queries: int = 300  # N, per group
    num_groups: int = 11  # K
    self_attention: str = field(default="separate", metadata=_choices(*names.SELF_ATTENTION))
    eval_group: int = 0  # group used at inference (paper Fig. 4 evaluates each)
    prior_prob: float = 0.01
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


@dataclass(frozen=True)
class MatcherConfig:
    assignment: str = field(default="group", metadata=_choices(*names.ASSIGNMENTS))
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cost_mask: float = 5.0  # instance segmentation: sigmoid BCE of the mask logits (Mask2Former)
    cost_dice: float = 5.0  # instance segmentation: dice
    mask_points: int = 12544  # points sampled per mask for the mask costs (Mask2Former); all pixels if fewer


@dataclass(frozen=True)
class LossConfig:
    weight_class: float = 2.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    weight_mask: float = 5.0  # instance segmentation (Mask2Former's weights)
    weight_dice: float = 5.0
    mask_points: int = 12544  # points sampled per matched mask for the mask losses; all pixels if fewer
    weight_center: float = 5.0  # 3D: projected centre (L1, normalised image coordinates)
    weight_depth: float = 1.0  # 3D: L1 of log depth
    weight_dims: float = 1.0  # 3D: L1 of log dimensions
    weight_yaw: float = 1.0  # 3D: L1 of (sin, cos) of the yaw scaled to its class period


@dataclass(frozen=True)
class PostprocessConfig:
    num_select: int = 100
    nms_iou: float | None = None
    nms_candidates: int = 1000


@dataclass(frozen=True)
class SynthConfig:
    """The embedded benchmark (``groupdetr synth``); image side is ``data.image_size``."""

    num_train: int = 2000
    num_val: int = 500
    min_objects: int = 3
    max_objects: int = 12
    occlusion: float = 0.3  # probability that an object is placed right behind an earlier one
    clutter: int = 4  # distractor decals on the ground per image
    noise: float = 0.02  # pixel noise std (fraction of 0..255)
    min_visible_pixels: int = 16  # objects showing fewer pixels are rendered but not annotated
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field(default="coco", metadata=_choices(*names.DATASETS))
    root: str | None = None  # dataset root (COCO 2017 layout, or a rendered benchmark)
    num_workers: int = 2
    image_size: int = 800  # eval short side (COCO) / side of the square rendered images (synth)
    synth: SynthConfig = SynthConfig()


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    batch_size: int = 2  # per process
    epochs: int = 12
    lr_drop: int = 11  # lr x0.1 after this many epochs
    clip_max_norm: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Engine settings (``groupdetr train``)."""

    amp: bool = False  # bf16 autocast on CUDA; ignored on CPU
    eval_every: int = 1  # evaluate every n epochs (and always after the last)
    log_every: int = 50  # iterations between plain log lines when stderr is not a terminal
    max_iters_per_epoch: int | None = None  # cap for smoke runs (tiny workflows, CI); None = full epoch
    eval_backend: str = field(default="pycocotools", metadata=_choices(*names.COCO_BACKENDS))


@dataclass(frozen=True)
class PretrainConfig:
    """Box-only backbone pretraining (``groupdetr pretrain``; used by ``model.backbone.weights:
    pretrain``). A dense pretext task on a COCO-format training split: per backbone cell and stage,
    the class occupancy, a centre heatmap and the box extent (``groupdetr.pretrain``)."""

    dataset: str | None = None  # null: the training split of data.*; else a dataset name (with `root`)
    root: str | None = None  # root of that dataset (its train split is read; boxes only)
    image_size: int | None = None  # null: data.image_size
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    occupancy_weight: float = 1.0  # soft cross-entropy of the class occupancy (background + classes)
    center_weight: float = 1.0  # binary cross-entropy of the class-agnostic centre heatmap
    extent_weight: float = 1.0  # L1 of the distances to the box edges, inside boxes
    cache: str = "data/pretrained"  # content-addressed cache of pretrained weights (not part of the key)


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    seed: int = 42
    device: str = "auto"
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


def validate(cfg: Config) -> Config:
    """Cross-field checks; raises ConfigError with one line."""
    m, mt = cfg.model, cfg.matcher
    if m.backbone.depth < 1:
        raise ConfigError(f"model.backbone.depth must be >= 1, got {m.backbone.depth}")
    minimum = {  # key: (value, smallest valid value)
        "model.num_groups": (m.num_groups, 1),
        "model.num_queries": (m.num_queries, 1),
        "model.hidden_dim": (m.hidden_dim, 1),
        "model.nheads": (m.nheads, 1),
        "model.enc_layers": (m.enc_layers, 0),
        "model.dec_layers": (m.dec_layers, 1),
        "model.dim_feedforward": (m.dim_feedforward, 1),
        "model.num_classes": (m.num_classes, 1),
        "data.num_workers": (cfg.data.num_workers, 0),
        "data.image_size": (cfg.data.image_size, 16),
        "data.synth.num_train": (cfg.data.synth.num_train, 1),
        "data.synth.num_val": (cfg.data.synth.num_val, 1),
        "data.synth.min_objects": (cfg.data.synth.min_objects, 0),
        "data.synth.max_objects": (cfg.data.synth.max_objects, cfg.data.synth.min_objects),
        "data.synth.clutter": (cfg.data.synth.clutter, 0),
        "data.synth.min_visible_pixels": (cfg.data.synth.min_visible_pixels, 1),
        "optim.batch_size": (cfg.optim.batch_size, 1),
        "optim.epochs": (cfg.optim.epochs, 1),
        "postprocess.num_select": (cfg.postprocess.num_select, 1),
        "postprocess.nms_candidates": (cfg.postprocess.nms_candidates, 1),
        "train.eval_every": (cfg.train.eval_every, 1),
        "train.log_every": (cfg.train.log_every, 1),
        "train.max_iters_per_epoch": (1 if cfg.train.max_iters_per_epoch is None else cfg.train.max_iters_per_epoch, 1),
        "pretrain.steps": (cfg.pretrain.steps, 1),
        "pretrain.batch_size": (cfg.pretrain.batch_size, 1),
        "pretrain.image_size": (cfg.pretrain.image_size or 16, 16),
    }
    for key, (value, low) in minimum.items():
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    if m.hidden_dim % m.nheads or (m.hidden_dim // 2) % 2:
        raise ConfigError(f"model.hidden_dim {m.hidden_dim} must be divisible by nheads {m.nheads} and by 4")
    if not 0 <= m.eval_group < m.num_groups:
        raise ConfigError(f"model.eval_group must be in [0, {m.num_groups - 1}] (num_groups={m.num_groups}), got {m.eval_group}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if not 0.0 < m.prior_prob < 1.0:
        raise ConfigError(f"model.prior_prob must be in (0, 1), got {m.prior_prob}")
    if mt.assignment in names.SINGLE_GROUP_ASSIGNMENTS and m.num_groups != 1:
        raise ConfigError(
            f"matcher.assignment={mt.assignment} needs model.num_groups=1 (got {m.num_groups}); use 'group' for K > 1"
        )
    dn = m.denoising
    if dn.enabled and m.decoder not in names.ANCHOR_DECODERS:
        raise ConfigError(f"model.denoising.enabled needs anchor-box queries: set model.decoder to one of "
                          f"{', '.join(names.ANCHOR_DECODERS)} (got {m.decoder})")
    df = m.deformable
    if not 1 <= df.backbone_levels <= df.num_levels or df.enc_points < 1 or df.dec_points < 1:
        raise ConfigError(f"model.deformable needs 1 <= backbone_levels <= num_levels and enc_points, dec_points >= 1, "
                          f"got {df.backbone_levels}, {df.num_levels}, {df.enc_points}, {df.dec_points}")
    if dn.num_queries < 1 or not 0.0 <= dn.label_noise <= 1.0 or not 0.0 <= dn.box_noise <= 1.0:
        raise ConfigError(f"model.denoising: num_queries must be >= 1 and label_noise, box_noise in [0, 1], got "
                          f"{dn.num_queries}, {dn.label_noise}, {dn.box_noise}")
    stride = m.mask_head.stride
    if stride < 1 or stride & (stride - 1) or m.mask_head.mask_dim < 1:
        raise ConfigError(f"model.mask_head.stride must be a power of 2 and mask_dim >= 1, got {stride}, {m.mask_head.mask_dim}")
    b3 = m.box3d_head
    if b3.depth_bins < 1 or not 0.0 < b3.depth_min < b3.depth_max:
        raise ConfigError(f"model.box3d_head needs depth_bins >= 1 and 0 < depth_min < depth_max, got "
                          f"{b3.depth_bins}, {b3.depth_min}, {b3.depth_max}")
    if m.task == "detection_3d" and cfg.data.dataset != "synth":
        raise ConfigError(f"model.task=detection_3d needs 3D annotations; data.dataset={cfg.data.dataset} has none (use synth)")
    if mt.mask_points < 1 or cfg.loss.mask_points < 1:
        raise ConfigError(f"matcher.mask_points and loss.mask_points must be >= 1, got {mt.mask_points}, {cfg.loss.mask_points}")
    sy = cfg.data.synth
    if not 0.0 <= sy.occlusion <= 1.0 or not 0.0 <= sy.noise <= 1.0:
        raise ConfigError(f"data.synth.occlusion and data.synth.noise must be in [0, 1], got {sy.occlusion}, {sy.noise}")
    nms = cfg.postprocess.nms_iou
    if nms is not None and not 0.0 < nms <= 1.0:
        raise ConfigError(f"postprocess.nms_iou must be in (0, 1] or null, got {nms}")
    if m.backbone.name == "small_cnn" and any(c % 8 for c in m.backbone.channels):
        raise ConfigError(f"model.backbone.channels must be multiples of 8 (GroupNorm), got {list(m.backbone.channels)}")
    pt = cfg.pretrain
    if not (pt.lr > 0 and pt.weight_decay >= 0 and min(pt.occupancy_weight, pt.center_weight, pt.extent_weight) >= 0):
        raise ConfigError(f"pretrain: lr must be > 0 and weight_decay, the loss weights >= 0, got lr={pt.lr}, "
                          f"weight_decay={pt.weight_decay}")
    if pt.dataset not in (None, *names.DATASETS):
        raise ConfigError(f"pretrain.dataset: {pt.dataset!r} is not one of null, {', '.join(names.DATASETS)}")
    if (pt.dataset is None) != (pt.root is None):
        raise ConfigError("pretrain.dataset and pretrain.root go together: set both (another dataset) or neither")
    return cfg


def load_config(recipe: str, overrides: list[str] | None = None) -> Config:
    """Resolve a recipe name or YAML path plus dotted overrides into a validated :class:`Config`."""
    data = apply_overrides(_recipe_dict(recipe), list(overrides or []))
    return validate(from_dict(Config, data))
