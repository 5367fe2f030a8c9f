"""In-process sweep of fit-sdf settings: fit, extract, evaluate, one table.

Used to choose defaults (one process, so CUDA start-up and imports are paid once).

    python benchmarks/sdf_sweep.py --data data --out results.json \
        --case gargoyle --case gargoyle:nonormals --case spot:200k \
        --config fast:steps=2000 --config fast:steps=1000,batch=65536 \
        --config fast:enc.max_resolution=4096,loss.eikonal=0.05

Keys ``enc.K``, ``mlp.K`` and ``loss.K`` patch the preset's encoding, MLP and loss weights for that
configuration only (values on every device), ``preset.K`` a key of the preset itself (e.g.
``preset.anneal=0.3``); ``const.NAME`` sets a module constant of recon3d.fit.sdf (e.g.
``const.FAR_SLACK=0.02``), ``scan.NAME`` one of recon3d.points.scan (a tuple constant takes its
items joined by "+", e.g. ``scan.SMOOTH_PASSES=plane+plane``), ``distance.NAME`` one of
recon3d.points.distance, ``normals.NAME`` one of recon3d.points.normals (e.g. ``normals.TANGENT_WEIGHT=0``)
for that configuration; ``train.K`` sets a training setting (e.g. ``train.steps``; on clean scans
fit-sdf sets ``lr_final_ratio`` itself afterwards, so sweep that one with ``const.CLEAN_LR_FINAL``);
``resolution``, ``refine`` and ``keep_unsupported`` go to extraction; other keys are fit-sdf options.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from recon3d.device import resolve_device, synchronize
from recon3d.fit import sdf as sdf_fit
from recon3d.fit.sdf import SDFOptions, fit_sdf, resolve_preset
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.mesh import read_mesh, write_mesh
from recon3d.io.pointcloud import read_point_cloud
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint
from recon3d.metrics import evaluate, sample_surface
from recon3d.points import distance as distance_points
from recon3d.points import normals as normals_points
from recon3d.points import scan as scan_points
from recon3d.types import PointCloud


def load_case(spec: str, data: Path) -> tuple[str, PointCloud, object]:
    """'gargoyle[:nonormals]' (a scan, or a cloud's path under ``data``; reference = its points) or
    'spot:200k[:noise]' (mesh samples; ``noise`` adds σ = 0.25 % of the diagonal, ``noise0.5`` 0.5 %).
    ``strays`` (either kind) appends 8 stray points outside the scan's box (see add_strays); the
    reference stays without them."""
    parts = spec.split(":")
    name = parts[0]
    scan = data / "scans" / f"{name}.ply"
    if (data / name).is_file():  # any point cloud under the data folder, e.g. shapenet/<cat>/<id>/pointcloud.npz
        scan = data / name
    if scan.exists():
        cloud = read_point_cloud(scan)
        reference = PointCloud(cloud.points.copy(), cloud.normals)
        if "nonormals" in parts:
            cloud = PointCloud(cloud.points, None)
        return spec, add_strays(cloud) if "strays" in parts else cloud, reference
    mesh = read_mesh(data / "meshes" / f"{name}.obj")
    n = int(float(parts[1].rstrip("k")) * 1000) if len(parts) > 1 else 200_000
    points, _ = sample_surface(mesh, n, seed=0)
    noise = [p for p in parts if p.startswith("noise")]
    if noise:  # "noise": σ = 0.25 % of the diagonal; "noise0.5": 0.5 %
        sigma = float(noise[0][len("noise"):] or 0.25) / 100
        diag = float(np.linalg.norm(mesh.vertices.max(0) - mesh.vertices.min(0)))
        points = points + np.random.default_rng(1).normal(scale=sigma * diag, size=points.shape)
    cloud = PointCloud(points, None)
    return spec, add_strays(cloud) if "strays" in parts else cloud, mesh


def add_strays(cloud: PointCloud) -> PointCloud:
    """The cloud with 3 lone points and a cluster of 5 outside its box (0.5-1.5 box sizes from its
    centre), as a scanner's stray returns; their normals (if any) point up."""
    lo, hi = cloud.points.min(axis=0), cloud.points.max(axis=0)
    centre, size = (lo + hi) / 2, float((hi - lo).max())
    lone = centre + size * np.array([[1.5, 0.0, 0.0], [0.0, -1.0, 0.8], [0.6, 0.6, 0.6]])
    cluster = centre + size * (np.array([0.0, 0.0, 1.2]) + np.random.default_rng(5).normal(scale=0.002, size=(5, 3)))
    strays = np.concatenate([lone, cluster])
    normals = None if cloud.normals is None else np.concatenate(
        [cloud.normals, np.tile(np.array([0.0, 0.0, 1.0], dtype=cloud.normals.dtype), (len(strays), 1))])
    return PointCloud(np.concatenate([cloud.points, strays]), normals)


def parse_config(spec: str) -> tuple[str, dict]:
    preset, _, rest = spec.partition(":")
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = _number_or_text(value)
    return preset, kwargs


def _number_or_text(value: str) -> int | float | str:
    """'3' → 3, '0.5' / '1e-3' → float, anything else (e.g. a constant's name 'quadric') stays text."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def patched_preset(preset: str, kwargs: dict) -> str:
    """Register a copy of ``preset`` with the ``enc.``/``mlp.``/``loss.``/``preset.`` keys of kwargs
    applied (popped)."""
    patches = {k: kwargs.pop(k) for k in list(kwargs) if k.split(".")[0] in ("enc", "mlp", "loss", "preset")}
    if not patches:
        return preset
    patched = copy.deepcopy(sdf_fit.PRESETS[preset])
    for key, value in patches.items():
        part, name = key.split(".", 1)
        if part == "loss":
            patched["loss"][name] = float(value)
        elif part == "preset":
            patched[name] = value
        else:
            for field in patched["field"].values():
                field["encoding" if part == "enc" else "mlp"][name] = value
    sdf_fit.PRESETS["sweep"] = patched
    return "sweep"


def with_training(resolve, training: dict):
    """``resolve_preset`` with the ``train.K`` keys set on its TrainSettings (e.g. lr_final_ratio)."""
    def resolved(options, device):
        config = resolve(options, device)
        for key, value in training.items():
            setattr(config["settings"], key, value)
        return config
    return resolved


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--case", action="append", required=True)
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sdf_sweep"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--save-meshes", type=Path, default=None,
                        help="also write each row's mesh here as <row number>.ply (binary), for inspection")
    args = parser.parse_args()
    device = resolve_device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in args.case:
        name, cloud, reference = load_case(case, args.data)
        for config in args.config:
            preset, kwargs = parse_config(config)
            mesh_kwargs = {k: kwargs.pop(k) for k in ("resolution", "keep_unsupported", "refine") if k in kwargs}
            modules = {"const": sdf_fit, "scan": scan_points, "distance": distance_points, "normals": normals_points}
            constants = {(modules[k.split(".")[0]], k.split(".", 1)[1]): kwargs.pop(k)
                         for k in list(kwargs) if k.split(".")[0] in modules}
            saved = {key: getattr(*key) for key in constants}
            for (module, const), value in constants.items():
                if isinstance(getattr(module, const), tuple):  # e.g. const.SMOOTH_PASSES=plane+quadric
                    value = tuple(str(value).split("+"))
                setattr(module, const, value)
            training = {k.split(".", 1)[1]: kwargs.pop(k) for k in list(kwargs) if k.startswith("train.")}
            options = SDFOptions(preset=patched_preset(preset, kwargs), **kwargs)
            ckpt = args.work / "model.pt"
            t0 = time.perf_counter()
            try:
                sdf_fit.resolve_preset = with_training(resolve_preset, training)
                fit = fit_sdf(cloud, options, ckpt, device, source=name, show_progress=False)
            finally:
                sdf_fit.resolve_preset = resolve_preset
                for (module, const), value in saved.items():
                    setattr(module, const, value)
            synchronize(device)
            t1 = time.perf_counter()
            mesh, stats = mesh_from_checkpoint(load_checkpoint(ckpt), MeshOptions(
                resolution=mesh_kwargs.get("resolution", args.resolution),
                keep_unsupported=bool(mesh_kwargs.get("keep_unsupported", False)),
                refine=int(mesh_kwargs.get("refine", 0))), device)
            synchronize(device)
            t2 = time.perf_counter()
            metrics = evaluate(mesh, reference)
            if args.save_meshes:
                args.save_meshes.mkdir(parents=True, exist_ok=True)
                write_mesh(args.save_meshes / f"{len(rows)}.ply", mesh)
            row = {"case": name, "config": config, "points": len(cloud), "fit_s": t1 - t0, "train_s": fit["seconds"],
                   "steps": fit["steps"], "extract_s": t2 - t1, "extract": stats, "loss": fit["loss"], **metrics}
            rows.append(row)
            m = metrics
            print(f"{name:28s} {config:40s} fit {t1 - t0:6.1f}s ext {t2 - t1:5.2f}s CD {m['chamfer_l1'] * 100:.4f}% "
                  f"F0.5 {m['fscore@0.5%']:.3f} F1 {m['fscore@1%']:.3f} NC {m['normal_consistency'] or 0:.3f} "
                  f"acc {m['accuracy'] * 100:.4f} comp {m['completeness'] * 100:.4f} WT {m['watertight']} "
                  f"dropped {stats['dropped_unsupported']}", file=sys.stderr, flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1, default=str))
    print("\n| case | config | points | fit s | extract s | CD-L1 % | F@0.5% | F@1% | NC | watertight |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['config']} | {r['points']} | {r['fit_s']:.1f} | {r['extract_s']:.2f} | "
              f"{r['chamfer_l1'] * 100:.4f} | {r['fscore@0.5%']:.3f} | {r['fscore@1%']:.3f} | "
              f"{(r['normal_consistency'] or 0):.3f} | {r['watertight']} |")


if __name__ == "__main__":
    main()
