"""Checkpoints of the authors' Conditional DETR / Group DETR code, read into this suite.

The authors' repository (Atten4Vis/ConditionalDETR, branch ``GroupDETR``, ``main.py``) saves
``{"model": state_dict, "optimizer": ..., "lr_scheduler": ..., "epoch": e, "args": argparse.Namespace}``
with the epoch counted from 0. Their module tree differs from ours in four places, and only there:

================================================================  ==============================================
theirs                                                            ours
================================================================  ==============================================
``backbone.0.body.*`` (a ``Joiner`` = ``Sequential(backbone, pos)``) ``backbone.body.*`` (same torchvision names)
``transformer.encoder.layers.i.self_attn.in_proj_weight`` (3d, d)   ``encoder.layers.i.{q,k,v}_proj.weight`` (d, d)
  and ``in_proj_bias`` (3d,): ``nn.MultiheadAttention``'s packed    each, the row blocks in that order; biases
  in-projection, rows [q; k; v]                                     likewise
``transformer.encoder.layers.i.self_attn.out_proj.*``               ``encoder.layers.i.attn.out_proj.*``
``transformer.encoder.layers.i.{norm1, norm2, linear1, linear2}``   ``encoder.layers.i.{norm, ffn.norm, ffn.linear1,
                                                                    ffn.linear2}``
``transformer.decoder.layers.i.{linear1, linear2, norm3}``          ``decoder.layers.i.ffn.{linear1, linear2, norm}``
``transformer.decoder.*`` (everything else: ``sa_*``/``ca_*``       ``decoder.*``, the same names
projections, ``self_attn``/``cross_attn.out_proj``, ``norm1``,
``norm2``, ``norm``, ``query_scale``, ``ref_point_head``)
================================================================  ==============================================

``class_embed``, ``bbox_embed``, ``input_proj`` and ``query_embed`` keep their names. ``query_embed`` holds
K*N rows, group g in rows g*N .. (g+1)*N, as ours; at inference both use the first N. Everything is
sequence-first on their side only in activations, never in parameters, so no tensor is transposed.

Pure functions on ``{name: tensor}`` dicts; the command (:func:`import_checkpoint`) adds reading, the
architecture read back from the shapes (and their ``args`` when the file has them), the check against the
model our config builds, and writing a checkpoint ``groupdetr eval`` reads.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from groupdetr.errors import RunError, first_line

__all__ = ["ImportRefused", "to_ours", "architecture_overrides", "read_authors_checkpoint", "import_checkpoint"]


class ImportRefused(RunError):
    """A file that is not a Conditional DETR / Group DETR checkpoint we can convert (one line says why)."""


_ENCODER = re.compile(r"transformer\.encoder\.layers\.(\d+)\.(.+)")
_DECODER_LAYER = re.compile(r"transformer\.decoder\.layers\.(\d+)\.(.+)")
_ENCODER_RENAMES = {"self_attn.out_proj.": "attn.out_proj.", "norm1.": "norm.", "norm2.": "ffn.norm.",
                    "linear1.": "ffn.linear1.", "linear2.": "ffn.linear2."}
_DECODER_RENAMES = {"linear1.": "ffn.linear1.", "linear2.": "ffn.linear2.", "norm3.": "ffn.norm."}
_SAME = ("class_embed.", "bbox_embed.", "input_proj.", "query_embed.")


def _rename(rest: str, renames: Mapping[str, str]) -> str | None:
    for theirs, ours in renames.items():
        if rest.startswith(theirs):
            return ours + rest[len(theirs):]
    return None


def to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' Conditional DETR / Group DETR ``state_dict`` under our names and layout (module docstring).

    Every key must be one of theirs: an unknown key is ImportRefused (one line naming it), so nothing is
    dropped silently. Tensors are shared, not copied, except the three blocks of a packed in-projection."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("backbone.0."):
            out["backbone." + key[len("backbone.0."):]] = value
        elif key.startswith(_SAME):
            out[key] = value
        elif m := _ENCODER.fullmatch(key):
            layer, rest = m.groups()
            prefix = f"encoder.layers.{layer}."
            if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
                if value.shape[0] % 3:
                    raise ImportRefused(f"{key} has {value.shape[0]} rows, not 3 blocks of q, k, v")
                kind = "weight" if rest.endswith("weight") else "bias"
                for name, block in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}{name}.{kind}"] = block.clone()
            elif (ours := _rename(rest, _ENCODER_RENAMES)) is not None:
                out[prefix + ours] = value
            else:
                raise ImportRefused(f"unknown encoder parameter {key}")
        elif m := _DECODER_LAYER.fullmatch(key):
            layer, rest = m.groups()
            out[f"decoder.layers.{layer}.{_rename(rest, _DECODER_RENAMES) or rest}"] = value
        elif key.startswith("transformer.decoder."):
            out["decoder." + key[len("transformer.decoder."):]] = value
        else:
            raise ImportRefused(f"{key} is not a parameter of Conditional DETR / Group DETR")
    return out


def _layers(state: Mapping[str, torch.Tensor], pattern: re.Pattern) -> int:
    return len({int(m.group(1)) for k in state if (m := pattern.fullmatch(k))})


def architecture_overrides(state: Mapping[str, torch.Tensor], args: Mapping | None = None,
                           num_groups: int | None = None) -> list[str]:
    """Dotted config overrides (``model.*``) for the architecture of the authors' ``state`` (their names).

    Sizes come from the tensors; the number of groups K from ``num_groups``, else their ``args.group_detr``
    (absent in plain Conditional DETR's args: K = 1; a file without args needs ``num_groups``: the query
    embedding holds K*N rows and cannot tell K from N); heads, the DC5 dilation and the ResNet
    depth from ``args`` when given (the depth is also read from the number of ``layer3`` blocks)."""
    args = dict(args or {})
    need = ("query_embed.weight", "class_embed.weight", "transformer.encoder.layers.0.linear1.weight")
    for key in need:
        if key not in state:
            raise ImportRefused(f"no {key}: not a Conditional DETR / Group DETR state dict")
    rows, d = state["query_embed.weight"].shape
    if num_groups is None and not args:
        raise ImportRefused("the file has no saved args, so K is unknown (its query embedding holds K*N = "
                            f"{rows} rows); give the number of groups with --groups")
    k = num_groups if num_groups is not None else int(args.get("group_detr", 1))  # plain C-DETR: no group_detr
    if k < 1 or rows % k:
        raise ImportRefused(f"query_embed has {rows} rows, which K={k} groups do not divide; give the number of "
                            f"groups with --groups")
    if args.get("pre_norm"):
        raise ImportRefused("the checkpoint was trained with --pre_norm, which our transformer does not implement")
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"backbone\.0\.body\.layer3\.(\d+)\.", key))}
    depth = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    backbone = args.get("backbone", depth)
    if backbone not in ("resnet50", "resnet101"):
        raise ImportRefused(f"backbone {backbone!r} (layer3 with {len(blocks)} blocks): only resnet50 and resnet101 "
                            f"are supported")
    overrides = {
        "model.hidden_dim": d,
        "model.num_classes": state["class_embed.weight"].shape[0],
        "model.num_groups": k,
        "model.num_queries": rows // k,
        "model.enc_layers": _layers(state, re.compile(r"transformer\.encoder\.layers\.(\d+)\..+")),
        "model.dec_layers": _layers(state, re.compile(r"transformer\.decoder\.layers\.(\d+)\..+")),
        "model.dim_feedforward": state["transformer.encoder.layers.0.linear1.weight"].shape[0],
        "model.decoder": "conditional",
        "model.backbone.name": backbone,
    }
    if "nheads" in args:
        overrides["model.nheads"] = int(args["nheads"])
    if "dilation" in args:
        overrides["model.backbone.dilation"] = str(bool(args["dilation"])).lower()
    return [f"{key}={value}" for key, value in overrides.items()]


def read_authors_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, int | None, str]:
    """(state dict, their args as a dict, finished epochs or None, sha256) of the file at ``path``: their
    training checkpoint (``model`` plus ``args``, an ``argparse.Namespace``) or a bare state dict. Read with
    ``weights_only=True``: only tensors, containers and ``argparse.Namespace`` are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    data = path.read_bytes()
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImportRefused(f"{path} cannot be read as a torch checkpoint ({first_line(e)})") from None
    if not isinstance(ckpt, Mapping):
        raise ImportRefused(f"{path} holds a {type(ckpt).__name__}, not a checkpoint or state dict")
    state = ckpt.get("model", ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportRefused(f"{path}: its 'model' entry is not a state dict of tensors")
    args = ckpt.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {}) if isinstance(args, Mapping) else {}
    epoch = ckpt.get("epoch")
    finished = int(epoch) + 1 if isinstance(epoch, int) else None  # their epochs count from 0
    return dict(state), args, finished, hashlib.sha256(data).hexdigest()


