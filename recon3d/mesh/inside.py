"""Which points lie inside a triangle mesh: exact ray parity for closed meshes, generalised winding
numbers for open ones. Plain torch, so the same code labels points on a CPU and on a GPU.

* :class:`RayParity` counts crossings of a +z ray with the triangles, found through an xy grid of
  triangle buckets. Exact for closed (watertight) meshes: edge and vertex hits are decided by a
  consistent symbolic perturbation, so every ray crosses a closed surface an even number of times.
* :class:`WindingNumber` sums the solid angles of all triangles seen from each point, divided by 4π
  (Jacobson et al. 2013): 1 inside a closed outward-oriented mesh, 0 outside, and a smooth in-between
  value near holes, so ``w > 0.5`` is a sensible inside test for open meshes and triangle soups. Far
  clusters of triangles are replaced by their dipole (area-weighted normal at the centroid; Barill et
  al. 2018), near ones are summed exactly, which keeps it fast enough to label millions of points.

Coordinates are centred and kept in float64, so labels do not depend on where the mesh sits.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from recon3d.types import TriMesh

#: (point, triangle) pairs evaluated at once: bounds memory (about 100 bytes per pair).
PAIR_BUDGET = {"cpu": 1 << 20, "cuda": 1 << 24}
#: Triangles per winding-number cluster, and how far (in cluster radii) a cluster must be for its dipole
#: to stand in for its triangles. At 3 radii the dipole's error per cluster is a few per cent of its
#: (already small) solid angle.
CLUSTER = 32
FAR_RADII = 3.0
#: Ray-parity buckets: (triangle, bucket) entries allowed per triangle (at least MIN_GRID_ENTRIES in all)
#: before the bucket grid is made coarser.
GRID_ENTRIES_PER_FACE = 64
MIN_GRID_ENTRIES = 1 << 22


def _budget(device: torch.device) -> int:
    return PAIR_BUDGET.get(device.type, PAIR_BUDGET["cuda"])


def _centred(mesh: TriMesh) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0)) if len(vertices) else np.zeros(3)
    return vertices - centre, centre


class RayParity:
    """Inside test for closed meshes by the parity of +z ray crossings."""

    def __init__(self, mesh: TriMesh, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        vertices, self.centre = _centred(mesh)
        faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
        as_tensor = lambda a, dtype: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)  # noqa: E731
        self.vertices = as_tensor(vertices, torch.float64)
        self.faces = as_tensor(faces, torch.int64)
        self.empty = len(faces) == 0
        if self.empty:
            return
        xy = vertices[faces][:, :, :2]
        lo, hi = xy.min(axis=1), xy.max(axis=1)
        origin, top = lo.min(axis=0), hi.max(axis=0)
        self.size = int(np.clip(np.sqrt(len(faces)), 1, 1024))
        extent = top - origin
        budget = max(GRID_ENTRIES_PER_FACE * len(faces), MIN_GRID_ENTRIES)
        while True:  # large triangles fill many buckets: a coarser grid bounds the memory (labels are exact anyway)
            cell = np.where(extent > 0, extent / self.size, 1.0)
            first = np.clip(np.floor((lo - origin) / cell), 0, self.size - 1).astype(np.int64)
            last = np.clip(np.floor((hi - origin) / cell), 0, self.size - 1).astype(np.int64)
            span = last - first + 1
            per_triangle = span[:, 0] * span[:, 1]
            entries = int(per_triangle.sum())
            if entries <= budget or self.size == 1:
                break
            self.size = max(1, min(self.size - 1, int(self.size * math.sqrt(budget / entries))))
        triangle = np.repeat(np.arange(len(faces)), per_triangle)
        local = np.arange(per_triangle.sum()) - np.repeat(np.cumsum(per_triangle) - per_triangle, per_triangle)
        row, column = first[triangle, 0] + local % span[triangle, 0], first[triangle, 1] + local // span[triangle, 0]
        cells = row * self.size + column
        order = np.argsort(cells, kind="stable")
        counts = np.bincount(cells, minlength=self.size * self.size)
        self.triangles = as_tensor(triangle[order], torch.int64)
        self.counts = as_tensor(counts, torch.int64)
        self.starts = as_tensor(np.cumsum(counts) - counts, torch.int64)
        self.origin = as_tensor(origin, torch.float64)
        self.top = as_tensor(top, torch.float64)
        self.cell = as_tensor(cell, torch.float64)

    def __call__(self, points: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, 3) points in the mesh's units -> (N,) bool on this tester's device."""
        p = self._points(points)
        inside = torch.zeros(len(p), dtype=torch.bool, device=self.device)
        if self.empty or len(p) == 0:
            return inside
        xy = p[:, :2]
        candidates = torch.nonzero(((xy >= self.origin) & (xy <= self.top)).all(dim=1)).squeeze(1)
        cxy = torch.clamp(torch.floor((xy[candidates] - self.origin) / self.cell), 0, self.size - 1).long()
        cells = cxy[:, 0] * self.size + cxy[:, 1]
        counts = self.counts[cells]
        for chunk in _chunks_by_budget(counts, _budget(self.device)):
            n = len(chunk)
            point_ids = torch.repeat_interleave(torch.arange(n, device=self.device), counts[chunk])
            offsets = torch.arange(len(point_ids), device=self.device) - torch.repeat_interleave(
                torch.cumsum(counts[chunk], 0) - counts[chunk], counts[chunk])
            triangle_ids = self.triangles[self.starts[cells[chunk]][point_ids] + offsets]
            crossed = self._crossings(p[candidates[chunk]][point_ids], triangle_ids)
            hits = torch.zeros(n, dtype=torch.int64, device=self.device).index_add_(0, point_ids, crossed.long())
            inside[candidates[chunk]] = hits % 2 == 1
        return inside

    def _points(self, points: torch.Tensor | np.ndarray) -> torch.Tensor:
        p = torch.as_tensor(points, device=self.device).reshape(-1, 3).to(torch.float64)
        return p - torch.as_tensor(self.centre, dtype=torch.float64, device=self.device)

    def _crossings(self, p: torch.Tensor, triangle_ids: torch.Tensor) -> torch.Tensor:
        """True where the +z ray from each point crosses its paired triangle."""
        faces = self.faces[triangle_ids]
        positive, signed = [], []
        for k in range(3):
            side, value = _edge_side(self.vertices, faces[:, k], faces[:, (k + 1) % 3], p)
            positive.append(side)
            signed.append(value)
        positive_all = positive[0] & positive[1] & positive[2]
        positive_none = ~(positive[0] | positive[1] | positive[2])
        twice_area = signed[0] + signed[1] + signed[2]
        covered = (positive_all | positive_none) & (twice_area != 0)
        z = self.vertices[faces][:, :, 2]
        z_hit = (signed[1] * z[:, 0] + signed[2] * z[:, 1] + signed[0] * z[:, 2]) / torch.where(
            covered, twice_area, torch.ones_like(twice_area))
        return covered & (z_hit > p[:, 2])


