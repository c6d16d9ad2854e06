"""COCO-format detection dataset: COCO 2017, the embedded benchmark, or any COCO-format dataset by paths.

The format (COCO JSON with 3D extras) and the target dict are specified in
``docs/annotation-format.md``. Everything that can be checked cheaply is checked at construction,
and every failure is a :class:`DatasetError` whose message is one line naming the file (and the
annotation/image id): a bad dataset fails before training starts, not hours in. Annotations that
are valid but unusable for training -- crowd regions (``iscrowd=1``) and boxes empty after clipping
to the image -- are dropped and their counts logged once (logger ``groupdetr.data``); they stay in
:attr:`CocoDetection.coco`, where COCO evaluation needs crowd regions as ignore areas.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from groupdetr.config import resolve_augmentation
from groupdetr.data.transforms import build_transforms, to_model_input
from groupdetr.errors import DatasetError
from groupdetr.names import BY_PATHS

__all__ = ["DatasetError", "SPLITS", "LAYOUTS", "dataset_paths", "split_paths", "data_split_paths", "category_ids",
           "derived_num_classes", "resolve_num_classes", "CocoDetection", "build_dataset"]

logger = logging.getLogger("groupdetr.data")


SPLITS = ("train", "val")

# dataset -> (image folder, annotation file) of split ``{split}``, relative to the root
LAYOUTS = {
    "coco": ("{split}2017", "annotations/instances_{split}2017.json"),
    "synth": ("{split}", "annotations/instances_{split}.json"),
}

TOLERANCE_PX = 1.0  # boxes may overhang the image by this much (rounding in annotation tools)
ANN_3D = ("center_3d", "dims_3d", "yaw_3d")
IMAGE_3D = ("intrinsics", "camera_pitch")


def dataset_paths(dataset: str, root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of ``split`` of ``dataset`` under ``root`` (layout table)."""
    if dataset not in LAYOUTS:
        raise DatasetError(f"unknown dataset {dataset!r} (known: {', '.join(LAYOUTS)})")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    images, annotations = LAYOUTS[dataset]
    return Path(root) / images.format(split=split), Path(root) / annotations.format(split=split)


def split_paths(dataset: str, split: str, root: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
                annotations: str | os.PathLike | None = None, section: str = "data") -> tuple[Path, Path]:
    """(image folder, annotation file) of ``split``, checked to exist: under ``root`` in the layout of
    ``dataset``, or ``images`` and ``annotations`` themselves for ``coco_json``. A key not set or a path
    not there is one line naming the key of config section ``section`` (``data`` or ``pretrain``)."""
    if dataset != BY_PATHS:
        if root is None:
            raise DatasetError(f"{section}.root is not set (the {dataset} dataset root)")
        if not Path(root).is_dir():
            raise DatasetError(f"dataset root not found: {root} ({section}.root)")
        return dataset_paths(dataset, root, split)
    keys = (f"{section}.{split}_images", f"{section}.{split}_annotations")
    for key, value in zip(keys, (images, annotations)):
        if value is None:
            raise DatasetError(f"{key} is not set ({section}.dataset={BY_PATHS} reads the {split} split from "
                               f"{' and '.join(keys)})")
    if not Path(images).is_dir():
        raise DatasetError(f"image folder not found: {images} ({keys[0]})")
    if not Path(annotations).is_file():
        raise DatasetError(f"annotation file not found: {annotations} ({keys[1]})")
    return Path(images), Path(annotations)


