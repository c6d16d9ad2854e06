"""The content-addressed cache of pretrained backbones: what identifies a pretraining, and where it lives.

A pretraining is identified by its inputs only: the dataset's fingerprint (the bytes of the training
annotation file and the name and byte size of every image it lists), the backbone's architecture, the
pretext settings (``pretrain.*`` except ``cache``), the image size, the augmentation preset (named in the
key except for the ``synth`` layout with its own ``synth`` augmentation, whose keys predate ``data.augmentation``
and stay valid) and :data:`PRETEXT_VERSION` (bumped whenever the pretext task's code changes what it computes). The same
inputs never pretrain twice: ``{pretrain.cache}/{backbone}-{key}/`` holds ``weights.pth`` (the
backbone's state dict) and ``record.json`` beside it. Light: no torch here, so reading a record or
computing a key costs no import of the heavy stack.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from groupdetr.config import resolve_augmentation
from groupdetr.names import BY_PATHS

__all__ = ["PRETEXT_VERSION", "WEIGHTS", "RECORD", "PretrainSpec", "pretrain_spec", "dataset_fingerprint",
           "cache_key", "entry_dir", "file_sha256", "record_path_for", "read_record"]

#: version of the pretext task's definition (targets, heads, losses, schedule); part of every key
PRETEXT_VERSION = 1
WEIGHTS, RECORD = "weights.pth", "record.json"

# backbone fields that define the architecture (weights and train_backbone do not change what is pretrained)
_ARCH_FIELDS = {"small_cnn": ("name", "channels", "depth"), "resnet": ("name", "dilation")}


@dataclass(frozen=True)
class PretrainSpec:
    """Everything a pretraining depends on, resolved from a config (see :func:`pretrain_spec`)."""

    dataset: str  # name of ``names.DATASETS``: a layout (``groupdetr.data.coco.LAYOUTS``) or ``coco_json``
    root: str | None  # dataset root of a layout; its train split is read (None for coco_json)
    image_size: int
    backbone: dict  # architecture fields of model.backbone
    settings: dict  # pretrain.* without dataset, root, the paths, image_size, cache
    cache: Path
    augmentation: str  # the preset of groupdetr.data.transforms.PRESETS (data.augmentation resolved)
    # coco_json: split -> (image folder, annotation file) as configured (None where not set), and the config
    # section they come from (``data`` or ``pretrain``), for the one-line errors
    paths: dict = field(default_factory=dict)
    section: str = "data"

    def split_location(self, split: str) -> dict:
        """What :func:`groupdetr.data.coco.split_paths` needs to find ``split`` (no file is touched here)."""
        images, annotations = self.paths.get(split, (None, None))
        return {"dataset": self.dataset, "split": split, "root": self.root, "images": images,
                "annotations": annotations, "section": self.section}

    @property
    def source(self) -> str:
        """The dataset in words, for the record and the summary line: its root, or its training annotations."""
        return self.root if self.dataset != BY_PATHS else str(self.paths["train"][1])


def pretrain_spec(cfg) -> PretrainSpec:
    """The :class:`PretrainSpec` of a ``Config``: the ``pretrain`` section, falling back to ``data.*``. The
    augmentation is ``data.augmentation`` (``auto``: the pretraining dataset's own)."""
    pt, data, bb = cfg.pretrain, cfg.data, cfg.model.backbone
    fields = _ARCH_FIELDS["small_cnn" if bb.name == "small_cnn" else "resnet"]
    arch = {f: list(getattr(bb, f)) if isinstance(getattr(bb, f), tuple) else getattr(bb, f) for f in fields}
    settings = {k: getattr(pt, k) for k in ("steps", "batch_size", "lr", "weight_decay", "seed", "occupancy_weight",
                                            "center_weight", "extent_weight")}
    if pt.dataset is None:
        dataset, root, section = data.dataset, data.root, "data"
        paths = {s: (getattr(data, f"{s}_images"), getattr(data, f"{s}_annotations")) for s in ("train", "val")}
    else:
        dataset, root, section = pt.dataset, pt.root, "pretrain"
        paths = {"train": (pt.train_images, pt.train_annotations)}
    return PretrainSpec(dataset=dataset, root=None if root is None else str(root),
                        image_size=pt.image_size or data.image_size, backbone=arch, settings=settings,
                        cache=Path(pt.cache), augmentation=resolve_augmentation(data.augmentation, dataset),
                        paths=paths if dataset == BY_PATHS else {}, section=section)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(image_dir: str | Path, ann_file: str | Path) -> dict:
    """Identity of a training split without reading every image: the annotation file's sha256 and a
    sha256 over (file name, byte size) of each image it lists. A renamed, added, removed or re-encoded
    image, or any annotation edit, changes it; re-copying the same files does not (no mtimes)."""
    ann = json.loads(Path(ann_file).read_bytes())
    listing = hashlib.sha256()
    for name in sorted(img["file_name"] for img in ann.get("images", [])):
        path = Path(image_dir) / name
        size = path.stat().st_size if path.is_file() else -1
        listing.update(f"{name}\t{size}\n".encode())
    ann_sha = file_sha256(ann_file)
    return {"annotations_sha256": ann_sha, "images_sha256": listing.hexdigest(),
            "num_images": len(ann.get("images", [])), "num_annotations": len(ann.get("annotations", [])),
            "fingerprint": hashlib.sha256(f"{ann_sha}:{listing.hexdigest()}".encode()).hexdigest()}


def cache_key(spec: PretrainSpec, fingerprint: str) -> str:
    """16 hex digits of sha256 over the canonical JSON of every input of the pretraining."""
    inputs = {"version": PRETEXT_VERSION, "dataset": spec.dataset, "fingerprint": fingerprint,
              "image_size": spec.image_size, "backbone": spec.backbone, "settings": spec.settings}
    if (spec.dataset, spec.augmentation) != ("synth", "synth"):
        # The keys made before the augmentation had a key of its own named the dataset alone. The embedded
        # benchmark's are kept valid (its augmentation did not change); with any other pair the augmentation is
        # named, which also retires the entries made with DETR's sizes unscaled at image sizes other than 800.
        inputs["augmentation"] = spec.augmentation
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entry_dir(spec: PretrainSpec, fingerprint: str) -> Path:
    """The cache folder of this pretraining: ``{cache}/{backbone name}-{key}``."""
    return spec.cache / f"{spec.backbone['name']}-{cache_key(spec, fingerprint)}"


def record_path_for(weights: str | Path) -> Path:
    """The record beside a weights file: ``record.json`` in a cache entry, ``<stem>.json`` elsewhere."""
    weights = Path(weights)
    return weights.parent / RECORD if weights.name == WEIGHTS else weights.with_suffix(".json")


def read_record(weights: str | Path) -> dict | None:
    """The pretraining record beside ``weights``, or None if there is none (e.g. ImageNet weights)."""
    path = record_path_for(weights)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None

