"""fit-occupancy: an occupancy network f: R³ → [0, 1] of one shape (Mescheder et al. 2019).

The field outputs logits; the loss is binary cross-entropy on labelled points; the surface is the
decision boundary τ = 0.5, stored in the checkpoint as ``level = 0`` (logit) with ``inside = "above"``.

Inputs: a mesh (labels computed here) or Occupancy Networks' ``points.npz`` (labels given). For a mesh,
points are drawn as in Occupancy Networks / IF-Net: a quarter uniform in the padded box and three
quarters on the surface plus Gaussian offsets at three scales, so the boundary is learnt sharply. They
are labelled by exact ray parity when the mesh is closed, and by the generalised winding number (> 0.5)
when it is not (holes, triangle soups, self-intersections), with a warning saying so; where the winding
number cancels (double-sided faces, common in ShapeNet) by the volume the surface encloses (voxel flood
fill). Labelled points
come in pools, each drawn and labelled once and reused a few steps; every pool is seeded by (seed,
pool number), so an interrupted run resumes to the same result.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon3d.console import info, progress_bar, warn
from recon3d.errors import InputError, Recon3dError
from recon3d.fields.encodings import HASHGRID
from recon3d.fit import losses
from recon3d.fit.loop import StepFn
from recon3d.fit.method import FitOptions, FitRun, Method
from recon3d.fit.presets import choose_preset, make_batch, make_settings, pick
from recon3d.fit.run import fit
from recon3d.io.labelled import LabelledPoints
from recon3d.io.shape import read_occupancy_input
from recon3d.memory import check_memory, field_point_bytes
from recon3d.mesh.inside import EnclosedVolume, RayParity, WindingNumber
from recon3d.mesh.weld import weld_vertices
from recon3d.metrics import mesh_is_watertight
from recon3d.points.duplicates import first_occurrences
from recon3d.points.normalize import data_bounds, fit_normalization, to_field
from recon3d.types import TriMesh

#: Probability of the surface, and the logit the checkpoint stores as its level.
THRESHOLD = 0.5
LEVEL = 0.0
#: Fractions of a pool: uniform in the box; the rest near the surface, offsets of these standard
#: deviations (field units; the shape's longest side spans 1.6) in equal shares.
UNIFORM_FRACTION = 0.25
NEAR_SIGMAS = (0.002, 0.01, 0.04)
#: How much the sampling box exceeds the meshing bounds (field units).
BOX_PAD = 0.05
#: Each labelled pool point is used about this many times (in expectation) before a new pool. Winding
#: numbers cost far more than ray parity, so open meshes get a single pool (None: for the whole run).
POOL_REUSE: dict[str, int | None] = {"parity": 4, "winding": None, "enclosed": 4, "file": 0}

_MLP_FAST = {"hidden": 64, "n_layers": 2, "activation": "relu"}
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "field": {"cuda": {"encoding": HASHGRID["cuda"], "mlp": _MLP_FAST},
                  "cpu": {"encoding": HASHGRID["cpu"], "mlp": _MLP_FAST}},
        "budget": {"cuda": {"steps": 2000, "batch": 65536, "lr": 1e-2, "pool": 1 << 21},
                   "cpu": {"steps": 1000, "batch": 8192, "lr": 1e-2, "pool": 1 << 17}},
    },
    "paper": {  # Occupancy Networks' decoder without the shape code: raw xyz into a 256-wide ReLU MLP
        "field": {"any": {"encoding": {"type": "none"},
                          "mlp": {"hidden": 256, "n_layers": 8, "activation": "relu", "skip_layers": [4]}}},
        "budget": {"cuda": {"steps": 10000, "batch": 16384, "lr": 5e-4, "pool": 1 << 21},
                   "cpu": {"steps": 2000, "batch": 2048, "lr": 5e-4, "pool": 1 << 16}},
    },
    "fourier": {
        "field": {"any": {"encoding": {"type": "fourier", "n_features": 128, "sigma": 4.0},
                          "mlp": {"hidden": 256, "n_layers": 4, "activation": "relu"}}},
        "budget": {"cuda": {"steps": 4000, "batch": 32768, "lr": 1e-3, "pool": 1 << 21},
                   "cpu": {"steps": 1500, "batch": 4096, "lr": 1e-3, "pool": 1 << 16}},
    },
}


@dataclass
class OccupancyOptions(FitOptions):
    """fit-occupancy's options: the common ones (batch = labelled points per step)."""


Labeller = Callable[[torch.Tensor], torch.Tensor]
RULES = {"parity": "ray parity (closed mesh)", "winding": "generalised winding number > 0.5 (open mesh)",
         "enclosed": "enclosed volume (voxel flood fill; the winding number cancels, e.g. double-sided faces)",
         "file": "labels from the file"}