def data_split_paths(data, split: str) -> tuple[Path, Path]:
    """:func:`split_paths` of ``split`` of the dataset a ``DataConfig`` (``cfg.data``) names."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    return split_paths(data.dataset, split, data.root, getattr(data, f"{split}_images"),
                       getattr(data, f"{split}_annotations"))


# ---------------------------------------------------------------------------------------------
# validation (each check raises one line naming the file)


def _load_json(ann_file: Path) -> dict:
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{ann_file}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{ann_file}: cannot read annotation file ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: missing or non-list '{key}'")
    return data


def _require(record: dict, keys, what: str, ann_file: Path) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DatasetError(f"{ann_file}: {what} lacks {', '.join(missing)}")


def _check_box(ann: dict, img: dict, ann_file: Path) -> None:
    x, y, w, h = bbox = ann["bbox"]
    where = f"{ann_file}: annotation {ann['id']} (image {img['id']}, {img['width']}x{img['height']})"
    if not all(math.isfinite(v) for v in bbox):
        raise DatasetError(f"{where}: bbox {bbox} is not finite")
    tol = TOLERANCE_PX
    if x < 0 or y < 0 or x + w > img["width"] + tol or y + h > img["height"] + tol:
        raise DatasetError(f"{where}: bbox [x, y, w, h] = {bbox} lies outside the image (tolerance {tol:g} px)")


def _check_3d(ann: dict, ann_file: Path) -> None:
    _require(ann, ANN_3D, f"annotation {ann['id']} (image {ann['image_id']})", ann_file)
    if np.shape(ann["center_3d"]) != (3,) or np.shape(ann["dims_3d"]) != (3,) or np.shape(ann["yaw_3d"]) != ():
        raise DatasetError(f"{ann_file}: annotation {ann['id']}: center_3d/dims_3d must have 3 values, yaw_3d one")


def _clip_box(bbox, width: int, height: int) -> list[float]:
    """COCO [x, y, w, h] -> [x0, y0, x1, y1] clipped to the image."""
    x, y, w, h = bbox
    return [min(max(x, 0.0), width), min(max(y, 0.0), height), min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)]


def _index_annotations(data: dict, ann_file: Path, need_3d: bool, need_masks: bool) -> dict[int, list[dict]]:
    """Validate every annotation; return image id -> annotations kept for training.

    Crowd and degenerate (empty after clipping) annotations are dropped and counted in one log line.
    """
    images = {img["id"]: img for img in data["images"]}
    categories = {c["id"] for c in data["categories"]}
    kept: dict[int, list[dict]] = {i: [] for i in images}
    crowd = degenerate = 0
    for ann in data["annotations"]:
        _require(ann, ("id", "image_id", "category_id", "bbox"), f"annotation {ann.get('id', '?')}", ann_file)
        img = images.get(ann["image_id"])
        if img is None:
            raise DatasetError(f"{ann_file}: annotation {ann['id']} refers to image {ann['image_id']}, not in images")
        if ann["category_id"] not in categories:
            raise DatasetError(
                f"{ann_file}: annotation {ann['id']} (image {img['id']}): category_id {ann['category_id']} "
                f"is not among the {len(categories)} categories"
            )
        _check_box(ann, img, ann_file)
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        x0, y0, x1, y1 = _clip_box(ann["bbox"], img["width"], img["height"])
        if x1 <= x0 or y1 <= y0:
            degenerate += 1
            continue
        if need_3d:
            _check_3d(ann, ann_file)
        if need_masks and "segmentation" not in ann:
            raise DatasetError(f"{ann_file}: annotation {ann['id']} (image {img['id']}) has no segmentation (masks requested)")
        kept[img["id"]].append(ann)
    if crowd or degenerate:
        level = logging.WARNING if degenerate else logging.INFO  # crowd regions are expected in COCO
        logger.log(
            level,
            "%s: dropped %d crowd (iscrowd=1) and %d degenerate (empty after clipping) of %d annotations",
            ann_file, crowd, degenerate, len(data["annotations"]),
        )
    return kept


def _check_images(data: dict, image_dir: Path, ann_file: Path, need_3d: bool) -> None:
    # One directory listing instead of one stat per image: COCO train has 118k files, often on
    # network storage. Names with sub-folders fall back to os.path.exists.
    present = set(os.listdir(image_dir))
    for img in data["images"]:
        _require(img, ("id", "file_name", "width", "height"), f"image {img.get('id', '?')}", ann_file)
        if need_3d:
            _require(img, IMAGE_3D, f"image {img['id']}", ann_file)
            if np.shape(img["intrinsics"]) != (3, 3):
                raise DatasetError(f"{ann_file}: image {img['id']}: intrinsics must be 3x3")
        name = img["file_name"]
        if name not in present and not os.path.exists(image_dir / name):
            raise DatasetError(f"{ann_file}: image {img['id']}: file not found: {image_dir / name}")


# ---------------------------------------------------------------------------------------------


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format detection dataset returning DETR-convention targets.

    Args:
        image_dir: folder holding the images (``file_name`` is relative to it).
        ann_file: COCO JSON (``docs/annotation-format.md``).
        transforms: pixel-space ``(image, target) -> (image, target)``
            (``groupdetr.data.transforms``) or None; :func:`to_model_input` always runs after it.
        return_masks: decode ``segmentation`` (RLE or polygons) into ``masks``.

    ``dataset[i]`` -> ``(image, target)``: image float ``[3, H, W]`` normalised with ImageNet
    mean/std; target ``boxes`` ``[M, 4]`` float32 normalised cxcywh, ``labels`` ``[M]`` int64
    (category ids), ``image_id`` ``[]`` int64, ``orig_size``/``size`` ``[2]`` int64 (h, w) before/after
    transforms, optional ``masks`` ``[M, H, W]`` bool and, when the JSON has 3D fields,
    ``center_3d`` ``[M, 3]``, ``dims_3d`` ``[M, 3]``, ``yaw_3d`` ``[M]``, ``yaw_period`` ``[M]`` (the
    category's, NaN for rotation-symmetric), ``intrinsics`` ``[3, 3]``, ``camera_pitch`` ``[]``
    (float32). Images are ordered by id.

    Attributes: ``coco`` (pycocotools index of the whole file, crowd included), ``ids``,
    ``category_ids``, ``has_3d``.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Callable | None = None,
        return_masks: bool = False,
    ):
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder not found: {self.image_dir}")
        if not self.ann_file.is_file():
            raise DatasetError(f"annotation file not found: {self.ann_file}")
        data = _load_json(self.ann_file)
        self.has_3d = any(k in img for img in data["images"] for k in IMAGE_3D) or any(
            k in ann for ann in data["annotations"] for k in ANN_3D
        )
        _check_images(data, self.image_dir, self.ann_file, self.has_3d)
        self._anns = _index_annotations(data, self.ann_file, self.has_3d, return_masks)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self.ids = sorted(self.coco.imgs)
        self.category_ids = sorted(self.coco.cats)
        self.transforms = transforms
        self.return_masks = return_masks

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_objects(self) -> int:
        """Annotations kept for training (crowd and degenerate ones dropped)."""
        return sum(len(anns) for anns in self._anns.values())

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, dict]:
        info = self.coco.imgs[self.ids[idx]]
        image = self._read_image(info)
        target = self._target(info, self._anns[info["id"]])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return to_model_input(image, target)

    def _read_image(self, info: dict) -> tv_tensors.Image:
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as pil:
                pil = pil.convert("RGB")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read image {info['id']} ({e})") from None
        if pil.size != (info["width"], info["height"]):
            raise DatasetError(
                f"{path}: image {info['id']} is {pil.size[0]}x{pil.size[1]}, "
                f"{self.ann_file} says {info['width']}x{info['height']}"
            )
        return tv_tensors.Image(F.pil_to_tensor(pil))

    def _target(self, info: dict, anns: list[dict]) -> dict:
        """Pixel-space target (``groupdetr.data.transforms``) of one image."""
        h, w = info["height"], info["width"]
        boxes = torch.tensor([_clip_box(a["bbox"], w, h) for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
            "size": torch.tensor([h, w], dtype=torch.int64),
        }
        if self.return_masks:
            target["masks"] = tv_tensors.Mask(self._masks(info, anns))
        if self.has_3d:
            f64 = torch.float64  # float64 until to_model_input: repeated flips stay exact
            target["center_3d"] = torch.tensor([a["center_3d"] for a in anns], dtype=f64).reshape(-1, 3)
            target["dims_3d"] = torch.tensor([a["dims_3d"] for a in anns], dtype=f64).reshape(-1, 3)
            target["yaw_3d"] = torch.tensor([a["yaw_3d"] for a in anns], dtype=f64)
            target["yaw_period"] = torch.tensor([self._yaw_period(a["category_id"]) for a in anns], dtype=f64)
            target["intrinsics"] = torch.tensor(info["intrinsics"], dtype=f64)
            target["camera_pitch"] = torch.tensor(info["camera_pitch"], dtype=f64)
        return target

    def _yaw_period(self, category_id: int) -> float:
        """The category's ``yaw_period`` (rad): JSON null -> NaN (rotation-symmetric, orientation
        not learned or scored); no key -> 2*pi (any orientation is distinct)."""
        period = self.coco.cats[category_id].get("yaw_period", 2 * math.pi)
        return math.nan if period is None else float(period)

    def _masks(self, info: dict, anns: list[dict]) -> torch.Tensor:
        """``[M, H, W]`` bool decoded by pycocotools (RLE, uncompressed RLE or polygons)."""
        h, w = info["height"], info["width"]
        masks = np.zeros((len(anns), h, w), dtype=bool)
        for i, ann in enumerate(anns):
            with warnings.catch_warnings():
                # pycocotools 2.0.11's decoder trips numpy 2's __array__(copy=...) deprecation; harmless
                warnings.simplefilter("ignore", DeprecationWarning)
                m = self.coco.annToMask(ann)
            if m.shape != (h, w):
                raise DatasetError(
                    f"{self.ann_file}: annotation {ann['id']} (image {info['id']}): segmentation is "
                    f"{m.shape[1]}x{m.shape[0]}, image is {w}x{h}"
                )
            masks[i] = m
        return torch.from_numpy(masks)


def category_ids(ann_file: str | os.PathLike) -> list[int]:
    """The sorted category ids of a COCO annotation file (checked as the dataset checks it: one line
    naming the file when it is malformed, has no categories or an id that is not an integer >= 0)."""
    ann_file = Path(ann_file)
    data = _load_json(ann_file)
    ids = [c.get("id") if isinstance(c, dict) else None for c in data["categories"]]
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i < 0]
    if bad:
        raise DatasetError(f"{ann_file}: category id {bad[0]!r} is not an integer >= 0")
    if not ids:
        raise DatasetError(f"{ann_file}: no categories")
    return sorted(ids)


def derived_num_classes(ann_file: str | os.PathLike) -> int:
    """``model.num_classes`` for the categories of ``ann_file``: the largest id + 1, as DETR sizes its
    classifier (category ids index the logits directly; COCO's ids go to 90, hence 91)."""
    return category_ids(ann_file)[-1] + 1


def resolve_num_classes(cfg):
    """``cfg`` with ``model.num_classes: null`` replaced by :func:`derived_num_classes` of the training
    annotations (``cfg`` itself when it is set). Training calls this before anything else, so the run's
    ``config.yaml``, its hash and its checkpoint hold the number, and evaluation needs no dataset to know it."""
    if cfg.model.num_classes is not None:
        return cfg
    _, ann_file = data_split_paths(cfg.data, "train")
    num_classes = derived_num_classes(ann_file)
    logger.info("model.num_classes=%d: the largest category id of %s + 1", num_classes, ann_file)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))


