"""Transformer initialisation matches the authors' Conditional DETR / Group DETR code.

Reference (Atten4Vis/ConditionalDETR, branch GroupDETR): ``Transformer._reset_parameters`` runs
``xavier_uniform_`` on every parameter with dim > 1 after encoder and decoder are built. The
encoder's ``nn.MultiheadAttention`` has a packed ``[3d, d]`` in-projection (xavier over the packed
shape, zero bias) and a zero ``out_proj.bias``; the decoder's custom ``MultiheadAttention`` has only
an ``out_proj`` with zero bias. Other Linear biases keep PyTorch's default uniform(+-1/sqrt(fan_in)),
LayerNorms stay at 1/0, and detector-level parameters keep their own init.

Each check compares a tensor with the uniform distribution the authors' code draws it from:
every |value| within the bound, the largest close to it, and the standard deviation close to
bound/sqrt(3), with tolerances of several standard errors for the tensor's size (seeded, so the
result is deterministic; the tolerances make it hold for any seed with overwhelming probability).
"""
from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from groupdetr.build import build_model
from groupdetr.config import load_config
from groupdetr.model.attention import ProjectedAttention
from groupdetr.model.transformer import MLP, EncoderLayer, init_like_authors

# d=256 is the paper's width; d=32 a small one (few elements: looser, size-aware tolerances)
WIDTHS = {256: ["model.hidden_dim=256", "model.nheads=8", "model.dim_feedforward=2048"],
          32: ["model.hidden_dim=32", "model.nheads=2", "model.dim_feedforward=64"]}
DECODERS = ["conditional", "dab"]
CASES = [(d, dec) for d in WIDTHS for dec in DECODERS]


@functools.lru_cache(maxsize=None)
def detector(d: int, decoder: str):
    cfg = load_config("cpu_small", WIDTHS[d] + [f"model.decoder={decoder}", "model.backbone.weights=null"])
    torch.manual_seed(0)
    return build_model(cfg.model), cfg.model


def xavier_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def default_bound(fan_in: int) -> float:
    """PyTorch's default nn.Linear / nn.Conv2d bound (kaiming_uniform_ with a=sqrt(5); bias alike)."""
    return 1.0 / math.sqrt(fan_in)


def uniform_mismatch(w: torch.Tensor, bound: float) -> str | None:
    """Why ``w`` does not look like a draw from uniform(-bound, bound), or None if it does.

    For n uniform samples the relative standard error of the sample std is about 0.45/sqrt(n);
    the max |w| falls below bound*(1 - 10/n) with probability about exp(-10)."""
    w = w.detach().double().flatten()
    n = w.numel()
    top = w.abs().max().item()
    if top > bound * (1 + 1e-6):
        return f"max |w| {top:.5f} exceeds bound {bound:.5f}"
    if top < bound * (1 - 10.0 / n):
        return f"max |w| {top:.5f} well below bound {bound:.5f}"
    std, want = w.std().item(), bound / math.sqrt(3)
    rtol = max(0.01, 5 * 0.45 / math.sqrt(n))
    if abs(std / want - 1) > rtol:
        return f"std {std:.5f} vs {want:.5f} (rtol {rtol:.3f})"
    if abs(w.mean().item()) > 5 * want / math.sqrt(n):
        return f"mean {w.mean().item():.5f} not centred"
    return None


def assert_uniform(w: torch.Tensor, bound: float, what: str = "") -> None:
    why = uniform_mismatch(w, bound)
    assert why is None, f"{what}: {why}"


def default_bias_mismatch(b: torch.Tensor, fan_in: int) -> str | None:
    """PyTorch's default Linear bias: non-zero, within +-1/sqrt(fan_in), uniform when long enough."""
    bound = default_bound(fan_in)
    if not b.abs().gt(0).all():
        return "zero entries (default bias is almost surely non-zero)"
    if b.abs().max().item() > bound * (1 + 1e-6):
        return f"max |b| {b.abs().max().item():.5f} exceeds 1/sqrt(fan_in) = {bound:.5f}"
    if b.numel() >= 64:
        return uniform_mismatch(b, bound)
    return None


