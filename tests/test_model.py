"""Model-level group properties: K=1 is plain Conditional DETR, eval == a group's training slice,
inference cost independent of K, gradients reach every group."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import random_targets, tiny_model
from groupdetr.build import loss_weights
from groupdetr.criterion import weight_losses
from groupdetr.groups import group_slice, select_group


def outputs_equal(a: dict, b: dict) -> bool:
    same = torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])
    for x, y in zip(a.get("aux_outputs", []), b.get("aux_outputs", [])):
        same = same and torch.equal(x["pred_logits"], y["pred_logits"]) and torch.equal(x["pred_boxes"], y["pred_boxes"])
    return same


def run(model, criterion, images, pad_mask, targets, train=True):
    model.train(train)
    out = model(images, pad_mask)
    return out, criterion(out, targets)


# ------------------------------------------------------------------ K=1 is the plain detector
GROUP_VARIANTS = [
    {"model__self_attention": "separate", "matcher__assignment": "group"},
    {"model__self_attention": "separate_masked", "matcher__assignment": "group"},
    {"model__self_attention": "separate", "matcher__assignment": "naive_one_to_many"},
]


@pytest.mark.parametrize("variant", GROUP_VARIANTS)
def test_k1_group_model_is_plain_conditional_detr_bit_for_bit(variant, images, pad_mask):
    """Plain C-DETR = one group, shared (i.e. ordinary) self-attention, one-to-one matching."""
    targets = random_targets(2, 5)
    _, plain, plain_crit, _ = tiny_model(seed=0, model__num_groups=1, model__self_attention="shared",
                                         matcher__assignment="one_to_one")
    _, grouped, group_crit, _ = tiny_model(seed=0, model__num_groups=1, **variant)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), grouped.state_dict().values()))
    out_p, loss_p = run(plain, plain_crit, images, pad_mask, targets)
    out_g, loss_g = run(grouped, group_crit, images, pad_mask, targets)
    if variant["model__self_attention"] == "separate_masked":  # another SDPA kernel: rounding only
        torch.testing.assert_close(out_g["pred_logits"], out_p["pred_logits"], atol=1e-5, rtol=1e-5)
        return
    assert outputs_equal(out_p, out_g)
    assert loss_p.keys() == loss_g.keys()
    assert all(torch.equal(loss_p[k], loss_g[k]) for k in loss_p)


def test_k1_check_detects_a_changed_model(images, pad_mask):
    """Negative control: the same comparison fails for K=2 (group 0 identical, shared SA)."""
    _, plain, _, _ = tiny_model(seed=0, model__num_groups=1, model__self_attention="shared",
                                matcher__assignment="one_to_one")
    _, two, _, _ = tiny_model(seed=0, model__num_groups=2, model__self_attention="shared")
    with torch.no_grad():
        two.query_embed.weight[:7] = plain.query_embed.weight
        for (n, a), b in zip(plain.state_dict().items(), two.state_dict().values()):
            if n != "query_embed.weight":
                b.copy_(a)
    plain.train(), two.train()
    out_p = plain(images, pad_mask)
    out_2 = two(images, pad_mask)
    assert not torch.equal(out_p["pred_logits"], out_2["pred_logits"][:, :7])


# ------------------------------------------------------------------ eval == a group's slice
@pytest.mark.parametrize("k,groups", [(3, [0, 1, 2]), (11, [0, 5, 10])])
def test_eval_outputs_equal_group_slice_of_training_outputs(k, groups, images, pad_mask):
    _, model, _, _ = tiny_model(seed=1, model__num_groups=k)  # dropout 0 in the tiny config
    model.train()
    with torch.no_grad():
        train_out = model(images, pad_mask)
    model.eval()
    for g in groups:
        model.eval_group = g
        with torch.no_grad():
            ev = model(images, pad_mask)
        s = group_slice(g, model.num_queries)
        assert ev["num_groups"] == 1 and ev["pred_logits"].shape[1] == model.num_queries
        torch.testing.assert_close(ev["pred_logits"], train_out["pred_logits"][:, s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ev["pred_boxes"], train_out["pred_boxes"][:, s], atol=1e-5, rtol=1e-5)
        for a, t in zip(ev["aux_outputs"], train_out["aux_outputs"]):
            torch.testing.assert_close(a["pred_boxes"], t["pred_boxes"][:, s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
@pytest.mark.parametrize("decoder", ["conditional", "dab", "dab_deformable"])
def test_all_groups_in_one_forward_equal_each_group_alone(task, decoder, images, pad_mask):
    """What `groupdetr eval --group all` relies on: with separate self-attention, group g's slice of a
    forward with every group active is that group's forward alone, for every head and decoder."""
    _, model, _, _ = tiny_model(seed=1, model__num_groups=4, model__task=task, model__decoder=decoder)
    model.eval()
    with torch.no_grad():
        every = model(images, pad_mask, groups=range(4))
        for g in range(4):
            alone = model(images, pad_mask, groups=(g,))
            sliced = select_group(every, g)
            keys = [k for k in alone if k.startswith("pred_")]
            assert len(keys) >= 2 + (task == "instance_segmentation")
            for k in keys:
                torch.testing.assert_close(sliced[k], alone[k], atol=1e-5, rtol=1e-5)


def test_eval_slice_check_fails_with_shared_attention(images, pad_mask):
    """Negative control: with shared self-attention a group's eval output differs from its slice."""
    _, model, _, _ = tiny_model(seed=1, model__num_groups=3, model__self_attention="shared")
    with torch.no_grad():
        train_out = model.train()(images, pad_mask)
        ev = model.eval()(images, pad_mask)
    assert not torch.allclose(ev["pred_logits"], train_out["pred_logits"][:, :7], atol=1e-5)


