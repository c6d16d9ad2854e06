"""DAB-DETR anchor queries and DN-DETR denoising on the shared core (issue 6).

Model-level proofs: the group properties hold for the DAB decoder too; denoising queries never reach
the matching queries (so with and without DN the matching outputs agree, and at evaluation DN does not
exist); per-group denoising sets never see another group; K=1 makes the sharing option irrelevant;
denoising losses behave (zero for a perfect reconstruction, weights as DN-DETR).
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import random_targets, tiny_config, tiny_model
from groupdetr.build import build_all, loss_weights
from groupdetr.config import ConfigError, load_config
from groupdetr.criterion import weight_losses
from groupdetr.denoising import denoising_losses, make_denoising_queries, num_copies
from groupdetr.groups import group_slice

DAB = {"model__decoder": "dab"}
DN = {"model__decoder": "dab", "model__denoising__enabled": "true", "model__denoising__num_queries": 6}


def forward(model, images, pad_mask, targets, train=True):
    model.train(train)
    return model(images, pad_mask, targets)


def assert_matching_close(a: dict, b: dict, atol=1e-5):
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=atol, rtol=1e-5)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], atol=atol, rtol=1e-5)
    for x, y in zip(a["aux_outputs"], b["aux_outputs"], strict=True):
        torch.testing.assert_close(x["pred_boxes"], y["pred_boxes"], atol=atol, rtol=1e-5)


# ------------------------------------------------------------------ DAB decoder
def test_dab_boxes_are_refined_layer_by_layer(images, pad_mask):
    """Each layer's boxes are the previous layer's (detached) anchors plus an update: with a zero
    box head every layer returns the learned anchors unchanged."""
    _, model, _, _ = tiny_model(seed=0, model__num_groups=2, **DAB)
    model.train()
    with torch.no_grad():
        out = model(images, pad_mask)
    anchors = model.query_embed.weight.sigmoid()  # zero-initialised last box layer: no update yet
    for layer in out["aux_outputs"] + [out]:
        torch.testing.assert_close(layer["pred_boxes"], anchors.expand_as(layer["pred_boxes"]), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        model.bbox_embed.layers[-1].bias.fill_(0.1)
        out = model(images, pad_mask)
    # layer l moves every logit coordinate by 0.1 more than layer l-1
    expect = torch.special.logit(anchors.clamp(1e-5, 1 - 1e-5))
    for i, layer in enumerate(out["aux_outputs"] + [out]):
        torch.testing.assert_close(torch.special.logit(layer["pred_boxes"][0]), expect + 0.1 * (i + 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k,groups", [(3, [0, 2])])
def test_dab_eval_outputs_equal_group_slice_of_training_outputs(k, groups, images, pad_mask):
    _, model, _, _ = tiny_model(seed=1, model__num_groups=k, **DAB)
    with torch.no_grad():
        train_out = forward(model, images, pad_mask, None)
    for g in groups:
        model.eval_group = g
        with torch.no_grad():
            ev = forward(model, images, pad_mask, None, train=False)
        s = group_slice(g, model.num_queries)
        torch.testing.assert_close(ev["pred_logits"], train_out["pred_logits"][:, s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ev["pred_boxes"], train_out["pred_boxes"][:, s], atol=1e-5, rtol=1e-5)


def test_dab_k_identical_groups_give_the_k1_loss(images, pad_mask):
    targets = random_targets(2, 5, sizes=[3, 1])
    _, one, crit1, _ = tiny_model(seed=3, model__num_groups=1, **DAB)
    _, many, crit3, _ = tiny_model(seed=3, model__num_groups=3, **DAB)
    with torch.no_grad():
        for (name, a), b in zip(one.state_dict().items(), many.state_dict().values()):
            b.copy_(a.repeat(3, 1) if name == "query_embed.weight" else a)
    l1 = crit1(forward(one, images, pad_mask, targets), targets)
    l3 = crit3(forward(many, images, pad_mask, targets), targets)
    assert l1.keys() == l3.keys()
    for name in l1:
        torch.testing.assert_close(l3[name], l1[name], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ denoising queries
def test_denoising_queries_layout_and_noise_bounds():
    targets = random_targets(3, 5, sizes=[3, 0, 2], seed=4)
    torch.manual_seed(0)
    dn = make_denoising_queries(targets, num_sets=2, budget=7, label_noise=0.0, box_noise=0.4, num_classes=5)
    assert (dn.sets, dn.copies, dn.pad) == (2, num_copies(3, 7), 3) == (2, 2, 3)
    assert dn.labels.shape == (3, 12) and dn.boxes.shape == (3, 12, 4)
    idx = dn.target_index.view(3, 4, 3)  # [image, set*copy, slot]
    assert torch.equal(idx[0], torch.tensor([[0, 1, 2]] * 4))
    assert (idx[1] == -1).all() and torch.equal(idx[2], torch.tensor([[0, 1, -1]] * 4))
    for b, t in enumerate(targets):
        slots = dn.valid[b].nonzero().flatten()
        gt = t["boxes"][dn.target_index[b, slots]]
        noised = dn.boxes[b, slots]
        assert torch.equal(dn.labels[b, slots], t["labels"][dn.target_index[b, slots]])  # no label noise
        assert ((noised[:, :2] - gt[:, :2]).abs() <= 0.4 * gt[:, 2:] / 2 + 1e-6).all()
        ratio = noised[:, 2:] / gt[:, 2:]
        assert ((ratio >= 0.6 - 1e-6) & (ratio <= 1.4 + 1e-6) | (noised[:, 2:] >= 1.0 - 1e-6)).all()
    # independent noise in every copy and set
    assert not torch.equal(dn.boxes[0, :3], dn.boxes[0, 3:6])


def test_denoising_label_noise_rate_and_no_objects():
    targets = [{"labels": torch.zeros(50, dtype=torch.long), "boxes": torch.full((50, 4), 0.3)}]
    torch.manual_seed(1)
    dn = make_denoising_queries(targets, 1, 1000, label_noise=0.2, box_noise=0.0, num_classes=100)
    changed = (dn.labels != 0).float().mean().item()
    assert 0.14 < changed < 0.26  # 20 % flipped, of which 1 % land on the same class again
    assert torch.equal(dn.boxes[dn.valid], torch.full((1000, 4), 0.3))
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    assert make_denoising_queries(empty, 1, 10, 0.2, 0.4, 5) is None


def test_denoising_losses_vanish_for_a_perfect_reconstruction():
    targets = random_targets(2, 5, sizes=[2, 1], seed=5)
    dn = make_denoising_queries(targets, 1, 4, 0.0, 0.0, 5)
    flat_boxes = torch.stack([targets[b]["boxes"][max(int(i), 0)] for b in range(2) for i in dn.target_index[b]]).view(2, -1, 4)
    logits = torch.full((2, dn.labels.shape[1], 5), -20.0)
    logits.scatter_(2, dn.labels[..., None], 20.0)
    losses = denoising_losses({"pred_logits": logits, "pred_boxes": flat_boxes}, targets, dn)
    assert losses["loss_bbox_dn"] == 0 and losses["loss_giou_dn"].abs() < 1e-5 and losses["loss_ce_dn"] < 1e-6
    noisy = denoising_losses({"pred_logits": logits, "pred_boxes": flat_boxes + 0.01}, targets, dn)
    # mean over real slots: 4 coordinates off by 0.01 each
    torch.testing.assert_close(noisy["loss_bbox_dn"], torch.tensor(0.04), atol=1e-5, rtol=1e-5)


def test_contrastive_denoising_adds_a_farther_negative_of_every_object_per_copy():
    """DINO's contrastive denoising: per copy, positives (noise < lambda) then negatives (lambda..2 lambda)."""
    targets = random_targets(2, 5, sizes=[3, 1], seed=6)
    torch.manual_seed(0)
    dn = make_denoising_queries(targets, num_sets=2, budget=13, label_noise=0.0, box_noise=0.2, num_classes=5,
                                contrastive=True)
    assert (dn.copies, dn.pad) == (num_copies(6, 13), 6) == (2, 6) and dn.labels.shape == (2, 2 * 2 * 6)
    neg = dn.negative.view(2, 4, 6)
    assert torch.equal(neg[0], torch.tensor([[False] * 3 + [True] * 3] * 4))
    assert torch.equal(neg[1], torch.tensor([[False] * 3 + [True, False, False]] * 4))  # padding is neither
    assert torch.equal(dn.positive, dn.valid & ~dn.negative)
    for b, t in enumerate(targets):
        for kind, lo, hi in ((dn.positive, 0.0, 0.2), (dn.negative, 0.2, 0.4)):
            slots = kind[b].nonzero().flatten()
            gt = t["boxes"][dn.target_index[b, slots]]
            shift = (dn.boxes[b, slots, :2] - gt[:, :2]).abs() / (gt[:, 2:] / 2)
            inside = (dn.boxes[b, slots, :2] > 1e-6) & (dn.boxes[b, slots, :2] < 1 - 1e-6)  # not clamped
            assert ((shift[inside] >= lo - 1e-5) & (shift[inside] <= hi + 1e-5)).all()
    # the loss: negatives count as no object for the class, and not at all for the boxes
    flat_boxes = torch.stack([targets[b]["boxes"][max(int(i), 0)] for b in range(2) for i in dn.target_index[b]]).view(2, -1, 4)
    logits = torch.full((2, dn.labels.shape[1], 5), -20.0)
    logits.scatter_(2, dn.labels[..., None], 20.0)
    logits[dn.negative] = -20.0  # a perfect model calls the negatives background
    boxes = torch.where(dn.negative[..., None], torch.rand_like(flat_boxes), flat_boxes)  # negatives' boxes ignored
    perfect = denoising_losses({"pred_logits": logits, "pred_boxes": boxes}, targets, dn)
    assert perfect["loss_bbox_dn"] == 0 and perfect["loss_ce_dn"] < 1e-6
    logits[dn.negative] = torch.full((5,), -20.0).scatter(0, torch.tensor([1]), 20.0)  # negatives called objects
    assert denoising_losses({"pred_logits": logits, "pred_boxes": boxes}, targets, dn)["loss_ce_dn"] > 1.0