#: Voxels per box side for the enclosed-volume rule.
ENCLOSED_RESOLUTION = {"cuda": 512, "cpu": 256}
#: Rough bytes per labelled pool point: the point, its label and the sampling temporaries.
POOL_POINT_BYTES = 160
#: Rasterising an open mesh shows a progress bar from this many sample batches on.
PROGRESS_BATCHES = 8


@dataclass
class ShapeData:
    """The shape in field coordinates, on the training device, and how its points get labels."""

    source: str
    rule: str  # a key of RULES: "parity" | "winding" | "enclosed" | "file"
    to_world: dict
    bounds: np.ndarray  # meshing box, field coordinates
    box: torch.Tensor  # (2, 3) sampling box, field coordinates
    triangles: torch.Tensor | None = None  # (T, 3, 3) for surface sampling
    cumulative_area: torch.Tensor | None = None
    labeller: Labeller | None = None
    points: torch.Tensor | None = None  # labelled points from a file
    labels: torch.Tensor | None = None
    size: int = 0  # faces or labelled points

    @property
    def rule_text(self) -> str:
        return RULES[self.rule]


def resolve_preset(options: OccupancyOptions, device: torch.device) -> dict[str, Any]:
    """The run config for this device: field, settings, batch and labelled-pool size."""
    preset = choose_preset(PRESETS, options.preset)
    budget = pick(preset["budget"], device)
    settings = make_settings(budget, options.steps, options.max_seconds, options.lr, options.seed, options.amp)
    batch = make_batch(budget, options.batch)
    field = pick(preset["field"], device)
    pool = max(int(budget["pool"]), batch)
    check_memory(batch * field_point_bytes(field, "train") + pool * POOL_POINT_BYTES,
                 f"a fit-occupancy step of --batch {batch}", "use a smaller --batch", device)
    return {"field": field, "settings": settings, "batch": batch, "pool": pool}


# ----------------------------------------------------------------------------------- the shape


def distinct_faces(faces: np.ndarray) -> tuple[np.ndarray, int]:
    """(faces without repeats of an earlier face, how many were dropped). A repeat has the same three
    vertices in the same cyclic order; the reverse face (a double-sided surface) is kept."""
    first = np.argmin(faces, axis=1)
    rolled = faces[np.arange(len(faces))[:, None], (first[:, None] + np.arange(3)) % 3]
    keep = first_occurrences(rolled)
    if keep is None:
        return faces, 0
    return faces[keep], len(faces) - len(keep)


