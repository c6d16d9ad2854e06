"""Joint image/target transforms that keep 2D boxes, masks and 3D labels consistent.

Samples travel through the transforms in *pixel space*, as ``(image, target)``:

- ``image``: ``tv_tensors.Image`` uint8 ``[3, H, W]``;
- ``target["boxes"]``: ``tv_tensors.BoundingBoxes`` ``[M, 4]`` XYXY in pixels;
- ``target["masks"]`` (optional): ``tv_tensors.Mask`` bool ``[M, H, W]``;
- ``target["labels"]`` ``[M]`` and, when the annotations carry them, ``center_3d`` ``[M, 3]``,
  ``dims_3d`` ``[M, 3]``, ``yaw_3d`` ``[M]``, ``intrinsics`` ``[3, 3]``, ``camera_pitch`` ``[]``.
  The 3D values stay float64 until :func:`to_model_input` so that a flip applied twice is exact;
- image-level keys are those in :data:`IMAGE_KEYS`; every other key is per object (first dim M).

:func:`to_model_input` ends every pipeline (the dataset always calls it last): float image
normalised with ImageNet statistics, ``boxes`` as normalised cxcywh, ``size`` updated, float32 3D.

Pixel coordinates are continuous -- pixel (i, j) covers [j, j+1) x [i, i+1)
(docs/annotation-format.md) -- so every geometric transform is an affine map ``A`` of the image plane
and the intrinsics become ``A @ K``:

- horizontal flip: ``u -> W - u``, boxes and masks mirrored, the scene mirrored ``x -> -x``
  (``K' = A K diag(-1, 1, 1)``, i.e. ``cx -> W - cx``), ``center_3d[:, 0] *= -1``,
  ``yaw -> pi - yaw`` (:func:`groupdetr.geometry.flip_yaw`);
- resize by ``(sx, sy)``: boxes scaled, masks resized nearest, ``K`` rows 0 and 1 scaled; 3D unchanged;
- crop at ``(x0, y0)``: boxes shifted and clipped, masks cropped, ``cx -= x0``, ``cy -= y0``; objects
  whose box becomes empty are removed from every per-object field together.

Decision: the horizontal flip is kept for 3D labels. For a pinhole camera the mirrored image is
exactly the image of the mirrored scene (camera x -> -x, principal point mirrored), and the camera
pitch is a rotation about that same x axis, which the mirror leaves unchanged; so ``center_3d``,
``yaw_3d``, ``camera_pitch`` and ``dims_3d`` (mirror-invariant) remain exact labels of the flipped image.

Randomness is drawn only from torch's global RNG, so ``torch.manual_seed`` -- and the per-worker
seeds a DataLoader derives from its generator -- make augmentation reproducible.

Presets (:data:`PRESETS`, keyed by ``data.augmentation``; ``auto`` takes the dataset's own,
:data:`groupdetr.names.DATASET_AUGMENTATION`). Every preset validates at the short side ``image_size``
(``data.image_size``), and trains around it:

- ``detr``: DETR's COCO augmentation, the paper preset, with every size in proportion to
  ``image_size`` / 800 (:data:`PAPER_IMAGE_SIZE`, so at the paper's 800 it is DETR's exactly). Train:
  flip(0.5), then with probability 1/2 a resize of the short side to one of 480..800 (step 32, long side
  <= 1333), otherwise a resize to one of 400/500/600, a random crop of 384..600 px per side and the
  multi-scale resize. Val: short side ``image_size`` (800 in the paper), long side <= 1333 (x the same
  ratio). At ``image_size=256``: 154..256 px in training, 256 in validation, long sides <= 427.
- ``synth``: light augmentation for the embedded benchmark, whose images are already rendered at
  ``image_size``. Train: flip(0.5) and a mild scale jitter, the short side resized to
  0.875 / 1 / 1.125 x ``image_size`` (no crop: the rendered scenes are small and objects often
  touch the border). Val: short side ``image_size``, which leaves a rendered benchmark untouched
  (:class:`Resize` does nothing to an image already at its size).
- ``none``: no augmentation; both splits resized to the short side ``image_size``.

The validation resize is deterministic (:class:`Resize`, no random draw): a sample is evaluated the same
whatever the RNG's state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from groupdetr.box_ops import xyxy_to_cxcywh
from groupdetr.geometry import flip_yaw

__all__ = [
    "IMAGE_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAPER_SCALES",
    "PAPER_MAX_SIZE",
    "PAPER_IMAGE_SIZE",
    "SYNTH_SCALE_JITTER",
    "PRESETS",
    "Compose",
    "RandomHorizontalFlip",
    "RandomResize",
    "Resize",
    "RandomSizeCrop",
    "RandomSelect",
    "hflip",
    "resize",
    "crop",
    "keep_objects",
    "resized_shape",
    "paper_size",
    "to_model_input",
    "build_transforms",
]

Sample = tuple[torch.Tensor, dict]
Transform = Callable[[torch.Tensor, dict], Sample]

# Keys describing the whole image; every other target key is per object and is filtered with it.
IMAGE_KEYS = frozenset({"image_id", "orig_size", "size", "intrinsics", "camera_pitch"})

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PAPER_SCALES = tuple(range(480, 801, 32))  # DETR's multi-scale training short sides
PAPER_MAX_SIZE = 1333
PAPER_IMAGE_SIZE = 800  # the validation short side DETR's sizes above go with (the default data.image_size)
SYNTH_SCALE_JITTER = (0.875, 1.0, 1.125)


# ---------------------------------------------------------------------------------------------
# deterministic transforms (pure: inputs are never modified)


def keep_objects(target: dict, keep: torch.Tensor) -> dict:
    """Select objects ``keep`` (``[M]`` bool or indices) in every per-object field of ``target``.

    Per-object fields are all keys not in :data:`IMAGE_KEYS`, so a key added later is filtered too.
    """
    out = {}
    for key, value in target.items():
        if key in IMAGE_KEYS:
            out[key] = value
        elif isinstance(value, tv_tensors.TVTensor):
            out[key] = tv_tensors.wrap(value[keep], like=value)  # indexing drops the box metadata
        else:
            out[key] = value[keep]
    return out


def hflip(image: torch.Tensor, target: dict) -> Sample:
    """Mirror the image left-right; boxes, masks, 3D labels and intrinsics follow (module docstring)."""
    width = image.shape[-1]
    t = dict(target)
    t["boxes"] = F.horizontal_flip(target["boxes"])
    if "masks" in t:
        t["masks"] = F.horizontal_flip(t["masks"])
    if "center_3d" in t:
        t["center_3d"] = t["center_3d"] * torch.tensor([-1.0, 1.0, 1.0], dtype=t["center_3d"].dtype)
    if "yaw_3d" in t:
        t["yaw_3d"] = torch.as_tensor(flip_yaw(t["yaw_3d"].numpy()), dtype=t["yaw_3d"].dtype)
    if "intrinsics" in t:
        k = t["intrinsics"]
        mirror = torch.tensor([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=k.dtype)
        t["intrinsics"] = mirror @ k @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=k.dtype))
    return F.horizontal_flip(image), t


def resize(image: torch.Tensor, target: dict, size: tuple[int, int]) -> Sample:
    """Resize to ``size`` = (h, w): boxes and intrinsics scale by (w'/w, h'/h), masks nearest."""
    h, w = image.shape[-2:]
    oh, ow = size
    t = dict(target)
    t["boxes"] = F.resize(target["boxes"], [oh, ow])
    if "masks" in t:
        # nearest-exact samples at pixel centres, matching the continuous-coordinate convention
        masks = F.resize(t["masks"].as_subclass(torch.Tensor), [oh, ow], F.InterpolationMode.NEAREST_EXACT)
        t["masks"] = tv_tensors.Mask(masks)
    if "intrinsics" in t:
        k = t["intrinsics"]
        t["intrinsics"] = torch.diag(torch.tensor([ow / w, oh / h, 1.0], dtype=k.dtype)) @ k
    return F.resize(image, [oh, ow], antialias=True), t


def crop(image: torch.Tensor, target: dict, region: tuple[int, int, int, int]) -> Sample:
    """Crop ``region`` = (top, left, height, width), which must lie inside the image.

    Boxes are shifted and clipped to the crop; objects whose box becomes empty are removed from
    every per-object field (:func:`keep_objects`); the principal point shifts by (-left, -top).
    """
    top, left, height, width = region
    t = dict(target)
    boxes = F.clamp_bounding_boxes(F.crop(target["boxes"], top, left, height, width))
    t["boxes"] = boxes
    if "masks" in t:
        t["masks"] = F.crop(t["masks"], top, left, height, width)
    if "intrinsics" in t:
        k = t["intrinsics"]
        shift = torch.tensor([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]], dtype=k.dtype)
        t["intrinsics"] = shift @ k
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return F.crop(image, top, left, height, width), keep_objects(t, keep)


def resized_shape(height: int, width: int, short: int, max_size: int | None = None) -> tuple[int, int]:
    """(h, w) after resizing the short side to ``short``, shrunk so the long side stays
    <= ``max_size``; DETR's ``get_size_with_aspect_ratio``, integer truncation included."""
    if max_size is not None:
        lo, hi = float(min(height, width)), float(max(height, width))
        if hi / lo * short > max_size:
            short = int(round(max_size * lo / hi))
    if min(height, width) == short:
        return height, width
    if width < height:
        return int(short * height / width), short
    return short, int(short * width / height)


