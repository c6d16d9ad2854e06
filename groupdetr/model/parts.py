"""The parts of a detector, by name: what ``model.init_from.parts`` loads and ``train.freeze`` freezes.

A part is a top-level module of :class:`groupdetr.model.detector.GroupDETR` (:data:`groupdetr.names.MODEL_PARTS`),
so the part of a state-dict key is its first component (``encoder.layers.0.linear1.weight`` -> ``encoder``) and
no parameter belongs to two parts (the tests check both for every decoder, task and denoising setting). Which
parts a model has depends on its config (``head``: a task with a head; ``label_embed``: denoising queries);
naming one it lacks is refused with one line.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from groupdetr.config import ConfigError
from groupdetr.names import MODEL_PARTS

__all__ = ["MODEL_PARTS", "part_of", "model_parts", "check_present", "part_keys", "freeze_parts"]


def part_of(key: str) -> str:
    """The part of a state-dict key (or parameter name): its first dotted component."""
    return key.split(".", 1)[0]


def model_parts(model: nn.Module) -> tuple[str, ...]:
    """The parts ``model`` has, in :data:`MODEL_PARTS` order (a part set to None, e.g. ``head`` of plain
    detection, is absent)."""
    children = {name for name, _ in model.named_children()}
    return tuple(p for p in MODEL_PARTS if p in children)


def check_present(model: nn.Module, parts: Iterable[str], key: str) -> None:
    """Refuse (ConfigError, one line naming ``key``) a part that ``model`` does not have."""
    have = model_parts(model)
    for part in parts:
        if part not in have:
            raise ConfigError(f"{key}: this model has no part {part!r} (its parts: {', '.join(have)})")


def part_keys(state: Mapping[str, object], parts: Iterable[str]) -> list[str]:
    """The keys of ``state`` (a state dict) that belong to ``parts``, in ``state``'s order."""
    parts = set(parts)
    return [k for k in state if part_of(k) in parts]


def freeze_parts(model: nn.Module, parts: Iterable[str]) -> list[str]:
    """Turn off ``requires_grad`` of every parameter of ``parts`` (``train.freeze``); returns their names.

    Call it before the optimizer is built: :func:`groupdetr.build.build_optimizer` takes only parameters that
    require gradients, so frozen ones get no optimizer state and no weight decay, and stay as they start.
    Buffers are not touched: every normalisation of the shipped backbones is frozen BatchNorm or GroupNorm,
    which keep no running statistics, so a frozen part does not change in training (tested)."""
    parts = tuple(parts)
    check_present(model, parts, "train.freeze")
    frozen = []
    for name, param in model.named_parameters():
        if part_of(name) in parts:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
