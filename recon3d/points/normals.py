"""Normals for scans that have none, and a check of the ones a file brings.

PCA of each point's k nearest neighbours gives the tangent plane; the sign is propagated along a
minimum spanning tree of the neighbour graph weighted by 1 − |nᵢ·nⱼ| (Hoppe et al. 1992) plus how far
each edge leaves the tangent planes, so it flips only where neighbouring planes agree and does not
jump between the two faces of a thin part; each connected piece then gets the sign whose normals
have positive flux Σ nᵢ·(pᵢ − centroid), which is outward for a closed surface. Propagation can still
err on thin parts and noise, so the SDF loss trusts these signs only early in training and uses
them sign-agnostically afterwards. The neighbour query also yields each point's local spacing,
which sets the scale of the near-surface samples (IGR's local σ).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from recon3d.memory import available_bytes
from recon3d.points.eigh3 import eigh3
from recon3d.points.spanning import spanning_forest_signs

#: Neighbours of each point's plane fit (PCA normals) and local spacing.
NEIGHBOURS = 16


def neighbourhood(points: np.ndarray, k: int = NEIGHBOURS, pca: bool = True,
                  device: torch.device | str | None = None, query: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Return (unoriented unit normals (N,3) float32, k-th neighbour distance (N,), neighbour ids (N,k)).

    With ``pca=False`` only the neighbour query runs (the spacing is all a scan with its own normals, or
    one fitted without normals, needs) and the normals are None. ``device`` runs the plane fits in torch
    there (default: the CPU). ``k``: fewer neighbours fit noisy planes across thin parts, more blur a real
    scan's detail. ``query``: the (distances, ids) of this k-nearest query when already made (in these
    points' units).
    """
    k = int(min(k, len(points)))
    dist, idx = query if query is not None else cKDTree(points).query(points, k=k, workers=-1)
    normals = pca_normals(points, idx, device) if pca else None
    return normals, dist[:, -1].astype(np.float32), idx


def pca_normals(points: np.ndarray, neighbours: np.ndarray, device: torch.device | str | None = None) -> np.ndarray:
    """(N,3) float32 unoriented unit normals: the least-variance axis of each point's neighbours (N,k)."""
    return plane_fits(points, neighbours, device)[1]


