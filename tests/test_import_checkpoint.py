"""`groupdetr import-checkpoint`: the authors' Conditional DETR / Group DETR checkpoints read into ours.

The authors' layout is written here from their module tree (Atten4Vis/ConditionalDETR, branch GroupDETR:
``Joiner(backbone, pos)``, ``Transformer.encoder`` of ``nn.MultiheadAttention`` post-norm layers,
``Transformer.decoder`` with ``linear1/linear2/norm3`` for the FFN), independently of the converter, and
their encoder layer is recomputed with ``nn.MultiheadAttention`` as they do.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from groupdetr.build import build_model
from groupdetr.config import load_config
from groupdetr.engine.checkpoint import load_checkpoint
from groupdetr.interop.conditional_detr import ImportRefused, import_checkpoint, to_ours
from groupdetr.model.transformer import EncoderLayer

ARCH = ["model.hidden_dim=32", "model.nheads=4", "model.enc_layers=2", "model.dec_layers=2",
        "model.dim_feedforward=64", "model.num_classes=5", "model.num_queries=4", "model.num_groups=3"]


def authors_layout(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' names: what their ConditionalDETR(group_detr=K).state_dict() holds."""
    theirs = {}
    for key, value in ours.items():
        if key.startswith("backbone."):
            theirs["backbone.0." + key[len("backbone."):]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            i, rest = m.groups()
            if rest.startswith(("q_proj.", "k_proj.", "v_proj.")):
                continue  # packed below
            rest = {"attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
                    "norm.weight": "norm1.weight", "norm.bias": "norm1.bias",
                    "ffn.norm.weight": "norm2.weight", "ffn.norm.bias": "norm2.bias"}.get(rest, rest.replace("ffn.", ""))
            theirs[f"transformer.encoder.layers.{i}.{rest}"] = value
        elif m := re.fullmatch(r"decoder\.layers\.(\d+)\.ffn\.(linear1|linear2|norm)\.(weight|bias)", key):
            i, part, kind = m.groups()
            theirs[f"transformer.decoder.layers.{i}.{'norm3' if part == 'norm' else part}.{kind}"] = value
        elif key.startswith("decoder."):
            theirs["transformer." + key] = value
        else:
            theirs[key] = value
    layers = {int(m.group(1)) for k in ours if (m := re.fullmatch(r"encoder\.layers\.(\d+)\..+", k))}
    for i in layers:
        for kind in ("weight", "bias"):
            theirs[f"transformer.encoder.layers.{i}.self_attn.in_proj_{kind}"] = torch.cat(
                [ours[f"encoder.layers.{i}.{p}_proj.{kind}"] for p in "qkv"])
    return theirs


@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    cfg = load_config("paper_cdetr_r50_12ep", ARCH)
    model = build_model(cfg.model)
    with torch.no_grad():  # no zero tensors left: a swapped pair of parameters would go unnoticed
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def save_authors_checkpoint(path, state, **args):
    torch.save({"model": state, "optimizer": {}, "lr_scheduler": {}, "epoch": 11,
                "args": argparse.Namespace(**args)}, path)


ARGS = dict(backbone="resnet50", dilation=False, nheads=4, num_queries=4, group_detr=3, pre_norm=False)


def test_their_encoder_layer_equals_ours_after_conversion():
    """Their post-norm encoder layer (nn.MultiheadAttention, sequence-first, q = k = src + pos, v = src),
    recomputed here, against our EncoderLayer loaded with the converted parameters."""
    torch.manual_seed(1)
    d, h, L, B = 32, 4, 7, 2
    attn, lin1, lin2 = nn.MultiheadAttention(d, h), nn.Linear(d, 64), nn.Linear(64, d)
    norm1, norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
    with torch.no_grad():
        for m in (attn, lin1, lin2, norm1, norm2):
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    theirs = {f"transformer.encoder.layers.0.{name}.{k}": v
              for name, m in [("self_attn", attn), ("linear1", lin1), ("linear2", lin2), ("norm1", norm1), ("norm2", norm2)]
              for k, v in m.state_dict().items()}
    ours = {k[len("encoder.layers.0."):]: v for k, v in to_ours(theirs).items()}
    layer = EncoderLayer(d, h, 64, dropout=0.0)
    layer.load_state_dict(ours)
    layer.eval()
    src, pos = torch.randn(B, L, d), torch.randn(B, L, d)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[1, -2:] = True
    s, p = src.transpose(0, 1), pos.transpose(0, 1)  # theirs: [L, B, d]
    s2 = attn(s + p, s + p, value=s, key_padding_mask=pad)[0]
    s = norm1(s + s2)
    s = norm2(s + lin2(F.relu(lin1(s))))
    torch.testing.assert_close(layer(src, pos, pad), s.transpose(0, 1), rtol=0, atol=1e-5)


def test_import_restores_every_parameter_bit_for_bit(original, tmp_path):
    src = tmp_path / "checkpoint.pth"
    save_authors_checkpoint(src, authors_layout(original.state_dict()), **ARGS)
    summary = import_checkpoint(src, tmp_path / "ours.pth")
    ckpt = load_checkpoint(tmp_path / "ours.pth")
    expected = original.state_dict()
    assert set(ckpt["model"]) == set(expected)
    for k, v in expected.items():
        assert torch.equal(ckpt["model"][k], v), k
    m = ckpt["config"]["model"]
    assert (m["num_groups"], m["num_queries"], m["hidden_dim"], m["nheads"], m["num_classes"]) == (3, 4, 32, 4, 5)
    assert (m["enc_layers"], m["dec_layers"], m["dim_feedforward"], m["backbone"]["name"]) == (2, 2, 64, "resnet50")
    assert ckpt["epoch"] == 12  # their epochs count from 0
    assert ckpt["imported_from"]["sha256"] == summary["source_sha256"]


def test_the_imported_model_predicts_as_the_original(original, tmp_path):
    src = tmp_path / "checkpoint.pth"
    save_authors_checkpoint(src, authors_layout(original.state_dict()), **ARGS)
    import_checkpoint(src, tmp_path / "ours.pth")
    ckpt = load_checkpoint(tmp_path / "ours.pth")
    cfg = load_config("paper_cdetr_r50_12ep", ARCH)
    model = build_model(cfg.model)
    model.load_state_dict(ckpt["model"])
    images = torch.randn(1, 3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    original.eval(), model.eval()
    with torch.no_grad():
        a, b = original(images, masks), model(images, masks)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], rtol=0, atol=0)
    assert a["pred_logits"].shape[1] == 4  # one group of N at inference, as theirs


