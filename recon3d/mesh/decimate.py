"""Lighter meshes: quadric edge-collapse decimation (Garland & Heckbert 1997) with Open3D.

Open3D is imported only here and only when a target face count is asked for, so extraction never needs it
otherwise. The result is checked: a mesh that was watertight (closed, consistently oriented) before is
checked again after, and the caller is told when decimation opened it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon3d.errors import Recon3dError
from recon3d.types import TriMesh

#: ``--faces`` accepts at least this many faces (a closed surface needs 4; fewer than this is never useful).
MIN_FACES = 4


@dataclass
class Decimated:
    """A decimated mesh and what happened: faces before and after, and watertightness before and after."""

    mesh: TriMesh
    faces_before: int
    watertight_before: bool
    watertight: bool


def check_faces(faces: object) -> int:
    """``--faces N``: an integer of at least MIN_FACES, or one clear error."""
    if isinstance(faces, bool) or not isinstance(faces, int) or faces < MIN_FACES:
        raise Recon3dError(f"--faces must be an integer of at least {MIN_FACES}, got {faces}")
    return faces


def import_for_decimation():
    """Open3D, or one clear error saying what --faces needs."""
    from recon3d._open3d import import_open3d

    try:
        return import_open3d()
    except Recon3dError as exc:
        raise Recon3dError(f"--faces needs Open3D for its quadric decimation ({exc}); install open3d, or leave "
                           "--faces out") from None


def decimate(mesh: TriMesh, faces: int) -> Decimated:
    """``mesh`` with at most ``faces`` faces by quadric edge collapse, degenerate and duplicate faces and unused
    vertices removed. Normals and colours are dropped (the caller recomputes them at the new vertices). A mesh
    with no more than ``faces`` faces comes back as it is."""
    from recon3d.metrics import mesh_is_watertight

    check_faces(faces)
    watertight_before = mesh_is_watertight(mesh)
    if mesh.n_faces <= faces:
        return Decimated(mesh, mesh.n_faces, watertight_before, watertight_before)
    o3d = import_for_decimation()
    shape = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(mesh.vertices, np.float64)),
                                      o3d.utility.Vector3iVector(np.asarray(mesh.faces, np.int32)))
    light = shape.simplify_quadric_decimation(target_number_of_triangles=int(faces))
    light.remove_degenerate_triangles()
    light.remove_duplicated_triangles()
    light.remove_duplicated_vertices()
    light.remove_unreferenced_vertices()
    result = TriMesh(vertices=np.asarray(light.vertices, np.float64).copy(),
                     faces=np.asarray(light.triangles, np.int64).copy())
    return Decimated(result, mesh.n_faces, watertight_before, mesh_is_watertight(result))
