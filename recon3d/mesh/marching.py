"""Marching cubes on canonical values (skimage, Lewiner) and the clean-up that keeps meshes manifold.

Numpy only. Input values are canonical (``u > 0`` outside, see :mod:`recon3d.mesh.grid`); vertices come
back as float64 padded indices and faces are counter-clockwise seen from outside. Blocks are triangulated
one by one with small local coordinates, which makes a vertex on a face shared by two blocks bit-identical
in both, so :func:`recon3d.mesh.weld.weld` can join blocks exactly by coordinates.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from recon3d.mesh.support import component_labels
from recon3d.mesh.weld import compact, weld

__all__ = ["compact", "empty_mesh", "largest_component", "triangulate_blocks", "triangulate_volume",
           "vertex_normals", "weld"]

ProgressFn = Callable[[str, float], None]
Mesh = tuple[np.ndarray, np.ndarray]  # vertices (V, 3) float64, faces (F, 3) int64


def empty_mesh() -> Mesh:
    """No vertices, no faces, with the usual shapes and dtypes."""
    return np.zeros((0, 3), dtype=np.float64), np.zeros((0, 3), dtype=np.int64)


def triangulate_volume(volume: np.ndarray) -> Mesh:
    """Lewiner marching cubes of a whole canonical volume at level 0 (empty if no sign change)."""
    if not volume.min() <= 0.0 < volume.max():
        return empty_mesh()
    from skimage.measure import marching_cubes  # 0.1 s of import that the default (table) path never needs

    verts, faces, _, _ = marching_cubes(volume, 0.0, method="lewiner")  # "descent": u < 0 is the object
    return verts.astype(np.float64), faces.astype(np.int64)


def triangulate_blocks(values: np.ndarray, origins: np.ndarray, progress: ProgressFn | None = None) -> Mesh:
    """Triangulate (K, b+1, b+1, b+1) blocks whose first vertex sits at padded index ``origins[k]``."""
    all_verts, all_faces, offset = [], [], 0
    step = max(1, len(values) // 50)
    for k, (volume, origin) in enumerate(zip(values, origins)):
        verts, faces = triangulate_volume(volume)
        all_verts.append(verts + origin)
        all_faces.append(faces + offset)
        offset += len(verts)
        if progress is not None and k % step == 0:
            progress("marching_cubes", k / len(values))
    if progress is not None:
        progress("marching_cubes", 1.0)
    if not all_verts:
        return empty_mesh()
    return np.concatenate(all_verts), np.concatenate(all_faces)


def largest_component(verts: np.ndarray, faces: np.ndarray) -> Mesh:
    """Keep the connected component (faces sharing vertices) with the most faces."""
    if len(faces) == 0:
        return empty_mesh()
    count, face_labels = component_labels(len(verts), faces)
    best = np.bincount(face_labels, minlength=count).argmax()
    return compact(verts, faces[face_labels == best])


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted face normals summed per vertex, unit length (float32; zero where undefined)."""
    corners = verts[faces]
    weighted = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # |n| = 2 * area
    normals = np.zeros_like(verts)
    for axis in range(3):
        for k in range(3):
            normals[:, axis] += np.bincount(faces[:, k], weights=weighted[:, axis], minlength=len(verts))
    return unit_rows(normals)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(N, 3) vectors scaled to unit length (float32), computed in float64; rows that are zero, NaN or
    overflow become zero."""
    v = np.nan_to_num(np.asarray(vectors, dtype=np.float64), nan=0.0)
    length = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, length, out=np.zeros_like(v), where=(length > 0) & np.isfinite(length)).astype(np.float32)
