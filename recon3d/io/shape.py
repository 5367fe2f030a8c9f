"""Read 'a shape': a mesh when the file has faces, a point cloud otherwise (``eval``); a mesh or labelled
points (``fit-occupancy``)."""

from __future__ import annotations

import os
from pathlib import Path

from recon3d.errors import InputError
from recon3d.io.labelled import LabelledPoints, read_labelled_points
from recon3d.io.mesh import MESH_EXTENSIONS, SideFileError, read_mesh
from recon3d.io.pointcloud import POINT_CLOUD_EXTENSIONS, read_point_cloud, require_file
from recon3d.types import PointCloud, TriMesh


def read_shape(path: str | os.PathLike) -> TriMesh | PointCloud:
    """A TriMesh if ``path`` is a mesh file with faces, else its points as a PointCloud."""
    path = require_file(path)
    ext = path.suffix.lower()
    if ext in MESH_EXTENSIONS and _may_have_faces(path):
        try:
            return read_mesh(path)
        except SideFileError:
            raise
        except InputError:
            if ext not in POINT_CLOUD_EXTENSIONS:
                raise
    if ext in POINT_CLOUD_EXTENSIONS:
        return read_point_cloud(path)
    raise InputError(f"{path}: unknown extension '{path.suffix}' (meshes: {', '.join(MESH_EXTENSIONS)}; "
                     f"point clouds: {', '.join(POINT_CLOUD_EXTENSIONS)})")


def _may_have_faces(path: Path) -> bool:
    """Cheap look at PLY/OBJ/OFF headers so point-cloud files skip the mesh parser."""
    ext = path.suffix.lower()
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if ext == ".ply":
        header = head.split(b"end_header", 1)[0]
        for line in header.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"face":
                return parts[2] != b"0"
        return False
    if ext == ".obj":
        with open(path, "rb") as handle:
            return any(line.startswith(b"f ") for line in handle)
    if ext == ".off":
        words = [w for line in head.splitlines() if not line.strip().startswith(b"#") for w in line.split()]
        if words and words[0].endswith(b"OFF"):
            words = words[1:]
        return len(words) >= 2 and words[1] not in (b"0",)
    return True


def read_occupancy_input(path: str | os.PathLike) -> TriMesh | LabelledPoints:
    """What fit-occupancy learns from: a mesh, or Occupancy Networks' labelled ``points.npz``."""
    path = require_file(path)
    ext = path.suffix.lower()
    if ext == ".npz":
        return read_labelled_points(path)
    if ext in MESH_EXTENSIONS:
        if not _may_have_faces(path):
            raise InputError(f"{path}: has no faces; fit-occupancy needs a mesh (for a point cloud use fit-sdf)")
        return read_mesh(path)
    raise InputError(f"{path}: unknown extension '{path.suffix}' (meshes: {', '.join(MESH_EXTENSIONS)}; "
                     "labelled points: .npz with points and occupancies)")
