"""The attention rules of denoising queries on top of query groups (issue 6).

Proved three ways: the fast strategies equal the reference mask built entry by entry; gradients show
no information path the rules forbid (and every path they allow); and the matching queries' outputs
are exactly those of the same layer without any denoising query.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from groupdetr.groups import QueryLayout, self_attention_mask
from groupdetr.model.attention import SELF_ATTENTION, ProjectedAttention, masked_self_attention

#: the user's strategies plus the masked reference of the fold path
STRATEGIES = {**SELF_ATTENTION, "separate_masked": masked_self_attention}

D_MODEL = 8


def make_layout(groups: int, sharing: str, copies: int = 2, pad: int = 3, batch: int = 2) -> QueryLayout:
    sets = groups if sharing == "per_group" else 1
    # image b has b+1 objects (< pad): the remaining slots of every copy are padding
    valid = torch.zeros(batch, sets, copies, pad, dtype=torch.bool)
    for b in range(batch):
        valid[b, :, :, : min(b + 1, pad)] = True
    return QueryLayout(num_groups=groups, num_queries=4, dn_sets=sets, dn_copies=copies, dn_pad=pad,
                       dn_valid=valid.flatten(1))


def inputs(layout: QueryLayout, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    attn = ProjectedAttention(D_MODEL, 2).eval()
    x = torch.randn(batch, layout.total, D_MODEL, generator=g, requires_grad=True)
    return attn, x


def describe(layout: QueryLayout, i: int) -> tuple:
    """(kind, set or group, copy, slot) of query i, from the layout's documented order."""
    if i < layout.num_dn:
        s, r = divmod(i, layout.dn_set_size)
        c, slot = divmod(r, layout.dn_pad)
        return ("dn", s, c, slot)
    return ("match", (i - layout.num_dn) // layout.num_queries, None, None)


def allowed_by_rules(layout: QueryLayout, i: int, j: int, shared_groups: bool) -> bool:
    """The rules of the issue, written independently of ``self_attention_mask``."""
    qi, kj = describe(layout, i), describe(layout, j)
    if qi[0] == "match":
        return kj[0] == "match" and (shared_groups or qi[1] == kj[1])
    if kj[0] == "dn":
        return qi[1] == kj[1] and qi[2] == kj[2]
    if layout.dn_sets == 1 or shared_groups:
        return True
    return qi[1] == kj[1]  # per-group set s sees group s only


LAYOUTS = [(g, s) for g, s in itertools.product((1, 3), ("per_group", "shared"))]


@pytest.mark.parametrize("groups,sharing", LAYOUTS)
@pytest.mark.parametrize("shared_groups", [False, True])
def test_reference_mask_encodes_the_rules(groups, sharing, shared_groups):
    layout = make_layout(groups, sharing)
    mask = self_attention_mask(layout, shared_groups=shared_groups)
    for i, j in itertools.product(range(layout.total), repeat=2):
        assert (not mask[i, j]) == allowed_by_rules(layout, i, j, shared_groups), (i, j)


@pytest.mark.parametrize("groups,sharing", LAYOUTS)
def test_fold_strategy_equals_reference_mask(groups, sharing):
    layout = make_layout(groups, sharing)
    attn, x = inputs(layout)
    fast = SELF_ATTENTION["separate"](attn, x, x, x, layout)
    ref = masked_self_attention(attn, x, x, x, layout)
    valid = torch.cat([layout.dn_valid, torch.ones(2, layout.num_matching, dtype=torch.bool)], 1)
    # padding queries' own outputs are never used (no loss); every real query must agree
    torch.testing.assert_close(fast[valid], ref[valid], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("groups,sharing", LAYOUTS)
def test_shared_strategy_equals_reference_mask_with_shared_groups(groups, sharing):
    layout = make_layout(groups, sharing)
    attn, x = inputs(layout)
    fast = SELF_ATTENTION["shared"](attn, x, x, x, layout)
    from groupdetr.groups import dn_key_padding

    ref = attn(x, x, x, attn_mask=self_attention_mask(layout, shared_groups=True), key_padding_mask=dn_key_padding(layout))
    valid = torch.cat([layout.dn_valid, torch.ones(2, layout.num_matching, dtype=torch.bool)], 1)
    torch.testing.assert_close(fast[valid], ref[valid], atol=1e-6, rtol=1e-5)


def influence(fn, attn, x, layout, b: int, i: int) -> torch.Tensor:
    """[L] bool: which queries of image ``b`` the output of query ``i`` depends on (nonzero grad)."""
    x.grad = None
    out = fn(attn, x, x, x, layout)
    out[b, i].sum().backward()
    return x.grad[b].abs().sum(-1) > 0


@pytest.mark.parametrize("strategy", ["separate", "separate_masked", "shared"])
@pytest.mark.parametrize("groups,sharing", LAYOUTS)
def test_no_forbidden_information_path(strategy, groups, sharing):
    """Gradients: a query's output depends on exactly the real queries the rules let it see."""
    layout = make_layout(groups, sharing)
    attn, x = inputs(layout)
    shared_groups = strategy == "shared"
    for b in range(2):
        valid = torch.cat([layout.dn_valid[b], torch.ones(layout.num_matching, dtype=torch.bool)])
        for i in range(layout.total):
            if not valid[i]:
                continue
            seen = influence(STRATEGIES[strategy], attn, x, layout, b, i)
            expected = torch.tensor([allowed_by_rules(layout, i, j, shared_groups) and bool(valid[j])
                                     for j in range(layout.total)])
            assert torch.equal(seen, expected), (b, i, describe(layout, i))
            # and never another image
            other = x.grad[1 - b].abs().sum()
            assert other == 0


@pytest.mark.parametrize("strategy", ["separate", "shared"])
@pytest.mark.parametrize("groups,sharing", LAYOUTS)
def test_matching_outputs_equal_the_plain_layer(strategy, groups, sharing):
    """Adding denoising queries leaves the matching queries' outputs bit for bit unchanged."""
    layout = make_layout(groups, sharing)
    attn, x = inputs(layout)
    with_dn = STRATEGIES[strategy](attn, x, x, x, layout)[:, layout.num_dn:]
    xm = x[:, layout.num_dn:]
    plain = STRATEGIES[strategy](attn, xm, xm, xm, groups)
    assert torch.equal(with_dn, plain)


def test_padding_of_other_images_does_not_change_denoising_outputs():
    """A copy padded to 3 slots or to 5 (another image with more objects) gives the same outputs."""
    small = make_layout(3, "per_group", pad=3)
    attn, x = inputs(small)
    out_small = SELF_ATTENTION["separate"](attn, x, x, x, small)
    # re-lay the same queries with 2 extra padding slots per copy
    big = QueryLayout(3, 4, 3, 2, 5, dn_valid=torch.nn.functional.pad(
        small.dn_valid.view(2, 3, 2, 3), (0, 2)).flatten(1))
    dn = x[:, : small.num_dn].view(2, 3, 2, 3, D_MODEL)
    filler = torch.randn(2, 3, 2, 2, D_MODEL)
    xb = torch.cat([torch.cat([dn, filler], 3).flatten(1, 3), x[:, small.num_dn:]], 1)
    out_big = SELF_ATTENTION["separate"](attn, xb, xb, xb, big)
    a = out_small[:, : small.num_dn].view(2, 3, 2, 3, D_MODEL)
    b_ = out_big[:, : big.num_dn].view(2, 3, 2, 5, D_MODEL)[:, :, :, :3]
    valid = small.dn_valid.view(2, 3, 2, 3)
    torch.testing.assert_close(a[valid], b_[valid], atol=1e-6, rtol=1e-5)


def test_layout_checks():
    with pytest.raises(ValueError, match="dn_sets"):
        QueryLayout(3, 4, dn_sets=2, dn_copies=1, dn_pad=1, dn_valid=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="dn_valid"):
        QueryLayout(3, 4, dn_sets=3, dn_copies=1, dn_pad=2, dn_valid=torch.ones(1, 5, dtype=torch.bool))
