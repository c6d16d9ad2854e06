"""groupdetr: Group DETR (Chen et al., ICCV 2023) on a shared Conditional DETR core.

Entry points: :func:`groupdetr.config.load_config` (typed recipes), :mod:`groupdetr.build`
(model, criterion, postprocess from a config), and the ``groupdetr`` console command.
"""
__version__ = "0.1.0"
