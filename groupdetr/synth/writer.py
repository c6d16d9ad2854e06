"""Write the embedded benchmark to disk: PNG images and COCO JSON with 3D extras.

Determinism: image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, s, i])``
alone, so the files do not depend on the number of worker processes or on generation order; JSON is
written with sorted keys and rounded floats. A finished dataset carries ``synth.json`` (settings
and counts); generating again with the same settings is a no-op, with other settings an error
unless ``force``. Generation happens in a sibling temporary folder that replaces the target only
when complete, so an interrupted run never leaves a half dataset behind.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from groupdetr.config import DataConfig
from groupdetr.errors import SynthError
from groupdetr.geometry import ground_to_camera
from groupdetr.synth.scene import SceneSettings, categories_json, render, sample_scene

__all__ = ["generate", "render_record", "SPLITS", "SynthError", "FORMAT_VERSION"]

log = logging.getLogger("groupdetr.synth")
SPLITS = {"train": 0, "val": 1}
FORMAT_VERSION = 1


def _extent(mask: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of a boolean mask's pixels (pixel j covers [j, j+1))."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def _r(x, nd: int = 6):
    return [round(float(v), nd) for v in np.ravel(x)]


def render_record(settings: SceneSettings, min_visible: int, seed: int, split: str, index: int):
    """Render image ``index`` of ``split``.

    Returns:
        (PNG bytes, COCO image dict without id, list of annotation dicts without ids, number of
        objects rendered but not annotated because fewer than ``min_visible`` pixels show).
    """
    rng = np.random.default_rng([seed, SPLITS[split], index])
    scene = sample_scene(rng, settings)
    image, instance, amodal = render(scene, settings, rng)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    size = settings.image_size
    info = {"file_name": f"{index:06d}.png", "width": size, "height": size,
            "intrinsics": [_r(row) for row in scene.intrinsics], "camera_pitch": round(scene.pitch, 6),
            "camera_height": round(scene.height, 6)}
    anns, hidden = [], 0
    for m, cat in enumerate(scene.categories):
        visible = instance == m
        pixels = int(visible.sum())
        if pixels < min_visible:
            hidden += 1
            continue
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        anns.append({
            "category_id": int(cat), "bbox": _extent(visible), "area": pixels, "iscrowd": 0,
            "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
            "bbox_amodal": _extent(amodal[m]),
            "center_3d": _r(ground_to_camera(scene.centres[m], scene.pitch), 5),
            "dims_3d": _r(scene.dims[m], 5), "yaw_3d": round(float(scene.yaws[m]), 6),
            "visibility": round(pixels / int(amodal[m].sum()), 4),
        })
    return buf.getvalue(), info, anns, hidden


def _render_task(task):
    return render_record(*task)


def _settings(data: DataConfig) -> SceneSettings:
    sy = data.synth
    return SceneSettings(image_size=data.image_size, min_objects=sy.min_objects, max_objects=sy.max_objects,
                         occlusion=sy.occlusion, clutter=sy.clutter, noise=sy.noise)


def _manifest(data: DataConfig) -> dict:
    return {"format_version": FORMAT_VERSION, "image_size": data.image_size, "synth": asdict(data.synth)}


def _write_split(tmp: Path, split: str, count: int, data: DataConfig, workers: int) -> dict:
    settings, sy = _settings(data), data.synth
    (tmp / split).mkdir(parents=True)
    tasks = [(settings, sy.min_visible_pixels, sy.seed, split, i) for i in range(count)]
    images, annotations, hidden = [], [], 0
    with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
        for i, (png, info, anns, n_hidden) in enumerate(pool.map(_render_task, tasks, chunksize=16)):
            (tmp / split / info["file_name"]).write_bytes(png)
            images.append({"id": i + 1, **info})
            for a in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a})
            hidden += n_hidden
    coco = {"info": {"description": "groupdetr embedded benchmark", "split": split, "unannotated_objects": hidden,
                     **_manifest(data)},
            "images": images, "annotations": annotations, "categories": categories_json()}
    (tmp / "annotations").mkdir(exist_ok=True)
    (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco, sort_keys=True, separators=(",", ":")))
    return {"images": count, "annotations": len(annotations), "unannotated_objects": hidden}


class _Inline:
    """Stand-in for a process pool when generating in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


def generate(data: DataConfig, root: str | Path, workers: int = 1, force: bool = False) -> dict:
    """Render the benchmark described by ``data`` into ``root`` (see module docstring).

    Returns the manifest (per-split counts) plus, when it rendered, ``seconds``,
    ``images_per_second`` and ``workers``.
    """
    root = Path(root)
    manifest_file = root / "synth.json"
    wanted = _manifest(data)
    if manifest_file.is_file():
        have = json.loads(manifest_file.read_text())
        if {k: have.get(k) for k in wanted} == wanted:
            log.info("synth: %s already holds this benchmark; nothing to do", root)
            return have
        if not force:
            raise SynthError(f"{root} holds an embedded benchmark with other settings; use --force to replace it")
    elif root.exists() and any(root.iterdir()) and not force:
        raise SynthError(f"{root} exists and is not an embedded benchmark; choose another folder or use --force")
    tmp = root.with_name(root.name + ".tmp-synth")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    counts = {split: _write_split(tmp, split, n, data, workers)
              for split, n in (("train", data.synth.num_train), ("val", data.synth.num_val))}
    seconds = time.perf_counter() - start
    total = sum(c["images"] for c in counts.values())
    manifest = {**wanted, "splits": counts}
    (tmp / "synth.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))  # no timings: files stay deterministic
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return {**manifest, "seconds": round(seconds, 2), "images_per_second": round(total / seconds, 1), "workers": workers}
