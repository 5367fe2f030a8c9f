"""Benchmark: recon3d fit-nerf on nerf_synthetic lego — val PSNR / SSIM against training wall-clock.

One training run per preset with a time budget equal to the last mark; at every mark (default 30 s,
1, 2, 5, 10 min) training pauses, all val views are rendered and scored, and that time is left out
of the training clock (so the curve is PSNR against training seconds). The learning rate decays
over the whole budget, so early marks are from a run still at a high learning rate: a dedicated run
of that length would score at least as well. Also reports samples per second, and meshes the fast
field (512³ MISE, vertex colours) with a shaded render of the mesh for a visual check.

    python benchmarks/nerf_lego.py --data data/lego --presets fast,paper --marks 30,60,120,300,600
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d.device import resolve_device, synchronize  # noqa: E402
from recon3d.fit.nerf import NerfOptions, fit_nerf  # noqa: E402
from recon3d.io.checkpoint import load_checkpoint  # noqa: E402
from recon3d.io.scene import read_scene  # noqa: E402
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint  # noqa: E402
from recon3d.metrics import mesh_is_watertight  # noqa: E402
from recon3d.render.model import Renderer, load_renderer  # noqa: E402
from recon3d.render.views import png_bytes, render_split  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def commit() -> str:
    return code_stamp().get("git_commit") or "unknown"


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU"


def evaluate(renderer: Renderer, val, device) -> dict:
    field = renderer.field
    was_training = field.training
    field.eval()
    synchronize(device)
    start = time.perf_counter()
    result = render_split(renderer, val, None)
    synchronize(device)
    field.train(was_training)
    return {"psnr": result["psnr"], "ssim": result["ssim"], "eval_seconds": time.perf_counter() - start}


def run_preset(preset: str, args, train, val, device, out_dir: Path) -> dict:
    marks = sorted(float(m) for m in args.marks.split(","))
    curve: list[dict] = []
    state = {"next": 0, "start": None}
    step_holder: dict = {}

    def on_step(trainer, step: int) -> None:
        if state["start"] is None:
            state["start"] = time.perf_counter()
        elapsed = time.perf_counter() - state["start"] - trainer.excluded_seconds
        if state["next"] < len(marks) - 1 and elapsed >= marks[state["next"]]:
            t0 = time.perf_counter()
            grid = getattr(trainer.step_fn, "grid", None)
            sampling = trainer.step_fn.sampling
            scores = evaluate(Renderer(trainer.model, grid, sampling), val, device)
            row = {"mark_s": marks[state["next"]], "train_s": round(elapsed, 2), "steps": step, **scores,
                   "samples_per_s": trainer.step_fn.samples_seen / max(elapsed, 1e-9)}
            curve.append(row)
            log(f"[{preset}] {elapsed:7.1f} s  step {step:6d}  val PSNR {scores['psnr']:.2f}  SSIM {scores['ssim']:.4f}"
                f"  ({row['samples_per_s'] / 1e6:.2f} M samples/s)")
            state["next"] += 1
            trainer.exclude(time.perf_counter() - t0)
        step_holder["trainer"] = trainer

    options = NerfOptions(preset=preset, steps=10**9, max_seconds=marks[-1], seed=0, amp=args.amp)
    path = out_dir / f"lego_{preset}.pt"
    summary = fit_nerf(train, options, path, device, show_progress=False, on_step=on_step)
    checkpoint = load_checkpoint(path)
    scores = evaluate(load_renderer(checkpoint, device), val, device)
    curve.append({"mark_s": marks[-1], "train_s": summary["seconds"], "steps": summary["steps"], **scores,
                  "samples_per_s": summary.get("samples_per_second")})
    log(f"[{preset}] {summary['seconds']:7.1f} s  step {summary['steps']:6d}  val PSNR {scores['psnr']:.2f}  "
        f"SSIM {scores['ssim']:.4f} (final)")
    result = {"preset": preset, "curve": curve, "checkpoint": str(path)}
    if args.mesh and preset == args.mesh:
        result["mesh"] = mesh_report(checkpoint, device, out_dir, args.mesh_resolution)
    return result


def mesh_report(checkpoint: dict, device, out_dir: Path, resolution: int) -> dict:
    synchronize(device)
    start = time.perf_counter()
    mesh, stats = mesh_from_checkpoint(checkpoint, MeshOptions(resolution=resolution), device)
    synchronize(device)
    seconds = time.perf_counter() - start
    report = {"faces": mesh.n_faces, "vertices": mesh.n_vertices, "seconds": seconds, "queries": stats["queries"],
              "watertight": mesh_is_watertight(mesh), "coloured": mesh.vertex_colors is not None}
    if mesh.n_faces:
        image = splat(mesh.vertices, mesh.vertex_colors, mesh.vertex_normals)
        (out_dir / "lego_mesh_render.png").write_bytes(png_bytes(image))
    log(f"mesh: {mesh.n_faces:,} faces in {seconds:.2f} s, watertight {report['watertight']}")
    return report


def splat(vertices: np.ndarray, colors: np.ndarray | None, normals: np.ndarray | None, size: int = 512) -> np.ndarray:
    """A z-buffered point splat of the mesh vertices from a 3/4 view, colours times simple shading."""
    yaw, pitch = np.radians(-35.0), np.radians(30.0)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    view = rx @ rz
    p = (vertices - vertices.mean(axis=0)) @ view.T  # x right, z up after the tilt, y depth
    scale = 0.45 * size / max(np.abs(p[:, [0, 2]]).max(), 1e-9)
    u = np.clip((p[:, 0] * scale + size / 2).astype(int), 0, size - 1)
    v = np.clip((size / 2 - p[:, 2] * scale).astype(int), 0, size - 1)
    depth = p[:, 1]
    order = np.argsort(-depth)  # far first, near overwrite
    image = np.ones((size, size, 3))
    base = (colors / 255.0) if colors is not None else np.full((len(vertices), 3), 0.7)
    shade = np.ones(len(vertices))
    if normals is not None:
        light = view.T @ np.array([0.3, -0.8, 0.5])
        shade = 0.35 + 0.65 * np.clip(normals @ (light / np.linalg.norm(light)), 0, 1)
    image[v[order], u[order]] = base[order] * shade[order, None]
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/lego")
    parser.add_argument("--presets", default="fast,paper")
    parser.add_argument("--marks", default="30,60,120,300,600", help="seconds of training at which to score val")
    parser.add_argument("--paper-marks", default=None, help="other marks for the paper preset")
    parser.add_argument("--val-views", type=int, default=None, help="score only the first N val views")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--mesh", default="fast", help="preset whose field is meshed ('' for none)")
    parser.add_argument("--mesh-resolution", type=int, default=512)
    parser.add_argument("--out", default="benchmarks/results/nerf")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train = read_scene(args.data, "train", downscale=args.downscale, keep_alpha=True).to(device)
    val = read_scene(args.data, "val", downscale=args.downscale, max_images=args.val_views).to(device)
    log(f"loaded {len(train)} train / {len(val)} val views {train.width}x{train.height} "
        f"in {time.perf_counter() - t0:.1f} s")
    results = []
    for preset in [p for p in args.presets.split(",") if p]:
        marks = args.paper_marks if (preset == "paper" and args.paper_marks) else args.marks
        results.append(run_preset(preset, argparse.Namespace(**{**vars(args), "marks": marks}), train, val,
                                  device, out_dir))
    stamp = {"date": datetime.date.today().isoformat(), "hardware": hardware(device), "commit": commit(),
             "torch": torch.__version__, "command": " ".join(sys.argv), "views": f"{len(val)} val"}
    payload = {**stamp, "results": results}
    json_out = Path(args.json_out or f"benchmarks/results/nerf_lego_{device.type}.json")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(payload, indent=1, default=float))
    print(f"\n{stamp['date']} · {stamp['hardware']} · commit {stamp['commit']} · {stamp['command']}\n")
    print("| preset | mark | train s | steps | val PSNR | val SSIM | M samples/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        for row in result["curve"]:
            rate = row.get("samples_per_s") or 0.0
            print(f"| {result['preset']} | {row['mark_s']:g} s | {row['train_s']:.1f} | {row['steps']} | "
                  f"{row['psnr']:.2f} | {row['ssim']:.4f} | {rate / 1e6:.2f} |")
        if "mesh" in result:
            m = result["mesh"]
            print(f"\nmesh ({result['preset']}, 512³ MISE): {m['faces']:,} faces, {m['seconds']:.2f} s, "
                  f"watertight {m['watertight']}, coloured {m['coloured']}")


if __name__ == "__main__":
    main()
