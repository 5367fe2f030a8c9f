"""UNISURF (fit-occupancy on a scene) settings in one process: fit with a preset override, extract, evaluate.

    python benchmarks/unisurf_sweep.py SCENE --steps 800 --downscale 4 --set '{"loss": {"binary": 0.1}}'

SCENE is a scene with its true mesh as SCENE/mesh.ply (benchmarks/images_to_mesh.py writes them). ``--set`` is
merged into ``recon3d.fit.unisurf.PRESETS["fast"]`` before fitting; ``--method sdf`` sweeps NeuS's preset
instead. A fixed step budget (not seconds) keeps rows comparable on a busy machine. Prints one JSON line:
Chamfer-L1 (% of the true mesh's diagonal), F-scores, normal consistency, the signed offset of the mesh from
the true surface (median and 5th / 95th percentiles, % of the diagonal; negative: inside) and the last
training row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.images_to_mesh import load_mesh  # noqa: E402


def merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    """Merge ``override`` into ``base`` in place, recursing into dicts."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def signed_offsets(mesh, reference, n: int = 20000) -> np.ndarray:
    """Signed distances (% of the reference's diagonal, positive outside) of n samples of ``mesh`` to
    ``reference`` (Open3D's ray-casting scene)."""
    from recon3d._open3d import import_open3d
    from recon3d.metrics import bbox_diagonal, sample_surface

    o3d = import_open3d()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(reference.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(reference.faces, np.uint32)))
    points, _ = sample_surface(mesh, n, seed=0)
    distance = scene.compute_signed_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()
    return 100.0 * distance / bbox_diagonal(np.asarray(reference.vertices))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--downscale", type=int, default=4)
    parser.add_argument("--set", default="{}", help="JSON merged into the preset")
    parser.add_argument("--method", choices=("unisurf", "sdf"), default="unisurf")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)

    import recon3d.api as api
    from recon3d.fit import neus, unisurf
    from recon3d.metrics import evaluate

    override = json.loads(args.set)
    merge((unisurf if args.method == "unisurf" else neus).PRESETS["fast"], override)
    fit = api.fit_occupancy if args.method == "unisurf" else api.fit_sdf
    start = time.perf_counter()
    model = fit(str(args.scene), steps=args.steps, device="cpu", progress=False, downscale=args.downscale,
                threads=args.threads)
    seconds = time.perf_counter() - start
    mesh = model.mesh(resolution=args.resolution, progress=False)
    reference = load_mesh(args.scene / "mesh.ply")
    metrics = evaluate(mesh, reference, n_samples=100000, seed=0)
    offsets = signed_offsets(mesh, reference)
    row = {"name": args.name, "method": args.method, "steps": args.steps, "fit_s": round(seconds, 1),
           "chamfer_pct": round(100 * metrics["chamfer_l1"], 3), "f@0.5%": round(metrics["fscore@0.5%"], 3),
           "f@1%": round(metrics["fscore@1%"], 3), "nc": round(metrics["normal_consistency"], 3),
           "offset_pct": [round(float(v), 3) for v in np.percentile(offsets, (5, 50, 95))],
           "terms": model.history_terms, "last": model.history[-1] if model.history else None, "set": override}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
