"""``recon3d sample-data``: small inputs for every command, made here, so a new user needs no download.

Writes into one folder:

* ``scan.ply``: a raw scan of a torus in millimetres (60,000 points, noise, no normals; the demo's scan)
  → ``fit-sdf``;
* ``shape.obj``: a closed mesh (a torus with a ball resting on it, about 25k faces) → ``fit-occupancy``;
* ``scene/``: that shape rendered as a Blender-format scene (``transforms_train.json`` and
  ``transforms_test.json``, 40 + 8 RGBA views of 100×100 pixels, textured, with masks) → ``fit-nerf``,
  ``fit-sdf``, ``fit-occupancy`` and ``render``; its ``mesh.ply`` is the exact surface for ``eval``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon3d.console import info
from recon3d.errors import Recon3dError
from recon3d.types import TriMesh

#: What ``sample-data`` writes, relative to its folder (the scene is a folder of its own).
SAMPLE_FILES = ("scan.ply", "shape.obj", "scene")
SCENE_VIEWS = (40, 8)
SCENE_SIZE = 100
SHAPE_RESOLUTION = 72


def sample_shape(resolution: int = SHAPE_RESOLUTION) -> TriMesh:
    """A closed, watertight mesh of a torus (radii 1 and 0.35) with a ball (radius 0.45) resting on it,
    extracted from their exact signed distances by recon3d's own marching cubes."""
    from recon3d.fields.surface import Surface
    from recon3d.mesh.extract import ExtractOptions, extract_mesh

    def distance(p: torch.Tensor) -> torch.Tensor:
        ring = torch.sqrt(torch.stack([torch.linalg.norm(p[:, :2], dim=1) - 1.0, p[:, 2]], 1).pow(2).sum(1)) - 0.35
        ball = torch.linalg.norm(p - torch.tensor([0.0, 1.0, 0.55]), dim=1) - 0.45
        return torch.minimum(ring, ball)

    bounds = np.array([[-1.5, -1.5, -0.5], [1.5, 1.6, 1.1]])
    result = extract_mesh(Surface(distance, 0.0, "below", lipschitz=1.0), bounds,
                          ExtractOptions(resolution=resolution, normals="none"), "cpu")
    return TriMesh(vertices=result.mesh.vertices, faces=result.mesh.faces)


def check_sample_folder(folder: Path, force: bool = False) -> None:
    """Refuse a folder that is a file, or one already holding sample files (unless ``force``)."""
    if folder.exists() and not folder.is_dir():
        raise Recon3dError(f"{folder}: exists and is not a folder; sample-data writes its files into a folder")
    for name in SAMPLE_FILES:
        path = folder / name
        if (path.exists() or path.is_symlink()) and not force:
            raise Recon3dError(f"{path}: exists; recon3d sample-data does not overwrite it without --force (or "
                               "choose another -o)")


def write_samples(folder: Path, force: bool = False, show_progress: bool = True, points: int = 60_000,
                  views: tuple[int, int] | None = None, size: int | None = None,
                  resolution: int | None = None) -> dict[str, Any]:
    """Write the sample scan (``points`` points), mesh (marching cubes at ``resolution``) and scene (``views``
    train and test views of ``size`` pixels square; None: the module's defaults) into ``folder``; return
    their paths."""
    views = SCENE_VIEWS if views is None else views
    size = SCENE_SIZE if size is None else size
    resolution = SHAPE_RESOLUTION if resolution is None else resolution
    from recon3d.console import progress_bar
    from recon3d.demo import make_demo_scan
    from recon3d.io.atomic import output_lock
    from recon3d.io.mesh import write_mesh
    from recon3d.io.pointcloud import write_point_cloud
    from recon3d.meshscene import scene_mesh, write_mesh_scene

    folder = Path(folder)
    check_sample_folder(folder, force)
    folder.mkdir(parents=True, exist_ok=True)
    scan_path, shape_path, scene_path = (folder / name for name in SAMPLE_FILES)
    with contextlib.ExitStack() as locks:
        for path in (scan_path, shape_path):
            locks.enter_context(output_lock(path))
        scan, _ = make_demo_scan(points)
        write_point_cloud(scan_path, scan)
        info(f"sample-data: wrote a simulated {len(scan):,}-point scan of a torus (mm, no normals) to {scan_path}")
        shape = sample_shape(resolution)
        write_mesh(shape_path, shape)
        info(f"sample-data: wrote a closed mesh of {shape.n_faces:,} faces to {shape_path}")
        train, test = views
        with progress_bar("sample-data: rendering the scene", train + test, disable=not show_progress) as advance:
            write_mesh_scene(scene_mesh(shape), scene_path, train, test, size, progress=advance,
                             extra={"source": "recon3d sample-data"})
        info(f"sample-data: wrote a scene of {train} + {test} views ({size}×{size}) to {scene_path}")
    return {"scan": str(scan_path), "mesh": str(shape_path), "scene": str(scene_path),
            "scene_mesh": str(scene_path / "mesh.ply")}
