"""``recon3d demo``: the whole pipeline on a scan the project makes itself.

A torus in millimetres, placed off the origin, sampled like a raw scan (noise, no normals), is
fitted, meshed and compared with the exact surface. It shows the pipeline end to end and that
meshes come back in the input's units and placement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon3d.console import info
from recon3d.fit.sdf import SDFOptions, fit_sdf
from recon3d.io.atomic import atomic_write_bytes
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


def make_demo_scan(n: int = 60_000, seed: int = 0) -> tuple[PointCloud, PointCloud]:
    """(raw scan without normals, exact reference samples), both in millimetres."""
    exact = sample_torus(n, major=MAJOR_MM, minor=MINOR_MM, seed=seed)
    exact.points = exact.points + OFFSET_MM
    scan = simulated_scan(exact, noise=0.05, seed=seed + 1)
    reference = sample_torus(200_000, major=MAJOR_MM, minor=MINOR_MM, seed=seed + 2)
    reference.points = reference.points + OFFSET_MM
    return scan, reference


def run_demo(folder: Path, device: torch.device, steps: int | None = None, resolution: int | None = None,
             show_progress: bool = True) -> dict[str, Any]:
    """Write scan, checkpoint, mesh and metrics into ``folder``; return the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    scan, reference = make_demo_scan()
    scan_path, ref_path = folder / "scan.ply", folder / "reference.ply"
    model_path, mesh_path = folder / "model.pt", folder / "mesh.ply"
    write_point_cloud(scan_path, scan)
    write_point_cloud(ref_path, reference)
    info(f"demo: wrote a simulated {len(scan):,}-point scan of a torus (mm, no normals) to {scan_path}")
    budget = steps if steps is not None else DEMO_STEPS.get(device.type, DEMO_STEPS["cpu"])
    fit = fit_sdf(scan, SDFOptions(steps=budget), model_path, device, source=str(scan_path),
                  show_progress=show_progress)
    mesh, stats = mesh_from_checkpoint(load_checkpoint(model_path), MeshOptions(resolution=resolution), device)
    write_mesh(mesh_path, mesh)
    metrics = evaluate(mesh, reference)
    summary = {"scan": str(scan_path), "checkpoint": str(model_path), "mesh": str(mesh_path),
               "fit_seconds": fit["seconds"], "extract_seconds": stats["seconds"].get("total"),
               "faces": stats["faces"], "metrics": metrics}
    atomic_write_bytes(folder / "metrics.json", (json.dumps(summary, indent=2) + "\n").encode())
    info(f"demo: chamfer-L1 {metrics['chamfer_l1'] * 100:.3f}% of the diagonal, "
         f"F-score@1% {metrics['fscore@1%']:.3f}, watertight {metrics['watertight']}; mesh in {mesh_path}")
    return summary
