"""Posed images to a watertight mesh: fit-sdf (NeuS), fit-occupancy (UNISURF, and --preset dvr) and, as the
baseline from the same images and time budget, fit-nerf's density mesh, on scenes with known geometry.

Each closed mesh of DATA/meshes is placed in scene coordinates and rendered by recon3d.meshscene into a
Blender scene (100 train + 20 test views on the sphere, 400x400 RGBA, textured Lambertian object under fixed
lights), kept with the mesh itself (``SCENES/<name>/mesh.ply``). Every method then runs as a user would run
it, as whole CLI processes timed by wall clock: ``fit-* SCENE --max-seconds S`` then ``extract-mesh``, then
``render --split test --json`` for test PSNR / SSIM. The mesh is judged against the true one with
recon3d.metrics.evaluate (Chamfer-L1 as % of the true mesh's bounding-box diagonal, F-scores, normal
consistency, watertightness). A command that fails (a method not implemented yet) is a failed row with its
error line, and the run goes on. ``--lego`` adds test PSNR and mesh pictures on nerf_synthetic lego (val
split as test); ``--fox`` fits fit-sdf to the fox capture and draws its mesh.

Machines. Writing a scene needs Open3D (or recon3d.meshscene's much slower torch ray caster) and trimesh (to
read the source OBJ), but only when SCENES/<name> is missing or was written with other settings
(``meshscene.json`` records them). The GPU machine has neither and no ../shared/data: write the scenes on a
CPU machine into the git-ignored ``.bench/scenes`` (the default --scenes) and carry that folder; there this
script reads meshes with its own PLY reader, evaluate() needs no Open3D (its inside test falls back to
numpy), and previews use the torch ray caster on the GPU.

    python benchmarks/images_to_mesh.py --prepare-only                        # CPU: write the scenes
    python benchmarks/images_to_mesh.py --device cuda --max-seconds 60 --json-out gpu.json
    python benchmarks/images_to_mesh.py --device cpu --downscale 4 --max-seconds 300 --json-out cpu.json
    python benchmarks/images_to_mesh.py --meshes spot --size 100 --train 20 --test 4 --max-seconds 20 \\
        --methods nerf --device cpu --resolution 64                          # plumbing check

Progress goes to stderr and each command's stderr to WORK/<case>/<method>.log; the table goes to stdout.
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
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d import meshscene  # noqa: E402
from recon3d.errors import Recon3dError  # noqa: E402
from recon3d.metrics import evaluate  # noqa: E402
from recon3d.types import TriMesh  # noqa: E402

DEFAULT_MESHES = ("spot", "fandisk", "rocker-arm", "cow")
#: method → (command, extra arguments). All get the same scene, budget, device and --downscale.
METHODS = {
    "sdf": ("fit-sdf", []),
    "unisurf": ("fit-occupancy", []),
    "dvr": ("fit-occupancy", ["--preset", "dvr"]),
    "nerf": ("fit-nerf", []),
}
SCENE_SEED = 0
METRIC_KEYS = ("chamfer_l1", "chamfer_l2", "accuracy", "completeness", "hausdorff", "fscore@0.5%", "fscore@1%",
               "precision@1%", "recall@1%", "normal_consistency", "watertight", "ref_watertight", "volume_iou",
               "n_pred_vertices", "n_pred_faces")


def log(message: str) -> None:
    print(f"[images_to_mesh] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ meshes


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
              "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
              "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}


def read_ply_mesh(path: Path) -> TriMesh:
    """A triangle mesh from a binary little-endian PLY (what recon3d writes), with numpy alone: the GPU
    machine has no trimesh. Vertex x, y, z and triangle faces; other properties are skipped."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise Recon3dError(f"{path}: not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise Recon3dError(f"{path}: only binary little-endian PLY is read without trimesh")
    elements: list[tuple[str, int, list[tuple[str, ...]]]] = []
    for line in lines:
        words = line.split()
        if words[:1] == ["element"]:
            elements.append((words[1], int(words[2]), []))
        elif words[:1] == ["property"]:
            elements[-1][2].append(tuple(words[1:]))
    offset, vertices, faces = end + len(b"end_header\n"), None, None
    for name, count, properties in elements:
        if any(p[0] == "list" for p in properties):
            if name != "face" or len(properties) != 1:
                raise Recon3dError(f"{path}: cannot read element '{name}' without trimesh")
            _, count_type, item_type, _ = properties[0]
            dtype = np.dtype([("n", _PLY_TYPES[count_type]), ("v", _PLY_TYPES[item_type], (3,))])
            table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            if count and not np.all(table["n"] == 3):
                raise Recon3dError(f"{path}: only triangle faces are read without trimesh")
            faces = table["v"].astype(np.int64)
        else:
            dtype = np.dtype([(p[1], _PLY_TYPES[p[0]]) for p in properties])
            table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            if name == "vertex":
                vertices = np.stack([table[axis].astype(np.float64) for axis in "xyz"], axis=1)
        offset += dtype.itemsize * count
    if vertices is None or faces is None:
        raise Recon3dError(f"{path}: no vertices or no faces")
    return TriMesh(vertices=vertices, faces=faces)