def test_weights_of_denoising_and_auxiliary_losses():
    w = {"loss_ce": 2.0, "loss_bbox": 5.0}
    one = torch.tensor(1.0)
    assert weight_losses({"loss_ce_dn": one, "loss_bbox_dn_2": one, "loss_ce_1": one}, w) == 9.0
    with pytest.raises(KeyError):
        weight_losses({"loss_dice_dn": one}, w)


# ------------------------------------------------------------------ DN inside the model
@pytest.mark.parametrize("decoder", ["dab", "dab_deformable", "dino"])
@pytest.mark.parametrize("k,sharing", [(1, "per_group"), (3, "per_group"), (3, "shared")])
def test_matching_outputs_do_not_see_denoising_queries(k, sharing, decoder, images, pad_mask):
    """Training with DN: the matching queries' outputs equal those of the same model without DN."""
    targets = random_targets(2, 5, sizes=[3, 1])
    _, model, _, _ = tiny_model(seed=6, model__num_groups=k, model__denoising__sharing=sharing,
                                **{**DN, "model__decoder": decoder})
    with torch.no_grad():
        with_dn = forward(model, images, pad_mask, targets)
        assert with_dn["dn_outputs"]["pred_logits"].shape[1] == with_dn["dn_queries"].labels.shape[1] > 0
        dn_cfg, model.denoising = model.denoising, None
        without = forward(model, images, pad_mask, targets)
        model.denoising = dn_cfg
    assert "dn_outputs" not in without
    assert_matching_close(with_dn, without)


