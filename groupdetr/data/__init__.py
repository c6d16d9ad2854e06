"""Data: COCO-format datasets (COCO 2017, the embedded benchmark, any by paths), joint 2D/3D transforms, batching.

- :mod:`groupdetr.data.coco`: :class:`CocoDetection`, :func:`build_dataset`, :func:`dataset_paths`,
  :func:`split_paths`, :func:`resolve_num_classes`, :class:`DatasetError`;
- :mod:`groupdetr.data.transforms`: pixel-space transforms keeping boxes, masks and 3D labels
  consistent, and the ``detr``/``synth``/``none`` augmentation presets;
- :mod:`groupdetr.data.collate`: :func:`collate` (padding + ``pad_mask``), :func:`build_loader`.
"""
from groupdetr.data.coco import CocoDetection, DatasetError, build_dataset, dataset_paths
from groupdetr.data.collate import build_loader, collate

__all__ = ["CocoDetection", "DatasetError", "build_dataset", "dataset_paths", "build_loader", "collate"]