def test_explicit_groups_argument_and_bad_group(images):
    _, model, _, _ = tiny_model(seed=1, model__num_groups=3)
    model.eval()
    with torch.no_grad():
        out = model(images, groups=[2, 0])
    assert out["num_groups"] == 2 and out["pred_logits"].shape[1] == 14
    with pytest.raises(ValueError, match="group 3 does not exist"):
        model(images, groups=[3])


def test_naive_one_to_many_keeps_all_queries_at_inference(images):
    _, model, _, _ = tiny_model(seed=1, model__num_groups=3, model__self_attention="shared",
                                matcher__assignment="naive_one_to_many")
    with torch.no_grad():
        out = model.eval()(images)
    assert out["pred_logits"].shape[1] == 21


# ------------------------------------------------------------------ cost
def math_sdpa(q, k, v, attn_mask=None, dropout_p=0.0):
    """Explicit-matmul attention, so that FlopCounterMode counts attention work (it has no
    formula for the fused CPU kernel)."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.fixture(autouse=False)
def counted_attention(monkeypatch):
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", math_sdpa)


def forward_flops(model, images, train: bool) -> int:
    model.train(train)
    with FlopCounterMode(display=False) as counter:  # (its module tracker needs autograd on)
        model(images)
    return counter.get_total_flops()


def test_eval_work_is_independent_of_k(images, counted_attention):
    flops = {k: forward_flops(tiny_model(seed=0, model__num_groups=k)[1], images, train=False) for k in (1, 11)}
    assert flops[1] == flops[11] > 0
    # Sanity of the measurement itself: training does depend on K.
    assert forward_flops(tiny_model(seed=0, model__num_groups=11)[1], images, train=True) > flops[1]


def test_separate_attention_is_cheaper_than_shared_at_k11(images, counted_attention):
    sep = forward_flops(tiny_model(seed=0, model__num_groups=11)[1], images, train=True)
    shared = forward_flops(tiny_model(seed=0, model__num_groups=11, model__self_attention="shared")[1], images, train=True)
    masked = forward_flops(tiny_model(seed=0, model__num_groups=11, model__self_attention="separate_masked")[1], images, train=True)
    assert sep < shared and masked == shared  # the mask costs (K*N)^2 like shared attention


# ------------------------------------------------------------------ gradients
def query_grad_norms(model, criterion, cfg, images, train=True):
    model.train(train)
    model.zero_grad()
    targets = random_targets(images.shape[0], cfg.model.num_classes, seed=5)
    loss = weight_losses(criterion(model(images), targets), loss_weights(cfg))
    loss.backward()
    k, n = model.num_groups, model.num_queries
    return model.query_embed.weight.grad.view(k, n, -1).flatten(1).norm(dim=1)


@pytest.mark.parametrize("sa", ["separate", "shared"])
def test_gradients_reach_every_groups_queries(sa, images):
    cfg, model, criterion, _ = tiny_model(seed=2, model__num_groups=4, model__self_attention=sa)
    assert (query_grad_norms(model, criterion, cfg, images) > 0).all()


def test_gradient_check_detects_groups_left_out(images):
    """Negative control: an eval-mode forward uses only group 0; the check must see zeros."""
    cfg, model, criterion, _ = tiny_model(seed=2, model__num_groups=4)
    norms = query_grad_norms(model, criterion, cfg, images, train=False)
    assert norms[0] > 0 and (norms[1:] == 0).all()


# ------------------------------------------------------------------ normalisation
def identical_group_models(k: int):
    """A K=1 model and a K=k model whose k groups are copies of the K=1 queries."""
    _, one, crit1, _ = tiny_model(seed=3, model__num_groups=1)
    cfg_k, many, crit_k, _ = tiny_model(seed=3, model__num_groups=k)
    with torch.no_grad():
        for (name, a), b in zip(one.state_dict().items(), many.state_dict().values()):
            b.copy_(a.repeat(k, 1) if name == "query_embed.weight" else a)
    return one, crit1, many, crit_k


@pytest.mark.parametrize("k", [2, 5])
def test_k_identical_groups_give_the_k1_loss(k, images, pad_mask):
    one, crit1, many, crit_k = identical_group_models(k)
    targets = random_targets(2, 5, sizes=[3, 0])  # one image without objects
    _, l1 = run(one, crit1, images, pad_mask, targets)
    _, lk = run(many, crit_k, images, pad_mask, targets)
    assert l1.keys() == lk.keys()
    for name in l1:
        torch.testing.assert_close(lk[name], l1[name], rtol=1e-5, atol=1e-7)


def test_normalisation_check_detects_a_missing_k(images, pad_mask, monkeypatch):
    """Negative control: normalising by #GT only (forgetting K) makes the K-copy loss K times larger."""
    import groupdetr.criterion as criterion_mod

    one, crit1, many, crit_k = identical_group_models(3)
    targets = random_targets(2, 5, sizes=[3, 2])
    _, l1 = run(one, crit1, images, pad_mask, targets)
    real = criterion_mod.normaliser
    monkeypatch.setattr(criterion_mod, "normaliser", lambda t, g, d: real(t, 1, d))
    _, lk = run(many, crit_k, images, pad_mask, targets)
    torch.testing.assert_close(lk["loss_bbox"], 3 * l1["loss_bbox"], rtol=1e-5, atol=1e-7)