def to_model_input(image: torch.Tensor, target: dict) -> Sample:
    """Pixel-space sample -> model input: image float ``[3, H, W]`` normalised with ImageNet
    mean/std; ``boxes`` ``[M, 4]`` cxcywh normalised by (W, H); ``masks`` bool; ``size`` = (H, W);
    floating fields float32; every tv_tensor unwrapped to a plain tensor."""
    h, w = image.shape[-2:]
    x = F.normalize(F.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
    t = {}
    for key, value in target.items():
        value = value.as_subclass(torch.Tensor)
        t[key] = value.float() if value.is_floating_point() else value
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    t["boxes"] = xyxy_to_cxcywh(t["boxes"].float()) / scale
    if "masks" in t:
        t["masks"] = t["masks"].bool()
    t["size"] = torch.tensor([h, w], dtype=torch.int64)
    return x.as_subclass(torch.Tensor), t


# ---------------------------------------------------------------------------------------------
# random transforms: draw from torch's global RNG only


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high], inclusive like ``random.randint``."""
    return int(torch.randint(low, high + 1, ()))


@dataclass(frozen=True)
class Compose:
    transforms: Sequence[Transform]

    def __call__(self, image, target) -> Sample:
        for tr in self.transforms:
            image, target = tr(image, target)
        return image, target


@dataclass(frozen=True)
class RandomHorizontalFlip:
    p: float = 0.5

    def __call__(self, image, target) -> Sample:
        return hflip(image, target) if float(torch.rand(())) < self.p else (image, target)


@dataclass(frozen=True)
class RandomResize:
    """Short side resized to one of ``sizes`` (uniformly), long side capped at ``max_size``."""

    sizes: Sequence[int]
    max_size: int | None = None

    def __call__(self, image, target) -> Sample:
        short = self.sizes[_randint(0, len(self.sizes) - 1)]
        return resize(image, target, resized_shape(*image.shape[-2:], short, self.max_size))


@dataclass(frozen=True)
class Resize:
    """Short side resized to ``size``, long side capped at ``max_size``; no random draw. An image that
    already has that shape is returned as it is (the very same objects), so a dataset stored at its
    training size, like the rendered benchmark, passes untouched."""

    size: int
    max_size: int | None = None

    def __call__(self, image, target) -> Sample:
        shape = resized_shape(*image.shape[-2:], self.size, self.max_size)
        if shape == tuple(image.shape[-2:]):
            return image, target
        return resize(image, target, shape)


@dataclass(frozen=True)
class RandomSizeCrop:
    """Crop of random height and width in [min_size, max_size] (capped by the image), at a
    random position, as DETR's ``RandomSizeCrop``."""

    min_size: int
    max_size: int

    def __call__(self, image, target) -> Sample:
        h, w = image.shape[-2:]
        cw = _randint(min(self.min_size, w), min(w, self.max_size))
        ch = _randint(min(self.min_size, h), min(h, self.max_size))
        top, left = _randint(0, h - ch), _randint(0, w - cw)
        return crop(image, target, (top, left, ch, cw))


