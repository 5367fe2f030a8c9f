"""Scan to watertight mesh: recon3d (fit-sdf + extract-mesh) against Open3D screened Poisson.

Both methods read the same binary PLY files, which this script prepares deterministically (fixed
seeds), so that a GPU run without Open3D can be set beside a CPU run's Poisson rows:

    python benchmarks/scan_to_mesh.py --json-out cpu.json                       # both methods
    python benchmarks/scan_to_mesh.py --no-baseline --merge-baseline cpu.json \
        --json-out gpu.json                                                     # GPU box
    python benchmarks/scan_to_mesh.py --quick --steps 100 --resolution 128 --points 20000

The table goes to stdout (markdown); progress lines go to stderr. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d.errors import Recon3dError  # noqa: E402
from recon3d.io.mesh import read_mesh  # noqa: E402
from recon3d.io.pointcloud import read_point_cloud, write_point_cloud  # noqa: E402
from recon3d.metrics import bbox_diagonal, evaluate, sample_surface  # noqa: E402
from recon3d.synthetic import sample_torus, simulated_scan  # noqa: E402
from recon3d.types import PointCloud, TriMesh  # noqa: E402

DEFAULT_MESHES = ("spot", "fandisk", "rocker-arm")
OPEN_MESHES = ("teapot",)
NOISE_FRACTION = 0.0025  # Gaussian sigma as a fraction of the bounding-box diagonal
SAMPLE_SEED = 0
TORUS = {"major": 1.0, "minor": 0.35}
METRIC_KEYS = ("chamfer_l1", "chamfer_l2", "accuracy", "completeness", "hausdorff", "fscore@0.5%",
               "fscore@1%", "precision@1%", "recall@1%", "normal_consistency", "watertight",
               "volume_iou", "n_pred_vertices", "n_pred_faces")


def log(message: str) -> None:
    print(f"[scan_to_mesh] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class Case:
    """One prepared input: the file both methods read, and what to judge the result against."""

    input: str  # display name, e.g. "spot" or "gargoyle"
    path: Path  # the prepared binary PLY
    points: int
    normals: str  # "file" or "none"
    noise: str  # "none", "σ=0.25%", "real scan"
    reference: Callable[[], TriMesh | PointCloud]
    reference_kind: str
    sha256: str = ""

    @property
    def slug(self) -> str:
        return self.path.stem

    @property
    def key(self) -> str:
        """What identifies the same input across runs (for --merge-baseline)."""
        return f"{self.input}|{self.points}|{self.normals}|{self.noise}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, cloud: PointCloud) -> None:
    write_point_cloud(path, cloud, binary=True)


def weld(mesh: TriMesh) -> TriMesh:
    """Merge vertices at identical positions (texture seams), so a closed mesh tests watertight."""
    unique, inverse = np.unique(mesh.vertices, axis=0, return_inverse=True)
    return TriMesh(vertices=unique, faces=inverse.reshape(-1)[mesh.faces].astype(np.int64))


def scan_cases(data: Path, work: Path, names: list[str]) -> list[Case]:
    """Real scans: as they are (file normals) and with the normals dropped; reference = the points."""
    sources = []
    for name in names:
        source = data / "scans" / f"{name}.ply"
        if not source.exists():
            log(f"note: {source} is missing; skipping the {name} scan")
            continue
        sources.append((name.removesuffix("_points"), name, source, "real scan"))
    return _cloud_cases(work, sources)


def shapenet_cases(data: Path, work: Path) -> list[Case]:
    """ShapeNet objects in the Occupancy Networks format (data/shapenet/CATEGORY/ID/pointcloud.npz),
    with their file normals and without; reference = the points.

    The normals of these files are the faces' of the raw double-sided models: half point each way.
    """
    metadata = data / "shapenet" / "metadata.yaml"
    try:  # the shared copy is JSON (which is YAML): category id → {"name": …}; else ids stay ids
        names = {key: value.get("name", key) for key, value in json.loads(metadata.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        names = {}
    sources = []
    for source in sorted((data / "shapenet").glob("*/*/pointcloud.npz")):
        category, model = source.parent.parent.name, source.parent.name
        label = f"shapenet {names.get(category, category)}"
        sources.append((label, f"shapenet-{category}-{model[:8]}", source, "ShapeNet points"))
    if not sources:
        log(f"note: no {data / 'shapenet'}/*/*/pointcloud.npz; skipping ShapeNet")
    return _cloud_cases(work, sources)


def _cloud_cases(work: Path, sources: list[tuple[str, str, Path, str]]) -> list[Case]:
    """(display name, file stem, source, noise label) → cases with file normals (when there are any)
    and without; reference = the points themselves."""
    cases = []
    for label, stem, source, noise in sources:
        cloud = read_point_cloud(source)
        reference = PointCloud(points=cloud.points.copy(), normals=cloud.normals)
        variants = [("file", cloud)] if cloud.normals is not None else []
        variants.append(("none", PointCloud(points=cloud.points, normals=None)))
        for normals, variant in variants:
            path = work / (f"{stem}.ply" if normals == "file" else f"{stem}-nonormals.ply")
            _write(path, variant)
            cases.append(Case(label, path, len(variant), normals, noise, lambda r=reference: r, "input points"))
    return cases


def mesh_cases(data: Path, work: Path, names: list[str], n_points: int, noisy: bool = True) -> list[Case]:
    """Area-uniform samples of closed meshes, no normals, clean and noisy; reference = the mesh."""
    cases = []
    for name in names:
        source = data / "meshes" / f"{name}.obj"
        if name in OPEN_MESHES:
            log(f"note: {name} is an open mesh; skipping it")
            continue
        if not source.exists():
            log(f"note: {source} is missing; skipping {name}")
            continue
        mesh = weld(read_mesh(source))
        points, _ = sample_surface(mesh, n_points, seed=SAMPLE_SEED)
        variants = [("none", points)]
        if noisy:
            sigma = NOISE_FRACTION * bbox_diagonal(mesh.vertices)
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            variants.append((f"σ={NOISE_FRACTION:.2%}", points + rng.normal(scale=sigma, size=points.shape)))
        for noise, pts in variants:
            tag = "clean" if noise == "none" else "noise"
            path = work / f"{name}-{_count(n_points)}-{tag}.ply"
            _write(path, PointCloud(points=pts, normals=None))
            cases.append(Case(name, path, len(pts), "none", noise, lambda m=mesh: m, "mesh"))
    return cases


def synthetic_case(work: Path, n_points: int) -> Case:
    """A torus scan (noise σ=0.25% of the diagonal, no normals); reference = exact surface samples."""
    exact = sample_torus(n_points, seed=SAMPLE_SEED, **TORUS)
    sigma = NOISE_FRACTION * bbox_diagonal(exact.points)
    scan = simulated_scan(exact, noise=sigma, keep_normals=False, seed=SAMPLE_SEED + 1)
    path = work / f"torus-{_count(n_points)}-noise.ply"
    _write(path, scan)

    def reference() -> PointCloud:
        return sample_torus(200_000, seed=SAMPLE_SEED + 2, **TORUS)

    return Case("torus (synthetic)", path, len(scan), "none", f"σ={NOISE_FRACTION:.2%}", reference,
                "exact surface samples")


def _count(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def prepare_cases(args: argparse.Namespace, work: Path) -> list[Case]:
    meshes = [m.strip() for m in args.meshes.split(",") if m.strip()]
    if args.quick:
        cases = mesh_cases(args.data, work, meshes[:1], args.points)
        cases += scan_cases(args.data, work, ["gargoyle"])
    else:
        cases = scan_cases(args.data, work, ["gargoyle", "armadillo_points"])
        cases += mesh_cases(args.data, work, meshes, args.points)
        cases.append(synthetic_case(work, args.points))
        cases += shapenet_cases(args.data, work)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        cases = [case for case in cases if any(w in case.slug for w in wanted)]
    for case in cases:
        case.sha256 = _digest(case.path)
    return cases


# ---------------------------------------------------------------------------------------- methods


def _run_cli(argv: list[str], log_path: Path) -> tuple[dict | None, float, str | None]:
    """Run ``python -m recon3d.cli ARGV``; stderr to log_path. (JSON summary, wall seconds, error)."""
    command = [sys.executable, "-m", "recon3d.cli", *argv]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as err:
        err.write(f"$ {shlex.join(command)}\n")
        err.flush()
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=env, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        return None, wall, f"exit {proc.returncode}: {tail[0] if tail else ''}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]), wall, None
    except (IndexError, json.JSONDecodeError):
        return None, wall, f"no JSON on stdout: {proc.stdout[-200:]!r}"


def run_recon3d(case: Case, args: argparse.Namespace, work: Path, logs: Path) -> tuple[dict, TriMesh | None]:
    model, mesh_path = work / f"{case.slug}.recon3d.pt", work / f"{case.slug}.recon3d.ply"
    log_path = logs / f"{case.slug}.recon3d.log"
    log_path.write_text("", encoding="utf-8")
    fit_argv = ["fit-sdf", str(case.path), "-o", str(model), "--json", "--device", args.device]
    for flag, value in (("--preset", args.preset), ("--steps", args.steps)):
        if value is not None:
            fit_argv += [flag, str(value)]
    extract_argv = ["extract-mesh", str(model), "-o", str(mesh_path), "--json", "--device", args.device]
    if args.resolution is not None:
        extract_argv += ["--resolution", str(args.resolution)]
    row: dict[str, Any] = {"method": "recon3d", "log": str(log_path)}
    fit, fit_wall, error = _run_cli(fit_argv, log_path)
    row.update(fit_wall_seconds=fit_wall, fit=fit)
    if error is None:
        extract, extract_wall, error = _run_cli(extract_argv, log_path)
        row.update(extract_wall_seconds=extract_wall, extract=extract)
    if error is not None:
        row["error"] = error
        return row, None
    row["seconds"] = fit_wall + extract_wall
    seconds = extract.get("seconds") or {}
    row["compute_seconds"] = float(fit["seconds"]) + float(seconds.get("total", 0.0))
    row["device"] = fit.get("device")
    row["steps"] = fit.get("steps")
    row["resolution"] = extract.get("resolution")
    row["mesh"] = str(mesh_path)
    try:
        return row, read_mesh(mesh_path)
    except Recon3dError as exc:
        row["error"] = f"cannot read {mesh_path}: {exc}"
        return row, None


def run_poisson(o3d: Any, case: Case, args: argparse.Namespace, work: Path) -> list[tuple[dict, TriMesh | None]]:
    """Open3D screened Poisson, untrimmed (and trimmed with --poisson-trim), timed read to mesh."""
    label = f"poisson d{args.poisson_depth}"
    try:
        start = time.perf_counter()
        pcd = o3d.io.read_point_cloud(str(case.path))
        normals = "file"
        if not pcd.has_normals():
            normals = "estimated"
            diagonal = float(np.linalg.norm(pcd.get_max_bound() - pcd.get_min_bound()))
            pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(
                radius=args.normal_radius * diagonal, max_nn=30))
            pcd.orient_normals_consistent_tangent_plane(15)
        normals_time = time.perf_counter() - start
        mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            pcd, depth=args.poisson_depth)
        seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - a failed baseline is a row, not a crash
        return [({"method": label, "error": f"{type(exc).__name__}: {exc}"}, None)]
    densities = np.asarray(densities)
    base = {"poisson_normals": normals, "normals_seconds": normals_time, "poisson_seconds": seconds - normals_time,
            "depth": args.poisson_depth}
    out = [({"method": label, "seconds": seconds, **base}, _to_trimesh(mesh))]
    path = work / f"{case.slug}.poisson.ply"
    o3d.io.write_triangle_mesh(str(path), mesh)
    out[0][0]["mesh"] = str(path)
    if args.poisson_trim is not None:
        start = time.perf_counter()
        trimmed = o3d.geometry.TriangleMesh(mesh)
        trimmed.remove_vertices_by_mask(densities < np.quantile(densities, args.poisson_trim))
        trim_seconds = seconds + time.perf_counter() - start
        path = work / f"{case.slug}.poisson-trim.ply"
        o3d.io.write_triangle_mesh(str(path), trimmed)
        out.append(({"method": f"{label} trim{args.poisson_trim:g}", "seconds": trim_seconds, "mesh": str(path),
                     **base}, _to_trimesh(trimmed)))
    return out


def _to_trimesh(mesh: Any) -> TriMesh:
    mesh.compute_vertex_normals()
    return TriMesh(vertices=np.asarray(mesh.vertices, dtype=np.float64),
                   faces=np.asarray(mesh.triangles, dtype=np.int64),
                   vertex_normals=np.asarray(mesh.vertex_normals, dtype=np.float32))


def load_open3d(args: argparse.Namespace) -> Any:
    if args.no_baseline:
        return None
    try:
        from recon3d._open3d import import_open3d

        o3d = import_open3d()
    except Recon3dError as exc:
        log(f"note: open3d is not usable ({exc}); no Poisson baseline (use --merge-baseline)")
        return None
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


# ------------------------------------------------------------------------------------ evaluation


def judge(row: dict, mesh: TriMesh | None, reference: TriMesh | PointCloud, args: argparse.Namespace) -> None:
    if mesh is None:
        return
    if mesh.n_faces == 0:
        row["error"] = "empty mesh"
        return
    start = time.perf_counter()
    try:
        metrics = evaluate(mesh, reference, n_samples=args.eval_samples, seed=0)
    except Recon3dError as exc:
        row["error"] = f"evaluation failed: {exc}"
        return
    row["metrics"] = {k: metrics.get(k) for k in METRIC_KEYS}
    row["eval_seconds"] = time.perf_counter() - start


# ----------------------------------------------------------------------------------------- table


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _breakdown(row: dict) -> str:
    """Where the seconds went: recon3d's own fit/extract timings, Poisson's normals/solve."""
    if row["method"] == "recon3d":
        fit, extract = row.get("fit") or {}, (row.get("extract") or {}).get("seconds") or {}
        if "seconds" in fit and "total" in extract:
            return f"fit {fit['seconds']:.1f} + mesh {extract['total']:.1f}"
    elif "normals_seconds" in row and "poisson_seconds" in row:
        normals = "normals" if row.get("poisson_normals") == "estimated" else "read"
        return f"{normals} {row['normals_seconds']:.1f} + poisson {row['poisson_seconds']:.1f}"
    return ""


def table(rows: list[dict], merged_from: str | None) -> str:
    header = ["input", "points", "normals", "noise", "method", "seconds", "Chamfer-L1 (% diag)", "F@0.5%",
              "F@1%", "normal consistency", "watertight", "time ratio vs Poisson", "time breakdown (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    poisson_seconds: dict[str, float] = {}
    for row in rows:  # prefer this run's untrimmed Poisson, else the merged one
        if row["method"].startswith("poisson") and "trim" not in row["method"] and row.get("seconds"):
            if not row.get("merged") or row["key"] not in poisson_seconds:
                poisson_seconds[row["key"]] = row["seconds"]
    for row in rows:
        m = row.get("metrics") or {}
        method = row["method"] + (" †" if row.get("merged") else "") + (" ‡" if row.get("input_differs") else "")
        ratio = "–"
        if row["method"] == "recon3d" and row.get("seconds") and row["key"] in poisson_seconds:
            ratio = f"{row['seconds'] / poisson_seconds[row['key']]:.2f}×"
        if "error" in row:
            cells = [f"failed: {row['error'][:60]}"] + [""] * 7
        else:
            chamfer = m.get("chamfer_l1")
            cells = [_fmt(row.get("seconds"), ".1f"), _fmt(None if chamfer is None else 100 * chamfer, ".3f"),
                     _fmt(m.get("fscore@0.5%"), ".3f"), _fmt(m.get("fscore@1%"), ".3f"),
                     _fmt(m.get("normal_consistency"), ".3f"), _fmt(m.get("watertight"), ""), ratio,
                     _breakdown(row)]
        lines.append("| " + " | ".join([row["input"], f"{row['points']:,}", row["normals"], row["noise"],
                                          method, *cells]) + " |")
    if merged_from:
        lines.append(f"\n† Poisson rows merged from {merged_from}; inputs matched by name and SHA-256"
                     " (‡: the input file differed).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ run record


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or None
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:  # noqa: BLE001
        info["torch_error"] = str(exc)
    info.update(code_stamp())
    return info


def merge_baseline(path: Path, cases: list[Case]) -> tuple[list[dict], str]:
    record = json.loads(path.read_text(encoding="utf-8"))
    by_key = {case.key: case for case in cases}
    merged = []
    for row in record.get("rows", []):
        if not str(row.get("method", "")).startswith("poisson"):
            continue
        case = by_key.get(row.get("key"))
        if case is None:
            continue
        if row.get("sha256") and row["sha256"] != case.sha256:
            log(f"warning: {path}: {row['key']} was made from a different input file (SHA-256 differs); "
                "showing it anyway")
            row["input_differs"] = True
        merged.append({**row, "merged": True, "merged_from": str(path)})
    env = record.get("environment", {})
    where = f"{path} ({env.get('cpu') or '?'}, {record.get('date', '?')}, commit {env.get('git_commit')})"
    log(f"merged {len(merged)} Poisson rows from {where}")
    return merged, where


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="data folder")
    p.add_argument("--work", type=Path, default=None, help="folder for inputs, checkpoints, meshes [a new temp dir]")
    p.add_argument("--logs", type=Path, default=None, help="folder for per-case recon3d logs [--work]")
    p.add_argument("--json-out", type=Path, default=None, help="write all rows here [WORK/results.json]")
    p.add_argument("--meshes", default=",".join(DEFAULT_MESHES), help="comma-separated names in DATA/meshes")
    p.add_argument("--points", type=int, default=200_000, help="points sampled per mesh (and torus)")
    p.add_argument("--quick", action="store_true", help="only the first --meshes mesh and gargoyle")
    p.add_argument("--only", default=None, help="comma-separated substrings: keep inputs whose file name has one")
    p.add_argument("--prepare-only", action="store_true", help="write the inputs, list them, run nothing")
    p.add_argument("--device", default="auto", help="recon3d --device")
    p.add_argument("--preset", default=None, help="recon3d fit-sdf --preset")
    p.add_argument("--steps", type=int, default=None, help="recon3d fit-sdf --steps")
    p.add_argument("--resolution", type=int, default=None, help="recon3d extract-mesh --resolution")
    p.add_argument("--no-baseline", action="store_true", help="skip Open3D Poisson")
    p.add_argument("--baseline-only", action="store_true", help="run only Open3D Poisson (CPU reference rows)")
    p.add_argument("--poisson-depth", type=int, default=9)
    p.add_argument("--poisson-trim", type=float, default=None, metavar="Q",
                   help="also report Poisson with vertices below density quantile Q removed")
    p.add_argument("--normal-radius", type=float, default=0.02,
                   help="Poisson normal-estimation radius, fraction of the bbox diagonal (max_nn=30)")
    p.add_argument("--merge-baseline", type=Path, default=None, metavar="FILE.json",
                   help="show the Poisson rows of a previous --json-out beside this run's rows")
    p.add_argument("--eval-samples", type=int, default=200_000, help="surface samples per shape for metrics")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    work = args.work or Path(tempfile.mkdtemp(prefix="scan_to_mesh-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = args.logs or work
    logs.mkdir(parents=True, exist_ok=True)
    json_out = args.json_out or work / "results.json"
    log(f"work folder {work}; data {args.data}")
    if not args.data.is_dir():
        log(f"error: data folder {args.data} does not exist")
        return 1
    cases = prepare_cases(args, work)
    if not cases:
        log("error: no inputs found")
        return 1
    log(f"{len(cases)} inputs: " + ", ".join(case.slug for case in cases))
    if args.prepare_only:
        for case in cases:
            print(f"{case.path}\t{case.points}\t{case.normals}\t{case.noise}\t{case.sha256[:16]}")
        return 0
    o3d = load_open3d(args)
    merged, merged_from = ([], None)
    if args.merge_baseline is not None:
        merged, merged_from = merge_baseline(args.merge_baseline, cases)
    rows: list[dict] = []
    started = time.perf_counter()
    for i, case in enumerate(cases, 1):
        common = {"input": case.input, "points": case.points, "normals": case.normals, "noise": case.noise,
                  "key": case.key, "file": str(case.path), "sha256": case.sha256,
                  "reference": case.reference_kind}
        log(f"[{i}/{len(cases)}] {case.slug}: {case.points:,} points, normals {case.normals}, noise {case.noise}")
        reference = case.reference()
        runs: list[tuple[dict, TriMesh | None]] = [] if args.baseline_only else [run_recon3d(case, args, work, logs)]
        if o3d is not None:
            runs += run_poisson(o3d, case, args, work)
        for row, mesh in runs:
            row = {**common, **row}
            judge(row, mesh, reference, args)
            rows.append(row)
            m = row.get("metrics") or {}
            if "error" in row:
                log(f"    {row['method']}: FAILED {row['error']}")
            else:
                log(f"    {row['method']}: {row['seconds']:.1f} s, chamfer-L1 {100 * m['chamfer_l1']:.3f}%, "
                    f"F@1% {m['fscore@1%']:.3f}, watertight {m['watertight']}")
        rows += [row for row in merged if row["key"] == case.key]
    record = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": shlex.join(command), "environment": environment(),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "total_seconds": time.perf_counter() - started, "merged_from": merged_from, "rows": rows}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    log(f"wrote {json_out}")
    env = record["environment"]
    print(f"scan → mesh, {record['date']}, commit {env.get('git_commit')}, CPU {env.get('cpu')}, "
          f"GPU {env.get('gpu')}, torch {env.get('torch')}\n")
    print(table(rows, merged_from))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
