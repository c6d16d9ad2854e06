"""Procedural scenes in the spirit of CLEVR, rendered by ray casting with a depth buffer.

A pinhole camera at height ``H`` looks down by ``pitch`` at a textured ground plane with clutter
decals; objects of 4 shapes x 2 sizes (8 categories) stand on the plane with random colour, yaw
and scale. Every pixel's nearest surface wins (real occlusion), and the same pass yields the
instance-id buffer from which masks, visible boxes and areas are read. Shading is Lambertian from
one directional light plus ambient; there are no cast shadows. See ``docs/annotation-format.md``
for frames and labels and ``groupdetr/geometry.py`` for the camera/ground frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from groupdetr.geometry import ground_to_camera, project
from groupdetr.synth.primitives import SHAPES

__all__ = ["CATEGORIES", "SceneSettings", "Scene", "sample_scene", "render", "categories_json"]

# (shape, size name, size scale in metres, dims (w, h, l) per unit scale)
_SHAPE_DIMS = {"box": (1.0, 0.8, 1.6), "sphere": (1.0, 1.0, 1.0), "cylinder": (1.0, 1.2, 1.0), "cone": (1.0, 1.3, 1.0)}
_SIZES = {"small": 0.35, "large": 0.7}
CATEGORIES = [
    {"id": i + 1, "name": f"{size} {shape}", "shape": shape, "size": size}
    for i, (size, shape) in enumerate((s, sh) for s in _SIZES for sh in _SHAPE_DIMS)
]


def categories_json() -> list[dict]:
    """COCO ``categories`` with the synth extras (``yaw_period`` None for symmetric shapes)."""
    return [dict(c, supercategory=c["shape"], yaw_period=SHAPES[c["shape"]][1]) for c in CATEGORIES]


@dataclass(frozen=True)
class SceneSettings:
    """Difficulty knobs (from ``data.synth`` in the config)."""

    image_size: int = 128
    min_objects: int = 3
    max_objects: int = 12
    occlusion: float = 0.3  # probability that an object is placed right behind an earlier one
    clutter: int = 4  # distractor decals on the ground (not objects)
    noise: float = 0.02  # pixel noise std, fraction of the 0..255 range
    fov_deg: float = 50.0


@dataclass
class Scene:
    """Camera and objects of one image (ground frame unless said otherwise)."""

    intrinsics: np.ndarray  # [3, 3]
    pitch: float
    height: float
    light: np.ndarray  # [3] unit vector from the scene towards the light, ground frame (y down)
    ground_colour: np.ndarray  # [3] in 0..1
    checker: float  # checker cell size (m)
    decals: list  # (x, z, radius, colour)
    categories: np.ndarray  # [M] category ids
    centres: np.ndarray  # [M, 3] ground frame
    dims: np.ndarray  # [M, 3] (w, h, l)
    yaws: np.ndarray  # [M]
    colours: np.ndarray  # [M, 3]


def _intrinsics(size: int, fov_deg: float) -> np.ndarray:
    f = size / (2 * math.tan(math.radians(fov_deg) / 2))
    return np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])


def _ground_point(rng, scene_k, pitch, height, size) -> tuple[float, float]:
    """Where the ray of a random pixel in the lower 70 % of the image meets the ground."""
    u, v = rng.uniform(0.08 * size, 0.92 * size), rng.uniform(0.35 * size, 0.95 * size)
    d = np.linalg.solve(scene_k, [u, v, 1.0])
    c, s = math.cos(pitch), math.sin(pitch)
    dg = np.array([d[0], c * d[1] + s * d[2], -s * d[1] + c * d[2]])  # camera -> ground frame
    t = height / dg[1]
    return float(t * dg[0]), float(t * dg[2])


def _footprint(dims) -> float:
    return 0.5 * math.hypot(dims[0], dims[2])


def sample_scene(rng: np.random.Generator, s: SceneSettings) -> Scene:
    """Draw a camera, a ground and 'min..max' objects that stand on the ground without
    interpenetrating and whose centres project inside the image."""
    pitch, height = math.radians(rng.uniform(25, 35)), rng.uniform(2.6, 3.4)
    k = _intrinsics(s.image_size, s.fov_deg)
    n = int(rng.integers(s.min_objects, s.max_objects + 1))
    cats, centres, dims, yaws = [], [], [], []
    for _ in range(50 * n):
        if len(cats) == n:
            break
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        scale = _SIZES[cat["size"]] * rng.uniform(0.85, 1.15)
        dim = np.array(_SHAPE_DIMS[cat["shape"]]) * scale
        if centres and rng.random() < s.occlusion:
            # Right behind an earlier object along the viewing ray: guaranteed partial occlusion.
            ref = centres[int(rng.integers(len(centres)))]
            dist = math.hypot(ref[0], ref[2])
            push = (_footprint(dim) + rng.uniform(0.4, 1.2)) / dist + 1
            x, z = ref[0] * push + rng.normal(0, 0.15), ref[2] * push
        else:
            x, z = _ground_point(rng, k, pitch, height, s.image_size)
        centre = np.array([x, height - dim[1] / 2, z])
        if any(math.hypot(x - c[0], z - c[2]) < 1.05 * (_footprint(dim) + _footprint(d)) for c, d in zip(centres, dims)):
            continue
        u, v = project(ground_to_camera(centre, pitch), k)
        if not (2 <= u <= s.image_size - 2 and 2 <= v <= s.image_size - 2):
            continue
        cats.append(cat["id"]), centres.append(centre), dims.append(dim), yaws.append(rng.uniform(-math.pi, math.pi))
    hsv = np.stack([rng.uniform(0, 1, len(cats)), rng.uniform(0.45, 0.95, len(cats)), rng.uniform(0.55, 1, len(cats))], 1)
    light = np.array([rng.uniform(-0.6, 0.6), -1.0, rng.uniform(-0.8, 0.2)])
    decals = [(*_ground_point(rng, k, pitch, height, s.image_size), rng.uniform(0.1, 0.5), rng.uniform(0, 1, 3))
              for _ in range(s.clutter)]
    return Scene(
        intrinsics=k, pitch=pitch, height=height, light=light / np.linalg.norm(light),
        ground_colour=rng.uniform(0.25, 0.75, 3), checker=rng.uniform(0.3, 1.2), decals=decals,
        categories=np.array(cats, dtype=np.int64), centres=np.array(centres).reshape(-1, 3),
        dims=np.array(dims).reshape(-1, 3), yaws=np.array(yaws), colours=_hsv_to_rgb(hsv),
    )


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[:, 0] * 6, hsv[:, 1], hsv[:, 2]
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(i))]


def _rays(scene: Scene, size: int) -> np.ndarray:
    """[S, S, 3] ray directions (ground frame) through pixel centres; origin is the camera."""
    j, i = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    pix = np.stack([j, i, np.ones_like(i)], -1)
    d_cam = pix @ np.linalg.inv(scene.intrinsics).T
    c, s = math.cos(scene.pitch), math.sin(scene.pitch)
    return np.stack([d_cam[..., 0], c * d_cam[..., 1] + s * d_cam[..., 2], -s * d_cam[..., 1] + c * d_cam[..., 2]], -1)


def _object_rect(scene: Scene, m: int, size: int):
    """Pixel rectangle (row0, row1, col0, col1) covering object m's bounding cuboid, clipped."""
    w, h, l = scene.dims[m]
    cy, sy = math.cos(scene.yaws[m]), math.sin(scene.yaws[m])
    corners = []
    for a in (-l / 2, l / 2):
        for b in (-w / 2, w / 2):
            for c in (-h / 2, h / 2):
                corners.append(scene.centres[m] + np.array([a * cy - b * sy, c, a * sy + b * cy]))
    uv = project(ground_to_camera(np.array(corners), scene.pitch), scene.intrinsics)
    c0, r0 = np.floor(uv.min(0)).astype(int) - 1
    c1, r1 = np.ceil(uv.max(0)).astype(int) + 1
    return max(r0, 0), min(r1, size), max(c0, 0), min(c1, size)


