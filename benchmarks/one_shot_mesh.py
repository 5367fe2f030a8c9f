"""Whole commands, input file to mesh on disk: ``recon3d mesh`` against ``fit-*`` + ``extract-mesh``,
extract-mesh alone at 512³, and how fast a typo fails.

Inputs are made here, deterministically: a raw scan (points sampled on a mesh's surface, Gaussian noise
of 0.1 % of its diagonal along each axis, no normals, binary PLY) and the mesh itself. Quality is the
Chamfer-L1 distance (% of the diagonal, 100k samples each way) of every output mesh to the source
mesh, so a speed-up shows the same figure beside it. Each command runs as a user runs it, in a fresh
process (start-up, imports, CUDA start and writing counted).

    python benchmarks/one_shot_mesh.py --mesh ../shared/data/meshes/homer.obj --points 362000 \\
        --kernels torch,triton --json-out out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d.io.mesh import read_mesh  # noqa: E402
from recon3d.io.pointcloud import write_point_cloud  # noqa: E402
from recon3d.metrics import bbox_diagonal, sample_surface  # noqa: E402
from recon3d.types import PointCloud  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def raw_scan(mesh_path: Path, n: int, out: Path, noise: float = 1e-3) -> float:
    """Write ``n`` noisy surface points of the mesh (no normals) to ``out``; returns the diagonal."""
    mesh = read_mesh(mesh_path)
    points, _ = sample_surface(mesh, n, seed=7)
    diagonal = bbox_diagonal(mesh.vertices)
    rng = np.random.default_rng(7)
    points = points + rng.normal(scale=noise * diagonal, size=points.shape)
    write_point_cloud(out, PointCloud(points=points.astype(np.float64), normals=None))
    return diagonal


def chamfer_percent(pred: Path, ref: Path, n: int = 100_000) -> float:
    from scipy.spatial import cKDTree

    a, _ = sample_surface(read_mesh(pred), n, seed=0)
    ref_mesh = read_mesh(ref)
    b, _ = sample_surface(ref_mesh, n, seed=1)
    d_ab = cKDTree(b).query(a)[0].mean()
    d_ba = cKDTree(a).query(b)[0].mean()
    return 100 * 0.5 * (d_ab + d_ba) / bbox_diagonal(ref_mesh.vertices)


def run(args: list[str], env: dict[str, str], log_path: Path) -> tuple[float, int]:
    """Seconds and exit code of one recon3d command in a fresh process."""
    start = time.perf_counter()
    with log_path.open("a") as handle:
        handle.write("$ " + " ".join(args) + "\n")
        handle.flush()
        done = subprocess.run([sys.executable, "-m", "recon3d", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=handle)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, default=REPO.parent / "shared" / "data" / "meshes" / "homer.obj")
    parser.add_argument("--points", type=int, default=362_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--kernels", default="torch", help="hash-grid paths to run (RECON3D_HASHGRID_KERNEL)")
    parser.add_argument("--resolution", type=int, default=None, help="extraction resolution [the command's default]")
    parser.add_argument("--only", default=None, help="comma-separated substrings: run the cases whose name has one")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="oneshot-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "commands.log"
    scan = work / f"{args.mesh.stem}-raw.ply"
    raw_scan(args.mesh, args.points, scan)
    log(f"inputs: {scan} ({args.points:,} noisy points, no normals), {args.mesh}")
    res = ["-r", str(args.resolution)] if args.resolution else []
    dev = ["--device", args.device]
    rows = []
    for kernel in args.kernels.split(","):
        env = dict(os.environ, RECON3D_HASHGRID_KERNEL=kernel)

        def timed(name: str, commands: list[list[str]], mesh: Path | None, ref: Path = args.mesh,
                  env: dict[str, str] = env, kernel: str = kernel) -> None:
            if args.only and not any(part in name for part in args.only.split(",")):
                return
            seconds, code = 0.0, 0
            for command in commands:
                took, code = run(command, env, logs)
                seconds += took
                if code:
                    break
            row = {"kernel": kernel, "case": name, "seconds": round(seconds, 2), "exit": code}
            if mesh is not None and code == 0:
                row["chamfer_l1_percent"] = round(chamfer_percent(mesh, ref), 4)
            rows.append(row)
            log(json.dumps(row))

        k = kernel
        timed("scan: recon3d mesh", [["mesh", str(scan), "-o", str(work / f"m-{k}.ply"), *dev, *res]],
              work / f"m-{k}.ply")
        timed("scan: fit-sdf + extract-mesh",
              [["fit-sdf", str(scan), "-o", str(work / f"s-{k}.pt"), "--force", *dev],
               ["extract-mesh", str(work / f"s-{k}.pt"), "-o", str(work / f"s-{k}.ply"), *dev, *res]],
              work / f"s-{k}.ply")
        timed("extract-mesh -r 512 (fit-sdf model)",
              [["extract-mesh", str(work / f"s-{k}.pt"), "-o", str(work / f"e-{k}.ply"), "-r", "512", *dev]],
              work / f"e-{k}.ply")
        timed("mesh: recon3d mesh (occupancy)", [["mesh", str(args.mesh), "-o", str(work / f"o-{k}.ply"), *dev,
                                                  *res]], work / f"o-{k}.ply")
        timed("mesh: fit-occupancy + extract-mesh",
              [["fit-occupancy", str(args.mesh), "-o", str(work / f"q-{k}.pt"), "--force", *dev],
               ["extract-mesh", str(work / f"q-{k}.pt"), "-o", str(work / f"q-{k}.ply"), *dev, *res]],
              work / f"q-{k}.ply")
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "recon3d", "fit-sdf", str(work / "missing.ply")],
                          capture_output=True).returncode
    rows.append({"kernel": "-", "case": "fit-sdf missing.ply (fails)", "seconds": round(time.perf_counter() - start, 3),
                 "exit": code})
    import torch

    card = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(f"| case | hash grid | seconds (whole commands) | Chamfer-L1 (% diag) | exit |  ({card})")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r['kernel']} | {r['seconds']} | {r.get('chamfer_l1_percent', '')} | {r['exit']} |")
    if args.json_out:
        stamp = {"date": datetime.date.today().isoformat(), "card": card, **code_stamp()}
        args.json_out.write_text(json.dumps({"stamp": stamp, "points": args.points, "mesh": str(args.mesh),
                                             "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
