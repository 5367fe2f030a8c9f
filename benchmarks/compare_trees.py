"""The same benchmarks with two code trees on one machine, one after the other, and one table of both.

For changes that must not change results (a refactor) or must keep them (a speed-up): each tree runs
its own copy of ``scan_to_mesh.py`` (recon3d fit-sdf + extract-mesh), ``mesh_to_occupancy.py`` and
``nerf_lego.py`` with identical arguments; the table puts their figures side by side.

    python benchmarks/compare_trees.py --tree old=/path/to/old/checkout --tree new=. \\
        --data data --out /tmp/compare --device cuda

Each tree is a checkout (or an exported copy) with ``recon3d/`` and ``benchmarks/``. Before the timed
runs every tree fits and meshes a small scan once, so that bytecode compilation and CUDA start-up are
paid outside the figures. JSON per benchmark and tree, and every log, go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run(command: list[str], log: Path, tree: Path) -> float:
    """Run ``command`` with ``tree`` first on PYTHONPATH, output to ``log``; return wall seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=tree, env=env).returncode
    seconds = time.perf_counter() - start
    print(f"  {log.name}: exit {code}, {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def warm_up(tree: Path, out: Path, device: str) -> None:
    """One small fit and extraction: compiles the tree's bytecode and starts CUDA once."""
    script = ("import numpy as np; from recon3d.synthetic import sample_sphere; "
              "from recon3d.io.pointcloud import write_point_cloud; "
              f"write_point_cloud({str(out / 'warm.ply')!r}, sample_sphere(2000, seed=0))")
    python = [sys.executable, "-c"]
    run([*python, script], out / "warm.log", tree)
    cli = [sys.executable, "-m", "recon3d.cli"]
    run([*cli, "fit-sdf", str(out / "warm.ply"), "-o", str(out / "warm.pt"), "--steps", "20", "--device", device,
         "-q"], out / "warm-fit.log", tree)
    run([*cli, "extract-mesh", str(out / "warm.pt"), "-o", str(out / "warm.obj"), "-r", "64", "--device", device,
         "-q"], out / "warm-mesh.log", tree)


def scan_rows(path: Path) -> dict[str, dict]:
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    return {f"{r['input']} ({r['normals']}, {r['noise']})": r for r in rows if r.get("method") == "recon3d"}


def occupancy_rows(path: Path) -> dict[str, dict]:
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    return {r["input"]: r for r in rows}


def lego_rows(path: Path) -> dict[str, dict]:
    results = json.loads(path.read_text())["results"] if path.exists() else []
    return {f"{r['preset']} @ {c['mark_s']:g} s": c for r in results for c in r["curve"]}


def figure(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="LABEL=PATH, twice or more")
    parser.add_argument("--data", type=Path, required=True, help="data folder: scans/, meshes/, lego/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scan-only", default=None, help="scan_to_mesh --only [--quick's inputs]")
    parser.add_argument("--occupancy-only", default="spot,fandisk", help="mesh_to_occupancy --only")
    parser.add_argument("--lego-marks", default="60", help="nerf_lego --marks ('' skips lego)")
    parser.add_argument("--skip", default="", help="comma-separated: scan, occupancy, lego")
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    trees = {label: Path(path).resolve() for label, path in trees.items()}
    data, out = args.data.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    for label, tree in trees.items():
        folder = out / label
        folder.mkdir(exist_ok=True)
        print(f"{label}: {tree}", file=sys.stderr, flush=True)
        warm_up(tree, folder, args.device)
    seconds: dict[tuple[str, str], float] = {}
    for label, tree in trees.items():
        folder = out / label
        python = [sys.executable]
        if "scan" not in skip:
            selection = ["--only", args.scan_only] if args.scan_only else ["--quick"]
            seconds[label, "scan"] = run([*python, "benchmarks/scan_to_mesh.py", "--data", str(data), "--no-baseline",
                                          "--device", args.device, *selection, "--work", str(folder / "scan"),
                                          "--json-out", str(folder / "scan.json")], folder / "scan.log", tree)
        if "occupancy" not in skip:
            seconds[label, "occupancy"] = run([*python, "benchmarks/mesh_to_occupancy.py", "--data", str(data),
                                               "--device", args.device, "--only", args.occupancy_only,
                                               "--no-dense-512", "--work", str(folder / "occupancy"),
                                               "--json-out", str(folder / "occupancy.json")],
                                              folder / "occupancy.log", tree)
        if "lego" not in skip and args.lego_marks:
            seconds[label, "lego"] = run([*python, "benchmarks/nerf_lego.py", "--data", str(data / "lego"),
                                          "--presets", "fast", "--marks", args.lego_marks, "--mesh", "",
                                          "--device", args.device, "--out", str(folder / "lego"),
                                          "--json-out", str(folder / "lego.json")], folder / "lego.log", tree)
    labels = list(trees)
    print("\n### scan → mesh (fit-sdf + extract-mesh): Chamfer-L1 % / F@0.5% / NC / watertight / whole commands s")
    print("| input | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    tables = {label: scan_rows(out / label / "scan.json") for label in labels}
    for key in sorted(set().union(*tables.values())):
        cells = []
        for label in labels:
            r = tables[label].get(key)
            m = (r or {}).get("metrics") or {}
            cells.append("-" if not m else f"{100 * m['chamfer_l1']:.4f} / {m['fscore@0.5%']:.4f} / "
                         f"{figure(m.get('normal_consistency'), 4)} / {m['watertight']} / {r['seconds']:.1f}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\n### mesh → occupancy (fit-occupancy + MISE 512³): Chamfer-L1 % / volume IoU / fit + MISE s")
    print("| input | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    tables = {label: occupancy_rows(out / label / "occupancy.json") for label in labels}
    for key in sorted(set().union(*tables.values())):
        cells = []
        for label in labels:
            r = tables[label].get(key) or {}
            m = r.get("metrics") or {}
            cells.append("-" if not m else f"{100 * m['chamfer_l1']:.4f} / {figure(r.get('iou'), 4)} / "
                         f"{figure(r.get('fit_plus_mise_seconds'), 1)}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\n### lego (fit-nerf fast, time budget): val PSNR dB / SSIM / steps / M samples/s")
    print("| mark | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    tables = {label: lego_rows(out / label / "lego.json") for label in labels}
    for key in sorted(set().union(*tables.values())):
        cells = []
        for label in labels:
            c = tables[label].get(key)
            cells.append("-" if c is None else f"{c['psnr']:.3f} / {c['ssim']:.4f} / {c['steps']} / "
                         f"{(c.get('samples_per_s') or 0) / 1e6:.1f}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\nwhole benchmark seconds: " + ", ".join(f"{label} {name} {value:.0f}" for (label, name), value
                                                     in seconds.items()))


if __name__ == "__main__":
    main()