def load_mesh(path: Path) -> TriMesh:
    """recon3d.io.mesh.read_mesh where trimesh is installed, else :func:`read_ply_mesh`."""
    try:
        import trimesh  # noqa: F401
    except ImportError:
        return read_ply_mesh(path)
    from recon3d.io.mesh import read_mesh

    return read_mesh(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ scenes


def wanted_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The scene settings this run asks for (what ``meshscene.json`` must hold for a scene to be reused)."""
    return meshscene.scene_settings(args.train, args.test, args.size, meshscene.CAMERA_ANGLE_X,
                                    meshscene.CAMERA_DISTANCE, SCENE_SEED, supersample=2, smooth=False)


def scene_folder_name(name: str, args: argparse.Namespace) -> str:
    """``<name>`` for the benchmark's own scenes (400 px, 100 + 20 views), ``<name>-<size>px-<train>+<test>``
    for others, so a quick small run never overwrites the full-size scenes a GPU run carries."""
    if (args.size, args.train, args.test) == (400, 100, 20):
        return name
    return f"{name}-{args.size}px-{args.train}+{args.test}"


def prepare_scene(name: str, args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """SCENES/<name>, written unless it is already there with the same settings; (folder, error)."""
    folder = args.scenes / scene_folder_name(name, args)
    source = args.data / "meshes" / f"{name}.obj"
    wanted = {**wanted_settings(args), "source": source.name}
    if source.is_file():
        wanted["source_sha256"] = _sha256(source)
    stored = folder / "meshscene.json"
    if stored.is_file():
        have = json.loads(stored.read_text(encoding="utf-8"))
        if all(have.get(key) == value for key, value in wanted.items()):
            log(f"{name}: scene {folder} is up to date")
            return folder, None
        log(f"{name}: scene {folder} was written with other settings; rewriting it")
    if not source.is_file():
        return None, f"no scene {folder} with these settings and no {source} to render one from"
    from recon3d.io.mesh import read_mesh

    mesh = meshscene.scene_mesh(read_mesh(source))
    caster_device = "cuda" if _cuda(args) else "cpu"
    log(f"{name}: rendering {args.train}+{args.test} views at {args.size}x{args.size} into {folder}")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % 20 == 0:
            log(f"    {done}/{total} views ({time.perf_counter() - start:.0f} s)")

    meshscene.write_mesh_scene(mesh, folder, args.train, args.test, args.size, seed=SCENE_SEED,
                               device=caster_device, extra={k: wanted[k] for k in ("source", "source_sha256")},
                               progress=progress)
    return folder, None


def _cuda(args: argparse.Namespace) -> bool:
    if args.device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------- methods


def run_cli(argv: list[str], log_path: Path) -> tuple[dict | None, float, str | None]:
    """``python -m recon3d.cli ARGV`` with its stderr appended to ``log_path``: (JSON, wall s, error line)."""
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
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        return None, wall, f"exit {proc.returncode}: {(errors or lines or [''])[-1].strip()}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]), wall, None
    except (IndexError, json.JSONDecodeError):
        return None, wall, f"no JSON on stdout: {proc.stdout[-200:]!r}"


def run_method(method: str, scene: Path, out: Path, split: str, args: argparse.Namespace) -> dict[str, Any]:
    """fit → extract-mesh → render of one method on one scene; the row (without metrics)."""
    command, extra = METHODS[method]
    out.mkdir(parents=True, exist_ok=True)
    model, mesh_path, log_path = out / f"{method}.pt", out / f"{method}.ply", out / f"{method}.log"
    log_path.write_text("", encoding="utf-8")
    device = ["--device", args.device]
    # The time budget alone ends every fit (--steps far beyond what it allows), so all methods train for
    # the same seconds rather than stopping at their presets' different step counts.
    fit_argv = [command, str(scene), "-o", str(model), "--json", "--max-seconds", str(args.max_seconds),
                "--steps", str(args.steps), *device, *extra]
    if args.downscale != 1:
        fit_argv += ["--downscale", str(args.downscale)]
    row: dict[str, Any] = {"method": method, "command": command, "preset": extra[1] if extra else None,
                           "log": str(log_path)}
    fit, fit_wall, error = run_cli(fit_argv, log_path)
    row.update(fit_seconds=fit_wall, fit=fit)
    if error is not None:
        row["error"] = f"{command}: {error}"
        return row
    extract_argv = ["extract-mesh", str(model), "-o", str(mesh_path), "--json", *device]
    if args.resolution is not None:
        extract_argv += ["--resolution", str(args.resolution)]
    extract, extract_wall, error = run_cli(extract_argv, log_path)
    row.update(extract_seconds=extract_wall, extract=extract, seconds=fit_wall + extract_wall)
    if error is not None:
        row["error"] = f"extract-mesh: {error}"
        return row
    row["mesh_file"] = str(mesh_path)
    rendered, render_wall, render_error = run_cli(
        ["render", str(model), "--scene", str(scene), "--split", split, "--json", *device], log_path)
    row.update(render_seconds=render_wall, render_split=split)
    if render_error is None and rendered is not None:
        row.update(psnr=rendered.get("psnr"), ssim=rendered.get("ssim"),
                   seconds_per_view=rendered.get("seconds_per_view"))
    else:
        row.update(psnr=None, ssim=None, render_error=render_error)
    return row


def judge(row: dict[str, Any], reference: TriMesh | None, args: argparse.Namespace) -> TriMesh | None:
    """Read the row's mesh and, when there is a reference, add its metrics; returns the mesh."""
    if "error" in row or "mesh_file" not in row:
        return None
    try:
        mesh = load_mesh(Path(row["mesh_file"]))
    except Recon3dError as exc:
        row["error"] = f"cannot read {row['mesh_file']}: {exc}"
        return None
    if reference is None:
        return mesh
    start = time.perf_counter()
    try:
        metrics = evaluate(mesh, reference, n_samples=args.eval_samples, seed=0)
    except Recon3dError as exc:
        row["error"] = f"evaluation failed: {exc}"
        return mesh
    row["metrics"] = {key: metrics.get(key) for key in METRIC_KEYS}
    row["eval_seconds"] = time.perf_counter() - start
    return mesh


def sampling_floor(reference: TriMesh, args: argparse.Namespace) -> dict[str, Any]:
    """The true mesh judged against itself: what the metrics report for a perfect mesh at --eval-samples
    (two independent sample sets are never at distance 0)."""
    metrics = evaluate(reference, reference, n_samples=args.eval_samples, seed=0)
    return {key: metrics[key] for key in ("chamfer_l1", "fscore@0.5%", "fscore@1%", "normal_consistency")}


def draw(mesh: TriMesh, path: Path, scene: Path, args: argparse.Namespace, **view: Any) -> str | None:
    """A preview picture of ``mesh`` seen the way ``scene``'s cameras see it; the path, or None on failure."""
    up, front = scene_orientation(scene)
    try:
        meshscene.preview(mesh, path, size=args.preview_size, up=up, front=front,
                          device="cuda" if _cuda(args) else "cpu", **view)
    except (Recon3dError, RuntimeError, ValueError) as exc:
        log(f"    preview failed: {exc}")
        return None
    log(f"    wrote {path}")
    return str(path)


def scene_orientation(scene: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(up, front) of a scene from its cameras: the mean camera up axis, and the mean direction from the
    scene towards the cameras (None when they surround it)."""
    for name in ("transforms_train.json", "transforms.json"):
        path = scene / name if scene.is_dir() else scene
        if path.is_file():
            frames = json.loads(path.read_text(encoding="utf-8"))["frames"]
            poses = np.array([frame["transform_matrix"] for frame in frames], dtype=np.float64)
            up = poses[:, :3, 1].mean(axis=0)
            back = poses[:, :3, 2].mean(axis=0)
            up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
            back = back - (back @ up) * up
            return up, (back / np.linalg.norm(back) if np.linalg.norm(back) > 0.3 else None)
    return np.array([0.0, 0.0, 1.0]), None


# ------------------------------------------------------------------------------------------- table


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    header = ["mesh", "method", "fit s", "extract s", "total s", "Chamfer-L1 %", "F@0.5%", "F@1%", "NC",
              "test PSNR", "watertight"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        label = row["method"] if row["method"] != "dvr" else "dvr (fit-occupancy --preset dvr)"
        if "error" in row:
            cells = [f"failed: {row['error'][:110]}"] + [""] * 8
        else:
            m = row.get("metrics") or {}
            chamfer = m.get("chamfer_l1")
            cells = [_fmt(row.get("fit_seconds"), ".1f"), _fmt(row.get("extract_seconds"), ".1f"),
                     _fmt(row.get("seconds"), ".1f"), _fmt(None if chamfer is None else 100 * chamfer, ".3f"),
                     _fmt(m.get("fscore@0.5%"), ".3f"), _fmt(m.get("fscore@1%"), ".3f"),
                     _fmt(m.get("normal_consistency"), ".3f"), _fmt(row.get("psnr"), ".2f"),
                     _fmt(m.get("watertight"), "")]
        lines.append("| " + " | ".join([row["mesh"], label, *cells]) + " |")
    ratios = []
    for name in dict.fromkeys(row["mesh"] for row in rows):
        chamfer = {row["method"]: (row.get("metrics") or {}).get("chamfer_l1") for row in rows if row["mesh"] == name}
        if chamfer.get("nerf") and chamfer.get("sdf"):
            ratios.append(f"{name} {chamfer['nerf'] / chamfer['sdf']:.2f}×")
        elif "nerf" in chamfer and "sdf" in chamfer:
            ratios.append(f"{name} –")
    if ratios:
        lines.append("\nnerf Chamfer / sdf Chamfer: " + ", ".join(ratios))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- run record


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
    except Exception as exc:  # noqa: BLE001 - the record says what went wrong instead
        info["torch_error"] = str(exc)
    info.update(code_stamp())
    return info


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically (temporary sibling, rename), so a killed run leaves the last complete record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="data folder (meshes/)")
    p.add_argument("--scenes", type=Path, default=REPO / ".bench" / "scenes",
                   help="rendered scenes, one folder per mesh (reused when their settings match)")
    p.add_argument("--work", type=Path, default=None, help="checkpoints, meshes, logs, pictures [a new temp dir]")
    p.add_argument("--json-out", type=Path, default=None, help="the run record [WORK/results.json]")
    p.add_argument("--meshes", default=",".join(DEFAULT_MESHES), help="comma-separated names in DATA/meshes")
    p.add_argument("--methods", default="sdf,unisurf,dvr,nerf", help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--size", type=int, default=400, help="scene image width and height")
    p.add_argument("--train", type=int, default=100, help="training views per scene")
    p.add_argument("--test", type=int, default=20, help="test views per scene")
    p.add_argument("--downscale", type=int, default=1, help="fit-* --downscale")
    p.add_argument("--device", default="auto", help="recon3d --device")
    p.add_argument("--max-seconds", type=float, default=60.0, help="training budget of every fit, seconds")
    p.add_argument("--steps", type=int, default=10**6,
                   help="step budget of every fit (default: so many that --max-seconds ends the fit)")
    p.add_argument("--resolution", type=int, default=None, help="extract-mesh --resolution [its default]")
    p.add_argument("--eval-samples", type=int, default=200_000, help="surface samples per mesh for the metrics")
    p.add_argument("--lego", type=Path, default=None, help="nerf_synthetic lego folder: every method, val PSNR, "
                                                            "a picture of each mesh")
    p.add_argument("--fox", type=Path, default=None, help="the fox capture (transforms.json): fit-sdf and a "
                                                           "picture of its mesh")
    p.add_argument("--preview-size", type=int, default=512, help="pixels per view of the mesh pictures")
    p.add_argument("--prepare-only", action="store_true", help="write the scenes, print their sizes, fit nothing")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(METHODS)})")
    args.methods = methods
    args.meshes = [m.strip() for m in args.meshes.split(",") if m.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    log(f"scenes {args.scenes}; data {args.data}")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scenes: dict[str, dict[str, Any]] = {}
    for name in args.meshes:
        try:
            folder, error = prepare_scene(name, args)
        except Recon3dError as exc:
            folder, error = None, f"cannot write the scene: {exc}"
        scenes[name] = {"folder": None if folder is None else str(folder), "error": error,
                        "bytes": None if folder is None else folder_size(folder)}
        if error is not None:
            log(f"{name}: {error}")
    if args.prepare_only:
        for name, scene in scenes.items():
            size = "–" if scene["bytes"] is None else f"{scene['bytes'] / 1e6:.1f} MB"
            print(f"{name}\t{scene['folder'] or scene['error']}\t{size}")
        return 0 if all(scene["error"] is None for scene in scenes.values()) else 1
    work = args.work or Path(tempfile.mkdtemp(prefix="images_to_mesh-"))
    work.mkdir(parents=True, exist_ok=True)
    json_out = args.json_out or work / "results.json"
    log(f"work folder {work}")
    for name in args.meshes:
        scene = scenes[name]
        if scene["error"] is not None:
            rows += [{"mesh": name, "method": m, "error": scene["error"]} for m in args.methods]
            continue
        folder = Path(scene["folder"])
        reference = load_mesh(folder / "mesh.ply")
        scene["floor"] = sampling_floor(reference, args)
        for method in args.methods:
            log(f"{name}: {method}")
            row = {"mesh": name, "scene": str(folder), **run_method(method, folder, work / name, "test", args)}
            judge(row, reference, args)
            _report(row)
            rows.append(row)
            write_record(json_out, _record(args, command, started, rows, scenes))
    rows += _lego_rows(args, work, command, started, rows, scenes, json_out)
    rows += _fox_rows(args, work)
    record = _record(args, command, started, rows, scenes)
    write_record(json_out, record)
    log(f"wrote {json_out}")
    env = record["environment"]
    print(f"images → mesh, {record['date']}, commit {env.get('git_commit')}{' (dirty)' if env.get('git_dirty') else ''}"
          f", GPU {env.get('gpu')}, CPU {env.get('cpu')}, torch {env.get('torch')}; {args.size}×{args.size}, "
          f"{args.train} train + {args.test} test views, --downscale {args.downscale}, "
          f"--max-seconds {args.max_seconds:g}, device {args.device}\n")
    print(table(rows))
    floors = [f"{name} {100 * scene['floor']['chamfer_l1']:.3f} %" for name, scene in scenes.items()
              if scene.get("floor")]
    if floors:
        print(f"\nChamfer-L1 of the true mesh against itself ({args.eval_samples:,} samples each, the metric's "
              f"floor): {', '.join(floors)}")
    return 0 if all("error" not in row for row in rows) else 1


def _lego_rows(args: argparse.Namespace, work: Path, command: list[str], started: float, rows: list[dict],
               scenes: dict, json_out: Path) -> list[dict[str, Any]]:
    """Every method on lego: val PSNR and a picture of each mesh (no true geometry to measure against)."""
    if args.lego is None:
        return []
    found = []
    for method in args.methods:
        log(f"lego: {method}")
        row = {"mesh": "lego", "scene": str(args.lego), **run_method(method, args.lego, work / "lego", "val", args)}
        mesh = judge(row, None, args)
        if mesh is not None:
            row["picture"] = draw(mesh, work / f"lego-{method}.png", args.lego, args, views=3)
        _report(row)
        found.append(row)
        write_record(json_out, _record(args, command, started, rows + found, scenes))
    return found


def _fox_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """fit-sdf on the fox capture: test PSNR (every 8th frame held out) and a picture of its mesh from the
    capture's own side."""
    if args.fox is None:
        return []
    log("fox: sdf")
    row = {"mesh": "fox", "scene": str(args.fox), **run_method("sdf", args.fox, work / "fox", "test", args)}
    mesh = judge(row, None, args)
    if mesh is not None:
        row["picture"] = draw(mesh, work / "fox-sdf.png", args.fox, args, elevation=10.0,
                              azimuths=(-40.0, 0.0, 40.0))
    _report(row)
    return [row]


def _report(row: dict[str, Any]) -> None:
    if "error" in row:
        log(f"    {row['method']}: FAILED {row['error']}")
        return
    m = row.get("metrics") or {}
    geometry = (f", Chamfer-L1 {100 * m['chamfer_l1']:.3f}%, F@1% {m['fscore@1%']:.3f}, watertight "
                f"{m['watertight']}" if m else "")
    psnr = "–" if row.get("psnr") is None else f"{row['psnr']:.2f}"
    log(f"    {row['method']}: fit {row['fit_seconds']:.1f} s + extract {row['extract_seconds']:.1f} s{geometry}, "
        f"{row.get('render_split')} PSNR {psnr}")


def _record(args: argparse.Namespace, command: list[str], started: float, rows: list[dict],
            scenes: dict) -> dict[str, Any]:
    return {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(command), "environment": environment(),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "scene_settings": wanted_settings(args), "scenes": scenes,
            "total_seconds": time.perf_counter() - started, "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