def plane_fits(points: np.ndarray, neighbours: np.ndarray, device: torch.device | str | None = None,
               chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The least-squares plane of each neighbourhood (n,k): centroids (n,3), unit normals (the
    least-variance axis, (n,3)) and the variance along it (n,), all float32.

    Gathers, covariances and eigendecompositions in torch on ``device``.
    """
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device)
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(neighbours), chunk):
        idx = torch.as_tensor(np.asarray(neighbours[start:start + chunk], dtype=np.int64), device=pts.device)
        nb = pts[idx]
        centroid = nb.mean(dim=1)
        values, vectors = principal_axes(nb - centroid[:, None, :])
        parts.append((centroid.cpu(), vectors[:, :, 0].float(), values[:, 0].clamp_min(0.0).float()))
    if not parts:
        empty = np.zeros((0, 3), np.float32)
        return empty, empty.copy(), np.zeros(0, np.float32)
    return tuple(torch.cat(column).cpu().numpy() for column in zip(*parts))  # type: ignore[return-value]


def principal_axes(centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (n,3), ascending, and eigenvectors (n,3,3; columns) of the covariance of each
    neighbourhood's centred points (n,k,3), both float64 on their device (closed form: eigh3)."""
    return eigh3((centred.transpose(1, 2) @ centred).double() / centred.shape[1])


#: Weight of the across-the-plane term of the orientation graph's edges (see orient_normals).
TANGENT_WEIGHT = 0.5
#: sign_disagreement's neighbour pairs: both normals within ~17° of the plane of the pair's edge
#: (|n·e| < 0.3) and the two planes within ~37° of each other (|nᵢ·nⱼ| > 0.8).
PAIR_IN_PLANE = 0.3
PAIR_PARALLEL = 0.8


def sign_disagreement(points: np.ndarray, normals: np.ndarray, neighbours: np.ndarray,
                      sample: int = 200_000, device: torch.device | str | None = None) -> float:
    """Fraction of neighbouring points on one plane whose normals point to opposite sides.

    Consistently oriented normals almost never do (well under 1 %); normals of a double-sided triangle
    soup (ShapeNet models sampled as they are) or with random signs do half the time. Pairs across a
    thin part are left out: their edge leaves the tangent planes. 0 when no pair qualifies. Larger scans
    are judged on the neighbourhoods of ``sample`` points drawn with a fixed seed. ``device``: where the
    pairs are measured (default: the CPU).
    """
    n, k = neighbours.shape
    if k < 2:
        return 0.0
    chosen = np.arange(n) if n <= sample else np.sort(np.random.default_rng(0).choice(n, sample, replace=False))
    flipped = counted = 0
    for _, dot, off_i, off_j, length in _edge_chunks(points, normals, np.repeat(chosen, k - 1),
                                                     neighbours[chosen, 1:].reshape(-1), device):
        pair = (length > 0) & (dot.abs() > PAIR_PARALLEL) & (off_i < PAIR_IN_PLANE) & (off_j < PAIR_IN_PLANE)
        counted += int(pair.sum())
        flipped += int((pair & (dot < 0)).sum())
    return flipped / counted if counted else 0.0


def orient_normals(points: np.ndarray, normals: np.ndarray, neighbours: np.ndarray,
                   tangent_weight: float | None = None, device: torch.device | str | None = None) -> np.ndarray:
    """Consistently signed copy of ``normals`` by propagation along a minimum spanning tree of the
    neighbour graph (Hoppe et al. 1992).

    An edge costs 1 − |nᵢ·nⱼ| (Hoppe: parallel planes agree) plus ``tangent_weight`` × how much it
    leaves the tangent planes, (|nᵢ·e| + |nⱼ·e|)/2 for the unit edge e. Without the second term the two
    faces of a part thinner than the neighbourhood (an ear, a thin wall) look like one plane, and the
    tree crosses between them and gives both faces the same sign. ``tangent_weight`` None means
    TANGENT_WEIGHT. Each normal takes the sign of its tree path's flips (recon3d.points.spanning), in
    torch on ``device`` (default: the CPU).
    """
    tangent_weight = TANGENT_WEIGHT if tangent_weight is None else tangent_weight
    n, k = neighbours.shape
    device = torch.device("cpu") if device is None else torch.device(device)
    low, high = _undirected_edges(neighbours, _graph_device(device, n * (k - 1)))
    cost = torch.empty(len(low), device=device)
    flip = torch.empty(len(low), dtype=torch.bool, device=device)
    for part, dot, off_i, off_j, _ in _edge_chunks(points, normals, low, high, device):
        cost[part] = 1.0 - dot.abs() + tangent_weight * 0.5 * (off_i + off_j)
        flip[part] = dot < 0  # the raw normals point to opposite sides
    root, parity = spanning_forest_signs(n, low, high, cost.to(low.device), flip.to(low.device))
    root = root.cpu().numpy()
    oriented = normals * np.where(parity.cpu().numpy(), -1.0, 1.0).astype(normals.dtype)[:, None]
    # One sign for each tree: outward normals have positive flux of the position field,
    # ∮ n·(p − c) dA = 3 × volume > 0 (divergence theorem), a vote of every point rather than of one
    # root whose normal may lie flat (the top of a sharp edge). Trees are labelled by their root.
    count = np.maximum(np.bincount(root, minlength=n), 1).astype(np.float64)
    pts = np.asarray(points, dtype=np.float64)
    centroid = np.stack([np.bincount(root, weights=pts[:, axis], minlength=n) for axis in range(3)], 1) / count[:, None]
    flux = np.bincount(root, weights=np.einsum("ij,ij->i", oriented.astype(np.float64), pts - centroid[root]),
                       minlength=n)
    return oriented * np.where(flux < 0, -1.0, 1.0).astype(normals.dtype)[root][:, None]


#: Peak bytes per edge of _undirected_edges on a GPU (int64 ends, their minimum and maximum, keys, sort buffers).
GRAPH_EDGE_BYTES = 64


def _graph_device(device: torch.device, edges: int) -> torch.device:
    """``device`` when the graph's sort takes at most half of the memory it has free, else the CPU (a
    10M-point scan's 150M edges need about 10 GB)."""
    if device.type == "cpu":
        return device
    free = available_bytes(device)
    return device if free is None or edges * GRAPH_EDGE_BYTES <= 0.5 * free else torch.device("cpu")


def _undirected_edges(neighbours: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The neighbour graph's edges i – neighbours[i, j] (j ≥ 1), each once, as (low end, high end) (E,) int64
    on ``device``, sorted by ends; no self loops. An edge both ends list is one edge: its cost and flip are
    symmetric, so they are computed once. One sort on ``device``."""
    n, k = neighbours.shape
    rows = torch.arange(n, device=device).repeat_interleave(k - 1)
    cols = torch.as_tensor(neighbours[:, 1:].reshape(-1), dtype=torch.int64, device=device)
    low, high = torch.minimum(rows, cols), torch.maximum(rows, cols)
    edge = low != high
    keys = torch.unique(low[edge] * n + high[edge])
    return keys // n, keys % n


#: Edges of the neighbour graph handled at a time: bounded temporaries on 10M-point scans.
EDGE_CHUNK = 4_000_000


def _edge_chunks(points: np.ndarray, normals: np.ndarray, rows: np.ndarray | torch.Tensor,
                 cols: np.ndarray | torch.Tensor, device: torch.device | str | None = None):
    """For the edges rows[i] → cols[i] (arrays, or tensors on any device), chunk by chunk: (slice, nᵢ·nⱼ,
    |nᵢ·e|, |nⱼ·e|, edge length) as float32 tensors on ``device``, e the unit edge (zero for a zero-length
    one): how parallel two planes are and how far the edge leaves each of them."""
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device)
    nrm = torch.as_tensor(np.asarray(normals, dtype=np.float32), device=pts.device)
    for start in range(0, len(rows), EDGE_CHUNK):
        part = slice(start, start + EDGE_CHUNK)
        r = torch.as_tensor(rows[part], dtype=torch.int64, device=pts.device)
        c = torch.as_tensor(cols[part], dtype=torch.int64, device=pts.device)
        ni, nj = nrm[r], nrm[c]
        edge = pts[c] - pts[r]
        length = edge.norm(dim=1)
        edge = edge / length.clamp_min(1e-12)[:, None]
        yield part, (ni * nj).sum(1), (ni * edge).sum(1).abs(), (nj * edge).sum(1).abs(), length
