"""Writing a posed scene: nerfstudio's ``transforms.json``, the sparse points as PLY (for viewers) and as
``sparse_points.npz`` (for depth supervision).

``transforms.json`` follows nerfstudio's ``ns-process-data`` output (nerfstudio/process_data/colmap_utils.py
``colmap_to_json``): OpenGL camera-to-world ``transform_matrix`` per frame, ``file_path`` relative to the
json, intrinsics ``fl_x fl_y cx cy w h`` with OpenCV ``k1 k2 p1 p2`` (global when the images share a camera,
else per frame), ``camera_model``, and ``ply_file_path`` naming the sparse points. recon3d adds
``sparse_points`` (the npz, recon3d.io.colmap.SparsePoints) and ``aabb``, the region of interest
[[xmin, ymin, zmin], [xmax, ymax, zmax]] in world units, which recon3d's scene reader uses as the scene's
box. Unlike nerfstudio, recon3d keeps COLMAP's world frame (no re-orientation or rescaling), so the
COLMAP model written beside it (``colmap/sparse/0``) and the json agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from recon3d.io.atomic import atomic_write_bytes
from recon3d.io.colmap import SparsePoints, save_sparse

#: File names inside a scene folder that ``recon3d poses`` writes.
TRANSFORMS = "transforms.json"
PLY_NAME = "sparse_pc.ply"
SPARSE_NAME = "sparse_points.npz"


def ply_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
    """A binary little-endian PLY of points (P, 3) as float32 ``x y z`` with uint8 ``red green blue``."""
    header = ("ply\nformat binary_little_endian 1.0\ncomment recon3d sparse points\n"
              f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n").encode("ascii")
    table = np.zeros(len(points), np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]))
    table["xyz"], table["rgb"] = points, colors
    return header + table.tobytes()


def write_points(folder: Path, sparse: SparsePoints) -> None:
    """``sparse_pc.ply`` and ``sparse_points.npz`` into ``folder``."""
    atomic_write_bytes(folder / PLY_NAME, ply_bytes(sparse.points, sparse.colors))
    save_sparse(folder / SPARSE_NAME, sparse)


def write_transforms(folder: Path, meta: dict[str, Any], sparse: SparsePoints) -> Path:
    """The scene's json (``meta`` with ``ply_file_path`` and ``sparse_points`` added) and its point files."""
    meta = {**meta, "ply_file_path": PLY_NAME, "sparse_points": SPARSE_NAME}
    write_points(folder, sparse)
    path = folder / TRANSFORMS
    atomic_write_bytes(path, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return path


def absolute_paths(meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of a transforms dict whose file names (frames' ``file_path``, ``sparse_points``,
    ``ply_file_path``, ``mask_path``) are absolute, so the copy can live in another folder."""
    def absolute(name: Any) -> Any:
        if not isinstance(name, str) or not name or os.path.isabs(name):
            return name
        return os.path.normpath(str(folder.resolve() / name))

    copy = {key: value for key, value in meta.items()}
    for key in ("sparse_points", "ply_file_path"):
        if key in copy:
            copy[key] = absolute(copy[key])
    frames = copy.get("frames")
    if isinstance(frames, list):
        copy["frames"] = [{**frame, **{key: absolute(frame[key]) for key in ("file_path", "mask_path")
                                       if key in frame}} if isinstance(frame, dict) else frame for frame in frames]
    return copy


def read_json(path: Path) -> dict[str, Any]:
    """A transforms json as a dict (the scene reader has already checked it)."""
    return json.loads(path.read_text(encoding="utf-8"))


def mean_error(sparse: SparsePoints) -> float:
    """Mean reprojection error of the observations, pixels (NaN when there are none)."""
    return float(np.mean(sparse.obs_error)) if len(sparse.obs_error) else float("nan")

