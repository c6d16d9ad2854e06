"""COCO box and mask evaluation, over pycocotools or faster-coco-eval, with the same numbers.

Predictions arrive as :class:`groupdetr.postprocess.PostProcess` dicts keyed by image id and are turned
into a plain list of COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh pixels, ``score``,
optionally ``segmentation`` RLE). A list gathers trivially across processes, so distributed evaluation
only has to concatenate the lists before :func:`evaluate_coco`.

Two details decide whether the two backends agree with each other and with the published protocol:

- mask AP takes the small/medium/large split from the *mask* area. Both tools' ``loadRes`` would take
  the area from ``bbox`` whenever a result carries one, so segm evaluation drops ``bbox`` first (as
  detectron2's COCOEvaluator does);
- ``loadRes`` writes ``id``/``area``/``segmentation`` into the result dicts it is given, so each
  evaluation works on fresh copies and a bbox run cannot leak box polygons into a later segm run.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_util

from groupdetr.names import COCO_BACKENDS

__all__ = ["STAT_NAMES", "IOU_TYPES", "BACKENDS", "to_coco_results", "results_for", "load_coco_gt", "evaluate_coco",
           "CocoEvaluator"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats``, in its order."""
IOU_TYPES = ("bbox", "segm")
BACKENDS = COCO_BACKENDS  # the names live in groupdetr.names (torch-free, read by the config)


