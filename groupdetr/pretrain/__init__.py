"""Box-only backbone pretraining, the project's analogue of ImageNet weights (``groupdetr pretrain``).

- :mod:`groupdetr.pretrain.targets`: dense per-cell pretext targets from boxes (pure functions);
- :mod:`groupdetr.pretrain.pretext`: the pretext heads on every backbone stage, losses, metrics;
- :mod:`groupdetr.pretrain.network`: the trainable network of each backbone and its export;
- :mod:`groupdetr.pretrain.cache`: content-addressed cache keys and records (no torch);
- :mod:`groupdetr.pretrain.run`: the pretraining loop, the cache, and ``model.backbone.weights: pretrain``.
"""
