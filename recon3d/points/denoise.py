"""Noise in a scan: how much there is, and smoothing the points onto local planes when it matters.

A hash-grid SDF has the capacity to follow noise that is large against the point spacing: its zero
set then wrinkles at the scale of the spacing. The measure is the RMS distance of each point's k
neighbours to their best-fitting plane, divided by the distance to the k-th neighbour: about 0.01 on
clean samples of smooth or CAD surfaces (only curvature contributes), about 0.1 on a real range scan,
about 0.3 with Gaussian noise of 0.25 % of the diagonal on 200k points. Above a threshold, each point
moves onto the least-squares plane of its neighbours (a one-step moving-least-squares projection),
which averages the noise across the
neighbourhood while keeping the surface where the samples are. The ratio is relative to the spacing,
so a denser scan with the same noise comes out of one pass still noisy: ``smooth_until_quiet`` repeats
while it is, the later passes onto quadrics, which do not pull points to the inside of a curve.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from recon3d.points.normals import plane_fits, principal_axes

#: Neighbours for the noise measure (the smoothing's own count is fit-sdf's SMOOTH_NEIGHBOURS).
NOISE_NEIGHBOURS = 16
#: Points measured for the noise ratio (a random subset: the median needs few, and 10M-point scans
#: should not pay for a PCA of every point just to learn they are clean).
NOISE_SAMPLE = 20_000
#: ``denoise="auto"`` smooths scans whose noise ratio is at least this.
NOISE_THRESHOLD = 0.15
DENOISE_MODES = ("auto", "on", "off")


def noise_ratio(points: np.ndarray, tree: cKDTree | None = None, k: int = NOISE_NEIGHBOURS,
                sample: int = NOISE_SAMPLE, seed: int = 0, device: torch.device | str | None = None) -> float:
    """Median RMS off-plane distance of k neighbours over median k-th neighbour distance (see module)."""
    points = np.asarray(points, dtype=np.float64)
    k = int(min(k, len(points)))
    if k < 4:
        return 0.0
    tree = cKDTree(points) if tree is None else tree
    rng = np.random.default_rng(seed)
    subset = rng.choice(len(points), size=min(sample, len(points)), replace=False)
    dist, neighbours = tree.query(points[subset], k=k, workers=-1)
    _, _, smallest = plane_fits(points, neighbours, device)
    spacing = float(np.median(dist[:, -1]))
    return float(np.median(np.sqrt(smallest)) / spacing) if spacing > 0 else 0.0


def project_to_planes(points: np.ndarray, k: int, device: torch.device | str | None = None,
                      chunk: int = 500_000, neighbours: np.ndarray | None = None) -> np.ndarray:
    """Each point moved onto the least-squares plane of its k nearest neighbours (same dtype).

    ``neighbours`` (N, k) reuses ids found before; otherwise they are queried in chunks, so that a
    10M-point scan never holds all k·N neighbour ids at once.
    """
    k = int(min(k, len(points)))
    if k < 4:
        return points.copy()
    work = np.asarray(points, dtype=np.float64)
    out = np.empty_like(work)
    for start, stop, ids in _neighbour_chunks(work, k, chunk, neighbours):
        centroid, normal, _ = plane_fits(work, ids, device)
        offset = np.einsum("ij,ij->i", work[start:stop] - centroid, normal)
        out[start:stop] = work[start:stop] - offset[:, None] * normal
    return out.astype(points.dtype)


def _neighbour_chunks(points: np.ndarray, k: int, chunk: int, neighbours: np.ndarray | None):
    """(start, stop, neighbour ids of points[start:stop]) chunk by chunk: slices of ``neighbours`` when
    given, else a k-nearest query per chunk."""
    tree = cKDTree(points) if neighbours is None else None
    for start in range(0, len(points), chunk):
        stop = min(start + chunk, len(points))
        if tree is None:
            yield start, stop, neighbours[start:stop, :k]
        else:
            yield start, stop, tree.query(points[start:stop], k=k, workers=-1)[1]


def project_to_quadrics(points: np.ndarray, k: int, device: torch.device | str | None = None,
                        chunk: int = 200_000, neighbours: np.ndarray | None = None, ridge: float = 1e-3) -> np.ndarray:
    """Each point moved onto the least-squares quadric height field of its k nearest neighbours.

    In the frame of the neighbours' plane (PCA), the height w over the plane is fitted as
    a + b·u + c·v + d·u² + e·uv + f·v² and the point moves along the plane's normal onto it. A plane
    fit (:func:`project_to_planes`) cuts through a curved neighbourhood's chord and pulls every point
    towards the inside of the curve, by about κ·r²/4 for a neighbourhood of radius r; the quadric follows
    the curvature, so the points keep their place on it. ``ridge`` (against the scaled quadratic terms)
    only keeps degenerate neighbourhoods (a line of points) solvable. ``neighbours`` as for
    :func:`project_to_planes`. Same dtype as the input.
    """
    k = int(min(k, len(points)))
    if k < 8:
        return project_to_planes(points, k, device, chunk, neighbours)
    work = np.asarray(points, dtype=np.float64)
    pts = torch.as_tensor(work, dtype=torch.float32, device=device)
    out = np.empty_like(work)
    penalty = torch.diag(torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)) * ridge * k
    for start, stop, ids in _neighbour_chunks(work, k, chunk, neighbours):
        idx = torch.as_tensor(ids, dtype=torch.int64, device=pts.device)
        offsets = pts[idx] - pts[start:stop, None, :]  # (n,k,3) around each point: float32 is exact enough
        centroid = offsets.mean(dim=1)
        centred = offsets - centroid[:, None, :]
        _, vectors = principal_axes(centred)
        frame = vectors.to(device=pts.device, dtype=torch.float32)  # columns: normal, minor, major axis
        local = centred @ frame  # (n,k,3): w, v, u
        w, v, u = local.unbind(dim=-1)
        radius = (u.square() + v.square()).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
        u, v = u / radius, v / radius
        design = torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=-1)  # (n,k,6), |entries| ≲ 4
        # The small normal equations on the CPU in float64; sums of k well-scaled float32 terms are exact enough.
        lhs = (design.transpose(1, 2) @ design).double().cpu() + penalty
        rhs = (design.transpose(1, 2) @ w[..., None]).double().cpu()
        coef = torch.linalg.solve(lhs, rhs)[..., 0].to(device=pts.device, dtype=torch.float32)
        here = (-centroid[:, None, :] @ frame)[:, 0]  # the point itself in the frame: (w0, v0, u0)
        u0, v0 = here[:, 2] / radius[:, 0], here[:, 1] / radius[:, 0]
        basis = torch.stack([torch.ones_like(u0), u0, v0, u0 * u0, u0 * v0, v0 * v0], dim=-1)
        height = (basis * coef).sum(dim=-1)
        moved = pts[start:stop] + (height - here[:, 0])[:, None] * frame[:, :, 0]
        out[start:stop] = moved.double().cpu().numpy()
    return out.astype(points.dtype)


#: How each smoothing pass fits the neighbourhood: "plane" or "quadric" (see the two projections).
SMOOTHING_FITS = {"plane": project_to_planes, "quadric": project_to_quadrics}


#: smooth_until_quiet keeps the neighbour ids of its first pass for the next ones when there are at
#: most this many (N·k; 32M int64 ids = 256 MB): the points move by about the noise, a fraction of the
#: neighbourhood, so the same neighbours serve and the next passes skip their k-nearest queries.
REUSE_NEIGHBOUR_IDS = 32_000_000


def smooth_until_quiet(points: np.ndarray, k: int, passes: tuple[str, ...], repeat_above: float,
                       device: torch.device | str | None = None,
                       neighbours: np.ndarray | None = None) -> tuple[np.ndarray, list[float]]:
    """Smoothing passes in order (each "plane" or "quadric", see SMOOTHING_FITS), the first always and
    each next one only while the noise ratio is still at least ``repeat_above``; return the points and
    the ratio after each pass run.

    One pass of k neighbours divides the noise by about √k, but the ratio is noise over spacing, and a
    denser scan with the same noise has a smaller spacing: it needs more passes to come out as quiet.
    ``neighbours`` (N, ≥k): the points' k nearest (ids, self first) when already queried.
    """
    k = int(min(k, len(points)))
    if neighbours is None and len(passes) > 1 and len(points) * k <= REUSE_NEIGHBOUR_IDS and k >= 4:
        neighbours = cKDTree(points).query(points, k=k, workers=-1)[1]
    ratios: list[float] = []
    for fit in passes:
        if ratios and ratios[-1] < repeat_above:
            break
        points = SMOOTHING_FITS[fit](points, k, device, neighbours=neighbours)
        ratios.append(noise_ratio(points, device=device))
    return points, ratios
