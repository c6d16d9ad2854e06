"""Instance segmentation head: shapes, gradients, mask costs/losses against hand and naive
references, padding handling, postprocessing."""
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from groupdetr.config import Config, LossConfig, MatcherConfig, MaskHeadConfig, ModelConfig
from groupdetr.heads import HeadContext
from groupdetr.heads.mask import (
    build_mask_head,
    image_points,
    mask_cost_term,
    mask_loss_term,
    mask_postprocess_term,
    sample_target_masks,
)
from groupdetr.model.backbone import SmallCNN


def model_cfg(stride=4, mask_dim=8, d=16):
    return ModelConfig(hidden_dim=d, mask_head=MaskHeadConfig(mask_dim=mask_dim, stride=stride))


def cfg_with(cost_mask=5.0, cost_dice=5.0, cost_points=12544, loss_points=12544):
    return Config(
        matcher=MatcherConfig(cost_mask=cost_mask, cost_dice=cost_dice, mask_points=cost_points),
        loss=LossConfig(mask_points=loss_points),
    )


def context(backbone, images, d=16, seed=0):
    """What the detector hands the head: stage maps and a (random) encoder memory."""
    feats = backbone.forward_features(images)
    h, w = feats[-1].shape[-2:]
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(images.shape[0], h * w, d, generator=g)
    pad = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
    return HeadContext(images=images, pad_mask=pad, features=feats, memory_hw=(h, w), memory=memory)


