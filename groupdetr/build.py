"""Builders: config sections -> model, matcher, criterion, postprocess, optimizer.

The task (``model.task``, ``groupdetr.tasks.TASKS``) adds its head, matching costs, losses and
postprocess terms; the decoder (``model.decoder``, ``DECODERS``) and denoising
(``model.denoising``) are switched here too. Nothing else branches on them.
"""
from __future__ import annotations

import torch
from torch import nn

from groupdetr.config import PRETRAIN_WEIGHTS, Config, ConfigError, ModelConfig
from groupdetr.criterion import SetCriterion
from groupdetr.matcher import ASSIGNMENTS, HungarianMatcher
from groupdetr.model import GroupDETR
from groupdetr.model.backbone import BACKBONES, WeightsError
from groupdetr.model.registry import DECODERS, ENCODERS
from groupdetr.postprocess import PostProcess, TaskPostProcess
from groupdetr.tasks import TASKS, box_loss_weights

__all__ = ["build_model", "build_matcher", "build_criterion", "build_postprocess", "build_optimizer", "loss_weights", "build_all"]


def build_model(cfg: ModelConfig, assignment: str = "group") -> GroupDETR:
    """The detector; ``assignment`` decides which queries are kept at inference."""
    d = cfg.hidden_dim
    if cfg.backbone.weights == PRETRAIN_WEIGHTS:
        raise WeightsError("model.backbone.weights=pretrain is resolved by the trainer "
                           "(groupdetr.pretrain.run.resolve_backbone_weights) before the model is built")
    if cfg.num_classes is None:
        raise ConfigError("model.num_classes is null: it is derived from the training annotations when training "
                          "starts; set it to build a model without a dataset")
    backbone = BACKBONES[cfg.backbone.name](cfg.backbone)
    decoder_cls = DECODERS[cfg.decoder]
    return GroupDETR(
        backbone=backbone,
        encoder=ENCODERS[decoder_cls.encoder_kind].from_config(cfg),  # built first: the init order of old runs
        decoder=decoder_cls.from_config(cfg),
        num_classes=cfg.num_classes,
        num_queries=cfg.num_queries,
        num_groups=cfg.num_groups,
        self_attention=cfg.self_attention,
        inference_queries=ASSIGNMENTS[assignment].inference_queries,
        eval_group=cfg.eval_group,
        prior_prob=cfg.prior_prob,
        aux_loss=cfg.aux_loss,
        head=TASKS[cfg.task].head(cfg, backbone),
        denoising=cfg.denoising if cfg.denoising.enabled else None,
    )


def build_matcher(cfg: Config) -> HungarianMatcher:
    """The matcher of ``cfg``, with the task's extra costs."""
    return HungarianMatcher(cfg.matcher, cfg.matcher.assignment, TASKS[cfg.model.task].cost_terms(cfg))


def build_criterion(cfg: Config) -> SetCriterion:
    return SetCriterion(build_matcher(cfg), cfg.model.num_classes, cfg.loss.focal_alpha, cfg.loss.focal_gamma,
                        loss_terms=TASKS[cfg.model.task].loss_terms(cfg))


def loss_weights(cfg: Config) -> dict[str, float]:
    """Weights for :func:`groupdetr.criterion.weight_losses`: the class and box losses of every task plus
    the task's own (``Task.loss_weights``)."""
    return {**box_loss_weights(cfg.loss), **TASKS[cfg.model.task].loss_weights(cfg.loss)}


def build_postprocess(cfg: Config, categories: list[dict] | None = None) -> TaskPostProcess:
    """Top-k boxes plus the task's terms; ``categories`` (the dataset's COCO categories) are handed to the
    task's terms (the 3D head decodes yaw with each class's period)."""
    p = cfg.postprocess
    core = PostProcess(p.num_select, p.nms_iou, p.nms_candidates)
    return TaskPostProcess(core, TASKS[cfg.model.task].postprocess_terms(cfg, categories))


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW with a separate (lower) learning rate for the backbone, as DETR."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": rest, "lr": cfg.optim.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.optim.lr_backbone})
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def build_all(cfg: Config, categories: list[dict] | None = None):
    """(model, criterion, postprocess) for a resolved config; ``categories``: see :func:`build_postprocess`."""
    return build_model(cfg.model, cfg.matcher.assignment), build_criterion(cfg), build_postprocess(cfg, categories)
