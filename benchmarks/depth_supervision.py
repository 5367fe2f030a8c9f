"""Depth supervision (DS-NeRF, Deng et al. 2022) on few views: fit-nerf on lego's first N training views
with and without the sparse points that ``recon3d poses --known-poses`` triangulates from them.

For each N: a scene of N training views spread evenly over lego's train split (and its whole val split
for scoring) is written to WORK/legoN; ``recon3d poses WORK/legoN --known-poses -o WORK/legoN_points``
triangulates its points (pycolmap, CPU); then the two scenes, identical but for the points, are fitted
with the same budget and seed (``fit-nerf`` turns the depth term on when a scene has points) and each
model is scored on the val views by ``recon3d render``. Whole commands in fresh processes.

    python benchmarks/depth_supervision.py --lego data/lego --views 8,16 --steps 1000 --downscale 4
    python benchmarks/depth_supervision.py --lego data/lego --views 8,16,100 --max-seconds 60 --device cuda

The table goes to stdout, progress to stderr, a JSON record to --json-out (default WORK/depth.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def subset_scene(lego: Path, n_views: int, folder: Path) -> None:
    """lego with ``n_views`` of its training views (evenly spaced), the val split whole; absolute paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        source = lego / f"transforms_{split}.json"
        if not source.is_file():
            continue
        meta = json.loads(source.read_text())
        frames = meta["frames"]
        if split == "train":
            step = len(frames) / n_views
            frames = [frames[int(i * step)] for i in range(n_views)]
        meta["frames"] = [dict(frame, file_path=str((lego / frame["file_path"]).resolve())) for frame in frames]
        (folder / source.name).write_text(json.dumps(meta, indent=1))


def recon3d(args: list[str], log_path: Path) -> tuple[dict, float]:
    """Run a recon3d command with --json; its JSON output and wall seconds."""
    start = time.perf_counter()
    with open(log_path, "a") as err:
        done = subprocess.run([sys.executable, "-m", "recon3d", *args, "--json"], stdout=subprocess.PIPE,
                              stderr=err, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"recon3d {' '.join(args)} failed; see {log_path}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lego", type=Path, default=REPO.parent / "shared" / "data" / "lego")
    parser.add_argument("--views", default="8,16")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="recon3d-depth-"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "log.txt"
    budget = (["--steps", str(args.steps)] if args.steps else []) + \
        (["--max-seconds", str(args.max_seconds)] if args.max_seconds else [])
    common = [*budget, "--downscale", str(args.downscale), "--device", args.device, "--seed", str(args.seed)]
    rows = []
    for n_views in (int(v) for v in args.views.split(",")):
        plain, points = work / f"lego{n_views}", work / f"lego{n_views}_points"
        subset_scene(args.lego, n_views, plain)
        if not points.exists():
            log(f"{n_views} views: triangulating")
            sfm, sfm_seconds = recon3d(["poses", str(plain), "--known-poses", "-o", str(points)], log_path)
        else:
            sfm, sfm_seconds = {}, 0.0
        for name, scene in (("without", plain), ("with depth", points)):
            log(f"{n_views} views, {name}: fitting")
            model = work / f"lego{n_views}_{name.replace(' ', '_')}.pt"
            fit, fit_seconds = recon3d(["fit-nerf", str(scene), "-o", str(model), "--force", *common], log_path)
            renders = work / f"renders_{model.stem}"
            score, _ = recon3d(["render", str(model), "--scene", str(plain), "--split", "val", "--downscale",
                                str(args.downscale), "--device", args.device, "-o", str(renders)], log_path)
            rows.append({"views": n_views, "supervision": name, "points": sfm.get("points"),
                         "sfm_s": round(sfm_seconds, 1),
                         "steps": fit["steps"], "fit_s": round(fit_seconds, 1), "val_psnr": round(score["psnr"], 3),
                         "val_ssim": round(score["ssim"], 4)})
            log(json.dumps(rows[-1]))
    print("| views | supervision | sparse points | steps | fit s | val PSNR | val SSIM |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['views']} | {row['supervision']} | {row['points'] or ''} | {row['steps']} | {row['fit_s']} | "
              f"{row['val_psnr']:.2f} | {row['val_ssim']:.4f} |")
    out = args.json_out or work / "depth.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