class FakeResNet:
    """Stage layout of ResNet-50 (strides 4..32) with cheap random maps."""

    stage_channels = (8, 16, 24, 32)
    stage_strides = (4, 8, 16, 32)

    def forward_features(self, images):
        b, _, h, w = images.shape
        return [torch.randn(b, c, h // s, w // s) for c, s in zip(self.stage_channels, self.stage_strides)]


def outputs_from(pixel_embeds, mask_embeds, image_size):
    return {"pixel_embeds": pixel_embeds, "pred_mask_embeds": mask_embeds, "image_size": image_size}


# ---------------------------------------------------------------------------------------------
# module


@pytest.mark.parametrize("stride, hw", [(1, (32, 48)), (2, (16, 24)), (4, (8, 12)), (8, (4, 6))])
def test_head_shapes_small_cnn(stride, hw):
    torch.manual_seed(0)
    backbone = SmallCNN((8, 16, 16))  # strides 2, 4, 8
    head = build_mask_head(model_cfg(stride=stride), backbone)
    ctx = context(backbone, torch.randn(2, 3, 32, 48))
    hs, boxes = torch.randn(3, 2, 5, 16), torch.rand(3, 2, 5, 4)
    assert head.position(ctx) is None
    out = head(ctx, hs, boxes)
    assert len(out) == 3
    for o in out:
        assert o["pred_mask_embeds"].shape == (2, 5, 8)
        assert o["pixel_embeds"].shape == (2, 8, *hw)
        assert o["pixel_embeds"] is out[0]["pixel_embeds"]  # computed once
        assert o["pixel_stride"] == stride and o["image_size"] == (32, 48)
    # per-layer embeddings really differ (one MLP applied to each layer's hs)
    assert not torch.allclose(out[0]["pred_mask_embeds"], out[1]["pred_mask_embeds"])


def test_head_upsamples_when_no_stage_has_the_stride():
    head = build_mask_head(model_cfg(stride=2), FakeResNet())
    assert head.stage_index == [0, 1, 2]  # the last stage is represented by the memory
    ctx = context(FakeResNet(), torch.randn(1, 3, 64, 96))
    out = head(ctx, torch.randn(2, 1, 4, 16), torch.rand(2, 1, 4, 4))
    assert out[0]["pixel_embeds"].shape == (1, 8, 32, 48)


@pytest.mark.parametrize("stride, words", [(3, "power of 2"), (16, "exceeds"), (0, "power of 2")])
def test_build_rejects_bad_stride(stride, words):
    with pytest.raises(ValueError, match=words):
        build_mask_head(model_cfg(stride=stride), SmallCNN((8, 16, 16)))


def test_gradient_flows_from_loss_to_every_head_parameter():
    torch.manual_seed(0)
    backbone = SmallCNN((8, 16, 16))
    head = build_mask_head(model_cfg(stride=4), backbone)
    images = torch.randn(2, 3, 32, 32)
    ctx = context(backbone, images)
    out = head(ctx, torch.randn(2, 2, 4, 16), torch.rand(2, 2, 4, 4))[-1]
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 4:20, 8:24] = True
    masks[1, 16:, :12] = True
    targets = [{"masks": masks}, {"masks": masks[:1]}]
    indices = [(torch.tensor([0, 3]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    losses = mask_loss_term(cfg_with(loss_points=20))(out, targets, indices, torch.tensor(3.0))
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------
# costs and losses


def hand_bce_dice(logits, target):
    p = [1 / (1 + math.exp(-x)) for x in logits]
    bce = sum(-t * math.log(q) - (1 - t) * math.log(1 - q) for q, t in zip(p, target)) / len(p)
    dice = 1 - (2 * sum(q * t for q, t in zip(p, target)) + 1) / (sum(p) + sum(target) + 1)
    return bce, dice


def test_cost_and_loss_match_hand_computation_2x2():
    logits = [2.0, -1.0, 0.0, 3.0]  # row-major 2x2 canvas, stride 1, E = 1
    target = [1, 0, 0, 1]
    bce, dice = hand_bce_dice(logits, target)
    out = outputs_from(torch.tensor(logits).view(1, 1, 2, 2), torch.ones(1, 1, 1), (2, 2))
    tgt = {"masks": torch.tensor(target, dtype=torch.bool).view(1, 2, 2)}
    cost = mask_cost_term(cfg_with(cost_mask=3.0, cost_dice=7.0, cost_points=4))(out, 0, tgt)
    assert cost.shape == (1, 1) and cost.dtype == torch.float32
    assert cost.item() == pytest.approx(3.0 * bce + 7.0 * dice, rel=1e-5)
    losses = mask_loss_term(cfg_with(loss_points=4))(out, [tgt], [(torch.tensor([0]), torch.tensor([0]))], torch.tensor(2.0))
    assert losses["loss_mask"].item() == pytest.approx(bce / 2, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice / 2, rel=1e-5)


def rect_masks():
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 1:8, 1:9] = True
    masks[1, 8:15, 2:10] = True
    masks[2, 3:13, 9:15] = True
    return masks


def test_perfect_prediction_has_lowest_cost_and_hungarian_recovers_it():
    torch.manual_seed(0)
    masks = rect_masks()
    # E = 4 channels at stride 1: +10 inside GT mask j, -10 outside; channel 3 predicts nothing.
    pixels = torch.cat([masks.float() * 20 - 10, torch.full((1, 16, 16), -10.0)])[None]
    perm = torch.tensor([2, 0, 3, 1])  # query q predicts channel perm[q]
    embeds = torch.eye(4)[perm][None]
    cost = mask_cost_term(cfg_with(cost_points=64))(outputs_from(pixels, embeds, (16, 16)), 0, {"masks": masks})
    assert cost.shape == (4, 3)
    rows, cols = linear_sum_assignment(cost.numpy())
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 2, 1: 0, 3: 1}
    for q, j in {0: 2, 1: 0, 3: 1}.items():  # the true pair is the cheapest in its row and column
        assert cost[q, j] == cost[q].min() and cost[q, j] == cost[:, j].min()
        assert cost[q, j] < 0.1 * cost[q][torch.arange(3) != j].min()


def test_empty_targets_give_empty_cost_and_zero_losses_with_gradient():
    pixels = torch.randn(2, 4, 8, 8, requires_grad=True)
    embeds = torch.randn(2, 5, 4, requires_grad=True)
    out = outputs_from(pixels, embeds, (16, 16))
    empty = {"masks": torch.zeros(0, 16, 16, dtype=torch.bool)}
    assert mask_cost_term(cfg_with())(out, 1, empty).shape == (5, 0)
    none = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    losses = mask_loss_term(cfg_with())(out, [empty, empty], [none, none], torch.tensor(1.0))
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    assert pixels.grad is not None and embeds.grad is not None


def test_loss_of_matched_pairs_equals_cost_entries_when_all_cells_are_used():
    torch.manual_seed(1)
    pixels, embeds = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 4)
    out = outputs_from(pixels, embeds, (16, 16))
    m0 = torch.rand(3, 16, 16) > 0.5
    m1 = torch.rand(2, 12, 10) > 0.5  # smaller than the canvas: padded
    targets = [{"masks": m0}, {"masks": m1}]
    indices = [(torch.tensor([0, 2, 4]), torch.tensor([1, 0, 1])), (torch.tensor([1, 3]), torch.tensor([1, 0]))]
    num_boxes = torch.tensor(4.0)
    losses = mask_loss_term(cfg_with(loss_points=64))(out, targets, indices, num_boxes)
    for key, weights in [("loss_mask", (1.0, 0.0)), ("loss_dice", (0.0, 1.0))]:
        term = mask_cost_term(cfg_with(*weights, cost_points=64))
        expected = sum(term(out, b, t)[q, j].sum() for b, (t, (q, j)) in enumerate(zip(targets, indices)))
        assert losses[key].item() == pytest.approx(expected.item() / 4, rel=1e-5)


def test_batch_costs_equal_naive_pairwise_reference():
    torch.manual_seed(2)
    pixels, embeds = torch.randn(1, 3, 6, 6), torch.randn(1, 4, 3)
    masks = torch.rand(2, 6, 6) > 0.4
    cost = mask_cost_term(cfg_with(2.0, 3.0))(outputs_from(pixels, embeds, (6, 6)), 0, {"masks": masks})
    logits = torch.einsum("qe,ehw->qhw", embeds[0], pixels[0]).flatten(1)
    t = masks.flatten(1).float()
    for q in range(4):
        for j in range(2):
            bce, dice = hand_bce_dice(logits[q].tolist(), t[j].tolist())
            assert cost[q, j].item() == pytest.approx(2 * bce + 3 * dice, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# padding


def test_padded_image_is_scored_only_on_its_own_region():
    """An image of 10x12 on a 16x16 canvas (stride 2) costs exactly what it costs unpadded, and
    predictions over the padding do not matter."""
    torch.manual_seed(3)
    pixels, embeds = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 4)
    target = {"masks": torch.rand(2, 10, 12) > 0.5}
    term = mask_cost_term(cfg_with(cost_points=1000))
    padded = term(outputs_from(pixels, embeds, (16, 16)), 0, target)
    unpadded = term(outputs_from(pixels[..., :5, :6], embeds, (10, 12)), 0, target)
    torch.testing.assert_close(padded, unpadded)
    noisy = pixels.clone()
    noisy[..., 5:, :] = 100.0
    noisy[..., :, 6:] = -100.0
    torch.testing.assert_close(term(outputs_from(noisy, embeds, (16, 16)), 0, target), padded)
    # random-point mode: every point lies inside the image region
    pts = image_points((16, 16), (10, 12), (8, 8), num_points=5)
    assert pts.shape == (5, 2)
    pts = image_points((64, 64), (20, 40), (64, 64), num_points=50)
    assert pts.shape == (50, 2) and (pts[:, 0] < 40 / 64).all() and (pts[:, 1] < 20 / 64).all()


def test_target_padding_counts_as_background():
    """Targets are zero-padded to the canvas: a full 4x4 mask on an 8x8 canvas reads 1 inside,
    0 in the padding, and 0.5 exactly on the border (bilinear between the last row and padding)."""
    masks = torch.ones(1, 4, 4, dtype=torch.bool)
    pts = torch.tensor([[3.5, 1.5], [4.5, 1.5], [4.0, 1.5], [1.5, 6.0]]) / 8
    vals = sample_target_masks(masks, pts, (8, 8))
    torch.testing.assert_close(vals, torch.tensor([[1.0, 0.0, 0.5, 0.0]]))


# ---------------------------------------------------------------------------------------------
# postprocess


def test_postprocess_reproduces_a_perfect_mask_at_original_size():
    # image 32x40 on a 48x48 canvas, stride 4; the original image was 2x larger (64x80)
    gt = torch.zeros(32, 40, dtype=torch.bool)
    gt[8:24, 4:28] = True
    cell = torch.zeros(12, 12)
    cell[:8, :10] = F.interpolate(gt[None, None].float(), size=(8, 10), mode="area")[0, 0]
    pixels = torch.stack([cell * 20 - 10, torch.full((12, 12), -10.0)])[None]  # E = 2
    embeds = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    results = [{"query": torch.tensor([0, 1, 0])}]
    targets = [{"size": torch.tensor([32, 40]), "orig_size": torch.tensor([64, 80])}]
    mask_postprocess_term(cfg_with())(outputs_from(pixels, embeds, (48, 48)), results, targets)
    masks = results[0]["masks"]
    assert masks.shape == (3, 64, 80) and masks.dtype == torch.bool
    ref = F.interpolate(gt[None, None].float(), size=(64, 80), mode="nearest")[0, 0].bool()
    iou = (masks[0] & ref).sum() / (masks[0] | ref).sum()
    assert iou > 0.9
    assert torch.equal(masks[0], masks[2]) and not masks[1].any()


def test_postprocess_with_no_selection():
    results = [{"query": torch.zeros(0, dtype=torch.long)}]
    targets = [{"size": torch.tensor([8, 8]), "orig_size": torch.tensor([10, 12])}]
    mask_postprocess_term(cfg_with())(outputs_from(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2), (8, 8)), results, targets)
    assert results[0]["masks"].shape == (0, 10, 12) and results[0]["masks"].dtype == torch.bool