def clean_mesh(mesh: TriMesh, source: str) -> tuple[TriMesh, bool]:
    """Weld vertices that share a position, drop degenerate and repeated faces; report whether the result
    is closed.

    OBJ files often split vertices along texture seams; welding makes such a mesh count as closed.
    Repeated faces are collapsed before any labelling: copies of one face make the labelling rules slow
    (and a closed mesh with a copied face no longer counts as closed).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        keep = finite[faces].all(axis=1)
        warn(f"{source}: dropped {int((~keep).sum())} faces with non-finite vertices")
        faces = faces[keep]
    unique, inverse = weld_vertices(vertices)
    faces = inverse[faces]
    a, b, c = (unique[faces[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    faces = faces[area > 0]
    if len(faces) == 0:
        raise InputError(f"{source}: the mesh has no face with non-zero area; nothing to fit")
    faces, copies = distinct_faces(faces)
    if copies:
        warn(f"{source}: collapsed {copies:,} duplicate face{'s' if copies > 1 else ''} (the same three vertices "
             "in the same order as an earlier face)")
    used = np.unique(faces)
    remap = np.zeros(len(unique), dtype=np.int64)
    remap[used] = np.arange(len(used))
    cleaned = TriMesh(vertices=unique[used], faces=remap[faces])
    extent = np.ptp(cleaned.vertices, axis=0)
    if float(extent.max()) <= 0:
        raise InputError(f"{source}: all vertices are identical; nothing to fit")
    return cleaned, mesh_is_watertight(cleaned)


def prepare_mesh(mesh: TriMesh, device: torch.device, source: str, deadline: float | None = None,
                 show_progress: bool = True) -> ShapeData:
    """Normalise the mesh and choose the labelling rule.

    ``deadline`` (time.monotonic()): the slow part of preparing an open mesh (rasterising it for the
    enclosed-volume rule) stops past it with one clear error."""
    mesh, closed = clean_mesh(mesh, source)
    to_world = fit_normalization(mesh.vertices, source)
    field_mesh = TriMesh(vertices=to_field(mesh.vertices, to_world), faces=mesh.faces)
    bounds = data_bounds(field_mesh.vertices)
    box = _box(bounds, device)
    if closed:
        rule, labeller = "parity", RayParity(field_mesh, device)
    else:
        info(f"{source}: {mesh.n_faces:,} faces, not closed: choosing an inside rule")
        rule, labeller = _open_mesh_rule(field_mesh, box, device, source, deadline, show_progress)
        warn(f"{source}: the mesh is not closed (holes or a triangle soup); inside/outside by "
             f"{RULES[rule]}")
    triangles = torch.as_tensor(field_mesh.vertices[field_mesh.faces], dtype=torch.float32, device=device)
    area = torch.linalg.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]).norm(dim=-1)
    shape = ShapeData(source=source, rule=rule, to_world=to_world, bounds=bounds, box=box,
                      triangles=triangles, cumulative_area=torch.cumsum(area.double(), 0), labeller=labeller,
                      size=mesh.n_faces)
    info(f"{source}: {mesh.n_faces:,} faces, {'closed' if closed else 'open'}; labels by {shape.rule_text}")
    return shape


def prepare_points(data: LabelledPoints, device: torch.device, source: str) -> ShapeData:
    """Labelled points: normalised by their box; the meshing bounds hug the inside points."""
    if len(data) < 16:
        raise InputError(f"{source}: only {len(data)} labelled points; at least 16 are needed")
    to_world = fit_normalization(data.points, source)
    points = to_field(data.points, to_world)
    inside = points[data.occupancies]
    spacing = float(np.ptp(points, axis=0).max()) / max(len(points) ** (1 / 3), 1.0)
    lo = np.maximum(inside.min(axis=0) - 2 * spacing, points.min(axis=0))
    hi = np.minimum(inside.max(axis=0) + 2 * spacing, points.max(axis=0))
    bounds = np.stack([np.maximum(lo, -1.0), np.minimum(hi, 1.0)])
    info(f"{source}: {len(data):,} labelled points, {int(data.occupancies.sum()):,} inside")
    return ShapeData(
        source=source, rule="file", to_world=to_world, bounds=bounds, box=_box(bounds, device),
        points=torch.as_tensor(points, dtype=torch.float32, device=device),
        labels=torch.as_tensor(data.occupancies, dtype=torch.float32, device=device), size=len(data),
    )


def _open_mesh_rule(mesh: TriMesh, box: torch.Tensor, device: torch.device, source: str = "input",
                    deadline: float | None = None, show_progress: bool = True) -> tuple[str, Labeller]:
    """Winding number for meshes with holes; enclosed volume when the winding number finds (almost)
    nothing inside that the surface encloses, as for double-sided triangle soups."""
    winding = WindingNumber(mesh, device)
    by_winding: Labeller = lambda x: winding(x).abs() > 0.5  # noqa: E731 - either orientation

    def stop_at_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise Recon3dError(f"{source}: preparing the input did not finish within --max-seconds (still "
                               "rasterising the open mesh); nothing was trained: raise --max-seconds or repair "
                               "the mesh")

    with contextlib.ExitStack() as stack:
        bar: list[Callable[[int, int], None]] = []

        def report(done: int, total: int) -> None:  # a bar only when rasterising takes many batches
            if not bar and show_progress and total >= PROGRESS_BATCHES:
                bar.append(stack.enter_context(progress_bar(f"{source}: rasterising the open mesh", total)))
            if bar:
                bar[0](done, total)
            stop_at_deadline()

        enclosed = EnclosedVolume(mesh, box.double().cpu().numpy(), ENCLOSED_RESOLUTION.get(device.type, 512), device,
                                  progress=report)
    gen = torch.Generator(device=device)
    gen.manual_seed(12345)
    probe = box[0] + torch.rand((8192, 3), device=device, generator=gen) * (box[1] - box[0])
    inside_winding = float(by_winding(probe).float().mean())
    inside_enclosed = float(enclosed(probe).float().mean())
    if inside_winding >= 0.5 * inside_enclosed:
        return "winding", by_winding
    return "enclosed", enclosed


def _box(bounds: np.ndarray, device: torch.device) -> torch.Tensor:
    box = np.stack([np.maximum(bounds[0] - BOX_PAD, -1.0), np.minimum(bounds[1] + BOX_PAD, 1.0)])
    return torch.as_tensor(box, dtype=torch.float32, device=device)


# ----------------------------------------------------------------------------------- sampling


def sample_surface(shape: ShapeData, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` points uniformly on the mesh's surface (area-weighted faces, uniform barycentrics)."""
    assert shape.triangles is not None and shape.cumulative_area is not None
    device = shape.triangles.device
    total = shape.cumulative_area[-1]
    pick_ = torch.rand(n, device=device, generator=gen, dtype=torch.float64) * total
    face = torch.searchsorted(shape.cumulative_area, pick_).clamp_(max=len(shape.triangles) - 1)
    r1, r2 = torch.rand((2, n, 1), device=device, generator=gen)
    s = r1.sqrt()
    tri = shape.triangles[face]
    return (1 - s) * tri[:, 0] + s * (1 - r2) * tri[:, 1] + s * r2 * tri[:, 2]


