"""``recon3d demo``: the whole pipeline on a scan the project makes itself.

A torus in millimetres, placed off the origin, sampled like a raw scan (noise, no normals), is
fitted, meshed and compared with the exact surface. It shows the pipeline end to end and that
meshes come back in the input's units and placement.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon3d.api import extraction_progress
from recon3d.console import info
from recon3d.errors import Recon3dError
from recon3d.fit.presets import check_steps
from recon3d.fit.sdf import SDFOptions, fit_sdf
from recon3d.io.atomic import atomic_write_bytes, check_output, json_text, output_lock
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.mesh import write_mesh
from recon3d.io.pointcloud import write_point_cloud
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint
from recon3d.metrics import evaluate
from recon3d.synthetic import sample_torus, simulated_scan
from recon3d.types import PointCloud

MAJOR_MM, MINOR_MM = 40.0, 14.0
OFFSET_MM = np.array([100.0, 50.0, 20.0])
DEMO_STEPS = {"cpu": 600, "cuda": 1000}
#: The files the demo writes into its folder, in order.
DEMO_FILES = ("scan.ply", "reference.ply", "model.pt", "mesh.ply", "metrics.json")


def make_demo_scan(n: int = 60_000, seed: int = 0) -> tuple[PointCloud, PointCloud]:
    """(raw scan without normals, exact reference samples), both in millimetres."""
    exact = sample_torus(n, major=MAJOR_MM, minor=MINOR_MM, seed=seed)
    exact.points = exact.points + OFFSET_MM
    scan = simulated_scan(exact, noise=0.05, seed=seed + 1)
    reference = sample_torus(200_000, major=MAJOR_MM, minor=MINOR_MM, seed=seed + 2)
    reference.points = reference.points + OFFSET_MM
    return scan, reference


def check_demo_folder(folder: Path, force: bool = False) -> None:
    """Refuse, before anything is written, a folder that is a file, or one holding any of DEMO_FILES
    (unless ``force``), or a demo file that cannot be written (a folder, FIFO, device)."""
    if folder.exists() and not folder.is_dir():
        raise Recon3dError(f"{folder}: exists and is not a folder; the demo writes its files into a folder")
    if not folder.exists():
        return
    for name in DEMO_FILES:
        path = folder / name
        if path.exists() or path.is_symlink():
            check_output(path, what=f"demo's {name}")
            if not force:
                raise Recon3dError(f"{path}: exists; recon3d demo does not overwrite it without --force "
                                   "(or choose another -o)")


def run_demo(folder: Path, device: torch.device, steps: int | None = None, resolution: int | None = None,
             show_progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Write scan, checkpoint, mesh and metrics into ``folder``; return the summary.

    Existing demo files in ``folder`` are refused unless ``force``; options are checked and every demo
    file is locked (:func:`recon3d.io.atomic.output_lock`) before anything is written. A failed write
    says which files were already written.
    """
    budget = check_steps(steps if steps is not None else DEMO_STEPS.get(device.type, DEMO_STEPS["cpu"]))
    mesh_options = MeshOptions(resolution=resolution)
    mesh_options.validate()
    check_demo_folder(folder, force)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in DEMO_FILES}
    written: list[Path] = []

    def write(path: Path, action: Callable[[], Any]) -> Any:
        """Run the step that writes ``path``; on failure name the files already written."""
        try:
            result = action()
        except Recon3dError as exc:
            if written:
                raise Recon3dError(f"{exc} (already written: {', '.join(str(p) for p in written)})") from exc
            raise
        written.append(path)
        return result

    with contextlib.ExitStack() as locks:
        for path in paths.values():
            locks.enter_context(output_lock(path))
        scan, reference = make_demo_scan()
        scan_path, ref_path = paths["scan.ply"], paths["reference.ply"]
        model_path, mesh_path = paths["model.pt"], paths["mesh.ply"]
        write(scan_path, lambda: write_point_cloud(scan_path, scan))
        write(ref_path, lambda: write_point_cloud(ref_path, reference))
        info(f"demo: wrote a simulated {len(scan):,}-point scan of a torus (mm, no normals) to {scan_path}")
        fit = write(model_path, lambda: fit_sdf(scan, SDFOptions(steps=budget), model_path, device,
                                                source=str(scan_path), show_progress=show_progress))
        with extraction_progress(enabled=show_progress) as progress:
            mesh, stats = mesh_from_checkpoint(load_checkpoint(model_path), mesh_options, device, progress=progress)
        write(mesh_path, lambda: write_mesh(mesh_path, mesh))
        metrics = evaluate(mesh, reference)
        summary = {"scan": str(scan_path), "checkpoint": str(model_path), "mesh": str(mesh_path),
                   "fit_seconds": fit["seconds"], "extract_seconds": stats["seconds"].get("total"),
                   "faces": stats["faces"], "metrics": metrics}
        text = json_text(summary, indent=2) + "\n"
        write(paths["metrics.json"], lambda: atomic_write_bytes(paths["metrics.json"], text.encode()))
    info(f"demo: chamfer-L1 {metrics['chamfer_l1'] * 100:.3f}% of the diagonal, "
         f"F-score@1% {metrics['fscore@1%']:.3f}, watertight {metrics['watertight']}; mesh in {mesh_path}")
    return summary

