"""Scale check: a large scan through fit-sdf and a large extraction, with peak memory.

    python benchmarks/scale.py --points 10000000 --resolution 1024 --device cuda   # the H200 check
    python benchmarks/scale.py --points 2000000 --resolution 256 --device cpu      # this CPU

Points are sampled (with normals) from a closed test mesh, written to a binary PLY and read back
through the normal reader, so the whole path (read → normalise → fit → extract) is exercised. Reports
seconds and peak memory: the process's peak resident set (host) and torch's peak allocation (GPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recon3d.device import resolve_device, synchronize  # noqa: E402
from recon3d.fit.sdf import SDFOptions, fit_sdf  # noqa: E402
from recon3d.io.checkpoint import load_checkpoint  # noqa: E402
from recon3d.io.mesh import read_mesh  # noqa: E402
from recon3d.io.pointcloud import read_point_cloud, write_point_cloud  # noqa: E402
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint  # noqa: E402
from recon3d.metrics import mesh_is_watertight, sample_surface  # noqa: E402
from recon3d.types import PointCloud  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def gpu_peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default="data/meshes/rocker-arm.obj")
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="recon3d-scale-"))
    report: dict = {"points": args.points, "resolution": args.resolution, "device": str(device)}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)

    start = time.perf_counter()
    points, normals = sample_surface(read_mesh(args.mesh), args.points, seed=0)
    scan = work / "scan.ply"
    write_point_cloud(scan, PointCloud(points=points, normals=normals))
    del points, normals
    report["make_scan_s"] = time.perf_counter() - start

    start = time.perf_counter()
    cloud = read_point_cloud(scan)
    report["read_s"] = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    summary = fit_sdf(cloud, SDFOptions(steps=args.steps), work / "model.pt", device, source=str(scan),
                      show_progress=False)
    synchronize(device)
    report["fit_wall_s"] = time.perf_counter() - start
    report["fit_train_s"] = summary["seconds"]
    report["fit_gpu_peak_gib"] = gpu_peak_gib(device)
    report["rss_after_fit_gib"] = peak_rss_gib()
    del cloud

    checkpoint = load_checkpoint(work / "model.pt")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    mesh, stats = mesh_from_checkpoint(checkpoint, MeshOptions(resolution=args.resolution), device)
    synchronize(device)
    report["extract_s"] = time.perf_counter() - start
    report["extract_gpu_peak_gib"] = gpu_peak_gib(device)
    report["faces"] = mesh.n_faces
    report["lattice_queries"] = stats["lattice_queries"]
    report["dense_queries"] = int(__import__("numpy").prod([n + 1 for n in stats["resolution"]]))
    report["watertight"] = mesh_is_watertight(mesh)
    report["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(report, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
