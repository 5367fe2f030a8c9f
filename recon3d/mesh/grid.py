"""Sampling a field on a padded lattice: everywhere (dense) or coarse-to-fine near the surface (sparse).

Everything here works on *canonical* values ``u = ±(f - level)``: ``u > 0`` outside, ``u <= 0`` inside,
so padding, culling and face orientation do not depend on whether the field is an SDF or a density.

Index space: per axis the padded vertex index ``p`` runs over ``0 .. n + 2`` where ``n`` is the number of
sampled cells; ``p = 1 .. n + 1`` are sampled (field coordinates ``origin + (p - 1) * cell``) and every other
index is padding with the OUTSIDE value :data:`PAD_VALUE`. The padding closes a surface that leaves the box
with a cap at most one cell outside it, so extracted meshes are always closed.

Both samplers hand marching cubes the same thing: blocks of ``BLOCK³`` cells whose vertex values are all
exact. Dense evaluates every vertex and keeps the blocks with both signs. Sparse refines, level by level,
only the cells that can hold the surface, then evaluates whole blocks around them and follows the surface
into every neighbouring block it crosses into, so the mesh is closed and, wherever the surface was found,
identical to the dense one. Known limitation (as in MISE): without ``lipschitz``, a surface component
that shows no sign change at the corners of any coarse cell within one cell of it, and that touches no
component that does, is missed (e.g. a speck smaller than a coarse cell, far from other surface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Callable

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from recon3d.device import map_in_chunks
from recon3d.errors import Recon3dError
from recon3d.fields.surface import FieldFn
from recon3d.memory import check_memory

ProgressFn = Callable[[str, float], None]

PAD_VALUE = 1.0  # canonical value of padding vertices: outside
COARSE_CELLS = 32  # the coarsest sparse level has 32..63 cells on the longest axis
BLOCK = 8  # cells per block edge: small blocks mean fewer extra queries; 8 keeps per-call overhead minor
LIPSCHITZ_SLACK = 1.01  # float tolerance on the Lipschitz culling bound
NUDGE = 1e-6  # relative nudge of values exactly at the level, toward outside (no zero-area faces)
REFINE_PARENT_BYTES = 27 * 100  # peak bytes per cell split by a refinement level (27 sub-vertices)
BLOCK_VERTEX_BYTES = 100  # peak bytes per vertex of a block evaluated whole (keys, indices, values)

_CORNERS = list(product((0, 1), repeat=3))
_SUB_VERTICES = list(product((0, 1, 2), repeat=3))  # a cell's 27 vertices one level finer
_CHILD_CORNERS = [[(c[0] + d[0]) * 9 + (c[1] + d[1]) * 3 + (c[2] + d[2]) for d in _CORNERS] for c in _CORNERS]
_NEIGHBOURS = list(product((-1, 0, 1), repeat=3))


@dataclass(frozen=True)
class Lattice:
    """Cubic cells of size ``cell`` covering the box; ``origin`` is sampled vertex 0 (padded index 1)."""

    origin: np.ndarray
    cell: float
    cells: tuple[int, int, int]

    @classmethod
    def from_bounds(cls, bounds: np.ndarray, resolution: int) -> Lattice:
        """``resolution`` cells on the longest axis, the same cell size elsewhere, centred on the box."""
        box = np.asarray(bounds, dtype=np.float64)
        if box.shape != (2, 3) or not np.isfinite(box).all() or not (box[1] > box[0]).all():
            raise Recon3dError(f"bounds must be finite (2, 3) [min, max] with max > min, got {box.tolist()}")
        if int(resolution) < 1:
            raise Recon3dError(f"resolution must be at least 1, got {resolution}")
        extent = box[1] - box[0]
        cell = float(extent.max()) / int(resolution)
        cells = tuple(max(1, math.ceil(e / cell - 1e-9)) for e in extent)
        origin = (box[0] + box[1]) / 2 - np.asarray(cells, dtype=np.float64) * cell / 2
        return cls(origin, cell, cells)  # type: ignore[arg-type]

    def is_real(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, 3) padded indices -> (N,) True where the vertex is sampled, False where it is padding."""
        upper = torch.tensor([n + 1 for n in self.cells], device=idx.device)
        return ((idx >= 1) & (idx <= upper)).all(dim=-1)

    def points(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, 3) padded indices -> float32 field coordinates (one formula, so dense and sparse agree)."""
        origin = torch.as_tensor(self.origin, dtype=torch.float32, device=idx.device)
        return origin + (idx - 1).to(torch.float32) * self.cell

    def to_field(self, idx: np.ndarray) -> np.ndarray:
        """Fractional padded indices (V, 3) -> float64 field coordinates."""
        return self.origin + (idx - 1.0) * self.cell


def int_divmod(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a // m, a % m)`` for non-negative integer tensors, from one division. On a GPU every distinct
    operator's kernel is loaded on its first launch (milliseconds in a fresh process): ``%`` would be one more."""
    quotient = a // m
    return quotient, a - quotient * m