def test_a_bare_state_dict_needs_the_number_of_groups(original, tmp_path):
    src = tmp_path / "state.pth"
    torch.save(authors_layout(original.state_dict()), src)
    with pytest.raises(ImportRefused, match="--groups"):
        import_checkpoint(src, tmp_path / "a.pth", overrides=["model.nheads=4"])
    import_checkpoint(src, tmp_path / "b.pth", overrides=["model.nheads=4"], num_groups=3)
    assert load_checkpoint(tmp_path / "b.pth")["config"]["model"]["num_queries"] == 4


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("transformer.decoder.layers.1.norm3.weight"), "lacks decoder.layers.1.ffn.norm.weight"),
    (lambda s: s.__setitem__("transformer.decoder.extra.weight", torch.zeros(1)), "has decoder.extra.weight"),
    (lambda s: s.__setitem__("transformer.encoder.layers.0.mystery.weight", torch.zeros(1)), "unknown encoder parameter"),
    (lambda s: s.__setitem__("decoder_head.weight", torch.zeros(1)), "not a parameter of Conditional DETR"),
    (lambda s: s.__setitem__("transformer.decoder.ref_point_head.layers.1.weight", torch.zeros(3, 32)),
     r"ref_point_head.layers.1.weight has shape \(3, 32\)"),
])
def test_what_does_not_fit_is_refused_with_one_line(original, tmp_path, damage, message):
    state = authors_layout(original.state_dict())
    damage(state)
    src = tmp_path / "checkpoint.pth"
    save_authors_checkpoint(src, state, **ARGS)
    with pytest.raises(ImportRefused, match=message) as e:
        import_checkpoint(src, tmp_path / "ours.pth")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ours.pth").exists()


def test_pre_norm_and_other_backbones_are_refused(original, tmp_path):
    src = tmp_path / "checkpoint.pth"
    save_authors_checkpoint(src, authors_layout(original.state_dict()), **{**ARGS, "pre_norm": True})
    with pytest.raises(ImportRefused, match="pre_norm"):
        import_checkpoint(src, tmp_path / "a.pth")
    save_authors_checkpoint(src, authors_layout(original.state_dict()), **{**ARGS, "backbone": "swin_t"})
    with pytest.raises(ImportRefused, match="swin_t"):
        import_checkpoint(src, tmp_path / "a.pth")


def test_the_command_refuses_a_file_that_is_no_checkpoint_with_one_line(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    existing = tmp_path / "existing.pth"
    existing.write_text("keep me")
    for src, out, message in [(bad, tmp_path / "o.pth", "cannot be read as a torch checkpoint"),
                              (tmp_path / "missing.pth", tmp_path / "o.pth", "no such file"),
                              (bad, existing, "exists; name a new file")]:
        r = subprocess.run([sys.executable, "-m", "groupdetr", "import-checkpoint", str(src), "--out", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert existing.read_text() == "keep me"
