"""Noise in a scan: how much there is, and smoothing the points onto local planes when it matters.

A hash-grid SDF has the capacity to follow noise that is large against the point spacing: its zero
set then wrinkles at the scale of the spacing (normal consistency 0.91-0.94 against the true surface
at σ = 0.25 % of the diagonal, 200k points). The measure is the RMS distance of each point's k
neighbours to their best-fitting plane, divided by the distance to the k-th neighbour: about 0.01 on
clean samples of smooth or CAD surfaces (only curvature contributes), 0.09 on the SRB gargoyle range
scan, 0.27 with σ = 0.25 % noise. Above a threshold, each point moves onto the least-squares plane of
its neighbours (a one-step moving-least-squares projection), which averages the noise across the
neighbourhood while keeping the surface where the samples are.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from recon3d.fit.normals import plane_fits

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
                      chunk: int = 500_000) -> np.ndarray:
    """Each point moved onto the least-squares plane of its k nearest neighbours (same dtype).

    Queried in chunks so that a 10M-point scan never holds all k·N neighbour ids at once.
    """
    k = int(min(k, len(points)))
    if k < 4:
        return points.copy()
    work = np.asarray(points, dtype=np.float64)
    tree = cKDTree(work)
    out = np.empty_like(work)
    for start in range(0, len(work), chunk):
        stop = min(start + chunk, len(work))
        _, neighbours = tree.query(work[start:stop], k=k, workers=-1)
        centroid, normal, _ = plane_fits(work, neighbours, device)
        offset = np.einsum("ij,ij->i", work[start:stop] - centroid, normal)
        out[start:stop] = work[start:stop] - offset[:, None] * normal
    return out.astype(points.dtype)