def import_checkpoint(src: str | Path, out: str | Path, recipe: str = "paper_cdetr_r50_12ep",
                      overrides: list[str] | None = None, num_groups: int | None = None) -> dict:
    """Convert the authors' checkpoint ``src`` into a groupdetr checkpoint at ``out`` that ``groupdetr eval``
    evaluates (its config: ``recipe`` + the architecture read from ``src`` + ``overrides``). Every parameter
    of the model our config builds must come from ``src`` with its shape, and every parameter of ``src``
    must land in it; otherwise ImportRefused names the first that does not. Returns a summary."""
    from groupdetr.build import build_model
    from groupdetr.config import ConfigError, config_hash, load_config, to_dict
    from groupdetr.engine.checkpoint import save_checkpoint

    out = Path(out)
    if out.exists():
        raise ImportRefused(f"{out} exists; name a new file (nothing is overwritten)")
    state, args, epochs, digest = read_authors_checkpoint(src)
    arch = architecture_overrides(state, args, num_groups)
    try:
        cfg = load_config(recipe, arch + list(overrides or []))
    except ConfigError as e:
        raise ImportRefused(f"the architecture of {src} does not make a valid config: {e}") from None
    ours = to_ours(state)
    # every parameter comes from the imported file: no initial backbone weights are read
    no_weights = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=None))
    model = build_model(no_weights, cfg.matcher.assignment)
    expected = model.state_dict()
    missing = [k for k in expected if k not in ours]
    unexpected = [k for k in ours if k not in expected]
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which the model does not"
        raise ImportRefused(f"{src} does not fit the model of the config ({len(missing)} parameters missing, "
                            f"{len(unexpected)} unexpected): it {what}")
    for key, tensor in expected.items():
        if ours[key].shape != tensor.shape:
            raise ImportRefused(f"{src}: {key} has shape {tuple(ours[key].shape)}, the model's is {tuple(tensor.shape)}")
    model.load_state_dict(ours)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = {"path": str(src), "sha256": digest, "epochs": epochs, "format": "Atten4Vis/ConditionalDETR"}
    save_checkpoint(out, {"model": model.state_dict(), "epoch": epochs or 0, "config": to_dict(cfg),
                          "model_config": to_dict(cfg.model), "config_hash": config_hash(cfg),
                          "imported_from": source})
    return {"out": str(out), "config_hash": config_hash(cfg), "architecture": arch, "parameters": len(expected),
            **{f"source_{k}": v for k, v in source.items()}}

