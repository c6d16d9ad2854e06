"""Shared fixtures: a tiny model config and random DETR-convention targets."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch

from groupdetr.build import build_all
from groupdetr.config import load_config

TINY = [
    "model.hidden_dim=32",
    "model.nheads=2",
    "model.enc_layers=1",
    "model.dec_layers=2",
    "model.dim_feedforward=64",
    "model.num_queries=7",
    "model.num_classes=5",
    "model.dropout=0.0",
    "model.backbone.channels=[8,16,16]",
    "model.backbone.weights=null",  # random init: tests of the mechanics need no pretraining
]


def tiny_config(**kv):
    """cpu_small shrunk for tests; keyword overrides use '__' for dots (model__num_groups=3)."""
    extra = [f"{k.replace('__', '.')}={v}" for k, v in kv.items()]
    return load_config("cpu_small", TINY + extra)


#: ``model__self_attention`` value that asks for the masked reference of separate self-attention
#: (:func:`groupdetr.model.attention.masked_self_attention`): not a user choice, so the model is built with
#: ``separate`` and the reference swapped in.
MASKED_REFERENCE = "separate_masked"


def tiny_model(seed: int = 0, **kv):
    masked = kv.get("model__self_attention") == MASKED_REFERENCE
    if masked:
        kv = {**kv, "model__self_attention": "separate"}
    cfg = tiny_config(**kv)
    torch.manual_seed(seed)
    model, criterion, post = build_all(cfg)
    if masked:
        from groupdetr.model.attention import masked_self_attention

        model.sa_fn = masked_self_attention
    return cfg, model, criterion, post


def random_targets(batch: int, num_classes: int, sizes=None, seed: int = 1) -> list[dict]:
    """Random valid targets: normalised cxcywh boxes fully inside the image."""
    g = torch.Generator().manual_seed(seed)
    sizes = sizes if sizes is not None else [int(torch.randint(1, 6, (1,), generator=g)) for _ in range(batch)]
    out = []
    for m in sizes:
        wh = 0.05 + 0.3 * torch.rand(m, 2, generator=g)
        c = wh / 2 + (1 - wh) * torch.rand(m, 2, generator=g)
        out.append({"labels": torch.randint(0, num_classes, (m,), generator=g), "boxes": torch.cat([c, wh], 1)})
    return out


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 64, 48, generator=g)


@pytest.fixture
def pad_mask():
    # Second image is padded on the right and bottom: checks masks are carried per image.
    m = torch.zeros(2, 64, 48, dtype=torch.bool)
    m[1, 40:, :] = True
    m[1, :, 30:] = True
    return m


def cocoeval_file(gt_file, results_file, iou_type: str) -> dict:
    """The 12 stats (``AP`` ... ``ARl``) of a results file scored as a user would: plain pycocotools on the two
    files (``COCO.loadRes``, ``COCOeval``), nothing of ours."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from groupdetr.evaluation.coco import STAT_NAMES

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_file))
        ev = COCOeval(coco, coco.loadRes(str(results_file)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, ev.stats.tolist()))
