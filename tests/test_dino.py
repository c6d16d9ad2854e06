"""DINO with groups (model.decoder=dino): per-group query selection from the encoder's proposals, the encoder's
two-stage loss, look-forward-twice; and the group rules for it (K=1 is plain DINO bit for bit, a group's
outputs depend on its own content queries and proposal heads only, eval = the group's training slice,
K identical groups give the K=1 loss)."""
from __future__ import annotations

import pytest
import torch

from conftest import random_targets, tiny_model
from groupdetr.build import loss_weights
from groupdetr.criterion import weight_losses
from groupdetr.groups import group_slice
from groupdetr.model.memory import Memory
from groupdetr.model.query_selection import GroupLinear, proposal_anchors, select_queries

DINO = {"model__decoder": "dino"}


def train_forward(model, images, pad_mask, targets=None):
    model.train()
    return model(images, pad_mask, targets)


def test_proposal_anchors_sit_on_valid_cells_and_grow_with_the_level():
    mask = torch.zeros(1, 4 * 6 + 2 * 3, dtype=torch.bool)
    mask[0, [5, 11, 17, 23]] = True  # level 0: last column padded (5 of 6 valid)
    ratios = torch.tensor([[[5 / 6, 1.0], [1.0, 1.0]]])
    memory = Memory(torch.zeros(1, 30, 8), torch.zeros(1, 30, 8), mask, [(4, 6), (2, 3)], ratios)
    anchors, valid = proposal_anchors(memory)
    boxes = anchors.sigmoid()
    torch.testing.assert_close(boxes[0, 7], torch.tensor([1.5 / 5, 1.5 / 4, 0.05, 0.05]))  # row 1, column 1
    torch.testing.assert_close(boxes[0, 24 + 4, 2:], torch.tensor([0.1, 0.1]))  # level 1: twice as large
    assert not valid[0, 5] and valid[0, 7]


def test_group_linear_is_one_linear_map_per_group():
    torch.manual_seed(0)
    lin = GroupLinear(3, 4, 2)
    x = torch.randn(2, 5, 4)
    out = lin(x, (2, 0))
    torch.testing.assert_close(out[:, 0], x @ lin.weight[2].T + lin.bias[2])
    torch.testing.assert_close(out[:, 1], x @ lin.weight[0].T + lin.bias[0])
    assert not torch.equal(lin.weight[0], lin.weight[1])


def test_selection_never_picks_padding_and_keeps_the_group_order(images, pad_mask):
    _, model, _, _ = tiny_model(seed=0, model__num_groups=3, **DINO)
    model.train()
    feats = model.backbone.forward_features(images)
    memory = model.encoder.encode(model.input_proj, feats, pad_mask)
    with torch.no_grad():
        model.decoder.proposals.cls.bias[1] += 3.0  # group 1 scores higher everywhere: same ranking, other values
    sel = select_queries(model.decoder.proposals, memory, (0, 1, 2), 7)
    assert sel["anchors"].shape == (2, 21, 4) and not sel["anchors"].requires_grad and sel["pred_boxes"].requires_grad
    n = 7
    assert (sel["pred_logits"][:, n:2 * n].max(-1).values > sel["pred_logits"][:, :n].max(-1).values).all()
    # no selected anchor lies in image 1's padding (its right part)
    assert (sel["anchors"][1, :, 0] < 0.999).all()


@pytest.mark.parametrize("variant", [
    {"model__self_attention": "separate", "matcher__assignment": "group"},
    {"model__self_attention": "separate", "matcher__assignment": "naive_one_to_many"},
])
def test_k1_group_model_is_plain_dino_bit_for_bit(variant, images, pad_mask):
    targets = random_targets(2, 5)
    _, plain, plain_crit, _ = tiny_model(seed=0, model__num_groups=1, model__self_attention="shared",
                                         matcher__assignment="one_to_one", **DINO)
    _, grouped, group_crit, _ = tiny_model(seed=0, model__num_groups=1, **variant, **DINO)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), grouped.state_dict().values()))
    out_p, out_g = train_forward(plain, images, pad_mask), train_forward(grouped, images, pad_mask)
    for key in ("pred_logits", "pred_boxes"):
        assert torch.equal(out_p[key], out_g[key]) and torch.equal(out_p["enc_outputs"][key], out_g["enc_outputs"][key])
    loss_p, loss_g = plain_crit(out_p, targets), group_crit(out_g, targets)
    assert "loss_ce_enc" in loss_p and all(torch.equal(loss_p[k], loss_g[k]) for k in loss_p)