def test_no_denoising_at_evaluation_and_dn_model_evaluates_like_dab(images, pad_mask):
    targets = random_targets(2, 5, sizes=[3, 1])
    _, dn_model, _, _ = tiny_model(seed=7, model__num_groups=2, **DN)
    _, dab, _, _ = tiny_model(seed=7, model__num_groups=2, **DAB)
    dab.load_state_dict({k: v for k, v in dn_model.state_dict().items() if not k.startswith("label_embed")})
    with torch.no_grad():
        a = forward(dn_model, images, pad_mask, targets, train=False)
        b = forward(dab, images, pad_mask, targets, train=False)
    assert "dn_outputs" not in a
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_no_dn_model_is_plain_dab_bit_for_bit(images, pad_mask):
    """denoising.enabled=false builds exactly DAB: same parameters, same outputs and losses."""
    targets = random_targets(2, 5, sizes=[2, 2])
    _, plain, crit_p, _ = tiny_model(seed=8, model__num_groups=2, **DAB)
    _, off, crit_o, _ = tiny_model(seed=8, model__num_groups=2, model__denoising__enabled="false", **DAB)
    assert plain.state_dict().keys() == off.state_dict().keys()
    out_p, out_o = forward(plain, images, pad_mask, targets), forward(off, images, pad_mask, targets)
    assert torch.equal(out_p["pred_boxes"], out_o["pred_boxes"])
    lp, lo = crit_p(out_p, targets), crit_o(out_o, targets)
    assert all(torch.equal(lp[k], lo[k]) for k in lp)


