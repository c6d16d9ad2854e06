"""Backbones: torchvision ResNets with frozen BatchNorm (paper preset) and a small CNN (CPU presets).

Both map images ``[B, 3, H, W]`` to one feature map ``[B, C, H/s, W/s]`` and expose
``num_channels`` and ``stride``; ``forward_features`` returns every stage's map (ascending stride,
described by ``stage_channels`` and ``stage_strides``) for heads that need finer features (the
pixel decoder of the mask head). Weights are never downloaded: a backbone starts from random init
unless ``weights`` names a local state-dict file -- ImageNet weights for a ResNet (torchvision key
names), or the output of ``groupdetr pretrain`` for any backbone (:func:`export_weights` writes the
same key names that :func:`load_weights` reads).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from groupdetr.errors import WeightsError

__all__ = ["ResNetBackbone", "SmallCNN", "downsample_mask", "BACKBONES", "WeightsError", "read_weights",
           "load_weights", "export_weights"]

# keys of a torchvision ResNet state dict that a detection backbone never has (classifier, BN counters)
_IGNORED_KEYS = ("fc.", "num_batches_tracked")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from ``path`` (``torch.load(weights_only=True)``); WeightsError if the file
    is missing or is not a mapping of tensor names to tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, zero bytes, not a torch file, pickled code
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]  # some errors have an empty message
        raise WeightsError(f"backbone weights {path} cannot be read ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise WeightsError(f"backbone weights {path} is not a state dict (a mapping of names to tensors)")
    return state


def load_weights(net: nn.Module, path: str | Path, what: str) -> None:
    """Load the state dict in ``path`` into ``net`` (every key must match, by name and shape, except a
    ResNet's classifier and BN counters); WeightsError naming the file and ``what`` otherwise."""
    state = {k: v for k, v in read_weights(path).items() if not any(s in k for s in _IGNORED_KEYS)}
    own = {k: v for k, v in net.state_dict().items() if not any(s in k for s in _IGNORED_KEYS)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"shape {', '.join(wrong[:2])}" if wrong else "") if part)
        raise WeightsError(f"backbone weights {path} do not fit {what}: {detail}")
    net.load_state_dict(state, strict=False)


def export_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict :func:`load_weights` reads back (contiguous CPU copies, no BN counters)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()
            if not any(s in k for s in _IGNORED_KEYS)}


def downsample_mask(pad_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, H, W] bool padding mask -> [B, h, w] (nearest), as DETR does."""
    return F.interpolate(pad_mask[None].float(), size=size)[0].to(torch.bool)


class ResNetBackbone(nn.Module):
    """torchvision ResNet with FrozenBatchNorm2d; stem and layer1 frozen as in DETR.

    Args:
        name: torchvision constructor name (``resnet50`` for the paper preset).
        weights: path of a local ImageNet state dict, or None (random init).
        train_backbone: if False, every backbone parameter is frozen.
        dilation: replace the stride of layer4 by dilation (the DC5 variants).
    """

    def __init__(self, name: str, weights: str | None, train_backbone: bool, dilation: bool):
        super().__init__()
        net = getattr(torchvision.models, name)(
            weights=None, norm_layer=FrozenBatchNorm2d, replace_stride_with_dilation=[False, False, dilation]
        )
        if weights is not None:
            load_weights(net, weights, name)
        for pname, p in net.named_parameters():
            if not train_backbone or not any(s in pname for s in ("layer2", "layer3", "layer4")):
                p.requires_grad_(False)
        self.body = IntermediateLayerGetter(net, return_layers={f"layer{i}": str(i) for i in range(1, 5)})
        base = 64 if name in ("resnet18", "resnet34") else 256
        self.stage_channels = tuple(base * 2**i for i in range(4))
        self.stage_strides = (4, 8, 16, 16) if dilation else (4, 8, 16, 32)
        self.num_channels = self.stage_channels[-1]
        self.stride = self.stage_strides[-1]

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> the maps of layer1..layer4, ``[B, C_i, H/s_i, W/s_i]``."""
        return list(self.body(images).values())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, C, H/s, W/s]."""
        return self.forward_features(images)[-1]


class SmallCNN(nn.Module):
    """Stages of ``depth`` Conv(3x3)-GroupNorm-ReLU layers, the first of each with stride 2; trained
    from scratch on CPU.

    GroupNorm behaves the same in train and eval mode, so train/eval equivalence tests are exact.
    ``weights``: a state-dict file of this network (``groupdetr pretrain`` writes one), or None.
    """

    def __init__(self, channels: tuple[int, ...], depth: int = 1, weights: str | Path | None = None):
        super().__init__()
        stages, cin = [], 3
        for cout in channels:
            layers = []
            for i in range(depth):
                layers += [nn.Conv2d(cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                           nn.GroupNorm(8, cout), nn.ReLU(inplace=True)]
                cin = cout
            stages.append(nn.Sequential(*layers))
        # One flat Sequential keeps the parameter names (body.<i>) of checkpoints written before
        # stages were exposed; stage boundaries are remembered as layer counts.
        self.body = nn.Sequential(*[m for st in stages for m in st])
        self._ends = [3 * depth * (i + 1) for i in range(len(channels))]
        self.stage_channels = tuple(channels)
        self.stage_strides = tuple(2 ** (i + 1) for i in range(len(channels)))
        self.num_channels = cin
        self.stride = 2 ** len(channels)
        if weights is not None:
            load_weights(self, weights, f"small_cnn channels {list(channels)} depth {depth}")

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> every stage's map ``[B, C_i, H/2^(i+1), W/2^(i+1)]``."""
        out, x, start = [], images, 0
        for end in self._ends:
            x = self.body[start:end](x)
            out.append(x)
            start = end
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, C, H/s, W/s]."""
        return self.body(images)


def _resnet(cfg) -> nn.Module:
    return ResNetBackbone(cfg.name, cfg.weights, cfg.train_backbone, cfg.dilation)


def _small(cfg) -> nn.Module:
    return SmallCNN(tuple(cfg.channels), cfg.depth, cfg.weights)


BACKBONES = {
    "resnet18": _resnet,
    "resnet34": _resnet,
    "resnet50": _resnet,
    "resnet101": _resnet,
    "small_cnn": _small,
}
