import torch

from groupdetr.postprocess import PostProcess


def test_top_k_over_query_class_pairs_in_pixels():
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 1, 0] = 5.0  # best: query 1, class 0
    logits[0, 2, 1] = 3.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]])
    (r,) = PostProcess(num_select=2)({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]))
    assert r["labels"].tolist() == [0, 1]
    torch.testing.assert_close(r["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 100.0]))  # x scaled by width 200
    torch.testing.assert_close(r["scores"][0], torch.sigmoid(torch.tensor(5.0)))


def test_default_keeps_100_and_nms_removes_duplicates():
    k, n, c = 3, 40, 5
    g = torch.Generator().manual_seed(0)
    base = torch.rand(n, 4, generator=g) * 0.3 + 0.35
    boxes = base.repeat(k, 1)[None]  # K identical copies: the duplicates of naive one-to-many
    logits = torch.randn(1, k * n, c, generator=g)
    out = {"pred_logits": logits, "pred_boxes": boxes}
    size = torch.tensor([[64, 64]])
    (plain,) = PostProcess()(out, size)
    assert len(plain["scores"]) == 100
    (nms,) = PostProcess(nms_iou=0.7)(out, size)
    from torchvision.ops import box_iou

    iou = box_iou(nms["boxes"], nms["boxes"])
    same_class = nms["labels"][:, None] == nms["labels"][None, :]
    off_diag = ~torch.eye(len(iou), dtype=torch.bool)
    assert not ((iou > 0.7) & same_class & off_diag).any()
    assert ((box_iou(plain["boxes"], plain["boxes"]) > 0.7) & (plain["labels"][:, None] == plain["labels"][None, :]) & ~torch.eye(100, dtype=torch.bool)).any()
    assert (nms["scores"][:-1] >= nms["scores"][1:]).all()