def signed_offsets(values: torch.Tensor, level: float, sign: float) -> torch.Tensor:
    """``sign * (f - level)`` as flat float32: canonical values before NaN and zeros are dealt with."""
    return (values.reshape(-1).to(torch.float32) - level) * sign


def canonical(u: torch.Tensor, level: float) -> torch.Tensor:
    """Signed offsets ``u`` (:func:`signed_offsets`) -> canonical values: NaN -> outside, exact zeros nudged
    outside so no marching-cubes vertex sits on a corner."""
    u = torch.where(torch.isnan(u), PAD_VALUE, u)
    return torch.where(u == 0, NUDGE * max(1.0, abs(level)), u)


@dataclass
class Sampler:
    """Evaluates the field at lattice vertices in canonical form, in chunks, counting queries."""

    field_fn: FieldFn
    lattice: Lattice
    level: float
    sign: float
    chunk: int
    device: torch.device
    queries: int = 0
    #: Called after each chunk with the fraction of the current call done (progress within a level).
    report: Callable[[float], None] | None = None
    #: The lowest and highest canonical value seen (NaN left out), as device tensors: the field's range.
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    def evaluate(self, points: torch.Tensor) -> torch.Tensor:
        """Canonical values at (N, 3) float32 field points.

        On GPU out-of-memory the chunk is halved (down to :data:`~recon3d.device.MIN_CHUNK`, then the
        error is raised) and evaluation continues where it stopped; the smaller chunk is kept for later calls.
        """
        n = int(points.shape[0])
        out = torch.empty(n, dtype=torch.float32, device=self.device)

        def piece(start: int, stop: int) -> None:
            u = signed_offsets(self.field_fn(points[start:stop]), self.level, self.sign)
            self._track(u)
            out[start:stop] = canonical(u, self.level)
            if self.report is not None and n:
                self.report(stop / n)

        with torch.no_grad():
            _, self.chunk = map_in_chunks(piece, n, self.chunk, self.device)
        self.queries += n
        return out

    def _track(self, u: torch.Tensor) -> None:
        """Keep the range of canonical values ``u``, NaN left out (no host sync: the ends stay on the device;
        a chunk of NaN alone gives low = +inf > high = -inf)."""
        if u.numel() == 0:
            return
        nan = torch.isnan(u)
        low = torch.aminmax(torch.where(nan, math.inf, u)).min
        high = torch.aminmax(torch.where(nan, -math.inf, u)).max
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)

    def value_range(self) -> tuple[float, float] | None:
        """(lowest, highest) field value sampled (not canonical: the field's own), or None before any
        value that is not NaN."""
        if self.low is None or self.high is None:
            return None
        low, high = float(self.low), float(self.high)
        if low > high:
            return None
        ends = sorted((self.level + self.sign * low, self.level + self.sign * high))
        return ends[0], ends[1]

    def at(self, idx: torch.Tensor) -> torch.Tensor:
        """Canonical values at (N, 3) padded indices; padding gets PAD_VALUE without a query."""
        u = torch.full((idx.shape[0],), PAD_VALUE, dtype=torch.float32, device=self.device)
        real = self.lattice.is_real(idx)
        u[real] = self.evaluate(self.lattice.points(idx[real]))
        return u


@dataclass
class Blocks:
    """Blocks of ``b³`` cells (``b = BLOCK``) whose ``(b+1)³`` vertex values are exact (or padding)."""

    origins: torch.Tensor  # (K, 3) int64 padded index of each block's first vertex
    values: torch.Tensor  # (K, b+1, b+1, b+1) float32 canonical values (on the sampler's device)

    def dims(self) -> list[int]:
        """Vertex counts per axis of a padded grid that holds every block (bounds for integer keys)."""
        if len(self.origins) == 0:
            return [1, 1, 1]
        return (torch.aminmax(self.origins, dim=0).max + self.values.shape[1]).tolist()