def _numpy(x) -> np.ndarray:
    """Torch tensor (any device) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _encode_masks(masks: np.ndarray) -> list[dict]:
    """[k, H, W] bool -> k COCO RLEs with ``counts`` as str (JSON-serialisable)."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [k, H, W], got shape {masks.shape}")
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _image_results(image_id: int, pred: Mapping) -> list[dict]:
    """One image's postprocess dict -> its COCO result dicts."""
    scores, labels = _numpy(pred["scores"]).reshape(-1), _numpy(pred["labels"]).reshape(-1)
    boxes = _numpy(pred["boxes"]).reshape(-1, 4).astype(np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    out = [
        {"image_id": int(image_id), "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
        for s, c, b in zip(scores, labels, xywh)
    ]
    if "masks" in pred and len(out):
        for r, rle in zip(out, _encode_masks(_numpy(pred["masks"]).astype(bool))):
            r["segmentation"] = rle
    return out


def to_coco_results(predictions: Mapping[int, Mapping]) -> list[dict]:
    """Postprocess outputs -> COCO results list.

    Args:
        predictions: ``{image_id: {"scores": [k], "labels": [k] category ids, "boxes": [k, 4] xyxy
            pixels, optional "masks": [k, H, W] bool}}``; torch tensors or numpy arrays.
    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score", optional "segmentation": RLE}]``
        with plain Python numbers (JSON-serialisable).
    """
    return [r for image_id, pred in predictions.items() for r in _image_results(image_id, pred)]


def _backend_api(backend: str):
    """The (COCO, COCOeval) classes of a backend."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    raise ValueError(f"unknown COCO backend {backend!r}; expected one of {BACKENDS}")


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; expected one of {IOU_TYPES}")


def load_coco_gt(gt, backend: str = "pycocotools"):
    """Ground truth as the backend's ``COCO`` object.

    Args:
        gt: a ``COCO`` object of either backend, a path to an annotation JSON file, or its dict. A
            ``COCO`` object of ``backend`` itself is used as is; anything else is indexed afresh.
    """
    coco_cls, _ = _backend_api(backend)
    if isinstance(gt, coco_cls):
        return gt
    if isinstance(gt, (str, os.PathLike)):
        with open(gt) as f:
            gt = json.load(f)
    dataset = gt.dataset if hasattr(gt, "dataset") else gt
    # Both tools write into the annotations they evaluate (``ignore``; faster-coco-eval an ``rle`` with
    # bytes); copies keep the caller's dict unchanged and JSON-serialisable.
    dataset = {**dataset, "annotations": [dict(a) for a in dataset.get("annotations", [])]}
    with contextlib.redirect_stdout(io.StringIO()):
        # Both backends index a dict set on an empty object; pycocotools' constructor only takes paths.
        coco = coco_cls()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def results_for(results: Iterable[Mapping], iou_type: str) -> list[dict]:
    """Fresh copies of the results with only the fields ``iou_type`` needs (see module docstring): no
    ``segmentation`` for ``bbox``, no ``bbox`` for ``segm``. What ``evaluate_coco`` hands to ``loadRes``, so
    a file of them scores the same with ``COCO.loadRes(file)`` and ``COCOeval(gt, dt, iou_type)``."""
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    out = [{k: v for k, v in r.items() if k != drop} for r in results]
    if iou_type == "segm" and any("segmentation" not in r for r in out):
        raise ValueError("segm evaluation needs a 'segmentation' in every result (predict masks)")
    return out


def _run_cocoeval(coco_gt, results: list[dict], iou_type: str, backend: str,
                  img_ids: list[int] | None) -> np.ndarray:
    """The 12 ``COCOeval.stats`` of non-empty ``results``."""
    _, eval_cls = _backend_api(backend)
    coco_dt = coco_gt.loadRes(results)
    evaluator = eval_cls(coco_gt, coco_dt, iou_type)
    if img_ids is not None:
        evaluator.params.imgIds = img_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats[: len(STAT_NAMES)], dtype=np.float64)


def evaluate_coco(gt, results: Sequence[Mapping], iou_type: str = "bbox", backend: str = "pycocotools",
                  img_ids: Iterable[int] | None = None) -> dict[str, float]:
    """COCO AP/AR of a results list.

    Args:
        gt: ``COCO`` object (either backend), annotation-file path, or annotation dict.
        results: COCO result dicts, e.g. from :func:`to_coco_results`.
        iou_type: ``"bbox"`` or ``"segm"``.
        backend: ``"pycocotools"`` (the reference) or ``"faster_coco_eval"`` (same numbers, faster).
        img_ids: evaluate only these images (default: all images of ``gt``); GT objects of listed images
            without results count as missed.
    Returns:
        ``{name: value}`` for :data:`STAT_NAMES`. As in COCO, -1 marks a stat without any ground
        truth (e.g. ``APs`` when nothing is small); an empty ``results`` gives 0.0 everywhere.
    """
    _check_iou_type(iou_type)
    coco_gt = load_coco_gt(gt, backend)
    results = results_for(results, iou_type)
    img_ids = None if img_ids is None else sorted({int(i) for i in img_ids})
    if not results or img_ids == []:
        # pycocotools' loadRes indexes results[0] and crashes on an empty list.
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        stats = _run_cocoeval(coco_gt, results, iou_type, backend, img_ids)
    return dict(zip(STAT_NAMES, stats.tolist()))


class CocoEvaluator:
    """Accumulates predictions batch by batch, then evaluates once.

    Only the images passed to :meth:`update` are evaluated (as DETR's ``CocoEvaluator``), so a run over
    part of a split is scored on that part. ``results`` and ``img_ids`` are plain lists: to evaluate a
    distributed run, gather and concatenate them before :meth:`summarize`.

    Args:
        gt: as for :func:`evaluate_coco`; loaded once here.
        backend: as for :func:`evaluate_coco`.
    """

    def __init__(self, gt, backend: str = "pycocotools"):
        self.backend = backend
        self.coco_gt = load_coco_gt(gt, backend)
        self.results: list[dict] = []
        self.img_ids: list[int] = []

    def update(self, predictions: Mapping[int, Mapping]) -> None:
        """Add ``{image_id: postprocess dict}`` (see :func:`to_coco_results`)."""
        self.img_ids.extend(int(i) for i in predictions)
        self.results.extend(to_coco_results(predictions))

    def summarize(self, iou_types: Sequence[str] = ("bbox",)) -> dict[str, float]:
        """``{"<iou_type>/<stat>": value}``, e.g. ``bbox/AP``, ``segm/AP50``."""
        out = {}
        for iou_type in iou_types:
            stats = evaluate_coco(self.coco_gt, self.results, iou_type, self.backend, img_ids=self.img_ids)
            out.update({f"{iou_type}/{name}": value for name, value in stats.items()})
        return out
