"""Plain data containers shared by io, fit, mesh and metrics (numpy only, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PointCloud:
    """Points in the file's own units.

    points:  (N, 3) float64, finite.
    normals: (N, 3) float32 unit vectors, or None when the file has none.
    """

    points: np.ndarray
    normals: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass
class TriMesh:
    """A triangle mesh.

    vertices: (V, 3) float64; faces: (F, 3) int64 indices into vertices (counter-clockwise seen
    from outside, so normals point out); vertex_normals: (V, 3) float32 or None;
    vertex_colors: (V, 3) uint8 RGB or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_normals: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])
