"""The one vertex weld: vertices at the same position become one vertex."""

from __future__ import annotations

import numpy as np


def weld_vertices(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct positions (U, 3) in lexicographic order, index into them of each vertex (V,)).

    Exact comparison of coordinates: OBJ files split vertices along texture seams at bit-identical
    positions, and blocks of marching cubes share theirs.
    """
    vertices = np.asarray(vertices)
    if len(vertices) == 0:
        return vertices.reshape(0, 3), np.zeros(0, dtype=np.int64)
    order = np.lexsort(vertices.T[::-1])
    ordered = vertices[order]
    first = np.ones(len(vertices), dtype=bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    remap = np.empty(len(vertices), dtype=np.int64)
    remap[order] = np.cumsum(first) - 1
    return ordered[first], remap


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices at the same position and drop the faces that collapse, then unused vertices.

    Dropping a face whose corners merged is an edge collapse, which keeps a closed mesh closed.
    """
    if len(vertices) == 0:
        return np.zeros((0, 3), dtype=np.float64), np.zeros((0, 3), dtype=np.int64)
    distinct, remap = weld_vertices(vertices)
    faces = remap[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    return compact(distinct, faces[keep])


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses, renumbering faces."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces]
