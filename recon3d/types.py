"""Plain data containers shared by io, fit, mesh and metrics (numpy only, no torch)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def __repr__(self) -> str:
        extras = [name for name, value in (("normals", self.vertex_normals), ("colours", self.vertex_colors))
                  if value is not None]
        return (f"TriMesh({self.n_vertices:,} vertices, {self.n_faces:,} faces"
                + (f", with {' and '.join(extras)}" if extras else "") + ")")

    def save(self, path: str | os.PathLike, fmt: str | None = None) -> Path:
        """Write the mesh atomically (OBJ, PLY, STL, OFF or GLB, by extension or ``fmt``); ``"-"``: stdout."""
        from recon3d.io.mesh import write_mesh

        write_mesh(path, self, fmt)
        return Path(path)

    def to_trimesh(self) -> Any:
        """A ``trimesh.Trimesh`` with the same vertices, faces, vertex normals and colours (not re-processed)."""
        import trimesh

        return trimesh.Trimesh(vertices=np.asarray(self.vertices, np.float64), faces=np.asarray(self.faces),
                               vertex_normals=self.vertex_normals, vertex_colors=self.vertex_colors, process=False)

    def to_open3d(self) -> Any:
        """An ``open3d.geometry.TriangleMesh`` (vertex normals and colours included when present)."""
        from recon3d._open3d import import_open3d

        o3d = import_open3d()
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(self.vertices, np.float64)),
                                         o3d.utility.Vector3iVector(np.asarray(self.faces, np.int32)))
        if self.vertex_normals is not None:
            mesh.vertex_normals = o3d.utility.Vector3dVector(np.asarray(self.vertex_normals, np.float64))
        if self.vertex_colors is not None:
            mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(self.vertex_colors, np.float64) / 255.0)
        return mesh

    @classmethod
    def from_trimesh(cls, mesh: Any) -> TriMesh:
        """A TriMesh from a ``trimesh.Trimesh`` (its vertex colours as RGB when it has them)."""
        colors = None
        visual = getattr(mesh, "visual", None)
        if getattr(visual, "kind", None) == "vertex":
            colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
        return cls(vertices=np.asarray(mesh.vertices, np.float64), faces=np.asarray(mesh.faces, np.int64),
                   vertex_colors=colors)
