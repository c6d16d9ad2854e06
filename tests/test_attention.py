"""Separate self-attention == each group alone == block-diagonal mask (paper Algorithm 1)."""
import pytest
import torch

from groupdetr.groups import group_slice
from groupdetr.model.attention import SELF_ATTENTION, ProjectedAttention, masked_self_attention

#: the user's strategies plus the masked reference of the fold path
STRATEGIES = {**SELF_ATTENTION, "separate_masked": masked_self_attention}


def per_group_loop(attn, q, k, v, num_groups):
    """Naive reference: every group of every image attended on its own."""
    n = q.shape[1] // num_groups
    out = torch.empty_like(v)
    for b in range(q.shape[0]):
        for g in range(num_groups):
            s = group_slice(g, n)
            out[b : b + 1, s] = attn(q[b : b + 1, s], k[b : b + 1, s], v[b : b + 1, s])
    return out


def detrex_style(attn, q, k, v, num_groups):
    """The public port's bug: split with swapped sizes, so rows mix groups and images."""
    b, q_len, c = q.shape
    n = q_len // num_groups

    def fold(x):
        return x.transpose(0, 1).reshape(n, b * num_groups, c).transpose(0, 1)

    out = attn(fold(q), fold(k), fold(v))
    return out.transpose(0, 1).reshape(q_len, b, c).transpose(0, 1)


def random_qkv(batch, k, n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, k * n, d, generator=g) for _ in range(3)]


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return ProjectedAttention(16, 4).eval()


def matches_reference(fn, attn, batch, k, n=6):
    q, kk, v = random_qkv(batch, k, n)
    ref = per_group_loop(attn, q, kk, v, k)
    return torch.allclose(fn(attn, q, kk, v, k), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 11])
@pytest.mark.parametrize("batch", [2, 3])
@pytest.mark.parametrize("impl", ["separate", "separate_masked"])
def test_separate_equals_each_group_alone(attn, impl, k, batch):
    assert matches_reference(STRATEGIES[impl], attn, batch, k)


@pytest.mark.parametrize("k", [3, 11])
def test_fold_and_mask_implementations_agree(attn, k):
    q, kk, v = random_qkv(2, k, 5, seed=4)
    a = SELF_ATTENTION["separate"](attn, q, kk, v, k)
    b = masked_self_attention(attn, q, kk, v, k)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 11])
def test_negative_controls_fail_the_check(attn, k):
    """Shared attention and the detrex-style split must both be told apart from per-group."""
    assert not matches_reference(SELF_ATTENTION["shared"], attn, 2, k)
    assert not matches_reference(detrex_style, attn, 2, k)


def test_single_group_all_strategies_are_plain_attention(attn):
    q, kk, v = random_qkv(2, 1, 9)
    plain = attn(q, kk, v)
    assert torch.equal(SELF_ATTENTION["separate"](attn, q, kk, v, 1), plain)
    assert torch.equal(SELF_ATTENTION["shared"](attn, q, kk, v, 1), plain)
    # The all-False mask takes another SDPA kernel: equal up to rounding.
    torch.testing.assert_close(masked_self_attention(attn, q, kk, v, 1), plain, atol=1e-6, rtol=1e-5)


def test_key_padding_mask_blocks_padded_keys(attn):
    q, k, v = random_qkv(1, 1, 5)
    pad = torch.tensor([[False, False, False, True, True]])
    masked = attn(q, k, v, key_padding_mask=pad)
    v2 = v.clone()
    v2[:, 3:] = 1e3  # changing padded values must not change the output
    torch.testing.assert_close(attn(q, k, v2, key_padding_mask=pad), masked)