def test_k1_sharing_option_makes_no_difference(images, pad_mask):
    """With one group, one set per group is one shared set: identical outputs and losses."""
    targets = random_targets(2, 5, sizes=[3, 2])
    outs, losses = [], []
    for sharing in ("per_group", "shared"):
        _, model, crit, _ = tiny_model(seed=9, model__num_groups=1, model__denoising__sharing=sharing, **DN)
        torch.manual_seed(0)
        out = forward(model, images, pad_mask, targets)
        outs.append(out)
        losses.append(crit(out, targets))
    assert torch.equal(outs[0]["dn_outputs"]["pred_boxes"], outs[1]["dn_outputs"]["pred_boxes"])
    assert all(torch.equal(losses[0][k], losses[1][k]) for k in losses[0])


@pytest.mark.parametrize("decoder,contrastive", [("dab", False), ("dab_deformable", False), ("dino", False),
                                                 ("dino", True)])
def test_per_group_denoising_sets_see_only_their_group(decoder, contrastive, images, pad_mask):
    """Gradients: set s's outputs depend on group s's anchors only; matching outputs never on the
    label embedding (the only way ground truth enters the denoising queries' content)."""
    targets = random_targets(2, 5, sizes=[2, 1])
    _, model, _, _ = tiny_model(seed=10, model__num_groups=3, model__denoising__contrastive=str(contrastive).lower(),
                                **{**DN, "model__decoder": decoder})
    torch.manual_seed(0)
    out = forward(model, images, pad_mask, targets)
    dn = out["dn_queries"]
    n = model.num_queries
    for s in range(3):
        model.zero_grad()
        size = dn.copies * dn.pad
        valid = dn.valid[:, s * size:(s + 1) * size]
        # (logits: the box head's last layer starts at zero, so boxes carry no gradient yet)
        out["dn_outputs"]["pred_logits"][:, s * size:(s + 1) * size][valid].sum().backward(retain_graph=True)
        grads = model.query_embed.weight.grad.view(3, n, -1).abs().sum((1, 2))
        assert grads[s] > 0 and (grads[[g for g in range(3) if g != s]] == 0).all()
    model.zero_grad()
    out["pred_logits"].sum().backward(retain_graph=True)
    assert model.label_embed.weight.grad is None or (model.label_embed.weight.grad == 0).all()


def test_shared_denoising_set_sees_every_group(images, pad_mask):
    targets = random_targets(2, 5, sizes=[2, 1])
    _, model, _, _ = tiny_model(seed=10, model__num_groups=3, model__denoising__sharing="shared", **DN)
    out = forward(model, images, pad_mask, targets)
    assert out["dn_queries"].sets == 1
    out["dn_outputs"]["pred_logits"][out["dn_queries"].valid].sum().backward()
    grads = model.query_embed.weight.grad.view(3, model.num_queries, -1).abs().sum((1, 2))
    assert (grads > 0).all()


def test_training_step_with_groups_and_denoising(images, pad_mask):
    cfg, model, crit, _ = tiny_model(seed=11, model__num_groups=3, **DN)
    targets = random_targets(2, 5, sizes=[3, 0])
    losses = crit(forward(model, images, pad_mask, targets), targets)
    dn_keys = {k for k in losses if "_dn" in k}
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0"} <= dn_keys
    total = weight_losses(losses, loss_weights(cfg))
    assert math.isfinite(total.item())
    total.backward()
    assert model.label_embed.weight.grad.abs().sum() > 0


def test_denoising_needs_an_anchor_box_decoder():
    with pytest.raises(ConfigError, match="set model.decoder to one of dab, dab_deformable"):
        load_config("cpu_small", ["model.denoising.enabled=true"])
    cfg = tiny_config(**DN)
    assert cfg.model.denoising.enabled and build_all(cfg)[0].label_embed is not None
