"""Multi-scale deformable attention (groupdetr.model.deformable) against a naive reference written here, which
samples every point bilinearly in a loop; its gradients; the module's init and padding; the multi-scale
features (groupdetr.model.multiscale)."""
from __future__ import annotations

import math

import pytest
import torch

from groupdetr.model.backbone import SmallCNN
from groupdetr.model.deformable import MSDeformAttn, ms_deform_attn, sampling_locations
from groupdetr.model.multiscale import MultiScaleProjection, encoder_reference_points, flatten_levels, valid_ratios

SHAPE_SETS = [
    [(5, 7)],
    [(5, 7), (3, 4), (1, 2)],
    [(8, 8), (4, 4), (2, 2), (1, 1)],
]


def bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img [C, H, W] at (x, y) in [0, 1] of the map (0 and 1 the outer edges), zeros outside: the textbook
    four-neighbour interpolation, one corner at a time."""
    _, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(img.shape[0], dtype=img.dtype)
    for xi in (x0, x0 + 1):
        for yi in (y0, y0 + 1):
            if 0 <= xi < w and 0 <= yi < h:
                out = out + (1 - abs(px - xi)) * (1 - abs(py - yi)) * img[:, yi, xi]
    return out


def naive(value, shapes, locations, weights):
    """Loop over batch, query, head, level and point."""
    b, s, m, dh = value.shape
    _, q, _, n_levels, p, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, q, m * dh, dtype=value.dtype)
    for bi in range(b):
        for qi in range(q):
            for mi in range(m):
                for li, (h, w) in enumerate(shapes):
                    img = value[bi, starts[li]:starts[li + 1], mi].T.reshape(dh, h, w)
                    for pi in range(p):
                        x, y = locations[bi, qi, mi, li, pi].tolist()
                        out[bi, qi, mi * dh:(mi + 1) * dh] += weights[bi, qi, mi, li, pi] * bilinear(img, x, y)
    return out


def random_inputs(shapes, b=2, q=3, m=2, dh=3, p=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, dh, generator=g, dtype=dtype)
    locations = torch.rand(b, q, m, len(shapes), p, 2, generator=g, dtype=dtype) * 1.4 - 0.2  # some outside
    weights = torch.rand(b, q, m, len(shapes) * p, generator=g, dtype=dtype).softmax(-1).view(b, q, m, len(shapes), p)
    return value, locations, weights


@pytest.mark.parametrize("shapes", SHAPE_SETS)
def test_equals_the_naive_bilinear_loop(shapes):
    value, locations, weights = random_inputs(shapes)
    ours = ms_deform_attn(value, shapes, locations, weights)
    torch.testing.assert_close(ours, naive(value, shapes, locations, weights), atol=1e-10, rtol=1e-10)
    # the shapes may also come as the [L, 2] tensor the reference implementation passes around
    torch.testing.assert_close(ms_deform_attn(value, torch.tensor(shapes), locations, weights), ours)


def test_points_at_pixel_centres_read_the_pixels():
    shapes = [(3, 4)]
    value, _, _ = random_inputs(shapes, b=1, q=1, m=1, p=1)
    loc = torch.tensor([(2 + 0.5) / 4, (1 + 0.5) / 3], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn(value, shapes, loc, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(out[0, 0], value[0, 1 * 4 + 2, 0])  # row 1, column 2


def test_gradients_of_value_locations_and_weights():
    shapes = [(3, 4), (2, 2)]
    value, locations, weights = random_inputs(shapes, b=1, q=2, m=2, dh=2, p=2, seed=3)
    inputs = tuple(t.clone().requires_grad_(True) for t in (value, locations, weights))
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, shapes, l, w), inputs, eps=1e-6, atol=1e-6)


def test_shapes_that_do_not_cover_the_values_are_refused():
    shapes = [(3, 4), (2, 2)]
    value, locations, weights = random_inputs(shapes)
    with pytest.raises(ValueError, match="do not cover"):
        ms_deform_attn(value, [(3, 4), (2, 3)], locations, weights)


def test_sampling_locations_of_points_and_boxes():
    shapes = [(4, 8), (2, 4)]
    offsets = torch.randn(1, 1, 2, 2, 3, 2)
    point = torch.tensor([0.25, 0.5]).expand(1, 1, 2, 2)
    loc = sampling_locations(point, offsets, shapes)
    torch.testing.assert_close(loc[0, 0, :, 1], point[0, 0, 1] + offsets[0, 0, :, 1] / torch.tensor([4.0, 2.0]))
    box = torch.tensor([0.5, 0.5, 0.2, 0.4]).expand(1, 1, 2, 4)
    loc = sampling_locations(box, offsets, shapes)  # offsets in half-box units, divided by P = 3
    torch.testing.assert_close(loc[0, 0], 0.5 + offsets[0, 0] / 3 * torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="last dimension 2 or 4"):
        sampling_locations(torch.zeros(1, 1, 2, 3), offsets, shapes)


def test_init_is_deformable_detrs():
    attn = MSDeformAttn(d_model=32, n_levels=2, n_heads=8, n_points=3)
    bias = attn.sampling_offsets.bias.view(8, 2, 3, 2)
    # head 0 looks right, head 1 down-right on the square's border, head 2 down; point p at p + 1 pixels
    torch.testing.assert_close(bias[0, :, :, 0], torch.tensor([1.0, 2.0, 3.0]).expand(2, 3))
    torch.testing.assert_close(bias[1, 0, 0], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(bias[2, 1, 2], torch.tensor([0.0, 3.0]), atol=1e-6, rtol=0)
    assert attn.sampling_offsets.weight.abs().sum() == 0 and attn.attention_weights.weight.abs().sum() == 0
    assert attn.value_proj.bias.abs().sum() == 0 and attn.output_proj.bias.abs().sum() == 0
    bound = math.sqrt(6 / (32 + 32))  # Xavier uniform
    assert attn.value_proj.weight.abs().max() <= bound and attn.value_proj.weight.std() > 0.5 * bound / math.sqrt(3)
    with pytest.raises(ValueError, match="not divisible"):
        MSDeformAttn(d_model=30, n_heads=4)


def test_module_ignores_padded_values_and_matches_the_function():
    torch.manual_seed(0)
    shapes = [(4, 5), (2, 3)]
    s = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    for p in attn.parameters():  # leave the init's zeros: every input must matter
        torch.nn.init.normal_(p, std=0.2)
    query, ref, value = torch.randn(2, 3, 16), torch.rand(2, 3, 2, 2), torch.randn(2, s, 16)
    pad = torch.zeros(2, s, dtype=torch.bool)
    right = torch.tensor([r * 5 + c for r in range(4) for c in (3, 4)])  # image 1: level 0's last two columns
    pad[1, right] = True
    ref[1, :, 0] = torch.tensor([0.8, 0.5])  # look there
    out = attn(query, ref, value, shapes, pad)
    other = value.clone()
    other[1, right] += 10.0
    torch.testing.assert_close(attn(query, ref, other, shapes, pad), out)  # padded values never read
    assert not torch.allclose(attn(query, ref, other, shapes, None), attn(query, ref, value, shapes, None))
    # the module is the function on its projections
    b, q = 2, 3
    v = attn.value_proj(value).masked_fill(pad[..., None], 0).view(b, s, 2, 8)
    offsets = attn.sampling_offsets(query).view(b, q, 2, 2, 2, 2)
    w = attn.attention_weights(query).view(b, q, 2, 4).softmax(-1).view(b, q, 2, 2, 2)
    expect = attn.output_proj(ms_deform_attn(v, shapes, sampling_locations(ref, offsets, shapes), w))
    torch.testing.assert_close(out, expect)


def test_valid_ratios_and_encoder_reference_points():
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[1, 3:, :] = True  # image 1: 3 valid rows of 4
    mask[1, :, 3:] = True  # and 3 valid columns of 6
    ratios = valid_ratios(mask)
    torch.testing.assert_close(ratios, torch.tensor([[1.0, 1.0], [0.5, 0.75]]))
    ref = encoder_reference_points([(4, 6)], ratios[:, None])
    assert ref.shape == (2, 24, 1, 2)
    # unpadded: the pixel centres; padded: the centres of the valid area seen from the same level
    torch.testing.assert_close(ref[0, 7, 0], torch.tensor([1.5 / 6, 1.5 / 4]))
    torch.testing.assert_close(ref[1, 7, 0], torch.tensor([1.5 / 6, 1.5 / 4]))
    two = encoder_reference_points([(4, 6), (2, 3)], torch.stack([ratios, ratios], 1))
    assert two.shape == (2, 24 + 6, 2, 2)
    torch.testing.assert_close(two[0, 24, 1], torch.tensor([0.5 / 3, 0.5 / 2]))


def test_multiscale_projection_and_flattening_on_the_small_cnn():
    torch.manual_seed(0)
    net = SmallCNN((8, 16, 32, 32))
    images = torch.randn(2, 3, 64, 48)
    pad = torch.zeros(2, 64, 48, dtype=torch.bool)
    pad[1, :, 32:] = True
    maps = net.forward_features(images)[1:]  # strides 4, 8, 16
    proj = MultiScaleProjection(net.stage_channels[1:], d_model=32, num_levels=4)  # + one stride-2 level
    feats, masks = proj(maps, pad)
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 12), (8, 6), (4, 3), (2, 2)]
    assert all(f.shape[:2] == (2, 32) for f in feats) and [m.shape for m in masks] == [f.shape[:1] + f.shape[2:]
                                                                                          for f in feats]
    assert masks[0][1, :, 8:].all() and not masks[0][1, :, :8].any() and not masks[0][0].any()
    pos = [torch.randn_like(f) for f in feats]
    level_embed = torch.randn(4, 32)
    flat = flatten_levels(feats, masks, pos, level_embed)
    s = 16 * 12 + 8 * 6 + 4 * 3 + 2 * 2
    assert flat.src.shape == (2, s, 32) and flat.mask.shape == (2, s) and flat.shapes[1] == (8, 6)
    assert flat.start.tolist() == [0, 192, 240, 252]
    torch.testing.assert_close(flat.src[:, 192], feats[1][:, :, 0, 0])
    torch.testing.assert_close(flat.pos[:, 193], pos[1][:, :, 0, 1] + level_embed[1])
    torch.testing.assert_close(flat.ratios[1, 0], torch.tensor([8 / 12, 1.0]))
    with pytest.raises(ValueError, match="cannot hold"):
        MultiScaleProjection((8, 16, 32), d_model=32, num_levels=2)


def test_padding_is_invisible_to_the_attention_with_valid_ratio_references():
    """An image padded inside a batch gets the same attention output at its valid positions as alone: the
    references are scaled to the valid area, offsets are in pixels, and padded values read as zeros just
    as points beyond an unpadded map do."""
    torch.manual_seed(1)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    valid, padded = [(4, 6), (2, 3)], [(6, 8), (3, 4)]
    maps = [torch.randn(1, 16, h, w) for h, w in valid]
    big = [torch.nn.functional.pad(m, (0, pw - w, 0, ph - h), value=5.0) for m, (h, w), (ph, pw) in
           zip(maps, valid, padded)]  # junk in the padding
    masks = [torch.ones(1, ph, pw, dtype=torch.bool) for ph, pw in padded]
    for m, (h, w) in zip(masks, valid):
        m[:, :h, :w] = False
    zeros = [torch.zeros(1, ph, pw, dtype=torch.bool) for ph, pw in valid]
    alone = flatten_levels(maps, zeros, [torch.zeros_like(m) for m in maps], torch.zeros(2, 16))
    batch = flatten_levels(big, masks, [torch.zeros_like(m) for m in big], torch.zeros(2, 16))
    ref_alone = encoder_reference_points(alone.shapes, alone.ratios)
    ref_batch = encoder_reference_points(batch.shapes, batch.ratios)
    out_alone = attn(alone.src, ref_alone, alone.src, alone.shapes, alone.mask)
    out_batch = attn(batch.src, ref_batch, batch.src, batch.shapes, batch.mask)
    keep = ~batch.mask[0]
    torch.testing.assert_close(out_batch[0, keep], out_alone[0], atol=1e-5, rtol=1e-5)


def test_deformable_encoder_layers_are_independent_and_all_trained():
    from groupdetr.model.deformable_encoder import DeformableEncoder

    torch.manual_seed(0)
    enc = DeformableEncoder(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, num_layers=2, n_levels=2, n_points=2)
    a, b = enc.layers
    assert not torch.equal(a.ffn.linear1.weight, b.ffn.linear1.weight)
    assert not torch.equal(a.attn.value_proj.weight, b.attn.value_proj.weight)
    torch.testing.assert_close(a.attn.sampling_offsets.bias, b.attn.sampling_offsets.bias)  # the same directions
    feats = [torch.randn(2, 16, 4, 5), torch.randn(2, 16, 2, 3)]
    masks = [torch.zeros(2, 4, 5, dtype=torch.bool), torch.zeros(2, 2, 3, dtype=torch.bool)]
    flat = flatten_levels(feats, masks, [torch.randn_like(f) for f in feats], torch.randn(2, 16))
    memory = enc(flat)
    assert memory.shape == (2, 26, 16)
    memory.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.layers.parameters())
    with pytest.raises(ValueError, match="built for 2 levels"):
        enc(flatten_levels(feats[:1], masks[:1], feats[:1], torch.randn(1, 16)))
