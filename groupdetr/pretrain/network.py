"""The trainable network that pretraining optimises for each ``model.backbone.name``.

``small_cnn`` is pretrained as it is (GroupNorm). A ResNet is pretrained with ordinary, trainable
BatchNorm and every stage trainable -- the detector's FrozenBatchNorm and frozen stem assume weights
that already exist -- and exported under torchvision's key names, so the detector loads the result
exactly as it loads ImageNet weights (BN statistics become the frozen ones).
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from groupdetr.model.backbone import SmallCNN, export_weights

__all__ = ["pretext_backbone", "TrainableResNet"]


class TrainableResNet(nn.Module):
    """torchvision ResNet with BatchNorm, exposing the detector backbone's stage interface."""

    def __init__(self, name: str, dilation: bool):
        super().__init__()
        self.net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=[False, False, dilation])
        self.body = IntermediateLayerGetter(self.net, return_layers={f"layer{i}": str(i) for i in range(1, 5)})
        base = 64 if name in ("resnet18", "resnet34") else 256
        self.stage_channels = tuple(base * 2**i for i in range(4))
        self.stage_strides = (4, 8, 16, 16) if dilation else (4, 8, 16, 32)

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> the maps of layer1..layer4."""
        return list(self.body(images).values())

    def export(self) -> dict[str, torch.Tensor]:
        """torchvision key names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...), no classifier."""
        return export_weights(self.net)


class _SmallCNNExport(SmallCNN):
    def export(self) -> dict[str, torch.Tensor]:
        return export_weights(self)


def pretext_backbone(cfg) -> nn.Module:
    """The network to pretrain for ``cfg`` (a ``BackboneConfig``); it has ``forward_features``,
    ``stage_channels``, ``stage_strides`` and ``export()`` (the weights file's state dict)."""
    if cfg.name == "small_cnn":
        return _SmallCNNExport(tuple(cfg.channels), cfg.depth)
    return TrainableResNet(cfg.name, cfg.dilation)
