"""Closed triangle meshes from implicit fields (SDF, occupancy, density): :func:`extract_mesh`.

The field describes its own surface (:class:`recon3d.fields.surface.Surface`); nothing here asks
which kind of field it is. Pipeline: sample the field (dense grid, or coarse-to-fine blocks near the
surface) → marching cubes on canonical values, on the field's device (:mod:`recon3d.mesh.cubes`;
scikit-image's Lewiner per block + weld as the reference) → drop closed pieces the data does not
support (when a ``support`` is given) → optional largest component → vertex normals. The lattice is
padded with an outside value, so the mesh is closed even where the surface leaves the box.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from recon3d.device import map_in_chunks
from recon3d.errors import Recon3dError
from recon3d.fields.gradient import autograd_gradient
from recon3d.fields.surface import FieldFn, Surface
from recon3d.memory import check_memory, format_bytes
from recon3d.mesh import cubes, marching
from recon3d.mesh.cavities import cavity_faces
from recon3d.mesh.grid import Lattice, ProgressFn, Sampler, sample_dense, sample_sparse
from recon3d.mesh.support import supported_faces
from recon3d.mesh.weld import compact, weld
from recon3d.types import TriMesh

_INSIDE = {"below": 1.0, "above": -1.0}  # canonical sign: u = sign * (f - level) is > 0 outside
METHODS = ("sparse", "dense")
NORMALS = ("field", "mesh", "none")
MARCHING = ("table", "lewiner")
RESOLUTIONS = (8, 4096)
MAX_REFINE = 10
_DIFF_STEP = 0.5  # central-difference step in cells, used when the field is not differentiable
#: Memory estimate (recon3d.memory): peak bytes per cell of a typical surface (sparse refinement, blocks,
#: marching cubes, the mesh and its normals), the surface of a closed shape filling its box taken as
#: xy + yz + zx cells; bytes per lattice vertex of a dense evaluation; bytes per point of a chunk besides
#: the field's own; and the field's bytes per point (evaluation, gradient) when it has no config.
SURFACE_CELL_BYTES = 1200
DENSE_VERTEX_BYTES = 10
SAMPLER_POINT_BYTES = 64
DEFAULT_POINT_BYTES = (256.0, 1024.0)
#: Before marching cubes: surface cells per block of 8³ on average, the triangulation's bytes per cell of a
#: batch, and the mesh's bytes per surface cell (vertices, faces, normals, the copy in the input's units).
ACTIVE_CELLS_PER_BLOCK = 128
TRIANGULATE_CELL_BYTES = 1024
MESH_CELL_BYTES = 200


@dataclass
class ExtractOptions:
    """How to mesh a surface.

    ``resolution``: cells on the longest box axis, the same cell size elsewhere (None: 512 on a GPU,
    256 on a CPU). ``method="sparse"`` evaluates coarse-to-fine near the surface and gives the same
    mesh as ``"dense"`` unless a surface piece hides inside one coarse cell (see
    :mod:`recon3d.mesh.grid`). ``chunk``: field points per evaluation. ``normals``: ``"field"``
    (field gradient, autograd or central differences), ``"mesh"`` (area-weighted faces) or ``"none"``.
    ``refine`` Newton steps move each vertex along the field's gradient onto the level (at most half a
    cell in all), which sharpens fields that are far from linear across a cell, such as occupancy
    logits. ``marching_cubes``: ``"table"`` (all cells at once on the device, asymptotic decider on
    faces) or ``"lewiner"`` (scikit-image, block by block on the CPU, then welded). ``drop_cavities``
    removes closed pieces that face inward, voids sealed inside the solid (see :mod:`recon3d.mesh.cavities`).
    """

    resolution: int | None = None
    method: str = "sparse"
    chunk: int = 2**18
    largest_component: bool = False
    drop_cavities: bool = False
    normals: str = "field"
    refine: int = 0
    marching_cubes: str = "table"

    def validate(self) -> None:
        """Raise one clear Recon3dError for the first option out of range."""
        low, high = RESOLUTIONS
        if self.resolution is not None and not low <= int(self.resolution) <= high:
            raise Recon3dError(f"--resolution must be between {low} and {high}")
        if self.method not in METHODS:
            raise Recon3dError(f"--method {self.method}: choose mise or dense")
        if not 0 <= int(self.refine) <= MAX_REFINE:
            raise Recon3dError(f"--refine must be between 0 and {MAX_REFINE}")
        if self.normals not in NORMALS:
            raise Recon3dError(f"--normals {self.normals}: choose field, mesh or none")
        if self.marching_cubes not in MARCHING:
            raise Recon3dError(f"--marching-cubes {self.marching_cubes}: choose table or lewiner")
        if int(self.chunk) < 1:
            raise Recon3dError(f"--chunk must be at least 1, got {self.chunk}")


def default_resolution(device: torch.device | str) -> int:
    """512³ on a GPU (seconds); 256³ on a CPU, where 512³ takes minutes."""
    return 512 if torch.device(device).type == "cuda" else 256


@dataclass
class ExtractResult:
    """The mesh (in the field's coordinates) and what it cost."""

    mesh: TriMesh
    queries: int  # field evaluations, including those for refinement and field normals
    resolution: tuple[int, int, int]  # sampled cells per axis
    seconds: dict[str, float]  # evaluate, marching_cubes, cleanup, normals, total
    lattice_queries: int = 0  # field evaluations on the lattice alone (what MISE saves against dense)
    dropped: int = 0  # closed pieces dropped for lack of data support
    value_range: tuple[float, float] | None = None  # lowest and highest field value sampled on the lattice
    cavities: int = 0  # inward-facing closed pieces dropped (drop_cavities)


def estimate_bytes(lattice: Lattice, options: ExtractOptions,
                   point_bytes: tuple[float, float] = DEFAULT_POINT_BYTES) -> tuple[float, float]:
    """Rough peak memory of an extraction: (bytes that grow with the resolution, bytes of one chunk).

    ``point_bytes``: the field's bytes per point without and with autograd (recon3d.memory.field_point_bytes).
    """
    cx, cy, cz = lattice.cells
    vertices = (cx + 1) * (cy + 1) * (cz + 1)
    grid = float(cx * cy + cy * cz + cz * cx) * SURFACE_CELL_BYTES
    if options.method == "dense":
        grid += float(vertices) * DENSE_VERTEX_BYTES
    surface = cx * cy + cy * cz + cz * cx
    chunk = float(min(int(options.chunk), vertices)) * (point_bytes[0] + SAMPLER_POINT_BYTES)
    if options.normals == "field" or options.refine:  # gradients at the mesh's vertices, about one per surface cell
        chunk = max(chunk, float(min(int(options.chunk), surface)) * (point_bytes[1] + SAMPLER_POINT_BYTES))
    return grid, chunk


def check_extraction_memory(lattice: Lattice, options: ExtractOptions, device: torch.device | str,
                            point_bytes: tuple[float, float] = DEFAULT_POINT_BYTES) -> None:
    """Refuse, before any evaluation, an extraction whose estimated memory exceeds what ``device`` has,
    naming the options that reduce it."""
    grid, chunk = estimate_bytes(lattice, options, point_bytes)
    resolution = max(lattice.cells)
    remedy = "use a smaller --resolution" + (" or --method mise" if options.method == "dense" else "")
    if chunk > grid:
        per_point = format_bytes(point_bytes[0])
        remedy = f"use a smaller --chunk (the field takes about {per_point} per point) or --resolution"
    check_memory(grid + chunk, f"extraction at --resolution {resolution} with --chunk {int(options.chunk)}", remedy,
                 device)


def check_triangulation_memory(blocks: int, resolution: int, device: torch.device | str) -> None:
    """Before marching cubes: its batches (at most cubes.BATCH_CELLS cells) and the mesh, from the number of
    blocks the surface passes through (ACTIVE_CELLS_PER_BLOCK of their cells on average)."""
    active = blocks * ACTIVE_CELLS_PER_BLOCK
    need = min(active, cubes.BATCH_CELLS) * TRIANGULATE_CELL_BYTES + active * MESH_CELL_BYTES
    check_memory(need, f"extraction at --resolution {resolution}", "use a smaller --resolution", device)


def _allocation_failure(exc: BaseException) -> bool:
    """torch's CPU allocator reports exhausted memory as a RuntimeError."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "not enough memory" in text


def extract_mesh(
    surface: Surface,
    bounds: np.ndarray,
    options: ExtractOptions | None = None,
    device: str | torch.device = "cpu",
    support: dict[str, np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    point_bytes: tuple[float, float] | None = None,
) -> ExtractResult:
    """Extract the closed surface of ``surface`` inside ``bounds`` (a (2, 3) box, field coordinates).

    ``surface.function`` maps (N, 3) float32 points on ``device`` to (N,) values, at most
    ``options.chunk`` points per call; a ``surface.lipschitz`` bound (1 for a true SDF) makes the
    coarse-to-fine culling exact. ``support`` (see :mod:`recon3d.mesh.support`, field coordinates)
    drops closed pieces that no data point is near. ``progress`` is called as ``progress(stage, fraction)``.
    ``point_bytes``: the field's memory per point (evaluation, gradient) for the up-front memory check.
    """
    options = options or ExtractOptions()
    options.validate()
    resolution = int(options.resolution or default_resolution(device))
    lattice = Lattice.from_bounds(bounds, resolution)
    check_extraction_memory(lattice, options, device, point_bytes or DEFAULT_POINT_BYTES)
    try:
        return _extract(surface, lattice, options, device, support, progress)
    except (RuntimeError, MemoryError) as exc:
        if not _allocation_failure(exc):
            raise
        raise Recon3dError(f"extraction at --resolution {resolution} ran out of memory; use a smaller --resolution "
                           "or --chunk") from None


def _extract(surface: Surface, lattice: Lattice, options: ExtractOptions, device: str | torch.device,
             support: dict[str, np.ndarray] | None, progress: ProgressFn | None) -> ExtractResult:
    start = time.perf_counter()
    lipschitz = surface.lipschitz
    if lipschitz is not None and not (np.isfinite(lipschitz) and lipschitz > 0):
        raise Recon3dError(f"lipschitz must be a positive number, got {lipschitz}")
    sampler = Sampler(surface.function, lattice, float(surface.level), _INSIDE[surface.inside], int(options.chunk),
                      torch.device(device))
    seconds: dict[str, float] = {}
    with _timed(seconds, "evaluate"):
        if options.method == "dense":
            sampled = sample_dense(sampler, progress)
        else:
            sampled = sample_sparse(sampler, lipschitz, progress)
    lattice_queries = sampler.queries
    value_range = sampler.value_range()
    check_triangulation_memory(len(sampled.origins), max(lattice.cells), device)
    with _timed(seconds, "marching_cubes"):
        if options.marching_cubes == "table":
            verts, faces = cubes.triangulate(sampled.values, sampled.origins, sampled.dims())
            if progress is not None:
                progress("marching_cubes", 1.0)
        else:
            values, origins = sampled.values.cpu().numpy(), sampled.origins.cpu().numpy()
            verts, faces = weld(*marching.triangulate_blocks(values, origins, progress))
    dropped = cavities = 0
    with _timed(seconds, "cleanup"):
        if support is not None and len(faces):
            keep, dropped = supported_faces(lattice.to_field(verts), faces, support, device=device)
            if dropped:
                verts, faces = compact(verts, faces[keep])
        if options.drop_cavities and len(faces):
            keep, cavities = cavity_faces(verts, faces)
            if cavities:
                verts, faces = compact(verts, faces[keep])
        if options.largest_component:
            verts, faces = marching.largest_component(verts, faces)
    vertices = lattice.to_field(verts)
    if options.refine and len(vertices):
        with _timed(seconds, "refine"):
            vertices = _refine(sampler, vertices, int(options.refine))
    with _timed(seconds, "normals"):
        vertex_normals = _normals(options.normals, sampler, verts, vertices, faces, progress)
    seconds["total"] = time.perf_counter() - start
    mesh = TriMesh(vertices=vertices, faces=faces, vertex_normals=vertex_normals)
    return ExtractResult(mesh, sampler.queries, lattice.cells, seconds, lattice_queries, dropped, value_range,
                         cavities)


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start


def _normals(
    kind: str,
    sampler: Sampler,
    indices: np.ndarray,
    points: np.ndarray,
    faces: np.ndarray,
    progress: ProgressFn | None,
) -> np.ndarray | None:
    """Outward unit vertex normals at ``points`` (lattice ``indices``).

    Field normals fall back to mesh normals where the field says nothing about the surface: on the cap
    that closes the mesh at the box, and where the gradient vanishes.
    """
    if kind == "none":
        return None
    if kind == "mesh" or len(points) == 0:
        return marching.vertex_normals(points, faces)
    normals = _field_normals(sampler, points, progress)
    on_cap = ((indices < 1) | (indices > np.asarray(sampler.lattice.cells) + 1)).any(axis=1)
    use_mesh = on_cap | ~normals.any(axis=1)
    if use_mesh.any():
        normals[use_mesh] = marching.vertex_normals(points, faces)[use_mesh]
    return normals


def _refine(sampler: Sampler, points: np.ndarray, steps: int) -> np.ndarray:
    """Newton steps x <- x - (f(x) - level) grad f / |grad f|^2, the total move capped at half a cell.

    Chunks are halved on GPU out-of-memory (see :func:`recon3d.device.map_in_chunks`)."""
    start = torch.as_tensor(points, dtype=torch.float32, device=sampler.device)
    limit = 0.5 * sampler.lattice.cell
    out = start.clone()

    def piece(begin: int, stop: int) -> bool:
        x0 = start[begin:stop]
        x = x0.clone()
        for _ in range(steps):
            f, grad = autograd_gradient(sampler.field_fn, x.detach())
            if grad is None:
                return False  # not differentiable: keep the marching-cubes vertices
            f = f.float()
            norm2 = (grad * grad).sum(1, keepdim=True)
            move = torch.where(norm2 > 0, (f.detach() - sampler.level)[:, None] * grad / norm2.clamp_min(1e-30),
                               torch.zeros_like(grad))
            x = x - torch.nan_to_num(move)
            offset = x - x0
            length = offset.norm(dim=1, keepdim=True)
            x = torch.where(length > limit, x0 + offset * (limit / length.clamp_min(1e-30)), x)
        out[begin:stop] = x.detach()
        return True

    done, sampler.chunk = map_in_chunks(piece, len(start), sampler.chunk, sampler.device)
    if not all(done):
        return points
    sampler.queries += steps * len(start)
    return out.double().cpu().numpy()


def _field_normals(sampler: Sampler, points: np.ndarray, progress: ProgressFn | None) -> np.ndarray:
    """Unit outward field gradients at (V, 3) field points (zero where the gradient vanishes).

    Chunks are halved on GPU out-of-memory (see :func:`recon3d.device.map_in_chunks`)."""
    pts = torch.as_tensor(points, dtype=torch.float32, device=sampler.device)
    grads = torch.empty_like(pts)

    def piece(begin: int, stop: int) -> int:
        x = pts[begin:stop]
        grad = autograd_gradient(sampler.field_fn, x.detach())[1]
        grad = None if grad is None else grad.detach()
        queries = len(x)
        if grad is None:
            grad = _central_differences(sampler.field_fn, x, _DIFF_STEP * sampler.lattice.cell)
            queries += 6 * len(x)
        grads[begin:stop] = grad
        if progress is not None:
            progress("normals", stop / len(pts))
        return queries

    queries, sampler.chunk = map_in_chunks(piece, len(pts), sampler.chunk, sampler.device)
    sampler.queries += sum(queries)
    return marching.unit_rows(grads.cpu().numpy() * sampler.sign)  # on the host: no GPU kernel to load for it


def _central_differences(field_fn: FieldFn, x: torch.Tensor, step: float) -> torch.Tensor:
    """Gradient by central differences: six field calls of ``len(x)`` points each."""
    grad = torch.empty_like(x)
    with torch.no_grad():
        for axis in range(3):
            offset = torch.zeros(3, dtype=x.dtype, device=x.device)
            offset[axis] = step
            ahead = field_fn(x + offset).reshape(-1).to(x.dtype)
            behind = field_fn(x - offset).reshape(-1).to(x.dtype)
            grad[:, axis] = (ahead - behind) / (2 * step)
    return grad