@pytest.mark.parametrize("sa,isolated", [("separate", True), ("shared", False)])
def test_a_groups_outputs_depend_on_its_own_queries_and_proposal_heads_only(sa, isolated, images, pad_mask):
    _, model, _, _ = tiny_model(seed=4, model__num_groups=3, model__self_attention=sa, **DINO)
    out = train_forward(model, images, pad_mask)
    n = model.num_queries
    heads = model.decoder.proposals
    for g in range(3):
        model.zero_grad()
        out["pred_logits"][:, g * n:(g + 1) * n].sum().backward(retain_graph=True)
        content = model.query_embed.weight.grad.view(3, n, -1).abs().sum((1, 2))
        others = [h for h in range(3) if h != g]
        assert content[g] > 0
        assert (content[others] == 0).all() if isolated else (content[others] > 0).all()
        # anchors are selected (detached): the proposal heads get no gradient from the decoder's logits
        assert heads.proj.weight.grad is None or (heads.proj.weight.grad == 0).all()
    for g in range(3):  # the encoder loss of group g's proposals reaches group g's heads only
        model.zero_grad()
        out["enc_outputs"]["pred_logits"][:, g * n:(g + 1) * n].sum().backward(retain_graph=True)
        per_group = heads.proj.weight.grad.abs().sum((1, 2))
        assert per_group[g] > 0 and (per_group[[h for h in range(3) if h != g]] == 0).all()


def test_eval_output_is_the_groups_training_slice(images, pad_mask):
    _, model, _, _ = tiny_model(seed=1, model__num_groups=3, **DINO)
    with torch.no_grad():
        train = train_forward(model, images, pad_mask)
        model.eval_group = 2
        ev = model.eval()(images, pad_mask)
    s = group_slice(2, model.num_queries)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(ev[key], train[key][:, s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ev["enc_outputs"][key], train["enc_outputs"][key][:, s], atol=1e-5, rtol=1e-5)


def test_k_identical_groups_give_the_k1_loss(images, pad_mask):
    targets = random_targets(2, 5, sizes=[3, 1])
    cfg1, one, crit1, _ = tiny_model(seed=3, model__num_groups=1, **DINO)
    cfg3, many, crit3, _ = tiny_model(seed=3, model__num_groups=3, **DINO)
    with torch.no_grad():
        for (name, a), b in zip(one.state_dict().items(), many.state_dict().values()):
            if name == "query_embed.weight":
                b.copy_(a.repeat(3, 1))
            elif name.startswith("decoder.proposals."):
                b.copy_(a.repeat(3, *[1] * (a.dim() - 1)))  # per-group parameters: [K, ...]
            else:
                b.copy_(a)
    l1 = weight_losses(crit1(train_forward(one, images, pad_mask), targets), loss_weights(cfg1))
    l3 = weight_losses(crit3(train_forward(many, images, pad_mask), targets), loss_weights(cfg3))
    torch.testing.assert_close(l3, l1, atol=1e-5, rtol=1e-5)


def test_look_forward_twice_sends_a_layers_box_gradient_to_the_layer_before(images, pad_mask):
    """Layer 1's box refines layer 0's box *with* its gradient (DINO); in DAB-Deformable the anchor is detached,
    so layer 1's box does not depend on layer 0's normalised output at all."""
    for decoder, flows in (("dino", True), ("dab_deformable", False)):
        _, model, _, _ = tiny_model(seed=2, model__num_groups=2, model__decoder=decoder)
        model.train()
        with torch.no_grad():  # give the box head a non-zero last layer (it starts at zero)
            torch.nn.init.normal_(model.bbox_embed.layers[-1].weight, std=0.1)
        feats = model.backbone.forward_features(images)
        memory = model.encoder.encode(model.input_proj, feats, pad_mask)
        queries, content, _ = model.decoder.initial_queries(model.group_queries((0, 1)), memory, (0, 1))
        normed = []  # each layer's normalised output, as the box head reads it
        hook = model.decoder.norm.register_forward_hook(lambda mod, inp, out: normed.append(out))
        _, boxes = model.decoder(memory, queries, 2, model.sa_fn, model.bbox_embed, content)
        hook.remove()
        (grad,) = torch.autograd.grad(boxes[1].sum(), normed[0], retain_graph=True, allow_unused=True)
        assert (grad is not None and grad.abs().sum() > 0) == flows, decoder


def test_a_training_step_learns_and_dino_needs_the_detection_task(images, pad_mask):
    from groupdetr.config import ConfigError, load_config

    cfg, model, criterion, _ = tiny_model(seed=5, model__num_groups=3, **DINO)
    targets = random_targets(2, 5, sizes=[3, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = weight_losses(criterion(train_forward(model, images, pad_mask), targets), loss_weights(cfg))
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ConfigError, match="model.decoder=dino supports model.task detection only"):
        load_config("cpu_small", ["model.decoder=dino", "model.task=instance_segmentation"])