def _edge_side(vertices: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
               p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which side of the xy-projected edge start->end each point is on, and the signed value.

    The edge is evaluated from its lower to its higher vertex index and the result negated for the
    other direction, so the two faces of an edge always disagree exactly. Zeros are decided as if the
    point moved by (+eps, +eps^2), which is consistent across all edges.
    """
    flip = start > end
    a = vertices[torch.where(flip, end, start)]
    b = vertices[torch.where(flip, start, end)]
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    value = dx * (p[:, 1] - a[:, 1]) - dy * (p[:, 0] - a[:, 0])
    tie = (dy < 0) | ((dy == 0) & (dx > 0))
    canonical = (value > 0) | ((value == 0) & tie)
    return canonical ^ flip, torch.where(flip, -value, value)


def _chunks_by_budget(counts: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Consecutive index runs whose ``counts`` sum to about ``budget`` each (at least one index)."""
    if len(counts) == 0:
        return []
    bucket = (torch.cumsum(counts, 0) // budget).cpu()
    bounds = (torch.nonzero(bucket[1:] != bucket[:-1]).squeeze(1) + 1).tolist()
    edges = [0] + bounds + [len(counts)]
    device = counts.device
    return [torch.arange(a, b, device=device) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class WindingNumber:
    """Generalised winding number of a (possibly open) triangle mesh, with far clusters as dipoles."""

    def __init__(self, mesh: TriMesh, device: torch.device | str = "cpu",
                 cluster: int = CLUSTER, far_radii: float = FAR_RADII) -> None:
        self.device = torch.device(device)
        vertices, self.centre = _centred(mesh)
        faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
        self.empty = len(faces) == 0
        if self.empty:
            return
        triangles = vertices[faces]  # (T, 3, 3)
        order = np.argsort(_morton(triangles.mean(axis=1)), kind="stable")
        triangles = triangles[order]
        pad = (-len(triangles)) % cluster
        if pad:  # degenerate copies of a real vertex: zero area, zero solid angle
            triangles = np.concatenate([triangles, np.repeat(triangles[-1:, :1], 3, axis=1).repeat(pad, axis=0)])
        groups = triangles.reshape(-1, cluster, 3, 3)
        area = 0.5 * np.cross(groups[:, :, 1] - groups[:, :, 0], groups[:, :, 2] - groups[:, :, 0])
        weight = np.linalg.norm(area, axis=-1)
        centroids = groups.mean(axis=2)
        total = weight.sum(axis=1, keepdims=True)
        centres = np.where(total > 0, (weight[..., None] * centroids).sum(axis=1) / np.maximum(total, 1e-300),
                           centroids.mean(axis=1))
        radius = np.linalg.norm(groups - centres[:, None, None, :], axis=-1).max(axis=(1, 2))
        as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=self.device)  # noqa: E731
        self.groups = as_tensor(groups)
        self.dipoles = as_tensor(area.sum(axis=1))
        self.centres = as_tensor(centres)
        self.reach = as_tensor(far_radii * radius)
        self.cluster = cluster

    def __call__(self, points: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, 3) points -> (N,) float64 winding numbers on this tester's device."""
        p = torch.as_tensor(points, device=self.device).reshape(-1, 3).to(torch.float64)
        p = p - torch.as_tensor(self.centre, dtype=torch.float64, device=self.device)
        out = torch.zeros(len(p), dtype=torch.float64, device=self.device)
        if self.empty or len(p) == 0:
            return out
        clusters = self.centres.shape[0]
        rows = max(1, _budget(self.device) // (4 * clusters))
        for begin in range(0, len(p), rows):
            q = p[begin : begin + rows]
            offset = self.centres[None, :, :] - q[:, None, :]  # (P, K, 3)
            dist = offset.norm(dim=-1)
            far = dist > self.reach
            dipole = (offset * self.dipoles).sum(-1) / dist.clamp_min(1e-300) ** 3
            w = torch.where(far, dipole, torch.zeros_like(dipole)).sum(dim=1)
            near_p, near_k = torch.nonzero(~far, as_tuple=True)
            step = max(1, _budget(self.device) // self.cluster)
            for start in range(0, len(near_p), step):
                pi, ki = near_p[start : start + step], near_k[start : start + step]
                # float32 relative to the point: plenty for a label threshold, twice as fast on CPUs
                local = (self.groups[ki] - q[pi][:, None, None, :]).float()
                w.index_add_(0, pi, _solid_angles(local).sum(dim=1).double())
            out[begin : begin + len(q)] = w / (4.0 * math.pi)
        return out


def _solid_angles(tri: torch.Tensor) -> torch.Tensor:
    """Signed solid angles of triangles (..., 3 vertices, 3) seen from the origin (Van Oosterom & Strackee)."""
    a, b, c = tri.unbind(-2)
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.cross(b, c, dim=-1)).sum(-1)
    dot = lambda u, v: (u * v).sum(-1)  # noqa: E731
    denominator = la * lb * lc + dot(a, b) * lc + dot(a, c) * lb + dot(b, c) * la
    return 2.0 * torch.atan2(det, denominator)


def _morton(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Z-order keys of points, so consecutive triangles in key order are spatially close."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    q = ((points - lo) / np.where(hi > lo, hi - lo, 1.0) * (2**bits - 1)).astype(np.int64)
    key = np.zeros(len(points), dtype=np.int64)
    for bit in range(bits):
        for axis in range(3):
            key |= ((q[:, axis] >> bit) & 1) << (3 * bit + axis)
    return key


def inside_labels(mesh: TriMesh, points: torch.Tensor | np.ndarray, closed: bool,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """One-shot helper: parity for closed meshes, winding number > 0.5 otherwise."""
    if closed:
        return RayParity(mesh, device)(points)
    return WindingNumber(mesh, device)(points) > 0.5


class EnclosedVolume:
    """Inside = what cannot be reached from outside the box without crossing the surface.

    For triangle soups whose winding number says nothing, such as double-sided ShapeNet models (every
    face twice, opposite ways, so the solid angles cancel): the surface is rasterised into a voxel grid
    by dense surface samples, the empty voxels connected to the grid's border are outside, and every
    other voxel (enclosed or on the surface) is inside. Approximate to one voxel; holes wider than a
    voxel let the outside in, which is why the winding number is tried first.
    """

    def __init__(self, mesh: TriMesh, box: np.ndarray, resolution: int = 256,
                 device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None) -> None:
        """``progress(done, total)`` is called after each batch of surface samples (it may raise to stop)."""
        from scipy import ndimage

        self.device = torch.device(device)
        box = np.asarray(box, dtype=np.float64)
        self.cell = float((box[1] - box[0]).max()) / int(resolution)
        self.origin = box[0]
        self.shape = tuple(int(np.ceil((box[1][k] - box[0][k]) / self.cell)) + 1 for k in range(3))
        shell = np.zeros(self.shape, dtype=bool)
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
        batches = _surface_batches(vertices, faces, self.cell / 3.0)
        for done, points in enumerate(_surface_samples(vertices, faces, self.cell / 3.0), start=1):
            ijk = np.floor((points - self.origin) / self.cell).astype(np.int64)
            ok = ((ijk >= 0) & (ijk < self.shape)).all(axis=1)
            shell[tuple(ijk[ok].T)] = True
            if progress is not None:
                progress(done, batches)
        labels, _ = ndimage.label(~shell)
        border = np.unique(np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(),
                                           labels[:, -1].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
        outside = np.isin(labels, border[border > 0])
        self.inside = torch.as_tensor(~outside, device=self.device)

    def __call__(self, points: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, 3) points -> (N,) bool on this tester's device (outside the box: False)."""
        p = torch.as_tensor(points, device=self.device).reshape(-1, 3).to(torch.float64)
        origin = torch.as_tensor(self.origin, dtype=torch.float64, device=self.device)
        ijk = torch.floor((p - origin) / self.cell).long()
        upper = torch.tensor(self.shape, device=self.device)
        ok = ((ijk >= 0) & (ijk < upper)).all(dim=1)
        out = torch.zeros(len(p), dtype=torch.bool, device=self.device)
        sel = ijk[ok]
        out[ok] = self.inside[sel[:, 0], sel[:, 1], sel[:, 2]]
        return out


def _lattice_steps(vertices: np.ndarray, faces: np.ndarray, spacing: float) -> np.ndarray:
    """Per triangle: the subdivisions of its barycentric lattice (longest edge / spacing, at least 1)."""
    tri = vertices[faces]
    edges = np.stack([np.linalg.norm(tri[:, 1] - tri[:, 0], axis=1), np.linalg.norm(tri[:, 2] - tri[:, 1], axis=1),
                      np.linalg.norm(tri[:, 0] - tri[:, 2], axis=1)], axis=1)
    return np.maximum(np.ceil(edges.max(axis=1) / spacing).astype(np.int64), 1)


def _surface_batches(vertices: np.ndarray, faces: np.ndarray, spacing: float, batch: int = 1 << 20) -> int:
    """How many batches :func:`_surface_samples` yields (for progress)."""
    steps = _lattice_steps(vertices, faces, spacing)
    total = 0
    for n, count in zip(*np.unique(steps, return_counts=True)):
        per = max(1, batch // int((n + 1) * (n + 2) // 2))
        total += -(-int(count) // per)
    return total


def _surface_samples(vertices: np.ndarray, faces: np.ndarray, spacing: float, batch: int = 1 << 20):
    """Points covering every triangle at about ``spacing`` (a barycentric lattice per triangle), in batches."""
    tri = vertices[faces]
    steps = _lattice_steps(vertices, faces, spacing)
    for n in np.unique(steps):
        group = tri[steps == n]
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        a, b = i[keep] / n, j[keep] / n  # barycentric lattice of the triangle
        weights = np.stack([1 - a - b, a, b], axis=1)  # (L, 3)
        per = max(1, batch // len(weights))
        for start in range(0, len(group), per):
            chunk = group[start : start + per]
            yield np.einsum("lk,tkd->tld", weights, chunk).reshape(-1, 3)
