"""Ray intersection with the benchmark's object shapes, in each object's local frame.

Local frame: x along the object's length axis, y along gravity (down), z along its width axis,
origin at the object's centre. Every function takes ray origins ``o`` and directions ``d``
([P, 3], local frame) and half extents ``(hl, hh, hw)`` (half length, half height, half width),
and returns ``t`` [P] (ray parameter of the first hit in front of the origin, ``inf`` for a miss)
and the outward surface normal [P, 3] at the hit (local frame, not normalised).
"""
from __future__ import annotations

import numpy as np

__all__ = ["SHAPES"]

_EPS = 1e-9


def _first_positive(*ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest positive candidate per ray and its index among ``ts``."""
    stack = np.stack([np.where(t > _EPS, t, np.inf) for t in ts])
    which = stack.argmin(0)
    return np.take_along_axis(stack, which[None], 0)[0], which


def _quadratic_roots(a, b, c):
    """Both real roots of a t^2 + b t + c = 0 (nan where none); a may be ~0 (linear case)."""
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.where(disc >= 0, disc, np.nan))
    safe_a = np.where(np.abs(a) > _EPS, a, np.nan)
    t1, t2 = (-b - sq) / (2 * safe_a), (-b + sq) / (2 * safe_a)
    lin = np.where(np.abs(b) > _EPS, -c / np.where(np.abs(b) > _EPS, b, 1.0), np.nan)
    return np.where(np.isnan(safe_a), lin, t1), np.where(np.isnan(safe_a), np.nan, t2)


def box(o, d, half):
    """Cuboid, slab method."""
    half = np.asarray(half)
    inv = 1.0 / np.where(np.abs(d) > _EPS, d, _EPS)
    t0, t1 = (-half - o) * inv, (half - o) * inv
    tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
    axis = tmin.argmax(1)
    t_near, t_far = tmin.max(1), tmax.min(1)
    hit = (t_near <= t_far) & (t_near > _EPS)
    normal = np.zeros_like(o)
    normal[np.arange(len(o)), axis] = -np.sign(d[np.arange(len(o)), axis])
    return np.where(hit, t_near, np.inf), normal


def sphere(o, d, half):
    r = half[0]
    t1, t2 = _quadratic_roots((d * d).sum(1), 2 * (o * d).sum(1), (o * o).sum(1) - r * r)
    t, _ = _first_positive(np.nan_to_num(t1, nan=-1.0), np.nan_to_num(t2, nan=-1.0))
    return t, o + np.where(np.isfinite(t), t, 0)[:, None] * d


def cylinder(o, d, half):
    """Vertical cylinder: side wall plus top and bottom caps."""
    r, hh = half[0], half[1]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2])
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - r * r
    cands = []
    for t in _quadratic_roots(a, b, c):
        y = o[:, 1] + t * d[:, 1]
        cands.append(np.where(np.abs(y) <= hh, np.nan_to_num(t, nan=-1.0), -1.0))
    for cap in (-hh, hh):
        t = (cap - o[:, 1]) / np.where(np.abs(d[:, 1]) > _EPS, d[:, 1], _EPS)
        p = o + t[:, None] * d
        cands.append(np.where(p[:, 0] ** 2 + p[:, 2] ** 2 <= r * r, t, -1.0))
    t, which = _first_positive(*cands)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    side = np.stack([p[:, 0], np.zeros(len(p)), p[:, 2]], 1)
    caps = np.stack([np.zeros(len(p)), np.where(which == 2, -1.0, 1.0), np.zeros(len(p))], 1)
    return t, np.where((which < 2)[:, None], side, caps)


def cone(o, d, half):
    """Upright cone: apex at the top (y = -hh), base disc of radius r at y = +hh."""
    r, hh = half[0], half[1]
    k2 = (r / (2 * hh)) ** 2
    oy = o[:, 1] + hh  # height below the apex
    a = d[:, 0] ** 2 + d[:, 2] ** 2 - k2 * d[:, 1] ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2] - k2 * oy * d[:, 1])
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - k2 * oy**2
    cands = []
    for t in _quadratic_roots(a, b, c):
        y = o[:, 1] + t * d[:, 1]
        cands.append(np.where((y >= -hh) & (y <= hh), np.nan_to_num(t, nan=-1.0), -1.0))
    t = (hh - o[:, 1]) / np.where(np.abs(d[:, 1]) > _EPS, d[:, 1], _EPS)
    p = o + t[:, None] * d
    cands.append(np.where(p[:, 0] ** 2 + p[:, 2] ** 2 <= r * r, t, -1.0))
    t, which = _first_positive(*cands)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    side = np.stack([p[:, 0], -k2 * (p[:, 1] + hh), p[:, 2]], 1)
    base = np.tile([0.0, 1.0, 0.0], (len(p), 1))
    return t, np.where((which < 2)[:, None], side, base)


# name -> (intersection function, yaw period: the rotation after which the shape looks the same)
SHAPES = {
    "box": (box, np.pi),
    "sphere": (sphere, None),
    "cylinder": (cylinder, None),
    "cone": (cone, None),
}