def draw_pool(shape: ShapeData, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` labelled points: uniform in the box plus Gaussian offsets around the surface."""
    device = shape.box.device
    n_uniform = int(round(n * UNIFORM_FRACTION))
    n_near = n - n_uniform
    uniform = shape.box[0] + torch.rand((n_uniform, 3), device=device, generator=gen) * (shape.box[1] - shape.box[0])
    sigmas = torch.tensor(NEAR_SIGMAS, device=device)
    which = torch.randint(0, len(NEAR_SIGMAS), (n_near, 1), device=device, generator=gen)
    near = sample_surface(shape, n_near, gen) + sigmas[which] * torch.randn((n_near, 3), device=device, generator=gen)
    points = torch.cat([uniform, near])
    assert shape.labeller is not None
    return points, shape.labeller(points).to(torch.float32)


def make_step(field: torch.nn.Module, shape: ShapeData, batch: int, pool: int, seed: int):
    """The per-step loss closure: BCE on a batch drawn from the current labelled pool."""
    device = shape.box.device
    reuse = POOL_REUSE[shape.rule]
    refresh = 1 << 62 if reuse is None else max(1, (pool * reuse) // batch)
    current: dict[str, Any] = {"index": -1}

    def pool_for(step_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if shape.rule == "file":
            assert shape.points is not None and shape.labels is not None
            return shape.points, shape.labels
        index = step_index // refresh
        if current["index"] != index:  # seeded by (seed, pool number): resume draws the same pool
            gen = torch.Generator(device=device)
            gen.manual_seed(seed * 1_000_003 + index)
            current["points"], current["labels"] = draw_pool(shape, pool, gen)
            current["index"] = index
        return current["points"], current["labels"]

    def step(step_index: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        points, labels = pool_for(step_index)
        idx = torch.randint(0, len(points), (batch,), device=device, generator=gen)
        logits = field(points[idx]).float()
        target = labels[idx]
        return {"loss": losses.occupancy_loss(logits, target), "misclassified": losses.misclassified(logits, target)}

    return step


# ----------------------------------------------------------------------------------- fitting


class OccupancyFromShape(Method):
    """fit-occupancy on a mesh (labels computed here) or on labelled points (labels given)."""

    name = command = "fit-occupancy"
    kind = "occupancy"
    options = OccupancyOptions
    records = ("input", "size", "labels", "threshold")
    summary = ("input", "size", "labels", "misclassified")

    def read(self, path: Path, options: FitOptions, device: torch.device) -> TriMesh | LabelledPoints:
        return read_occupancy_input(path)

    def check_resume(self, checkpoint: dict, data: Any, output: Path, path: Path) -> None:
        if checkpoint["train"].get("input") != ("points" if isinstance(data, LabelledPoints) else "mesh"):
            raise Recon3dError(f"{output}: was fitted to another kind of input; resume needs the same shape")

    def configure(self, options: FitOptions, data: Any, device: torch.device) -> dict[str, Any]:
        assert isinstance(options, OccupancyOptions)
        return resolve_preset(options, device)

    def prepare(self, run: FitRun, data: TriMesh | LabelledPoints) -> ShapeData:
        if isinstance(data, LabelledPoints):
            return prepare_points(data, run.device, run.source)
        seconds = run.config["settings"].max_seconds
        deadline = None if seconds is None else time.monotonic() + float(seconds)
        return prepare_mesh(data, run.device, run.source, deadline)

    def field_config(self, run: FitRun) -> dict[str, Any]:
        return {**run.config["field"], "level": LEVEL, "inside": "above"}

    def make_step(self, run: FitRun) -> StepFn:
        return make_step(run.field, run.data, run.config["batch"], run.config["pool"], run.config["settings"].seed)

    def train_records(self, run: FitRun) -> dict[str, Any]:
        shape: ShapeData = run.data
        terms, history = run.state.terms, run.state.history
        last = history[-1] if history else None
        return {
            "input": "points" if shape.rule == "file" else "mesh",
            "size": int(shape.size),
            "labels": shape.rule_text,
            "threshold": THRESHOLD,
            "misclassified": (float(last[1 + terms.index("misclassified")])
                              if last and "misclassified" in terms else None),
        }


def fit_occupancy(shape_input: TriMesh | LabelledPoints, options: OccupancyOptions, output: str | Path,
                  device: torch.device, source: str = "input", resume: dict | None = None,
                  show_progress: bool = True) -> dict[str, Any]:
    """Fit an occupancy field to a mesh or labelled points; write the checkpoint; return a summary."""
    return fit(OccupancyFromShape(), shape_input, options, output, device, source, resume, show_progress)
