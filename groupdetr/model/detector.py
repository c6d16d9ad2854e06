"""Conditional DETR with K groups of N object queries (Group DETR, paper Sec. 3).

The detector owns K*N query embeddings (parameters shared across groups otherwise). Once per
forward it decides which groups are active -- all K in training; at inference one group (group 0
by default, any group selectable, paper Fig. 4) or, for naive one-to-many assignment, all K
(paper Table 7 row b) -- and passes that count down. With one active group the inference cost
is that of plain Conditional DETR with N queries, whatever K is.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from groupdetr.box_ops import inverse_sigmoid
from groupdetr.model.attention import SELF_ATTENTION
from groupdetr.model.backbone import downsample_mask
from groupdetr.model.position import sine_image_encoding
from groupdetr.model.transformer import MLP, ConditionalDecoder, Encoder

__all__ = ["ConditionalDETR", "INFERENCE_QUERIES"]

# Which queries a detector keeps at inference. "one_group": the group ``eval_group`` only
# (Group DETR); "all_groups": all K*N queries (naive one-to-many, paper Table 7 row b).
INFERENCE_QUERIES = ("one_group", "all_groups")


class ConditionalDETR(nn.Module):
    """
    Args:
        backbone: module ``[B, 3, H, W] -> [B, C_b, h, w]`` with attribute ``num_channels``.
        encoder, decoder: see ``groupdetr.model.transformer``.
        num_classes: sigmoid classes (91 for COCO: category ids index the logits directly).
        num_queries: N, queries **per group**.
        num_groups: K.
        self_attention: key of ``SELF_ATTENTION``.
        inference_queries: one of ``INFERENCE_QUERIES``.
        eval_group: the group used at inference when ``inference_queries == "one_group"``.
        prior_prob: initial foreground probability of the class head (focal-loss init).
    """

    def __init__(
        self,
        backbone: nn.Module,
        encoder: Encoder,
        decoder: ConditionalDecoder,
        num_classes: int,
        num_queries: int,
        num_groups: int,
        self_attention: str = "separate",
        inference_queries: str = "one_group",
        eval_group: int = 0,
        prior_prob: float = 0.01,
        aux_loss: bool = True,
    ):
        super().__init__()
        if inference_queries not in INFERENCE_QUERIES:
            raise ValueError(f"inference_queries must be one of {INFERENCE_QUERIES}, got {inference_queries!r}")
        d = decoder.d_model
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.input_proj = nn.Conv2d(backbone.num_channels, d, kernel_size=1)
        self.query_embed = nn.Embedding(num_groups * num_queries, d)
        self.class_embed = nn.Linear(d, num_classes)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.num_queries, self.num_groups, self.num_classes = num_queries, num_groups, num_classes
        self.sa_fn = SELF_ATTENTION[self_attention]
        self.self_attention = self_attention
        self.inference_queries = inference_queries
        self.eval_group = eval_group
        self.aux_loss = aux_loss
        nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def active_groups(self) -> tuple[int, ...]:
        """Groups whose queries run in this forward: decided here, once, and nowhere deeper."""
        if self.training or self.inference_queries == "all_groups":
            return tuple(range(self.num_groups))
        return (self.eval_group,)

    def group_queries(self, groups: Sequence[int]) -> torch.Tensor:
        """Query embeddings of ``groups``, group-contiguous: ``[len(groups)*N, d]``."""
        for g in groups:
            if not 0 <= g < self.num_groups:
                raise ValueError(f"group {g} does not exist: the model has num_groups={self.num_groups}")
        w = self.query_embed.weight
        if tuple(groups) == tuple(range(self.num_groups)):
            return w
        return w.view(self.num_groups, self.num_queries, -1)[list(groups)].flatten(0, 1)

    def forward(
        self,
        images: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        groups: Sequence[int] | None = None,
    ) -> dict:
        """
        Args:
            images: [B, 3, H, W] normalised images (padded).
            pad_mask: [B, H, W] bool, True on padding; None means no padding.
            groups: override the active groups (default: :meth:`active_groups`).
        Returns:
            DETR-convention dict:
              ``pred_logits`` [B, G*N, num_classes] (logits, sigmoid classes),
              ``pred_boxes`` [B, G*N, 4] normalised cxcywh,
              ``aux_outputs`` list (one per earlier decoder layer) of dicts with the same keys,
              ``num_groups`` G, the number of active groups (queries are group-contiguous).
        """
        groups = self.active_groups() if groups is None else tuple(groups)
        b = images.shape[0]
        if pad_mask is None:
            pad_mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        feat = self.backbone(images)
        mask = downsample_mask(pad_mask, feat.shape[-2:])
        pos = sine_image_encoding(mask, self.decoder.d_model // 2).to(feat.dtype)
        src = self.input_proj(feat).flatten(2).transpose(1, 2)  # [B, hw, d]
        pos = pos.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        memory = self.encoder(src, pos, mask)
        query_pos = self.group_queries(groups).unsqueeze(0).expand(b, -1, -1)
        hs, reference = self.decoder(memory, mask, pos, query_pos, len(groups), self.sa_fn)

        logits = self.class_embed(hs)  # [L, B, G*N, C]
        deltas = self.bbox_embed(hs)
        # Boxes are predicted relative to each query's reference point (centre offsets in logit space).
        ref_logit = inverse_sigmoid(reference)
        deltas = torch.cat([deltas[..., :2] + ref_logit, deltas[..., 2:]], dim=-1)
        boxes = deltas.sigmoid()
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "num_groups": len(groups)}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": lg, "pred_boxes": bx, "num_groups": len(groups)} for lg, bx in zip(logits[:-1], boxes[:-1])
            ]
        return out
