"""Derive a smaller, simpler COCO-format dataset from another: a user's dataset, simulated.

``derive_dataset`` copies a random subset of each split's images and rewrites their annotations:
optionally every category merged into one (``one_class``), optionally nothing but boxes kept
(``box_only``: no segmentation, no 3D labels or camera fields), which is what a user's own small
detection dataset usually is. The output uses the ``synth`` layout (``train/``, ``val/``,
``annotations/instances_{split}.json``), so it reads as a user's dataset by paths
(:func:`derived_overrides`: ``data.dataset=coco_json`` and the four split paths) or as
``data.dataset=synth data.root=OUT``. Written to a temporary sibling folder and renamed into place; an
existing output is refused unless ``force``.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

from groupdetr import rundir as rd
from groupdetr.data.coco import SPLITS, DatasetError, dataset_paths

__all__ = ["derive_dataset", "derived_overrides", "BOX_KEYS"]

#: annotation keys a box-only dataset keeps
BOX_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
_IMAGE_KEYS = ("id", "file_name", "width", "height")


def _subset(data: dict, count: int | None, seed: int) -> dict:
    images = sorted(data["images"], key=lambda im: im["id"])
    if count is not None and count < len(images):
        images = sorted(random.Random(seed).sample(images, count), key=lambda im: im["id"])
    keep = {im["id"] for im in images}
    return {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}


def _rewrite(data: dict, one_class: bool, box_only: bool, name: str) -> dict:
    anns = data["annotations"]
    images = data["images"]
    categories = data["categories"]
    if one_class:
        anns = [{**a, "category_id": 1} for a in anns]
        categories = [{"id": 1, "name": name, "supercategory": name}]
    if box_only:
        anns = [{k: a[k] for k in BOX_KEYS if k in a} for a in anns]
        images = [{k: im[k] for k in _IMAGE_KEYS} for im in images]
        categories = [{k: c[k] for k in ("id", "name", "supercategory") if k in c} for c in categories]
    return {"info": {"description": f"derived: one_class={one_class}, box_only={box_only}"},
            "images": images, "annotations": anns, "categories": categories}


def derived_overrides(out: str | Path) -> list[str]:
    """The dotted overrides that read the derived dataset at ``out`` as a COCO-format dataset by paths."""
    overrides = ["data.dataset=coco_json", "data.root=null"]
    for split in SPLITS:
        images, annotations = dataset_paths("synth", out, split)
        overrides += [f"data.{split}_images={images}", f"data.{split}_annotations={annotations}"]
    return overrides


def derive_dataset(src: str | Path, out: str | Path, dataset: str = "synth", num_train: int | None = None,
                   num_val: int | None = None, one_class: bool = True, box_only: bool = True, name: str = "object",
                   seed: int = 0, force: bool = False) -> dict:
    """Write the derived dataset to ``out``; returns ``{split: {"images": n, "annotations": m}}``."""
    out = Path(out)
    if out.exists() and not force:
        raise DatasetError(f"{out} exists; pass force to replace it")
    counts = {"train": num_train, "val": num_val}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    summary = {}
    try:
        for split in SPLITS:
            image_dir, ann_file = dataset_paths(dataset, src, split)
            if not ann_file.is_file():
                raise DatasetError(f"annotation file not found: {ann_file}")
            data = _rewrite(_subset(json.loads(ann_file.read_text()), counts[split], seed), one_class, box_only, name)
            dst_images, dst_ann = dataset_paths("synth", tmp, split)
            dst_images.mkdir(parents=True)
            dst_ann.parent.mkdir(parents=True, exist_ok=True)
            for im in data["images"]:
                target = dst_images / im["file_name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image_dir / im["file_name"], target)
            dst_ann.write_text(json.dumps(data))
            summary[split] = {"images": len(data["images"]), "annotations": len(data["annotations"])}
        tmp.chmod(rd.dir_mode())  # mkdtemp's folder is private; the dataset gets a plain mkdir's mode
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
