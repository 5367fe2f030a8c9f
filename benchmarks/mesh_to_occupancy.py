"""Mesh to occupancy field: recon3d fit-occupancy, then MISE and dense extraction, judged against the input.

One process (imports and CUDA start-up paid once, before anything is timed): for each input mesh, fit an
occupancy network in-process (``recon3d.fit.occupancy.fit_occupancy``, the ``fast`` preset unless
``--preset``), extract its surface at 256³ and 512³ with MISE (coarse-to-fine, ``--method mise``) and
dense sampling, and compare the MISE mesh with the input (volume IoU, Chamfer-L1, normal consistency,
F-score, watertightness):

    python benchmarks/mesh_to_occupancy.py --device cuda --json-out results/occupancy_cuda.json
    python benchmarks/mesh_to_occupancy.py --quick --device cpu          # CPU smoke run, minutes

The table goes to stdout (markdown); progress lines go to stderr. See benchmarks/README.md.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # the budget counts from here: imports included

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import fnmatch  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._stamp import code_stamp  # noqa: E402
from recon3d.device import resolve_device, synchronize  # noqa: E402
from recon3d.fit.occupancy import PRESETS, OccupancyOptions, clean_mesh, fit_occupancy, prepare_mesh  # noqa: E402
from recon3d.io.checkpoint import load_checkpoint  # noqa: E402
from recon3d.io.mesh import read_mesh  # noqa: E402
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint  # noqa: E402
from recon3d.metrics import evaluate, inside_mesh, mesh_is_watertight, volume_iou  # noqa: E402
from recon3d.points.normalize import to_field  # noqa: E402
from recon3d.types import TriMesh  # noqa: E402

#: Inputs in the order they run (the budget may stop the tail): the closed ~100k-face target first, the
#: open teapot (the winding-number path), the other closed meshes, then the ShapeNet soups (double-sided:
#: their winding number is about 0 everywhere, so every label is "outside" and the field comes out empty).
ORDER = ("spot", "spot-94k", "teapot", "fandisk", "rocker-arm", "cheburashka", "homer", "cow",
         "shapenet-bench", "shapenet-table")
QUICK = ("spot", "teapot")
QUICK_STEPS = 200
SHAPENET = {"02828884": "bench", "04379243": "table"}
RESOLUTIONS = (256, 512)
METHODS = (("sparse", "MISE"), ("dense", "dense"))
WARMUP_RESOLUTION = 64
WARMUP_STEPS = 3
#: A new input starts only while the elapsed time is below --budget-seconds and the slowest input so far
#: would still end within --budget-seconds + this margin (the device allows 600 s per command).
BUDGET_MARGIN = 120.0


def log(message: str) -> None:
    print(f"[mesh_to_occupancy] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class Input:
    name: str
    source: str  # the file it was read from, and how it was changed
    load: Callable[[], TriMesh]


def _find(data: Path, relative: str) -> Path | None:
    """DATA/relative, else ../shared/data/relative beside the repository (the shared original)."""
    for root in (data, REPO.parent / "shared" / "data"):
        path = root / relative
        if path.exists():
            if root != data:
                log(f"note: {data / relative} is missing; using {path}")
            return path
    return None


def _subdivided(path: Path, times: int) -> TriMesh:
    """The mesh, welded (so it stays closed), split ``times`` times into 4 (midpoints: same surface)."""
    import trimesh

    welded, _ = clean_mesh(read_mesh(path), str(path))
    mesh = trimesh.Trimesh(vertices=welded.vertices, faces=welded.faces, process=False)
    for _ in range(times):
        mesh = mesh.subdivide()
    return TriMesh(vertices=np.asarray(mesh.vertices, dtype=np.float64), faces=np.asarray(mesh.faces, dtype=np.int64))


def find_inputs(data: Path) -> tuple[list[Input], list[str]]:
    """All inputs in ORDER (then any other DATA/meshes/*.obj), and the names whose files are missing."""
    found: dict[str, Input] = {}
    missing: list[str] = []
    mesh_dir = _find(data, "meshes")
    names = sorted(p.stem for p in mesh_dir.glob("*.obj")) if mesh_dir else []
    for name in names:
        path = mesh_dir / f"{name}.obj"
        found[name] = Input(name, str(path), lambda p=path: read_mesh(p))
    if "spot" in found:
        path = Path(found["spot"].source)
        found["spot-94k"] = Input("spot-94k", f"{path}, subdivided twice (trimesh)", lambda p=path: _subdivided(p, 2))
    shapenet = _find(data, "shapenet")
    for synset, label in SHAPENET.items():
        hits = sorted(shapenet.glob(f"{synset}/*/model_normalized.obj")) if shapenet else []
        name = f"shapenet-{label}"
        if hits:
            found[name] = Input(name, str(hits[0]), lambda p=hits[0]: read_mesh(p))
    for name in ORDER:
        if name not in found:
            missing.append(name)
    ordered = [found[n] for n in ORDER if n in found] + [found[n] for n in sorted(found) if n not in ORDER]
    return ordered, missing


def select(inputs: list[Input], args: argparse.Namespace) -> list[Input]:
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        chosen = [i for i in inputs if any(fnmatch.fnmatchcase(i.name.lower(), w) for w in wanted)]
        unknown = [w for w in wanted if not any(fnmatch.fnmatchcase(i.name.lower(), w) for i in inputs)]
        if unknown:
            log(f"note: --only {','.join(unknown)} matches no input (have: {', '.join(i.name for i in inputs)})")
        return chosen
    if args.quick:
        return [i for i in inputs if i.name in QUICK]
    return inputs


# ---------------------------------------------------------------------------------------- measuring


def _elapsed() -> float:
    return time.perf_counter() - _T0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed_fit(mesh: TriMesh, options: OccupancyOptions, out: Path, device: torch.device,
              source: str) -> tuple[dict, float]:
    """fit_occupancy in-process; (summary, wall seconds from the mesh to the written checkpoint)."""
    synchronize(device)
    start = time.perf_counter()
    summary = fit_occupancy(mesh, options, out, device, source=source, show_progress=False)
    synchronize(device)
    return summary, time.perf_counter() - start


def timed_extract(checkpoint: dict, resolution: int, method: str, device: torch.device,
                  refine: int = 0) -> tuple[TriMesh, dict]:
    """mesh_from_checkpoint as extract-mesh runs it (field normals by default), timed."""
    synchronize(device)
    start = time.perf_counter()
    mesh, stats = mesh_from_checkpoint(checkpoint, MeshOptions(resolution=resolution, method=method, refine=refine),
                                       device)
    synchronize(device)
    stats["wall_seconds"] = time.perf_counter() - start
    return mesh, stats


def warm_up(options: OccupancyOptions, device: torch.device, work: Path) -> float:
    """A few fit steps and small extractions on an icosphere, so CUDA start-up is never timed."""
    import trimesh

    start = time.perf_counter()
    sphere = trimesh.creation.icosphere(subdivisions=3)
    mesh = TriMesh(vertices=np.asarray(sphere.vertices, dtype=np.float64),
                   faces=np.asarray(sphere.faces, dtype=np.int64))
    warm = OccupancyOptions(preset=options.preset, steps=WARMUP_STEPS, seed=options.seed)
    path = work / "warm-up.pt"
    fit_occupancy(mesh, warm, path, device, source="warm-up", show_progress=False)
    checkpoint = load_checkpoint(path)
    for method, _ in METHODS:
        timed_extract(checkpoint, WARMUP_RESOLUTION, method, device)
    synchronize(device)
    return time.perf_counter() - start


def reference_labeller(mesh: TriMesh, device: torch.device, name: str):
    """The inside test fit-occupancy trains with (parity, winding number or enclosed volume), on
    points in the input's units: the ground truth for IoU, open meshes included."""
    shape = prepare_mesh(mesh, device, name)

    def inside(points: np.ndarray) -> np.ndarray:
        field_points = torch.as_tensor(to_field(points, shape.to_world), dtype=torch.float32, device=device)
        return shape.labeller(field_points).cpu().numpy().astype(bool)

    return inside, shape.rule_text


def labelled_iou(pred: TriMesh, reference: TriMesh, inside_reference, n: int, seed: int) -> float:
    """Monte-Carlo volume IoU over the union box; the reference's inside by its training rule, the
    prediction's (closed by construction) by ray parity."""
    lo = np.minimum(pred.vertices.min(axis=0), reference.vertices.min(axis=0))
    hi = np.maximum(pred.vertices.max(axis=0), reference.vertices.max(axis=0))
    points = lo + np.random.default_rng(seed).random((n, 3)) * (hi - lo)
    in_ref = inside_reference(points)
    in_pred = inside_mesh(pred, points)
    union = np.count_nonzero(in_ref | in_pred)
    return float(np.count_nonzero(in_ref & in_pred) / union) if union else 0.0


def inside_fraction(reference: TriMesh, inside_reference, n: int = 20_000) -> float:
    """Share of uniform points in the input's box that its labelling rule calls inside (a sanity check)."""
    lo, hi = reference.vertices.min(axis=0), reference.vertices.max(axis=0)
    points = lo + np.random.default_rng(1).random((n, 3)) * (hi - lo)
    return float(inside_reference(points).mean())


def closed_by_connectivity(faces: np.ndarray) -> bool:
    """mesh_is_watertight's edge test on the face indices alone, without welding vertices by position.

    Tells a mesh whose connectivity is closed, but where two distinct vertices landed on one position
    (e.g. after refine steps), from one that really has holes.
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or len(faces) == 0 or (faces[:, 0] == faces[:, 1]).any() or \
            (faces[:, 1] == faces[:, 2]).any() or (faces[:, 0] == faces[:, 2]).any():
        return False
    n = int(faces.max()) + 1
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    keys = np.sort(start * n + end)
    if np.any(keys[1:] == keys[:-1]):
        return False
    reverse = end * n + start
    found = np.searchsorted(keys, reverse).clip(max=len(keys) - 1)
    return bool(np.all(keys[found] == reverse))


def run_input(item: Input, args: argparse.Namespace, device: torch.device, work: Path,
              resolutions: tuple[int, ...]) -> dict:
    row: dict[str, Any] = {"input": item.name, "source": item.source}
    started = time.perf_counter()
    mesh = item.load()
    reference, closed = clean_mesh(mesh, item.name)  # welded by position, degenerate faces dropped
    inside_reference, rule = reference_labeller(mesh, device, item.name)
    row.update(faces=int(mesh.n_faces), vertices=int(mesh.n_vertices), closed=bool(closed), labels=rule)
    row["inside_fraction"] = inside_fraction(reference, inside_reference)
    log(f"    {mesh.n_faces:,} faces, {'closed' if closed else 'OPEN'}; {100 * row['inside_fraction']:.1f}% of its box "
        f"is inside by {row['labels']}")

    options = OccupancyOptions(preset=args.preset, steps=args.steps, seed=args.seed)
    checkpoint_path = work / f"{item.name}.pt"
    _reset_peak(device)
    summary, fit_wall = timed_fit(mesh, options, checkpoint_path, device, item.name)
    checkpoint = load_checkpoint(checkpoint_path)
    train = checkpoint["train"]
    row["fit"] = {"wall_seconds": fit_wall, "train_seconds": float(train["seconds"]), "steps": train["steps"],
                  "stopped_by": train["stopped_by"], "loss": summary.get("loss"),
                  "misclassified": train.get("misclassified"), "labels": train.get("labels"),
                  "batch": train["config"]["batch"], "pool": train["config"]["pool"],
                  "lr": train["config"]["settings"]["lr"], "field": train["config"]["field"],
                  "peak_gpu_gib": _peak_gib(device)}
    mis = train.get("misclassified")
    log(f"    fit {fit_wall:.1f} s wall (train {train['seconds']:.1f} s, {train['steps']} steps"
        + (f", misclassified {100 * mis:.2f}%" if mis is not None else "") + ")")

    eval_res = max(resolutions)
    pred: TriMesh | None = None
    row["extract"] = {}
    for resolution in RESOLUTIONS:
        for method, label in METHODS:
            key = f"{label} {resolution}"
            if resolution not in resolutions:
                row["extract"][key] = {"skipped": "--quick"}
                continue
            if resolution == 512 and method == "dense" and args.no_dense_512:
                row["extract"][key] = {"skipped": "--no-dense-512"}
                continue
            _reset_peak(device)
            out, stats = timed_extract(checkpoint, resolution, method, device, args.refine)
            stats["watertight"] = mesh_is_watertight(out) if out.n_faces else False
            stats["closed_by_connectivity"] = closed_by_connectivity(out.faces) if out.n_faces else False
            stats["peak_gpu_gib"] = _peak_gib(device)
            row["extract"][key] = stats
            log(f"    {key}³: {stats['wall_seconds']:.2f} s, {stats['queries'] / 1e6:.2f}M queries, "
                f"{stats['faces']:,} faces, watertight {stats['watertight']}"
                + ("" if stats["watertight"] or not stats["closed_by_connectivity"] else
                   " (closed by connectivity: distinct vertices share a position)"))
            if method == "sparse" and resolution == eval_res:
                pred = out
            del out
            if device.type == "cuda":
                torch.cuda.empty_cache()
    row["metrics_mesh"] = f"MISE {eval_res}"
    mise = row["extract"].get(f"MISE {eval_res}", {})
    row["fit_plus_mise_seconds"] = fit_wall + mise["wall_seconds"] if "wall_seconds" in mise else None
    dense512, mise512 = row["extract"].get("dense 512", {}), row["extract"].get("MISE 512", {})
    if "lattice_queries" in dense512 and mise512.get("lattice_queries"):
        row["query_ratio_512"] = dense512["lattice_queries"] / mise512["lattice_queries"]
    for res in resolutions:
        d, m = row["extract"].get(f"dense {res}", {}), row["extract"].get(f"MISE {res}", {})
        if "faces" in d and "faces" in m:
            m["same_faces_as_dense"] = d["faces"] == m["faces"]

    assert pred is not None
    if pred.n_faces == 0:
        row["error"] = f"empty mesh (labels: {100 * row['inside_fraction']:.1f}% of the box inside)"
        return row
    start = time.perf_counter()
    metrics = evaluate(pred, reference, n_samples=args.eval_samples, seed=0)
    row["metrics"] = metrics
    if closed and metrics.get("volume_iou") is not None and args.iou_samples == args.eval_samples:
        row["iou"], row["iou_rule"] = metrics["volume_iou"], "ray parity"  # evaluate ran volume_iou(n, seed 2)
    elif closed:  # evaluate skips it when the prediction fails the watertight test; parity still applies
        row["iou"], row["iou_rule"] = volume_iou(pred, reference, n=args.iou_samples, seed=2), "ray parity"
    else:
        row["iou"] = labelled_iou(pred, reference, inside_reference, args.iou_samples, seed=2)
        row["iou_rule"] = rule
    row["eval_seconds"] = time.perf_counter() - start
    row["seconds"] = time.perf_counter() - started
    log(f"    IoU {row['iou']:.4f} ({row['iou_rule']}), CD-L1 {100 * metrics['chamfer_l1']:.3f}%, "
        f"NC {metrics['normal_consistency']:.4f}, F@0.5% {metrics['fscore@0.5%']:.4f}, "
        f"watertight {metrics['watertight']} (eval {row['eval_seconds']:.1f} s)")
    return row


# ----------------------------------------------------------------------------------------- table


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _queries(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _extract_cell(stats: dict | None) -> str:
    if not stats:
        return "–"
    if "skipped" in stats:
        return f"skipped ({stats['skipped']})"
    return f"{stats['wall_seconds']:.2f} / {_queries(stats['lattice_queries'])}"


def table(rows: list[dict], skipped: list[dict]) -> str:
    header = ["input", "faces", "closed", "fit s (wall / train)", "MISE 256 s / queries", "dense 256 s / queries",
              "MISE 512 s / queries", "dense 512 s / queries", "queries dense/MISE @512",
              "fit + MISE 512 s", "IoU", "CD-L1 %", "NC", "F@0.5%", "watertight"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    eval_res = None
    for row in rows:
        faces = _fmt(row.get("faces"), ",")
        closed = _fmt(row.get("closed"), "")
        if "fit" not in row:
            lines.append("| " + " | ".join([row["input"], faces, closed, f"failed: {row.get('error', '?')[:80]}"]
                                          + [""] * (len(header) - 4)) + " |")
            continue
        fit = row["fit"]
        ext = row.get("extract", {})
        m = row.get("metrics") or {}
        eval_res = row.get("metrics_mesh")
        total = row.get("fit_plus_mise_seconds")
        total_cell = _fmt(total, ".1f") + ("" if "wall_seconds" in ext.get("MISE 512", {}) else " (256)")
        done = [s for s in ext.values() if "watertight" in s]
        metric_stats = ext.get(row.get("metrics_mesh", ""), {})
        mark = "*" if m and not m.get("watertight") and metric_stats.get("closed_by_connectivity") else ""
        watertight = f"{_fmt(m.get('watertight'), '')}{mark} ({sum(bool(s['watertight']) for s in done)}/" \
            f"{len(done)})" if m else "–"
        iou = _fmt(row.get("iou"), ".4f") + (" ʷ" if row.get("iou_rule") == "winding number" else "")
        chamfer = m.get("chamfer_l1")
        cells = [row["input"], faces, closed, f"{fit['wall_seconds']:.1f} / {fit['train_seconds']:.1f}",
                 *(_extract_cell(ext.get(k)) for k in ("MISE 256", "dense 256", "MISE 512", "dense 512")),
                 _fmt(row.get("query_ratio_512"), ".1f") + ("×" if row.get("query_ratio_512") else ""),
                 total_cell, iou, _fmt(None if chamfer is None else 100 * chamfer, ".3f"),
                 _fmt(m.get("normal_consistency"), ".4f"), _fmt(m.get("fscore@0.5%"), ".4f"), watertight]
        if "error" in row:
            cells[-5:] = [f"failed: {row['error'][:60]}", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    for item in skipped:
        lines.append("| " + " | ".join([item["input"], "", "", f"not run: {item['reason']}"]
                                      + [""] * (len(header) - 4)) + " |")
    lines += [
        "",
        f"Metrics against the input mesh, on the {eval_res or 'MISE'}³ mesh. Extraction cells: wall seconds "
        "(synchronised; on CUDA after a warm-up fit and extraction) / field queries on the lattice "
        "(the field normals, one query per vertex, come on top). fit s: wall from the mesh to the written checkpoint "
        "(labelling included) / the training loop's own seconds. IoU: Monte-Carlo volume IoU over the union "
        "box; ʷ = the input is open, its inside by the rule fit-occupancy labels it "
        "with (winding number, or enclosed volume for double-sided soups). watertight: the metrics mesh, "
        "(extractions watertight / extractions run); * = its "
        "connectivity is closed but distinct vertices share a position (so the weld-by-position test fails).",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ run record


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": str(device),
                            "torch_threads": torch.get_num_threads()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or None
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        info["cuda"] = torch.version.cuda
    info.update(code_stamp())
    return info


def write_record(path: Path, record: dict) -> None:
    """Atomically (temporary sibling, rename), so a killed run leaves the last complete record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "data",
                   help="data folder (meshes/, shapenet/); a missing file is taken from ../shared/data")
    p.add_argument("--work", type=Path, default=None, help="folder for checkpoints [a new temp dir, kept]")
    p.add_argument("--json-out", type=Path, default=None,
                   help="results JSON [benchmarks/results/occupancy_<device>.json]")
    p.add_argument("--only", default=None, help="comma-separated input names (shell patterns allowed: 'shapenet-*')")
    p.add_argument("--quick", action="store_true",
                   help=f"CPU smoke run: {' and '.join(QUICK)}, 256³ only, {QUICK_STEPS} steps unless --steps")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--preset", default="fast", choices=sorted(PRESETS), help="fit-occupancy preset")
    p.add_argument("--steps", type=int, default=None, help="fit steps [the preset's for the device]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refine", type=int, default=0,
                   help="Newton refinement steps in every extraction (extract-mesh --refine)")
    p.add_argument("--no-dense-512", action="store_true", help="skip dense sampling at 512³ (the slowest step)")
    p.add_argument("--eval-samples", type=int, default=200_000, help="surface samples per mesh for the metrics")
    p.add_argument("--iou-samples", type=int, default=200_000, help="Monte-Carlo points for the volume IoU")
    p.add_argument("--budget-seconds", type=float, default=420.0,
                   help="start no new input after this many seconds (from start-up); also none that the "
                        f"slowest input so far would carry past it + {BUDGET_MARGIN:.0f} s")
    args = p.parse_args(argv)
    if args.quick and args.steps is None:
        args.steps = QUICK_STEPS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    device = resolve_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="mesh_to_occupancy-"))
    work.mkdir(parents=True, exist_ok=True)
    json_out = args.json_out or REPO / "benchmarks" / "results" / f"occupancy_{device.type}.json"
    resolutions = (256,) if args.quick else RESOLUTIONS
    inputs, missing = find_inputs(args.data)
    if missing:
        log(f"note: missing inputs (no file in {args.data} or ../shared/data): {', '.join(missing)}")
    inputs = select(inputs, args)
    if not inputs:
        log("error: no inputs to run")
        return 1
    log(f"device {device}; preset {args.preset}; steps {args.steps or 'preset default'}; resolutions "
        f"{', '.join(f'{r}³' for r in resolutions)}{'' if not args.no_dense_512 else ' (no dense 512³)'}; "
        f"work {work}; {len(inputs)} inputs: {', '.join(i.name for i in inputs)}")
    env = environment(device)
    record: dict[str, Any] = {
        "benchmark": "mesh_to_occupancy", "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(command), "environment": env,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "resolutions": list(resolutions), "rows": [], "skipped": [], "missing": missing,
    }
    if device.type == "cuda":  # CUDA context, kernels and allocator: paid here, never timed
        record["warmup_seconds"] = warm_up(OccupancyOptions(preset=args.preset, seed=args.seed), device, work)
        log(f"warm-up (fit {WARMUP_STEPS} steps + {WARMUP_RESOLUTION}³ extractions) {record['warmup_seconds']:.1f} s;"
            f" elapsed {_elapsed():.1f} s")
    slowest = 0.0
    for i, item in enumerate(inputs, 1):
        elapsed = _elapsed()
        if elapsed >= args.budget_seconds or elapsed + slowest > args.budget_seconds + BUDGET_MARGIN:
            reason = f"budget ({elapsed:.0f} s elapsed, slowest input {slowest:.0f} s, --budget-seconds " \
                     f"{args.budget_seconds:g})"
            for rest in inputs[i - 1:]:
                record["skipped"].append({"input": rest.name, "reason": "time budget"})
            log(f"stopping: {reason}; not run: {', '.join(r.name for r in inputs[i - 1:])}")
            break
        log(f"[{i}/{len(inputs)}] {item.name} ({item.source})")
        start = time.perf_counter()
        try:
            row = run_input(item, args, device, work, resolutions)
        except Exception as exc:  # noqa: BLE001 - one failed input is a row, not a crash
            traceback.print_exc(file=sys.stderr)
            row = {"input": item.name, "source": item.source, "error": f"{type(exc).__name__}: {exc}"}
        row["seconds"] = time.perf_counter() - start
        slowest = max(slowest, row["seconds"])
        record["rows"].append(row)
        record["total_seconds"] = _elapsed()
        write_record(json_out, record)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        log(f"    {item.name} done in {row['seconds']:.1f} s; elapsed {_elapsed():.1f} s")
    record["total_seconds"] = _elapsed()
    write_record(json_out, record)
    log(f"wrote {json_out}")
    print(f"mesh → occupancy ({args.preset} preset{', --quick' if args.quick else ''}), {record['date']}, "
          f"commit {env.get('git_commit')}{' (dirty)' if env.get('git_dirty') else ''}, device {device}, "
          f"CPU {env.get('cpu')}, GPU {env.get('gpu')}, torch {env.get('torch')}\n"
          f"command: {record['command']}\n")
    print(table(record["rows"], record["skipped"]))
    return 0 if all("error" not in row for row in record["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
