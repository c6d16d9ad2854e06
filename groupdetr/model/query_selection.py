"""DINO's mixed query selection with groups: each group picks its own anchors among the encoder's proposals.

Every memory position proposes a box (an anchor at the position, 0.05 * 2^level wide, plus a predicted
offset) with class scores; a group's decoder anchors are its top-N proposals by score, its content queries
are learned (the "mixed" selection of DINO). With groups, every group has its **own proposal heads** (the
authors' answer on query selection, Group-DETR issue #29, and PaddleDetection's Group-DINO, which gives each
group its own encoder-output projection, score head and box head), so groups do not share anchors and a
group's queries depend on its own parameters only; K = 1 is plain DINO.

Shapes: B batch, S memory positions, K groups (parameters), G active groups, N queries per group, d width,
C classes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from groupdetr.model.memory import Memory

__all__ = ["proposal_anchors", "GroupLinear", "GroupProposalHeads", "select_queries"]


def proposal_anchors(memory: Memory, base_size: float = 0.05, eps: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """An anchor box per memory position: its cell centre normalised by the level's valid size, width and
    height ``base_size * 2^level``.

    Returns:
        anchors [B, S, 4] in logit space (inverse sigmoid of cxcywh), and valid [B, S] bool: False at padding
        and where the anchor is not inside (eps, 1 - eps).
    """
    b = memory.src.shape[0]
    dtype, device = memory.src.dtype, memory.src.device
    out = []
    for level, (h, w) in enumerate(memory.shapes):
        ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device),
                                indexing="ij")
        valid_wh = memory.ratios[:, level] * torch.tensor([w, h], dtype=dtype, device=device)  # [B, 2] cells
        centre = (torch.stack([xs, ys], -1).reshape(1, h * w, 2) + 0.5) / valid_wh[:, None]
        size = torch.full_like(centre, base_size * 2.0 ** level)
        out.append(torch.cat([centre, size], -1))
    anchors = torch.cat(out, 1).expand(b, -1, -1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1) & ~memory.mask
    return torch.log(anchors / (1 - anchors)), valid


class GroupLinear(nn.Module):
    """K independent linear maps stacked (weight [K, out, in]), applied per active group; each group's map is
    initialised as ``nn.Linear``'s default."""

    def __init__(self, num_groups: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_groups, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(num_groups, d_out))
        bound = 1 / math.sqrt(d_in)
        for k in range(num_groups):
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
            nn.init.uniform_(self.bias[k], -bound, bound)

    def forward(self, x: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
        """x: [B, S, in] shared by the groups, or [B, G, S, in] one slice per group -> [B, G, S, out]."""
        idx = list(groups)
        w, b = self.weight[idx], self.bias[idx]
        if x.dim() == 3:
            return torch.einsum("bsi,goi->bgso", x, w) + b[None, :, None]
        return torch.einsum("bgsi,goi->bgso", x, w) + b[None, :, None]


class GroupProposalHeads(nn.Module):
    """Per group: the encoder-output projection (linear + LayerNorm), the class head and the 3-layer box head
    of DINO's two-stage proposals."""

    def __init__(self, num_groups: int, d_model: int, num_classes: int, prior_prob: float = 0.01):
        super().__init__()
        self.proj = GroupLinear(num_groups, d_model, d_model)
        self.norm_weight = nn.Parameter(torch.ones(num_groups, d_model))
        self.norm_bias = nn.Parameter(torch.zeros(num_groups, d_model))
        self.cls = GroupLinear(num_groups, d_model, num_classes)
        self.box = nn.ModuleList([GroupLinear(num_groups, d_model, d_model), GroupLinear(num_groups, d_model, d_model),
                                  GroupLinear(num_groups, d_model, 4)])
        with torch.no_grad():
            for k in range(num_groups):  # each group's d x d map, as DINO's enc_output
                nn.init.xavier_uniform_(self.proj.weight[k])
            self.cls.bias.fill_(-math.log((1 - prior_prob) / prior_prob))
            self.box[-1].weight.zero_()
            self.box[-1].bias.zero_()

    def forward(self, memory: torch.Tensor, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, S, d] -> class logits [B, G, S, C] and box offsets [B, G, S, 4] (logit space)."""
        idx = list(groups)
        h = self.proj(memory, groups)
        h = F.layer_norm(h, h.shape[-1:]) * self.norm_weight[idx][None, :, None] + self.norm_bias[idx][None, :, None]
        x = h
        for i, layer in enumerate(self.box):
            x = layer(x, groups)
            if i < len(self.box) - 1:
                x = F.relu(x)
        return self.cls(h, groups), x


def select_queries(heads: GroupProposalHeads, memory: Memory, groups: Sequence[int], num_queries: int) -> dict:
    """Each active group's top-``num_queries`` proposals.

    Returns a dict with ``anchors`` [B, G*N, 4] (cxcywh, detached: the decoder's first reference boxes),
    ``pred_logits`` [B, G*N, C] and ``pred_boxes`` [B, G*N, 4] (the selected proposals with gradients, for the
    encoder's loss), group-contiguous like the decoder's queries.
    """
    anchors, valid = proposal_anchors(memory)
    src = memory.src.masked_fill(~valid[..., None], 0.0)
    logits, offsets = heads(src, groups)  # [B, G, S, C], [B, G, S, 4]
    boxes = offsets + anchors[:, None]  # inf-free: invalid positions are excluded from the top-k below
    scores = logits.max(-1).values.masked_fill(~valid[:, None], float("-inf"))
    if num_queries > scores.shape[-1]:
        raise ValueError(f"query selection: {num_queries} queries per group but only {scores.shape[-1]} memory positions")
    top = scores.topk(num_queries, dim=-1).indices  # [B, G, N]
    pick = lambda t: torch.gather(t, 2, top[..., None].expand(-1, -1, -1, t.shape[-1])).flatten(1, 2)  # noqa: E731
    sel_boxes = pick(boxes).sigmoid()
    return {"anchors": sel_boxes.detach(), "pred_logits": pick(logits), "pred_boxes": sel_boxes}
