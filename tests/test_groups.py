import pytest
import torch

from groupdetr.groups import QueryLayout, fold_groups, group_slice, select_group, self_attention_mask, unfold_groups


def test_fold_moves_each_group_of_each_image_to_its_own_batch_row():
    b, k, n, c = 3, 4, 5, 2
    x = torch.arange(b * k * n * c, dtype=torch.float32).view(b, k * n, c)
    folded = fold_groups(x, k)
    assert folded.shape == (b * k, n, c)
    for i in range(b):
        for g in range(k):
            assert torch.equal(folded[i * k + g], x[i, group_slice(g, n)])
    assert torch.equal(unfold_groups(folded, k), x)


def test_detrex_style_split_mixes_images_and_is_caught():
    """Negative control: a sequence-first reshape like detrex #163/#238 puts queries of
    different images/groups in one batch row; the per-row check above must reject it."""
    b, k, n, c = 2, 3, 4, 1
    x = torch.arange(b * k * n, dtype=torch.float32).view(b, k * n, c)
    wrong = x.transpose(0, 1).reshape(n, b * k, c).transpose(0, 1)  # reshape with swapped sizes
    rows_ok = all(torch.equal(wrong[i * k + g], x[i, group_slice(g, n)]) for i in range(b) for g in range(k))
    assert not rows_ok


def test_mask_without_denoising_is_block_diagonal():
    m = self_attention_mask(QueryLayout(num_groups=3, num_queries=2))
    expected = ~torch.block_diag(*[torch.ones(2, 2, dtype=torch.bool)] * 3)
    assert torch.equal(m, expected)


def test_fold_rejects_uneven_groups():
    with pytest.raises(ValueError):
        fold_groups(torch.zeros(1, 10, 2), 3)


def test_select_group_slices_every_per_query_prediction_and_nothing_else():
    g, n, b = 3, 4, 2
    out = {"pred_logits": torch.arange(b * g * n * 5.0).view(b, g * n, 5), "pred_boxes": torch.rand(b, g * n, 4),
           "pred_mask_embeds": torch.rand(b, g * n, 6), "pixel_embeds": torch.rand(b, g * n, 9, 9),
           "pixel_stride": 4, "image_size": (36, 36), "num_groups": g, "aux_outputs": [{}], "dn_outputs": {}}
    one = select_group(out, 1)
    s = group_slice(1, n)
    for k in ("pred_logits", "pred_boxes", "pred_mask_embeds"):
        assert torch.equal(one[k], out[k][:, s])
    # per-image keys stay whole, even when a dimension happens to equal G*N
    assert one["pixel_embeds"] is out["pixel_embeds"] and one["pixel_stride"] == 4 and one["image_size"] == (36, 36)
    assert one["num_groups"] == 1 and "aux_outputs" not in one and "dn_outputs" not in one
    assert out["num_groups"] == g  # the input is not changed
    with pytest.raises(ValueError, match="group index 3 is not among the 3 active groups"):
        select_group(out, 3)
