"""3D camera geometry shared by the renderer, the dataset transforms and the 3D metric.

Frames (all right-handed, metres):
- camera frame (OpenCV): x right, y down, z forward along the optical axis;
- ground frame: the camera frame rotated so that y points along gravity (down) and the x-z plane is
  horizontal; the camera is pitched *down* by ``pitch`` radians about its x axis. Bird's-eye-view
  (BEV) coordinates are (x_g, z_g).

Yaw is a rotation about the gravity axis: an object's length axis points along
(cos yaw, sin yaw) in the (x_g, z_g) plane. A horizontal image flip maps x -> -x in both frames and
yaw -> pi - yaw.
"""
from __future__ import annotations

import numpy as np

__all__ = ["camera_to_ground", "ground_to_camera", "project", "wrap_angle", "flip_yaw"]


def camera_to_ground(points: np.ndarray, pitch: float) -> np.ndarray:
    """[..., 3] camera-frame points -> [..., 3] ground-frame points (x_g, y_g, z_g)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    c, s = np.cos(pitch), np.sin(pitch)
    return np.stack([x, c * y + s * z, -s * y + c * z], axis=-1)


def ground_to_camera(points: np.ndarray, pitch: float) -> np.ndarray:
    """Inverse of :func:`camera_to_ground`."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    c, s = np.cos(pitch), np.sin(pitch)
    return np.stack([x, c * y - s * z, s * y + c * z], axis=-1)


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """[..., 3] camera-frame points -> [..., 2] pixel coordinates (u, v), continuous, with pixel
    (i, j) covering [j, j+1) x [i, i+1)."""
    uvw = points @ np.asarray(intrinsics, dtype=np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def wrap_angle(a):
    """Angle(s) wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def flip_yaw(yaw):
    """Yaw after a horizontal flip (x -> -x): pi - yaw, wrapped."""
    return wrap_angle(np.pi - np.asarray(yaw))
