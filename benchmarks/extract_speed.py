"""Extraction time of trained checkpoints, per marching-cubes implementation, medians of repeats.

One process: the field is loaded once per checkpoint, one warm-up extraction, then ``--repeats``
timed extractions per implementation (field evaluation, marching cubes, clean-up, normals; no file
writing). Prints one markdown table; ``--json-out`` keeps every timing.

    python benchmarks/extract_speed.py /tmp/work/*.pt --resolution 512 --device cuda --json-out speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _stamp import code_stamp

from recon3d.device import resolve_device, synchronize
from recon3d.io.checkpoint import load_checkpoint
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--marching", default="table,lewiner", help="comma-separated: table, lewiner")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        for marching in args.marching.split(","):
            options = MeshOptions(resolution=args.resolution, marching_cubes=marching)
            mesh_from_checkpoint(checkpoint, options, device)  # warm-up (kernels, allocator)
            runs = []
            for _ in range(args.repeats):
                synchronize(device)
                start = time.perf_counter()
                mesh, stats = mesh_from_checkpoint(checkpoint, options, device)
                synchronize(device)
                runs.append({"wall": time.perf_counter() - start, **stats["seconds"]})
            median = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
            rows.append({"checkpoint": path.name, "kind": checkpoint["kind"], "marching": marching,
                         "faces": mesh.n_faces, "queries": stats["queries"], "median": median, "runs": runs})
            print(f"{path.name} {marching}: {median['wall']:.3f} s ({mesh.n_faces:,} faces)", file=sys.stderr,
                  flush=True)
            if args.json_out:
                args.json_out.write_text(json.dumps({"code": code_stamp(), "device": str(device),
                                                     "resolution": args.resolution, "rows": rows}, indent=1))
    print("\n| checkpoint | marching cubes | faces | median wall s | evaluate | marching cubes | clean-up | normals |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["median"]
        print(f"| {r['checkpoint']} | {r['marching']} | {r['faces']:,} | {m['wall']:.3f} | "
              f"{m.get('evaluate', 0):.3f} | "
              f"{m.get('marching_cubes', 0):.3f} | {m.get('cleanup', 0):.3f} | {m.get('normals', 0):.3f} |")


if __name__ == "__main__":
    main()
