import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from groupdetr.model.backbone import WeightsError, ResNetBackbone, SmallCNN


def test_resnet_loads_local_weights_and_freezes_stem(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetBackbone("resnet18", str(path), train_backbone=True, dilation=False)
    assert torch.equal(bb.body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert not bb.body.conv1.weight.requires_grad and not bb.body.layer1[0].conv1.weight.requires_grad
    assert bb.body.layer2[0].conv1.weight.requires_grad
    assert isinstance(bb.body.bn1, FrozenBatchNorm2d)
    assert bb(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_resnet_weight_errors(tmp_path):
    with pytest.raises(WeightsError, match="backbone weights file not found"):
        ResNetBackbone("resnet18", str(tmp_path / "none.pth"), True, False)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match=f"{bad} do not fit resnet18: missing .*; shape conv1.weight"):
        ResNetBackbone("resnet18", str(bad), True, False)


def test_small_cnn_stride_and_channels():
    bb = SmallCNN((8, 16, 32))
    assert bb.stride == 8 and bb.num_channels == 32
    assert bb(torch.randn(2, 3, 64, 48)).shape == (2, 32, 8, 6)


def test_small_cnn_depth_adds_stride_one_layers_per_stage():
    import torch

    from groupdetr.model.backbone import SmallCNN

    one, two = SmallCNN((8, 16), depth=1), SmallCNN((8, 16), depth=2)
    x = torch.randn(2, 3, 32, 32)
    assert one(x).shape == two(x).shape == (2, 16, 8, 8)
    convs = [m for m in two.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (2, 2), (1, 1)]
    assert len([m for m in one.modules() if isinstance(m, torch.nn.Conv2d)]) == 2
