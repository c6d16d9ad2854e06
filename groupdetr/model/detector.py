"""Group DETR: a DETR-family detector with K groups of N object queries (paper Sec. 3).

One shared core -- backbone, encoder, a decoder from ``groupdetr.model.registry.DECODERS``
(Conditional DETR, DAB-DETR's anchor boxes refined layer by layer, or DAB-Deformable-DETR's, which reads a
multi-scale deformable encoder), class and box heads -- plus
an optional task head (``groupdetr.heads``: masks, 3D boxes) and optional DN-DETR denoising
queries (``groupdetr.denoising``). The detector owns K*N query parameters (everything else is
shared across groups). Once per forward it decides which groups are active -- all K in training;
at inference one group (group 0 by default, any group selectable, paper Fig. 4) or, for naive
one-to-many assignment, all K (paper Table 7 row b) -- and whether denoising queries exist
(training with targets only), and passes that down as a :class:`groupdetr.groups.QueryLayout`.
With one active group and no denoising, the inference cost is that of the plain detector with N
queries, whatever K is.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from groupdetr.box_ops import inverse_sigmoid
from groupdetr.denoising import make_denoising_queries
from groupdetr.groups import QueryLayout
from groupdetr.heads import HeadContext
from groupdetr.layers import MLP
from groupdetr.model.attention import SELF_ATTENTION

__all__ = ["GroupDETR", "INFERENCE_QUERIES"]

# Which queries a detector keeps at inference. "one_group": the group ``eval_group`` only
# (Group DETR); "all_groups": all K*N queries (naive one-to-many, paper Table 7 row b).
INFERENCE_QUERIES = ("one_group", "all_groups")


class GroupDETR(nn.Module):
    """
    Args:
        backbone: module with ``forward_features`` (``groupdetr.model.backbone``).
        encoder: an encoder of ``groupdetr.model.registry.ENCODERS`` (it makes the detector's input
            projection and turns backbone maps into a :class:`groupdetr.model.memory.Memory`).
        decoder: a decoder of ``DECODERS``; ``decoder.query_dim`` is the width of one query
            parameter (d for Conditional DETR's embeddings, 4 for anchor boxes).
        num_classes: sigmoid classes (91 for COCO: category ids index the logits directly).
        num_queries: N, queries **per group**.
        num_groups: K.
        self_attention: key of ``SELF_ATTENTION``.
        inference_queries: one of ``INFERENCE_QUERIES``.
        eval_group: the group used at inference when ``inference_queries == "one_group"``.
        prior_prob: initial foreground probability of the class head (focal-loss init).
        head: optional task head (``groupdetr.heads``).
        denoising: ``DenoisingConfig`` with ``enabled`` True, or None (needs a decoder with
            ``supports_denoising``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        num_classes: int,
        num_queries: int,
        num_groups: int,
        self_attention: str = "separate",
        inference_queries: str = "one_group",
        eval_group: int = 0,
        prior_prob: float = 0.01,
        aux_loss: bool = True,
        head: nn.Module | None = None,
        denoising=None,
    ):
        super().__init__()
        if inference_queries not in INFERENCE_QUERIES:
            raise ValueError(f"inference_queries must be one of {INFERENCE_QUERIES}, got {inference_queries!r}")
        if denoising is not None and not decoder.supports_denoising:
            raise ValueError("denoising queries need an anchor-box decoder (model.decoder=dab or dab_deformable)")
        d = decoder.d_model
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.input_proj = encoder.input_projection(backbone)
        self.query_embed = nn.Embedding(num_groups * num_queries, decoder.query_dim)
        self.class_embed = nn.Linear(d, num_classes)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.head = head
        self.denoising = denoising
        # DN-DETR: a denoising query's content is the embedding of its (noised) label
        self.label_embed = nn.Embedding(num_classes, d) if denoising is not None else None
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
        """Query parameters of ``groups``, group-contiguous: ``[len(groups)*N, query_dim]``."""
        for g in groups:
            if not 0 <= g < self.num_groups:
                raise ValueError(f"group {g} does not exist: the model has num_groups={self.num_groups}")
        w = self.query_embed.weight
        if tuple(groups) == tuple(range(self.num_groups)):
            return w
        return w.view(self.num_groups, self.num_queries, -1)[list(groups)].flatten(0, 1)

    def denoising_queries(self, targets: list[dict] | None, num_groups: int):
        """DN-DETR's noised ground truth for this forward, or None: only in training, with targets.
        One set per active group (``sharing: per_group``) or one shared set."""
        if self.denoising is None or not self.training or targets is None:
            return None
        sets = num_groups if self.denoising.sharing == "per_group" else 1
        return make_denoising_queries(targets, sets, self.denoising.num_queries, self.denoising.label_noise,
                                      self.denoising.box_noise, self.num_classes, self.denoising.contrastive)

    def forward(
        self,
        images: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        targets: list[dict] | None = None,
        groups: Sequence[int] | None = None,
    ) -> dict:
        """
        Args:
            images: [B, 3, H, W] normalised images (padded).
            pad_mask: [B, H, W] bool, True on padding; None means no padding.
            targets: the batch's targets: ground truth for denoising queries (training), and whatever
                the task's head reads (the 3D head: camera intrinsics, always). Optional for 2D tasks
                without denoising.
            groups: override the active groups (default: :meth:`active_groups`).
        Returns:
            DETR-convention dict of the G*N matching queries of the active groups:
              ``pred_logits`` [B, G*N, num_classes] (logits, sigmoid classes),
              ``pred_boxes`` [B, G*N, 4] normalised cxcywh,
              the task head's keys (``pred_mask_embeds``, ``pred_depth``, ...),
              ``aux_outputs`` list (one per earlier decoder layer) of dicts with the same keys,
              ``num_groups`` G, the number of active groups (queries are group-contiguous),
              ``image_size`` (H, W) of the padded input;
            with denoising queries also ``dn_outputs`` (``pred_logits``, ``pred_boxes``,
            ``aux_outputs`` of the denoising queries) and ``dn_queries``
            (:class:`groupdetr.denoising.DenoisingQueries`).
        """
        groups = self.active_groups() if groups is None else tuple(groups)
        g = len(groups)
        b = images.shape[0]
        if pad_mask is None:
            pad_mask = torch.zeros(b, *images.shape[-2:], dtype=torch.bool, device=images.device)
        features = self.backbone.forward_features(images)
        ctx = HeadContext(images, pad_mask, features, tuple(features[-1].shape[-2:]), targets=targets)
        # PETR: camera-aware 3D position of every cell of the last backbone stage's grid
        extra = self.head.position(ctx) if self.head is not None else None
        memory = self.encoder.encode(self.input_proj, features, pad_mask, extra)
        ctx.memory, ctx.memory_pad = memory.grid()

        # the decoder's initial queries: the active groups' parameters (or, for DINO, anchors selected from the
        # memory by each group's proposal heads, with the parameters as content)
        queries, content, extra_outputs = self.decoder.initial_queries(self.group_queries(groups), memory, groups)
        dn = self.denoising_queries(targets, g)
        if dn is None:
            layout = QueryLayout(g, self.num_queries)
        else:
            layout = dn.layout(g, self.num_queries)
            base = queries.new_zeros(b, queries.shape[1], self.decoder.d_model) if content is None else content
            content = torch.cat([self.label_embed(dn.labels), base], 1)
            queries = torch.cat([inverse_sigmoid(dn.boxes).to(queries.dtype), queries], dim=1)
        hs, boxes = self.decoder(memory, queries, layout, self.sa_fn, self.bbox_embed, content)
        logits = self.class_embed(hs)  # [L, B, Q, C]
        if dn is None and self.label_embed is not None and self.training:
            # A batch without objects has no denoising queries; touching the label embedding keeps
            # its gradient defined (zero), which DistributedDataParallel requires of every rank.
            logits = logits + 0.0 * self.label_embed.weight.sum()
        nd = layout.num_dn
        layers = [{"pred_logits": lg[:, nd:], "pred_boxes": bx[:, nd:], "num_groups": g,
                   "image_size": tuple(images.shape[-2:])} for lg, bx in zip(logits, boxes)]
        if self.head is not None:
            for layer, extra_keys in zip(layers, self.head(ctx, hs[:, :, nd:], boxes[:, :, nd:])):
                layer.update(extra_keys)
        out = dict(layers[-1], **extra_outputs)
        if self.aux_loss:
            out["aux_outputs"] = layers[:-1]
        if dn is not None:
            dn_layers = [{"pred_logits": lg[:, :nd], "pred_boxes": bx[:, :nd]} for lg, bx in zip(logits, boxes)]
            out["dn_outputs"] = {**dn_layers[-1], "aux_outputs": dn_layers[:-1] if self.aux_loss else []}
            out["dn_queries"] = dn
        return out

