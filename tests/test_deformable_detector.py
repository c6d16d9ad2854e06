"""The group rules for the DAB-Deformable decoder (model.decoder=dab_deformable), beside the shared ones in
test_tasks.py (eval slice, identical groups, every head), test_model.py (all groups in one forward) and
test_dab_dn.py (denoising): K=1 is the plain detector bit for bit; no query sees another group's."""
from __future__ import annotations

import pytest
import torch

from conftest import random_targets, tiny_model
from groupdetr.build import loss_weights
from groupdetr.criterion import weight_losses
from groupdetr.model.deformable_decoder import DABDeformableDecoder
from groupdetr.model.deformable_encoder import DeformableEncoder
from groupdetr.model.multiscale import MultiScaleProjection

DEF = {"model__decoder": "dab_deformable"}


def run(model, criterion, images, pad_mask, targets, train=True):
    model.train(train)
    out = model(images, pad_mask)
    return out, criterion(out, targets)


def test_the_model_is_deformable_throughout():
    cfg, model, _, _ = tiny_model(seed=0, model__num_groups=3, **DEF)
    assert isinstance(model.encoder, DeformableEncoder) and isinstance(model.decoder, DABDeformableDecoder)
    assert isinstance(model.input_proj, MultiScaleProjection) and model.query_embed.weight.shape == (3 * 7, 4)
    assert len(model.input_proj.inputs) == cfg.model.deformable.backbone_levels
    assert len(model.input_proj.extra) == cfg.model.deformable.num_levels - cfg.model.deformable.backbone_levels
    for layer in model.decoder.layers:  # the authors' Xavier init must not overwrite the deformable init
        assert layer.cross_attn.sampling_offsets.weight.abs().sum() == 0
        assert layer.cross_attn.attention_weights.weight.abs().sum() == 0


@pytest.mark.parametrize("variant", [
    {"model__self_attention": "separate", "matcher__assignment": "group"},
    {"model__self_attention": "separate", "matcher__assignment": "naive_one_to_many"},
])
def test_k1_group_model_is_the_plain_dab_deformable_detector_bit_for_bit(variant, images, pad_mask):
    targets = random_targets(2, 5)
    _, plain, plain_crit, _ = tiny_model(seed=0, model__num_groups=1, model__self_attention="shared",
                                         matcher__assignment="one_to_one", **DEF)
    _, grouped, group_crit, _ = tiny_model(seed=0, model__num_groups=1, **variant, **DEF)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), grouped.state_dict().values()))
    out_p, loss_p = run(plain, plain_crit, images, pad_mask, targets)
    out_g, loss_g = run(grouped, group_crit, images, pad_mask, targets)
    for key in ("pred_logits", "pred_boxes"):
        assert torch.equal(out_p[key], out_g[key])
    assert loss_p.keys() == loss_g.keys() and all(torch.equal(loss_p[k], loss_g[k]) for k in loss_p)


@pytest.mark.parametrize("sa,isolated", [("separate", True), ("shared", False)])
def test_a_groups_outputs_depend_on_its_own_queries_only(sa, isolated, images, pad_mask):
    """Gradients of group g's logits reach group g's anchors and, with separate self-attention, no other
    group's; with shared self-attention (negative control) they do."""
    _, model, _, _ = tiny_model(seed=4, model__num_groups=3, model__self_attention=sa, **DEF)
    model.train()
    out = model(images, pad_mask)
    n = model.num_queries
    for g in range(3):
        model.zero_grad()
        out["pred_logits"][:, g * n:(g + 1) * n].sum().backward(retain_graph=True)
        grads = model.query_embed.weight.grad.view(3, n, -1).abs().sum((1, 2))
        others = grads[[h for h in range(3) if h != g]]
        assert grads[g] > 0
        assert (others == 0).all() if isolated else (others > 0).all()


def test_a_training_step_learns_and_every_parameter_is_used(images, pad_mask):
    cfg, model, criterion, _ = tiny_model(seed=5, model__num_groups=3, **DEF)
    targets = random_targets(2, 5, sizes=[3, 2])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = weight_losses(criterion(model(images, pad_mask), targets), loss_weights(cfg))
        opt.zero_grad()
        loss.backward()
        if not losses:
            unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert unused == []
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