def sample_dense(sampler: Sampler, progress: ProgressFn | None = None, block: int = BLOCK) -> Blocks:
    """Every sampled vertex, evaluated chunk by chunk, cut into the blocks the surface passes through.

    The blocks are the ones :func:`sample_sparse` would produce, so both feed identical values to the
    same marching cubes and differ only in which vertices had to be evaluated.
    """
    shape = [n + 1 for n in sampler.lattice.cells]
    total = shape[0] * shape[1] * shape[2]
    flat = torch.empty(total, dtype=torch.float32, device=sampler.device)
    for start in range(0, total, sampler.chunk):
        stop = min(start + sampler.chunk, total)
        lin = torch.arange(start, stop, device=sampler.device)
        x, rest = int_divmod(lin, shape[1] * shape[2])
        idx = torch.stack((x, *int_divmod(rest, shape[2])), 1)
        flat[start:stop] = sampler.evaluate(sampler.lattice.points(idx + 1))
        _report(progress, "evaluate", stop / total)
    volume = np.full([c + 1 for c in _padded_cells(sampler.lattice, block)], PAD_VALUE, dtype=np.float32)
    slabs = max(1, sampler.chunk // (shape[1] * shape[2]))  # copy in slabs: no second full-size host copy
    for x in range(0, shape[0], slabs):
        part = flat.view(shape)[x : x + slabs].cpu().numpy()
        volume[1 + x : 1 + x + len(part), 1 : shape[1] + 1, 1 : shape[2] + 1] = part
    mixed = _mixed_blocks(volume, block)
    return Blocks(mixed.origins.to(sampler.device), mixed.values.to(sampler.device))


def _padded_cells(lattice: Lattice, quantum: int) -> list[int]:
    """Cells per axis of the padded lattice, rounded up to a multiple of ``quantum``."""
    return [math.ceil((n + 2) / quantum) * quantum for n in lattice.cells]


def _mixed_blocks(volume: np.ndarray, block: int) -> Blocks:
    """The blocks of a full volume with vertices on both sides (no other block holds surface)."""
    any_outside = all_outside = volume > 0
    for axis in range(3):
        any_outside = _reduce_windows(any_outside, axis, block, np.logical_or)
        all_outside = _reduce_windows(all_outside, axis, block, np.logical_and)
    mixed = any_outside & ~all_outside
    values = sliding_window_view(volume, (block + 1,) * 3)[::block, ::block, ::block][mixed]
    return Blocks(torch.from_numpy(np.argwhere(mixed) * block), torch.from_numpy(np.ascontiguousarray(values)))


def _reduce_windows(a: np.ndarray, axis: int, block: int, op: np.ufunc) -> np.ndarray:
    """Reduce windows of ``block + 1`` samples with stride ``block`` along ``axis`` (reshape views, fast)."""
    n = (a.shape[axis] - 1) // block
    lead = (slice(None),) * axis
    core = a[lead + (slice(0, n * block),)].reshape(a.shape[:axis] + (n, block) + a.shape[axis + 1 :])
    return op(op.reduce(core, axis=axis + 1), a[lead + (slice(block, None, block),)])


def sample_sparse(
    sampler: Sampler,
    lipschitz: float | None = None,
    progress: ProgressFn | None = None,
    block: int = BLOCK,
) -> Blocks:
    """Coarse-to-fine: refine cells that can hold the surface, then evaluate whole blocks around them.

    Without ``lipschitz`` a cell is kept when its corners straddle the level, and the kept set is dilated
    by one cell per level so surface pieces that only show up at a finer level are still found. With
    ``lipschitz`` a cell is kept when no corner is farther from the level than the bound allows anywhere
    in the cell, which is exact, so no dilation is needed. At the finest level whole blocks are evaluated;
    blocks whose faces the surface crosses pull in their neighbours until the set is closed, so the
    extracted mesh is always watertight.
    """
    lattice = sampler.lattice
    levels = _levels(max(lattice.cells))
    cells = _padded_cells(lattice, max(2**levels, block))
    codec = _Codec([c + 1 for c in cells])
    stride = 2**levels
    phases = levels + 1  # the coarsest grid, each finer level, then the blocks around the surface

    def report_phase(phase: int) -> None:
        if progress is not None:
            sampler.report = lambda fraction: progress("evaluate", min((phase + fraction) / phases, 1.0))

    report_phase(0)
    surface, store = _coarsest(sampler, codec, stride, _threshold(lattice, lipschitz, stride))
    for level in range(1, levels):
        report_phase(level)
        _report(progress, "evaluate", level / phases)
        parents = surface if lipschitz is not None else _dilate(surface, [c // stride for c in cells])
        # The surface found so far tells the memory of the next level better than any up-front estimate.
        check_memory(int(parents.shape[0]) * REFINE_PARENT_BYTES, f"extraction at --resolution {max(lattice.cells)}",
                     "use a smaller --resolution", sampler.device)
        stride //= 2
        surface, store = _refine(sampler, codec, store, parents, stride, _threshold(lattice, lipschitz, stride))
    seeds = _unique_cells((surface * stride) // block, [c // block for c in cells])
    check_memory(int(seeds.shape[0]) * (block + 1) ** 3 * BLOCK_VERTEX_BYTES,
                 f"extraction at --resolution {max(lattice.cells)}", "use a smaller --resolution", sampler.device)
    report_phase(levels)
    result = _close_blocks(sampler, codec, store, seeds, block)
    sampler.report = None
    _report(progress, "evaluate", 1.0)
    return result


def _levels(longest: int) -> int:
    """Refinement levels so that the coarsest grid has COARSE_CELLS .. 2*COARSE_CELLS-1 cells."""
    return max(0, (longest // COARSE_CELLS).bit_length() - 1)


def _report(progress: ProgressFn | None, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, fraction)


def _threshold(lattice: Lattice, lipschitz: float | None, stride: int) -> float | None:
    """Largest |u| a corner may have if its cell (``stride`` fine cells wide) holds the surface."""
    if lipschitz is None:
        return None
    return float(lipschitz) * stride * lattice.cell * math.sqrt(3.0) * LIPSCHITZ_SLACK


def _table(rows: list, device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64, device=device)


class _Codec:
    """Integer index (N, 3) in a grid of ``dims`` <-> int64 key, ordered like C-order flattening."""

    def __init__(self, dims: list[int]) -> None:
        self.dims = dims

    def encode(self, idx: torch.Tensor) -> torch.Tensor:
        return (idx[..., 0] * self.dims[1] + idx[..., 1]) * self.dims[2] + idx[..., 2]

    def decode(self, key: torch.Tensor) -> torch.Tensor:
        x, rest = int_divmod(key, self.dims[1] * self.dims[2])
        return torch.stack((x, *int_divmod(rest, self.dims[2])), 1)


@dataclass
class _Store:
    """Known canonical values at fine vertices, sorted by key for ``searchsorted`` look-ups."""

    keys: torch.Tensor
    values: torch.Tensor

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(missing mask, values where not missing) for sorted or unsorted query keys."""
        if self.keys.numel() == 0:
            return torch.ones_like(keys, dtype=torch.bool), torch.zeros_like(keys, dtype=torch.float32)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] != keys, self.values[pos]

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> _Store:
        """Merge sorted ``keys`` not yet stored: linear work, so following a long thin feature stays cheap."""
        total = self.keys.numel() + keys.numel()
        slots = torch.searchsorted(self.keys, keys) + torch.arange(keys.numel(), device=keys.device)
        old = torch.ones(total, dtype=torch.bool, device=keys.device)
        old[slots] = False
        merged_keys = torch.empty(total, dtype=keys.dtype, device=keys.device)
        merged_values = torch.empty(total, dtype=values.dtype, device=keys.device)
        merged_keys[slots], merged_values[slots] = keys, values
        merged_keys[old], merged_values[old] = self.keys, self.values
        return _Store(merged_keys, merged_values)


def _values(sampler: Sampler, codec: _Codec, store: _Store, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values at unique ``keys``: from the store where known, else evaluated; also the evaluated mask."""
    missing, values = store.lookup(keys)
    values[missing] = sampler.at(codec.decode(keys[missing]))
    return values, missing


def _surface(corner_u: torch.Tensor, real: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """(M, 8) corner values and whether each corner is sampled -> (M,) cells that can hold the surface
    (sign change, or near it)."""
    outside = corner_u > 0
    straddles = outside.any(1) != outside.all(1)  # some corners outside, not all
    if threshold is None:
        return straddles
    farthest = torch.aminmax(torch.where(real, corner_u.abs(), torch.zeros_like(corner_u)), dim=1).max
    near = (farthest <= threshold) & real.any(1)
    return straddles | near


def _coarsest(sampler: Sampler, codec: _Codec, stride: int, threshold: float | None) -> tuple[torch.Tensor, _Store]:
    """Dense evaluation of the coarsest level; returns its surface cells (level units) and values."""
    dev = sampler.device
    size = [(d - 1) // stride for d in codec.dims]
    axes = [torch.arange(s + 1, device=dev) for s in size]
    idx = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3) * stride
    u = sampler.at(idx)
    store = _Store(codec.encode(idx), u)  # C-order, so already sorted
    grid_u = u.view(*(s + 1 for s in size))
    grid_real = sampler.lattice.is_real(idx).view(*(s + 1 for s in size))
    corner_u = torch.stack([grid_u[i : i + size[0], j : j + size[1], k : k + size[2]] for i, j, k in _CORNERS], -1)
    corner_real = torch.stack([grid_real[i : i + size[0], j : j + size[1], k : k + size[2]] for i, j, k in _CORNERS],
                              -1)
    surface = _surface(corner_u.reshape(-1, 8), corner_real.reshape(-1, 8), threshold)
    return torch.nonzero(surface.view(*size)), store


def _refine(
    sampler: Sampler, codec: _Codec, store: _Store, parents: torch.Tensor, stride: int, threshold: float | None
) -> tuple[torch.Tensor, _Store]:
    """Split ``parents`` ×2, evaluate the new vertices, return the children that can hold the surface."""
    dev = sampler.device
    sub = (2 * parents[:, None, :] + _table(_SUB_VERTICES, dev)).reshape(-1, 3)
    keys, inverse = torch.unique(codec.encode(sub * stride), return_inverse=True)
    values, _ = _values(sampler, codec, store, keys)
    real = sampler.lattice.is_real(codec.decode(keys))
    child_corners = _table(_CHILD_CORNERS, dev)
    corner_u = values[inverse].view(-1, 27)[:, child_corners].reshape(-1, 8)
    corner_real = real[inverse].view(-1, 27)[:, child_corners].reshape(-1, 8)
    children = (2 * parents[:, None, :] + _table(_CORNERS, dev)).reshape(-1, 3)
    return children[_surface(corner_u, corner_real, threshold)], _Store(keys, values)


def _dilate(cells: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Cells plus their 26 neighbours, inside a grid of ``size`` cells."""
    return _unique_cells((cells[:, None, :] + _table(_NEIGHBOURS, cells.device)).reshape(-1, 3), size)


def _unique_cells(cells: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Distinct rows of (N, 3) cell indices that lie inside a grid of ``size`` cells (via int64 keys)."""
    inside = ((cells >= 0) & (cells < torch.tensor(size, device=cells.device))).all(1)
    codec = _Codec(size)
    return codec.decode(torch.unique(codec.encode(cells[inside])))


def _close_blocks(sampler: Sampler, codec: _Codec, store: _Store, seeds: torch.Tensor, block: int) -> Blocks:
    """Evaluate the seed blocks, then every block the surface crosses into, until none is left."""
    counts = [(d - 1) // block for d in codec.dims]
    block_codec = _Codec(counts)
    offsets = _table(list(product(range(block + 1), repeat=3)), sampler.device)
    origins, volumes = [], []
    new = seeds
    while new.shape[0] > 0:
        keys, inverse = torch.unique(codec.encode(new[:, None, :] * block + offsets), return_inverse=True)
        values, missing = _values(sampler, codec, store, keys)
        origins.append(new * block)
        volumes.append(values[inverse].view(-1, block + 1, block + 1, block + 1))
        candidates = _crossed_neighbours(new, volumes[-1], counts)
        done = block_codec.encode(torch.cat(origins) // block)
        new = candidates[torch.isin(block_codec.encode(candidates), done, invert=True)]
        if new.shape[0] > 0:  # shared vertices must keep the values already used
            store = store.add(keys[missing], values[missing])
    if not origins:
        empty = torch.zeros((0,) + (block + 1,) * 3, dtype=torch.float32, device=sampler.device)
        return Blocks(torch.zeros((0, 3), dtype=torch.int64, device=sampler.device), empty)
    return Blocks(torch.cat(origins), torch.cat(volumes))


def _crossed_neighbours(blocks: torch.Tensor, volumes: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Neighbour blocks across faces that the surface crosses (the face has both signs)."""
    found = []
    for axis in range(3):
        for side, step in ((0, -1), (-1, 1)):
            outside = volumes.select(axis + 1, side).flatten(1) > 0
            crossed = outside.any(1) != outside.all(1)
            neighbour = blocks[crossed].clone()
            neighbour[:, axis] += step
            found.append(neighbour)
    return _unique_cells(torch.cat(found), counts)
