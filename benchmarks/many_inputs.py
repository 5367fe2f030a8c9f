"""Many inputs over several processes: shapes per minute of ``recon3d mesh FOLDER`` run by torchrun with
1, 2, 4, … processes (one GPU each, or CPU processes with gloo), and the speed-up over one.

The inputs are made here: ``--shapes`` raw scans sampled from the meshes of ``--meshes`` (cycled, each
with its own seed, rotation and noise), so every process count meshes the same files. Each count runs
in a fresh output folder; the wall time is the whole torchrun command.

    python benchmarks/many_inputs.py --meshes ../shared/data/meshes --shapes 32 --procs 1,2,4 --device cuda
    python benchmarks/many_inputs.py --shapes 4 --procs 1,2 --device cpu --steps 100 --resolution 64
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
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


def make_inputs(meshes: list[Path], count: int, points: int, folder: Path) -> None:
    """``count`` noisy scans (no normals) of the meshes, cycled, each rotated at random."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mesh = read_mesh(meshes[i % len(meshes)])
        rng = np.random.default_rng(i)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cloud, _ = sample_surface(mesh, points, seed=i)
        cloud = cloud @ q.T + rng.normal(scale=1e-3 * bbox_diagonal(mesh.vertices), size=cloud.shape)
        name = f"{meshes[i % len(meshes)].stem}-{i:03d}.ply"
        write_point_cloud(folder / name, PointCloud(points=cloud, normals=None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", type=Path, default=REPO.parent / "shared" / "data" / "meshes")
    parser.add_argument("--shapes", type=int, default=16)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="many-"))
    inputs = work / "inputs"
    meshes = sorted(p for p in args.meshes.iterdir() if p.suffix.lower() in (".obj", ".ply", ".off", ".stl"))
    make_inputs(meshes, args.shapes, args.points, inputs)
    extra = ["--device", args.device]
    extra += ["--steps", str(args.steps)] if args.steps else []
    extra += ["--resolution", str(args.resolution)] if args.resolution else []
    extra += ["--threads", str(args.threads)] if args.threads else []
    rows = []
    for procs in [int(p) for p in args.procs.split(",")]:
        out = work / f"out-{procs}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
                   "-m", "recon3d", "mesh", str(inputs), "-o", str(out), "--json", "-q", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        seconds = time.perf_counter() - start
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        finished = sum(line.get("status") == "done" for line in lines)
        rows.append({"procs": procs, "seconds": round(seconds, 2), "done": finished, "exit": done.returncode,
                     "shapes_per_minute": round(60 * finished / seconds, 2)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = rows[0]["shapes_per_minute"] or float("nan")
    print("| processes | seconds | meshes done | shapes / minute | speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['procs']} | {r['seconds']} | {r['done']} | {r['shapes_per_minute']} | "
              f"{r['shapes_per_minute'] / base:.2f}× |")
    if args.json_out:
        stamp = {"date": datetime.date.today().isoformat(), **code_stamp()}
        args.json_out.write_text(json.dumps({"stamp": stamp, "args": vars(args) | {"meshes": str(args.meshes),
                                                                                   "work": str(work),
                                                                                   "json_out": None},
                                             "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
