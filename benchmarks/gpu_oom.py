"""Real GPU out-of-memory during extraction: the chunks halve and the mesh comes out the same.

The tests simulate out-of-memory on the CPU; this runs the real thing on a GPU. A `fast`-preset SDF
field (untrained: its geometric initialisation is a sphere, plus the hash grid's random features) is
extracted once without a memory cap, then again with the process capped by
``torch.cuda.set_per_process_memory_fraction`` and a chunk far too large for the cap, with field
normals and Newton refinement (the gradient passes need the most memory). Prints one table.

    python benchmarks/gpu_oom.py --resolution 512 --cap-gib 1.5 --chunk 16777216
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recon3d.fields import build_field
from recon3d.fields.surface import Surface
from recon3d.fit.sdf import SDFOptions, resolve_preset
from recon3d.mesh.extract import ExtractOptions, extract_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--cap-gib", type=float, default=1.5, help="memory cap for the second extraction")
    parser.add_argument("--chunk", type=int, default=2**24, help="points per field call asked for")
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: needs a CUDA GPU")
    device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    config = resolve_preset(SDFOptions(), device)["field"]
    field = build_field("sdf", {**config, "level": 0.0, "inside": "below"}).to(device).eval()
    bounds = np.array([[-1.0] * 3, [1.0] * 3])
    options = ExtractOptions(resolution=args.resolution, normals="field", refine=args.refine, chunk=args.chunk)

    rows = {}
    for name, cap in (("no cap", None), (f"cap {args.cap_gib:g} GiB", args.cap_gib)):
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(1.0 if cap is None else cap * 2**30 / total, device)
        torch.cuda.reset_peak_memory_stats(device)
        calls: list[int] = []

        def field_fn(points: torch.Tensor, calls: list[int] = calls) -> torch.Tensor:
            calls.append(len(points))
            return field(points)

        start = time.perf_counter()
        result = extract_mesh(Surface(field_fn, 0.0, "below", lipschitz=1.0), bounds, options, device)
        torch.cuda.synchronize(device)
        rows[name] = {
            "seconds": time.perf_counter() - start, "faces": result.mesh.n_faces,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "largest_call": max(calls), "smallest_call": min(calls), "calls": len(calls),
            "vertices": result.mesh.vertices, "normals": result.mesh.vertex_normals, "mesh_faces": result.mesh.faces,
        }
        print(f"{name}: {rows[name]['seconds']:.2f} s, {result.mesh.n_faces:,} faces, peak "
              f"{rows[name]['peak_gib']:.2f} GiB, field calls {len(calls)} (largest {max(calls):,})",
              file=sys.stderr, flush=True)
    torch.cuda.set_per_process_memory_fraction(1.0, device)
    free, capped = rows["no cap"], rows[f"cap {args.cap_gib:g} GiB"]
    same_faces = np.array_equal(free["mesh_faces"], capped["mesh_faces"])
    vertex_gap = float(np.abs(free["vertices"] - capped["vertices"]).max()) if same_faces else None
    normal_gap = float(np.abs(free["normals"] - capped["normals"]).max()) if same_faces else None
    print("\n| run | seconds | faces | GPU peak GiB | field calls | largest call |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.2f} | {r['faces']:,} | {r['peak_gib']:.2f} | {r['calls']} | "
              f"{r['largest_call']:,} |")
    print(f"\nsame faces: {same_faces}; max vertex difference {vertex_gap}; max normal difference {normal_gap}")
    if args.json_out:
        arrays = ("vertices", "normals", "mesh_faces")
        plain = {k: {kk: vv for kk, vv in r.items() if kk not in arrays} for k, r in rows.items()}
        record = {"args": vars(args) | {"json_out": str(args.json_out)}, "gpu": torch.cuda.get_device_name(),
                  "rows": plain, "same_faces": same_faces, "max_vertex_difference": vertex_gap,
                  "max_normal_difference": normal_gap}
        args.json_out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