@dataclass(frozen=True)
class RandomSelect:
    """``first`` with probability ``p``, otherwise ``second``."""

    first: Transform
    second: Transform
    p: float = 0.5

    def __call__(self, image, target) -> Sample:
        return (self.first if float(torch.rand(())) < self.p else self.second)(image, target)


# ---------------------------------------------------------------------------------------------
# presets


def paper_size(pixels: int, image_size: int) -> int:
    """One of DETR's sizes (stated for a validation short side of :data:`PAPER_IMAGE_SIZE`) at ``image_size``:
    ``pixels * image_size / 800``, rounded; ``pixels`` itself at 800."""
    return int(round(pixels * image_size / PAPER_IMAGE_SIZE))


def detr_transforms(split: str, image_size: int) -> Transform:
    """DETR's COCO augmentation (paper preset), its sizes in proportion to ``image_size`` (module docstring);
    eval resizes the short side to ``image_size``."""
    max_size = paper_size(PAPER_MAX_SIZE, image_size)
    if split == "train":
        multiscale = RandomResize(tuple(paper_size(s, image_size) for s in PAPER_SCALES), max_size)
        return Compose([
            RandomHorizontalFlip(0.5),
            RandomSelect(
                multiscale,
                Compose([RandomResize(tuple(paper_size(s, image_size) for s in (400, 500, 600))),
                         RandomSizeCrop(paper_size(384, image_size), paper_size(600, image_size)), multiscale]),
            ),
        ])
    return Resize(image_size, max_size)


def synth_transforms(split: str, image_size: int) -> Transform:
    """Light augmentation for the embedded benchmark: flip + mild scale jitter; eval at ``image_size``."""
    if split == "train":
        sizes = tuple(int(round(f * image_size)) for f in SYNTH_SCALE_JITTER)
        return Compose([RandomHorizontalFlip(0.5), RandomResize(sizes)])
    return Resize(image_size)


def plain_transforms(split: str, image_size: int) -> Transform:
    """No augmentation: every split at the short side ``image_size``."""
    return Resize(image_size)


PRESETS: dict[str, Callable[[str, int], Transform]] = {
    "detr": detr_transforms, "synth": synth_transforms, "none": plain_transforms}


def build_transforms(preset: str, split: str, image_size: int) -> Transform:
    """Pixel-space transforms of augmentation ``preset`` (a key of :data:`PRESETS`) for ``split``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r} (known: {', '.join(PRESETS)})")
    return PRESETS[preset](split, image_size)
