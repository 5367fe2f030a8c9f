"""Procedural example data with exact answers: analytic shapes and simulated scans.

Used by ``recon3d demo``, the tests and the benchmarks, so nothing external is needed to try the
tool or to check it against references that cannot lie.
"""

from __future__ import annotations

import numpy as np

from recon3d.types import PointCloud


def sphere_sdf(points: np.ndarray, radius: float = 1.0, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Exact signed distance to a sphere (negative inside)."""
    return np.linalg.norm(points - np.asarray(center), axis=-1) - radius


def torus_sdf(points: np.ndarray, major: float = 1.0, minor: float = 0.35) -> np.ndarray:
    """Exact signed distance to a torus around the z axis."""
    ring = np.linalg.norm(points[..., :2], axis=-1) - major
    return np.sqrt(ring**2 + points[..., 2] ** 2) - minor


def sample_sphere(n: int, radius: float = 1.0, center=(0.0, 0.0, 0.0), seed: int = 0) -> PointCloud:
    """Uniform points on a sphere with exact outward normals."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return PointCloud(points=d * radius + np.asarray(center), normals=d.astype(np.float32))


def sample_torus(n: int, major: float = 1.0, minor: float = 0.35, seed: int = 0) -> PointCloud:
    """Area-uniform points on a torus (rejection on the tube angle) with exact outward normals."""
    rng = np.random.default_rng(seed)
    out_u, out_v = [], []
    count = 0
    while count < n:
        u = rng.uniform(0, 2 * np.pi, 2 * n)
        v = rng.uniform(0, 2 * np.pi, 2 * n)
        keep = rng.uniform(0, major + minor, 2 * n) < major + minor * np.cos(v)
        out_u.append(u[keep])
        out_v.append(v[keep])
        count += int(keep.sum())
    u = np.concatenate(out_u)[:n]
    v = np.concatenate(out_v)[:n]
    normals = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
    centre = np.stack([major * np.cos(u), major * np.sin(u), np.zeros_like(u)], axis=1)
    return PointCloud(points=centre + minor * normals, normals=normals.astype(np.float32))


def simulated_scan(cloud: PointCloud, noise: float = 0.0, keep_normals: bool = False,
                   view: tuple[float, float, float] | None = None, seed: int = 0) -> PointCloud:
    """A scan-like copy: optional Gaussian noise (in the cloud's units) along random directions,
    normals dropped unless asked, and, with ``view``, only the points facing that direction (a
    one-sided scan with a hole behind)."""
    rng = np.random.default_rng(seed)
    points, normals = cloud.points.copy(), cloud.normals
    if view is not None and normals is not None:
        facing = normals @ np.asarray(view, dtype=np.float32) > -0.2
        points, normals = points[facing], normals[facing]
    if noise > 0:
        points = points + rng.normal(scale=noise, size=points.shape)
    return PointCloud(points=points, normals=normals if keep_normals else None)
