"""How good are fit-sdf's estimated normals? Direction and sign against known ones, no fitting.

Runs fit-sdf's own scan preparation (``recon3d.fit.sdf.prepare_scan``: normalisation, noise measure,
smoothing when noisy, 16-neighbour PCA, spanning-tree orientation) on area-uniform samples of the
meshes under ``DATA/meshes`` (clean and with Gaussian noise, σ in % of the bounding-box diagonal) and
on the scans under ``DATA/scans`` that carry normals, and compares the result with the true face
normals (or the file's):

- ``mean_abs_cos``: mean |cos| between estimated and true directions (1 = every plane exact);
- ``over_10deg``: fraction of directions more than 10° off;
- ``sign_ok``: fraction whose sign agrees after orientation (cos > 0).

Each ``--passes`` value is a variant of fit-sdf's ``SMOOTH_PASSES`` for noisy scans, its items joined by
"+" (see recon3d.points.denoise.smooth_until_quiet); without one, fit-sdf's own.

    python benchmarks/normal_accuracy.py --data data --passes plane --passes plane+quadric --json-out out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d.console import set_quiet  # noqa: E402
from recon3d.fit import sdf as sdf_fit  # noqa: E402
from recon3d.io.mesh import read_mesh  # noqa: E402
from recon3d.io.pointcloud import read_point_cloud  # noqa: E402
from recon3d.metrics import bbox_diagonal, sample_surface  # noqa: E402
from recon3d.points import scan as scan_points  # noqa: E402
from recon3d.types import PointCloud  # noqa: E402

SAMPLE_SEED = 1


def inputs(data: Path, counts: list[int], noises: list[float], only: list[str] | None):
    """(name, points, true normals) for each mesh × count × noise, then each scan with normals."""
    for path in sorted((data / "meshes").glob("*.obj")):
        if only and path.stem not in only:
            continue
        mesh = read_mesh(path)
        for count in counts:
            points, true = sample_surface(mesh, count, seed=SAMPLE_SEED)
            for noise in noises:
                rng = np.random.default_rng(zlib.crc32(f"{path.stem}{count}{noise}".encode()))
                noisy = points + rng.normal(scale=noise / 100 * bbox_diagonal(mesh.vertices), size=points.shape)
                yield f"{path.stem} {count // 1000}k σ={noise:g}%", noisy, true
    for path in sorted((data / "scans").glob("*.ply")):
        if only and path.stem not in only:
            continue
        cloud = read_point_cloud(path)
        if cloud.normals is not None:
            yield f"{path.stem} (file normals)", cloud.points, cloud.normals


def estimate(points: np.ndarray, passes: tuple[str, ...]) -> tuple[np.ndarray, int, float]:
    """fit-sdf's estimated normals (its own prepare_scan, with these smoothing passes and every point
    kept, so that they stay in the input's order), the smoothing passes run, and the seconds taken."""
    start = time.perf_counter()
    saved, scan_points.SMOOTH_PASSES = scan_points.SMOOTH_PASSES, passes
    try:
        scan = sdf_fit.prepare_scan(PointCloud(points, None), "estimate", torch.device("cpu"), "input", outliers="keep")
    finally:
        scan_points.SMOOTH_PASSES = saved
    return scan.normals.cpu().numpy(), scan.smoothing_passes, time.perf_counter() - start


def score(estimated: np.ndarray, true: np.ndarray) -> dict[str, float]:
    true = true / np.maximum(np.linalg.norm(true, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("ij,ij->i", estimated, true)
    return {"mean_abs_cos": float(np.abs(cos).mean()),
            "over_10deg": float((np.abs(cos) < np.cos(np.radians(10))).mean()),
            "sign_ok": float((cos > 0).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--passes", action="append", default=None,
                        help="smoothing passes joined by '+', e.g. plane+quadric (repeatable: one variant each)")
    parser.add_argument("--points", default="50000,200000,400000")
    parser.add_argument("--noise", default="0,0.1,0.25", help="σ in %% of the diagonal")
    parser.add_argument("--only", default=None, help="comma-separated mesh / scan names")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    variants = args.passes or ["+".join(scan_points.SMOOTH_PASSES)]
    set_quiet(True)  # prepare_scan's log lines; the table and the per-input lines are the output
    counts = [int(float(c)) for c in args.points.split(",")]
    noises = [float(s) for s in args.noise.split(",")]
    only = args.only.split(",") if args.only else None
    rows = []
    for name, points, true in inputs(args.data, counts, noises, only):
        row: dict = {"input": name}
        for passes in variants:
            estimated, ran, seconds = estimate(points, tuple(passes.split("+")))
            row[f"passes {passes}"] = {**score(estimated, true), "ran": ran, "seconds": round(seconds, 2)}
        rows.append(row)
        cells = "  ".join(f"{k}: {v['mean_abs_cos']:.5f} {v['over_10deg']:.4f} {v['sign_ok']:.4f} ({v['ran']})"
                          for k, v in row.items() if isinstance(v, dict))
        print(f"{name:34s} {cells}", file=sys.stderr, flush=True)
    keys = [f"passes {p}" for p in variants]
    print("| input | " + " | ".join(f"{k}: mean abs cos / >10° / sign ok (passes run)" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for row in rows:
        cells = " | ".join(f"{row[k]['mean_abs_cos']:.5f} / {row[k]['over_10deg']:.4f} / {row[k]['sign_ok']:.4f} "
                           f"({row[k]['ran']})" for k in keys)
        print(f"| {row['input']} | {cells} |")
    if args.json_out:
        args.json_out.write_text(json.dumps({"code": code_stamp(), "argv": sys.argv[1:], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