def transformer_mismatches(*modules: nn.Module) -> list[str]:
    """Every parameter of the given encoder/decoder modules against the authors' init; also fails
    on any parameter no rule covers, so a new parameter family cannot slip through unchecked."""
    found, checked = [], set()
    for root in modules:
        for m in root.modules():
            if isinstance(m, EncoderLayer):
                d = m.q_proj.in_features
                packed = torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight])
                if why := uniform_mismatch(packed, xavier_bound(d, 3 * d)):
                    found.append(f"encoder packed in-proj: {why}")
                for name in ("q_proj", "k_proj", "v_proj"):
                    proj = getattr(m, name)
                    if proj.bias.count_nonzero():
                        found.append(f"encoder {name}.bias not zero")
                    checked.update({id(proj.weight), id(proj.bias)})
            if isinstance(m, ProjectedAttention):
                if m.out_proj.bias.count_nonzero():
                    found.append("attention out_proj.bias not zero")
                checked.add(id(m.out_proj.bias))
            if isinstance(m, nn.LayerNorm):
                if not (torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.count_nonzero()):
                    found.append("LayerNorm not at weight 1, bias 0")
                checked.update({id(m.weight), id(m.bias)})
        for m in root.modules():
            if isinstance(m, nn.Linear):
                if id(m.weight) not in checked:
                    if why := uniform_mismatch(m.weight, xavier_bound(m.in_features, m.out_features)):
                        found.append(f"Linear {tuple(m.weight.shape)} weight: {why}")
                    checked.add(id(m.weight))
                if id(m.bias) not in checked:
                    if why := default_bias_mismatch(m.bias, m.in_features):
                        found.append(f"Linear {tuple(m.weight.shape)} bias: {why}")
                    checked.add(id(m.bias))
        found += [f"unchecked parameter {n}" for n, p in root.named_parameters() if id(p) not in checked]
    return found


# ------------------------------------------------------------------ parameter families


@pytest.mark.parametrize("d,decoder", CASES)
def test_every_transformer_parameter_is_initialised_as_the_authors(d, decoder):
    model, _ = detector(d, decoder)
    assert transformer_mismatches(model.encoder, model.decoder) == []


@pytest.mark.parametrize("d,decoder", CASES)
def test_encoder_in_projection_is_one_packed_xavier_matrix(d, decoder):
    model, _ = detector(d, decoder)
    bound = math.sqrt(6 / (4 * d))  # xavier over [3d, d]: fan_in d, fan_out 3d
    for i, layer in enumerate(model.encoder.layers):
        qkv = [layer.q_proj, layer.k_proj, layer.v_proj]
        assert_uniform(torch.cat([p.weight for p in qkv]), bound, f"encoder layer {i} packed in-proj")
        for p in qkv:  # each block of the packed matrix on its own: same distribution
            assert_uniform(p.weight, bound, f"encoder layer {i} in-proj block")
            assert not p.bias.count_nonzero()
        assert not layer.attn.out_proj.bias.count_nonzero()
        assert_uniform(layer.attn.out_proj.weight, xavier_bound(d, d), "encoder out_proj")
    if d == 256:
        assert bound == pytest.approx(0.07655, abs=1e-5)


@pytest.mark.parametrize("d,decoder", CASES)
def test_decoder_square_projections_are_xavier(d, decoder):
    model, _ = detector(d, decoder)
    names = ["sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj",
             "ca_qcontent_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj"]
    for i, layer in enumerate(model.decoder.layers):
        projs = [getattr(layer, n) for n in names] + [layer.self_attn.out_proj, layer.cross_attn.out_proj]
        if i == 0:
            projs.append(layer.ca_qpos_proj)
        else:
            assert layer.ca_qpos_proj is None
        for p in projs:
            assert p.weight.shape == (d, d)
            assert_uniform(p.weight, xavier_bound(d, d), f"decoder layer {i}")
            if d == 256:  # xavier std for a square matrix: sqrt(2 / (2d)) = 1/16
                assert p.weight.std().item() == pytest.approx(0.0625, rel=0.01)
        assert not layer.self_attn.out_proj.bias.count_nonzero()
        assert not layer.cross_attn.out_proj.bias.count_nonzero()
        for n in names:  # plain Linear projections keep the default bias
            assert default_bias_mismatch(getattr(layer, n).bias, d) is None


@pytest.mark.parametrize("d,decoder", CASES)
def test_ffn_and_mlp_layers_are_xavier_with_default_biases(d, decoder):
    model, cfg = detector(d, decoder)
    ff = cfg.dim_feedforward
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        assert_uniform(layer.ffn.linear1.weight, xavier_bound(d, ff), "FFN linear1")
        assert_uniform(layer.ffn.linear2.weight, xavier_bound(ff, d), "FFN linear2")
        assert default_bias_mismatch(layer.ffn.linear1.bias, d) is None
        assert default_bias_mismatch(layer.ffn.linear2.bias, ff) is None
        for norm in [layer.norm] if isinstance(layer, EncoderLayer) else [layer.norm1, layer.norm2]:
            assert torch.equal(norm.weight, torch.ones(d)) and not norm.bias.count_nonzero()
    dec = model.decoder
    mlps = [dec.query_scale, dec.ref_point_head] + ([dec.ref_anchor_head] if decoder == "dab" else [])
    in_pos = 2 * d if decoder == "dab" else d  # DAB's ref_point_head reads the 2d-wide box embedding
    out_pos = d if decoder == "dab" else 2
    expected_shapes = [[(d, d), (d, d)], [(d, in_pos), (out_pos, d)]] + ([[(d, d), (2, d)]] if decoder == "dab" else [])
    for mlp, shapes in zip(mlps, expected_shapes):
        assert isinstance(mlp, MLP)
        assert [tuple(lin.weight.shape) for lin in mlp.layers] == shapes
        for lin in mlp.layers:
            out_f, in_f = lin.weight.shape
            assert_uniform(lin.weight, xavier_bound(in_f, out_f), f"MLP {tuple(lin.weight.shape)}")
            assert default_bias_mismatch(lin.bias, in_f) is None
    assert torch.equal(dec.norm.weight, torch.ones(d)) and not dec.norm.bias.count_nonzero()


