"""Builders: config sections -> model, matcher, criterion, postprocess, optimizer."""
from __future__ import annotations

import torch
from torch import nn

from groupdetr.config import Config, LossConfig, MatcherConfig, ModelConfig, PostprocessConfig
from groupdetr.criterion import SetCriterion
from groupdetr.matcher import ASSIGNMENTS, HungarianMatcher, MatchCosts
from groupdetr.model import ConditionalDETR
from groupdetr.model.backbone import BACKBONES
from groupdetr.model.transformer import ConditionalDecoder, Encoder
from groupdetr.postprocess import PostProcess

__all__ = ["build_model", "build_matcher", "build_criterion", "build_postprocess", "build_optimizer", "loss_weights", "build_all"]


def build_model(cfg: ModelConfig, assignment: str = "group") -> ConditionalDETR:
    """The detector; ``assignment`` decides which queries are kept at inference."""
    d = cfg.hidden_dim
    return ConditionalDETR(
        backbone=BACKBONES[cfg.backbone.name](cfg.backbone),
        encoder=Encoder(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers),
        decoder=ConditionalDecoder(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.dec_layers),
        num_classes=cfg.num_classes,
        num_queries=cfg.num_queries,
        num_groups=cfg.num_groups,
        self_attention=cfg.self_attention,
        inference_queries=ASSIGNMENTS[assignment].inference_queries,
        eval_group=cfg.eval_group,
        prior_prob=cfg.prior_prob,
        aux_loss=cfg.aux_loss,
    )


def build_matcher(cfg: MatcherConfig) -> HungarianMatcher:
    costs = MatchCosts(cfg.cost_class, cfg.cost_bbox, cfg.cost_giou, cfg.focal_alpha, cfg.focal_gamma)
    return HungarianMatcher(costs, cfg.assignment)


def build_criterion(cfg: Config) -> SetCriterion:
    return SetCriterion(build_matcher(cfg.matcher), cfg.model.num_classes, cfg.loss.focal_alpha, cfg.loss.focal_gamma)


def loss_weights(cfg: LossConfig) -> dict[str, float]:
    """Weights for :func:`groupdetr.criterion.weight_losses`."""
    return {"loss_ce": cfg.weight_class, "loss_bbox": cfg.weight_bbox, "loss_giou": cfg.weight_giou}


def build_postprocess(cfg: PostprocessConfig) -> PostProcess:
    return PostProcess(cfg.num_select, cfg.nms_iou, cfg.nms_candidates)


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW with a separate (lower) learning rate for the backbone, as DETR."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": rest, "lr": cfg.optim.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.optim.lr_backbone})
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def build_all(cfg: Config):
    """(model, criterion, postprocess) for a resolved config."""
    return build_model(cfg.model, cfg.matcher.assignment), build_criterion(cfg), build_postprocess(cfg.postprocess)