def _to_local(vec: np.ndarray, yaw: float) -> np.ndarray:
    """Ground-frame vectors [P, 3] -> object-local (length, down, width) components."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([vec[:, 0] * c + vec[:, 2] * s, vec[:, 1], -vec[:, 0] * s + vec[:, 2] * c], 1)


def _to_ground(vec: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([vec[:, 0] * c - vec[:, 2] * s, vec[:, 1], vec[:, 0] * s + vec[:, 2] * c], 1)


def render(scene: Scene, s: SceneSettings, rng: np.random.Generator):
    """Render one scene.

    Returns:
        image: [S, S, 3] uint8.
        instance: [S, S] int32, index of the visible object per pixel (-1 = background).
        amodal: list of [S, S] bool, each object's full silhouette ignoring occluders.
    """
    size = s.image_size
    rays = _rays(scene, size)
    depth = np.full((size, size), np.inf)
    down = rays[..., 1]
    ground_t = np.where(down > 1e-9, scene.height / np.where(down > 1e-9, down, 1.0), np.inf)
    depth[:] = ground_t
    instance = np.full((size, size), -1, dtype=np.int32)
    normals = np.zeros((size, size, 3))
    amodal = []
    for m in range(len(scene.categories)):
        r0, r1, c0, c1 = _object_rect(scene, m, size)
        full = np.zeros((size, size), dtype=bool)
        if r0 < r1 and c0 < c1:
            d = rays[r0:r1, c0:c1].reshape(-1, 3)
            shape = next(c["shape"] for c in CATEGORIES if c["id"] == scene.categories[m])
            w, h, l = scene.dims[m]
            o = _to_local(-np.broadcast_to(scene.centres[m], d.shape), scene.yaws[m])
            t, n = SHAPES[shape][0](o, _to_local(d, scene.yaws[m]), (l / 2, h / 2, w / 2))
            t = t.reshape(r1 - r0, c1 - c0)
            full[r0:r1, c0:c1] = np.isfinite(t)
            closer = t < depth[r0:r1, c0:c1]
            depth[r0:r1, c0:c1] = np.where(closer, t, depth[r0:r1, c0:c1])
            instance[r0:r1, c0:c1][closer] = m
            normals[r0:r1, c0:c1][closer] = _to_ground(n, scene.yaws[m]).reshape(r1 - r0, c1 - c0, 3)[closer]
        amodal.append(full)
    image = _shade(scene, s, rng, rays, ground_t, instance, normals)
    return image, instance, amodal


def _shade(scene, s, rng, rays, ground_t, instance, normals) -> np.ndarray:
    """Lambertian objects, checker-textured ground with decals, sky gradient, pixel noise."""
    size = s.image_size
    img = np.empty((size, size, 3))
    # sky: vertical gradient (visible only above the horizon)
    img[:] = (np.linspace(0.75, 0.95, size)[:, None, None] * np.array([0.75, 0.85, 1.0]))
    ground = np.isfinite(ground_t) & (instance < 0)
    hit = rays * np.where(np.isfinite(ground_t), ground_t, 0)[..., None]
    gx, gz = hit[..., 0], hit[..., 2]
    cell = (np.floor(gx / scene.checker) + np.floor(gz / scene.checker)) % 2
    tex = scene.ground_colour * (0.85 + 0.15 * cell)[..., None]
    for x, z, radius, colour in scene.decals:
        on = (gx - x) ** 2 + (gz - z) ** 2 < radius**2
        tex = np.where(on[..., None], colour * 0.8 + 0.1, tex)
    img[ground] = tex[ground]
    obj = instance >= 0
    n = normals[obj]
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    lambert = np.clip(n @ scene.light, 0, 1)  # scene.light points towards the light
    img[obj] = scene.colours[instance[obj]] * (0.35 + 0.65 * lambert)[:, None]
    img += rng.normal(0, s.noise, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
