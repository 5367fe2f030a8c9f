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


# ------------------------------------------------------------------- rendered multi-view scenes

#: The spheres :func:`render_spheres` draws: (centre, radius, RGB albedo), inside [-1, 1]^3.
SCENE_SPHERES = (
    ((0.0, 0.0, 0.0), 0.6, (0.85, 0.25, 0.15)),
    ((0.55, 0.45, 0.35), 0.3, (0.15, 0.35, 0.9)),
    ((-0.5, 0.3, -0.35), 0.35, (0.2, 0.8, 0.3)),
)
_LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) camera-to-world matrix, OpenGL convention (the camera looks down its -z axis)."""
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    z = eye - target
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=np.float64), z)
    if np.linalg.norm(x) < 1e-9:  # looking along ``up``: any perpendicular will do
        x = np.cross((0.0, 1.0, 0.0) if abs(z[1]) < 0.9 else (1.0, 0.0, 0.0), z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, eye
    return pose


def orbit_poses(n: int, radius: float = 4.0, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) cameras on the upper hemisphere (15 to 65 degrees up, golden-angle azimuths from
    a seeded start), looking at the origin with z up, as in nerf_synthetic."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.0, 2.0 * np.pi)
    poses = []
    for i in range(n):
        azimuth = start + i * np.pi * (3.0 - np.sqrt(5.0))
        elevation = np.radians(15.0 + 50.0 * ((i + 0.5) / n))
        eye = radius * np.array([np.cos(elevation) * np.cos(azimuth),
                                 np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])  # fmt: skip
        poses.append(look_at(eye))
    return np.stack(poses)


def pinhole_rays(c2w: np.ndarray, width: int, height: int,
                 camera_angle_x: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) origins and unit directions through pixel centres of a Blender camera (focal
    0.5 W / tan(angle / 2), principal point at the image centre)."""
    focal = 0.5 * width / np.tan(0.5 * camera_angle_x)
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    local = np.stack([(u - width / 2) / focal, -(v - height / 2) / focal, -np.ones_like(u)], -1)
    directions = local @ np.asarray(c2w)[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return np.broadcast_to(np.asarray(c2w)[:3, 3], directions.shape).copy(), directions


def render_spheres(origins: np.ndarray, directions: np.ndarray, spheres=SCENE_SPHERES) -> np.ndarray:
    """(..., 4) RGBA of unit rays by exact ray casting: the nearest sphere in front, Lambertian
    shaded (ambient 0.25 + 0.75 n.l) with alpha 1, or transparent black where nothing is hit."""
    origins, directions = np.asarray(origins, np.float64), np.asarray(directions, np.float64)
    best = np.full(origins.shape[:-1], np.inf)
    rgba = np.zeros((*origins.shape[:-1], 4))
    for centre, radius, albedo in spheres:
        offset = origins - np.asarray(centre)
        b = np.sum(offset * directions, axis=-1)
        disc = b * b - (np.sum(offset * offset, axis=-1) - radius * radius)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        hit = (disc > 0) & (t > 0) & (t < best)
        normal = (offset + t[..., None] * directions) / radius
        shade = 0.25 + 0.75 * np.clip(normal @ _LIGHT, 0.0, 1.0)
        best = np.where(hit, t, best)
        rgba[hit, :3] = (shade[..., None] * np.asarray(albedo))[hit]
        rgba[hit, 3] = 1.0
    return rgba


def write_spheres_scene(folder, n_train: int = 8, n_val: int = 2, size: int = 32,
                        camera_angle_x: float = 0.6911, radius: float = 4.0, seed: int = 0):
    """A tiny Blender-format scene of :data:`SCENE_SPHERES` (RGBA PNGs, ``train`` and ``val``
    splits) written into ``folder``; returns the folder as a Path."""
    from pathlib import Path

    from recon3d.io.scene import write_blender_scene

    poses = orbit_poses(n_train + n_val, radius=radius, seed=seed)
    for split, chosen in (("train", poses[:n_train]), ("val", poses[n_train:])):
        if len(chosen) == 0:
            continue
        images = np.stack([render_spheres(*pinhole_rays(p, size, size, camera_angle_x))
                           for p in chosen])  # fmt: skip
        write_blender_scene(folder, images, chosen, camera_angle_x, split)
    return Path(folder)
