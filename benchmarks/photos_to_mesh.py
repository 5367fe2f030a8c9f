"""Photos to a posed scene: ``recon3d poses`` on the fox's 50 photos alone, against the COLMAP poses that
instant-ngp ships with them.

The photos of DATA/fox/images are copied to WORK/photos (the shipped transforms.json stays out of reach),
posed by ``recon3d.sfm.estimate_poses`` (pycolmap on the CPU; the seconds are this machine's), and the
result is compared with the shipped poses of the same images, matched by file name:

* registered images (of 50) and SfM seconds (features, matching, mapping, total);
* a similarity alignment of the camera centres (Umeyama 1991) of recon3d's poses onto the shipped ones,
  then per image the rotation error (degrees) and the centre error (% of the shipped scene's size: the
  diagonal of the box of its camera centres), median and max;
* two alignment-free views of the rotations, since the centres fix the alignment's rotation only as well
  as the principal points agree (the shipped cameras have a refined principal point, (184.9, 321.8) in a
  360x640 image; COLMAP's default keeps it at the centre, and a 4.9-pixel shift turns a camera by 0.6
  degrees): the rotation error after the rotation that best aligns the orientations themselves, and the
  error of relative rotations between every pair of cameras.

``--fit`` (for a GPU session) then fits fit-nerf to both scenes with the same budget and held-out views
(recon3d's scene gets the shipped scene's train/val/test file lists, and no sparse points, so poses and
intrinsics are the only difference) and reports each one's test PSNR from ``recon3d render``.

    python benchmarks/photos_to_mesh.py                              # CPU: SfM and pose errors
    python benchmarks/photos_to_mesh.py --fit --device cuda --max-seconds 120 --json-out fox.json

Progress goes to stderr; the table to stdout; a JSON record to --json-out (default WORK/results.json).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d.console import stderr_logging  # noqa: E402
from recon3d.sfm import PosesOptions, estimate_poses  # noqa: E402
from recon3d.sfm.transforms import absolute_paths  # noqa: E402

TARGETS = {"registered": 48, "median_rotation_deg": 1.0, "sfm_seconds": 180.0}


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |s R source + t - target|² over (N, 3) point sets (Umeyama 1991)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    cov = (target - mu_t).T @ (source - mu_s) / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / ((source - mu_s) ** 2).sum(1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) degrees between rotations a (N, 3, 3) and b (N, 3, 3)."""
    cos = (np.einsum("nij,nij->n", a, b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pose_errors(estimated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Errors of camera-to-world poses (N, 4, 4) against reference ones (see the module docstring)."""
    scale, rotation, shift = umeyama(estimated[:, :3, 3], reference[:, :3, 3])
    size = float(np.linalg.norm(reference[:, :3, 3].max(0) - reference[:, :3, 3].min(0)))
    centres = np.linalg.norm(scale * estimated[:, :3, 3] @ rotation.T + shift - reference[:, :3, 3], axis=1)
    rotations = angles(np.einsum("ij,njk->nik", rotation, estimated[:, :3, :3]), reference[:, :3, :3])
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", reference[:, :3, :3], estimated[:, :3, :3]))
    fitted = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    oriented = angles(np.einsum("ij,njk->nik", fitted, estimated[:, :3, :3]), reference[:, :3, :3])
    i, j = np.triu_indices(len(estimated), 1)
    relative = angles(np.einsum("nji,njk->nik", estimated[i, :3, :3], estimated[j, :3, :3]),
                      np.einsum("nji,njk->nik", reference[i, :3, :3], reference[j, :3, :3]))
    return {"rotation_median_deg": float(np.median(rotations)), "rotation_max_deg": float(rotations.max()),
            "centre_median_pct": float(100 * np.median(centres) / size),
            "centre_max_pct": float(100 * centres.max() / size),
            "orientation_fitted_median_deg": float(np.median(oriented)),
            "orientation_fitted_max_deg": float(oriented.max()),
            "relative_median_deg": float(np.median(relative)), "relative_max_deg": float(relative.max()),
            "alignment_scale": scale, "scene_size": size}


def frames_by_name(path: Path) -> dict[str, np.ndarray]:
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {Path(f["file_path"]).name: np.array(f["transform_matrix"], np.float64) for f in meta["frames"]}


def split_copy(scene: Path, shipped: Path, folder: Path) -> Path:
    """recon3d's scene json with absolute paths, the shipped scene's split file lists and no sparse points
    or box of its own, in ``folder`` (so both fits differ in their cameras only)."""
    from recon3d.io.scene import read_scene

    meta = absolute_paths(json.loads((scene / "transforms.json").read_text(encoding="utf-8")), scene)
    for key in ("sparse_points", "ply_file_path", "aabb"):
        meta.pop(key, None)
    by_name = {Path(f["file_path"]).name: f["file_path"] for f in meta["frames"]}
    for split in ("train", "val", "test"):
        names = [p.name for p in read_scene(shipped, split, max_images=None).files]
        meta[f"{split}_filenames"] = [by_name[n] for n in names if n in by_name]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transforms.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return folder


def fit_and_render(scene: Path, name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """fit-nerf then render --split test, as CLI processes; test PSNR / SSIM and seconds."""
    model = work / f"{name}.pt"
    log = work / f"{name}.log"
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err:
        fit = subprocess.run([sys.executable, "-m", "recon3d.cli", "fit-nerf", str(scene), "-o", str(model),
                              "--max-seconds", str(args.max_seconds), "--device", args.device, "-q", "--json"],
                             stdout=subprocess.PIPE, stderr=err, text=True)
        if fit.returncode != 0:
            return {"error": f"fit-nerf failed (see {log})"}
        seconds = time.perf_counter() - started
        render = subprocess.run([sys.executable, "-m", "recon3d.cli", "render", str(model), "--scene", str(scene),
                                 "--split", "test", "--device", args.device, "-q", "--json"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    if render.returncode != 0:
        return {"error": f"render failed (see {log})"}
    metrics = json.loads(render.stdout)
    return {"psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"), "fit_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a new temp dir, kept)")
    parser.add_argument("--matcher", default="auto", choices=("auto", "exhaustive", "sequential"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", action="store_true", help="also fit-nerf both scenes and compare test PSNR")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)

    shipped = args.data / "fox"
    if not (shipped / "transforms.json").is_file():
        print(f"error: {shipped}: no fox scene (transforms.json and images/)", file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="photos_to_mesh."))
    work.mkdir(parents=True, exist_ok=True)
    photos, scene = work / "photos", work / "scene"
    shutil.rmtree(photos, ignore_errors=True)
    shutil.rmtree(scene, ignore_errors=True)
    photos.mkdir()
    for image in sorted((shipped / "images").iterdir()):
        shutil.copyfile(image, photos / image.name)
    print(f"photos_to_mesh: {len(list(photos.iterdir()))} photos → {scene}", file=sys.stderr)
    started = time.perf_counter()
    with stderr_logging():  # recon3d's progress lines on stderr, as the command line shows them
        summary = estimate_poses(photos, scene, PosesOptions(matcher=args.matcher, seed=args.seed))
    sfm_seconds = time.perf_counter() - started

    reference, estimated = frames_by_name(shipped / "transforms.json"), frames_by_name(scene / "transforms.json")
    common = sorted(set(reference) & set(estimated))
    errors = pose_errors(np.stack([estimated[n] for n in common]), np.stack([reference[n] for n in common]))
    record: dict[str, Any] = {
        "benchmark": "photos_to_mesh", "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "code": code_stamp(), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "photos": len(list(photos.iterdir())), "registered": summary["registered"], "failed": summary["failed"],
        "sfm_seconds": sfm_seconds, "stage_seconds": summary["seconds"], "camera_model": summary["camera_model"],
        "matcher": summary["matcher"], "points": summary["points"],
        "mean_reprojection_error": summary["mean_reprojection_error"], "compared": len(common), **errors,
        "targets": TARGETS, "scene": str(scene),
    }  # fmt: skip
    if args.fit:
        copy = split_copy(scene, shipped, work / "scene_split")
        record["fit"] = {"shipped": fit_and_render(shipped, "shipped", work, args),
                         "recon3d": fit_and_render(copy, "recon3d", work, args),
                         "max_seconds": args.max_seconds, "device": args.device}
    out = args.json_out or work / "results.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    ok = {"registered": record["registered"] >= TARGETS["registered"],
          "rotation": record["rotation_median_deg"] <= TARGETS["median_rotation_deg"],
          "seconds": sfm_seconds <= TARGETS["sfm_seconds"]}
    mark = {True: "yes", False: "NO"}
    print("| fox, 50 photos | value | target |")
    print("| --- | --- | --- |")
    print(f"| registered | {record['registered']} / {record['photos']} | ≥ {TARGETS['registered']} "
          f"({mark[ok['registered']]}) |")
    stages = summary["seconds"]
    print(f"| SfM seconds ({os.cpu_count()} CPU cores) | {sfm_seconds:.1f} (features {stages['features']:.1f}, "
          f"matching {stages['matching']:.1f}, mapping {stages['mapping']:.1f}) | "
          f"≤ {TARGETS['sfm_seconds']:.0f} ({mark[ok['seconds']]}) |")
    print(f"| rotation error after the similarity, median / max | {errors['rotation_median_deg']:.3f}° / "
          f"{errors['rotation_max_deg']:.3f}° | median ≤ {TARGETS['median_rotation_deg']}° ({mark[ok['rotation']]}) |")
    print(f"| centre error, median / max (% of scene size) | {errors['centre_median_pct']:.3f} % / "
          f"{errors['centre_max_pct']:.3f} % | |")
    print(f"| rotation error, orientations aligned, median / max | {errors['orientation_fitted_median_deg']:.3f}° / "
          f"{errors['orientation_fitted_max_deg']:.3f}° | |")
    print(f"| relative rotation error of all pairs, median / max | {errors['relative_median_deg']:.3f}° / "
          f"{errors['relative_max_deg']:.3f}° | |")
    print(f"| camera, points, mean reprojection error | {summary['camera_model']}, {summary['points']}, "
          f"{summary['mean_reprojection_error']:.3f} px | |")
    if args.fit:
        for name, row in record["fit"].items():
            if name in ("shipped", "recon3d"):
                value = row.get("error") or f"{row['psnr']:.2f} dB PSNR, SSIM {row['ssim']:.4f}"
                print(f"| fit-nerf test, {name} poses ({args.max_seconds:g} s, {args.device}) | {value} | |")
    print(f"photos_to_mesh: record in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