@pytest.mark.parametrize("d,decoder", CASES)
def test_detector_level_parameters_keep_their_own_init(d, decoder):
    model, cfg = detector(d, decoder)
    prior = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
    assert torch.allclose(model.class_embed.bias, torch.full_like(model.class_embed.bias, prior))
    assert not model.bbox_embed.layers[-1].weight.count_nonzero()
    assert not model.bbox_embed.layers[-1].bias.count_nonzero()
    # the rest of the heads: PyTorch defaults, not xavier
    assert_uniform(model.class_embed.weight, default_bound(d), "class_embed")
    for lin in model.bbox_embed.layers[:-1]:
        assert_uniform(lin.weight, default_bound(lin.in_features), "bbox_embed")
    assert uniform_mismatch(model.bbox_embed.layers[0].weight, xavier_bound(d, d)) is not None
    fan_in = model.input_proj.in_channels
    assert_uniform(model.input_proj.weight, default_bound(fan_in), "input_proj")
    q = model.query_embed.weight  # nn.Embedding default: N(0, 1)
    assert q.std().item() == pytest.approx(1.0, rel=5 / math.sqrt(q.numel()) + 0.02)


@pytest.mark.parametrize("d,decoder", CASES)
def test_layers_are_not_identical_copies(d, decoder):
    model, _ = detector(d, decoder)
    enc, dec = model.encoder.layers, model.decoder.layers
    for a, b in zip(enc[:-1], enc[1:]):  # deep-copied clones, initialised after cloning
        for name in ("q_proj", "k_proj", "v_proj"):
            assert not torch.equal(getattr(a, name).weight, getattr(b, name).weight)
        assert not torch.equal(a.attn.out_proj.weight, b.attn.out_proj.weight)
        assert not torch.equal(a.ffn.linear1.weight, b.ffn.linear1.weight)
        assert not torch.equal(a.ffn.linear2.weight, b.ffn.linear2.weight)
    for a, b in zip(dec[:-1], dec[1:]):
        assert not torch.equal(a.sa_qcontent_proj.weight, b.sa_qcontent_proj.weight)
        assert not torch.equal(a.cross_attn.out_proj.weight, b.cross_attn.out_proj.weight)
        assert not torch.equal(a.ffn.linear1.weight, b.ffn.linear1.weight)
    # q, k and v of one layer are different blocks of the packed matrix, not one block thrice
    layer = enc[0]
    assert not torch.equal(layer.q_proj.weight, layer.k_proj.weight)
    assert not torch.equal(layer.k_proj.weight, layer.v_proj.weight)


# ------------------------------------------------------------------ negative controls


def test_checks_reject_pytorch_default_linear_init():
    torch.manual_seed(0)
    lin = nn.Linear(256, 256)
    assert uniform_mismatch(lin.weight, xavier_bound(256, 256)) is not None
    assert uniform_mismatch(lin.weight, math.sqrt(6 / 1024)) is not None  # nor passes as packed in-proj
    assert uniform_mismatch(lin.weight, default_bound(256)) is None  # it is what PyTorch draws
    # three default q/k/v Linears are not a packed xavier matrix
    packed = torch.cat([nn.Linear(256, 256).weight for _ in range(3)])
    assert uniform_mismatch(packed, math.sqrt(6 / 1024)) is not None
    # separately xavier'd square blocks are not one packed matrix either (bound sqrt(6/512))
    square = torch.cat([nn.init.xavier_uniform_(torch.empty(256, 256)) for _ in range(3)])
    assert uniform_mismatch(square, math.sqrt(6 / 1024)) is not None
    # xavier_normal_ has the right std but its tails exceed the uniform bound
    normal = nn.init.xavier_normal_(torch.empty(256, 256))
    assert uniform_mismatch(normal, xavier_bound(256, 256)) is not None
    # a zero bias is not a default bias; a default bias is not zero
    assert default_bias_mismatch(torch.zeros(256), 256) is not None
    assert default_bias_mismatch(lin.bias, 256) is None


def test_whole_module_check_rejects_default_init():
    """A module left at PyTorch's defaults fails the same checks; init_like_authors fixes it."""
    torch.manual_seed(0)
    layer = EncoderLayer(256, 8, 2048, 0.0)
    found = transformer_mismatches(layer)
    assert any("packed in-proj" in f for f in found)
    assert any("out_proj.bias" in f for f in found)
    assert any("Linear (2048, 256) weight" in f for f in found)
    assert transformer_mismatches(init_like_authors(layer)) == []