def build_dataset(cfg, split: str, return_masks: bool = False) -> CocoDetection:
    """Dataset of ``split`` from ``cfg.data`` (dataset, root or split paths, image_size), with the
    augmentation ``cfg.data.augmentation`` (``groupdetr.data.transforms.PRESETS``; ``auto``: the dataset's
    own); masks are decoded when asked or when ``cfg.model.task`` needs them, and a 3D task refuses a
    dataset without 3D annotations. Also checks that every category id indexes the classifier
    (``max id < cfg.model.num_classes``; a larger classifier than the ids need is logged as a warning),
    that the split has images, and that the ``val`` split has objects: evaluation on nothing is
    meaningless (COCO reports every AP as -1 then, or 0.0 with no images at all)."""
    from groupdetr.tasks import TASKS

    data = cfg.data
    image_dir, ann_file = data_split_paths(data, split)
    transforms = build_transforms(resolve_augmentation(data.augmentation, data.dataset), split, data.image_size)
    task = TASKS[cfg.model.task]
    dataset = CocoDetection(image_dir, ann_file, transforms, return_masks=return_masks or task.needs_masks)
    where = f"data.root={data.root}" if data.dataset != BY_PATHS else f"data.{split}_annotations"
    if len(dataset) == 0:
        raise DatasetError(f"{ann_file}: the {split} split has no images ({where})")
    if split == "val" and dataset.num_objects == 0:
        raise DatasetError(f"{ann_file}: the val split has {len(dataset)} images but no objects to evaluate against "
                           "(crowd and degenerate boxes do not count)")
    if task.needs_3d and not dataset.has_3d:
        raise DatasetError(f"{ann_file}: model.task={task.name} needs 3D annotations (center_3d, dims_3d, yaw_3d, "
                           "intrinsics, camera_pitch), as the embedded benchmark has")
    _check_num_classes(dataset, cfg.model.num_classes, split)
    return dataset


def _check_num_classes(dataset: CocoDetection, num_classes: int | None, split: str) -> None:
    """Refuse a category id the classifier has no logit for (one line naming the file); warn of logits no
    category of the training split can make positive."""
    if num_classes is None:
        raise DatasetError("model.num_classes is null: it is derived from the training annotations when training "
                           "starts (groupdetr.data.coco.resolve_num_classes); set it to read a dataset without training")
    if not dataset.category_ids:
        return
    largest = dataset.category_ids[-1]
    if largest >= num_classes:
        raise DatasetError(f"{dataset.ann_file}: category id {largest} needs model.num_classes >= {largest + 1}, "
                           f"got {num_classes} (model.num_classes=null derives it)")
    if split == "train" and num_classes > largest + 1:
        logger.warning("%s: model.num_classes=%d but the largest category id is %d: %d logits are never a positive "
                       "(model.num_classes=null derives %d)", dataset.ann_file, num_classes, largest,
                       num_classes - largest - 1, largest + 1)
