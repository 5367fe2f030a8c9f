"""A compact picture of a scan for the mesher: voxel-thinned points with a nearness radius each.

Stored in fit-sdf checkpoints as ``support``; extraction drops the closed surface pieces that no scan
point is near (:mod:`recon3d.mesh.support`).
"""

from __future__ import annotations

import numpy as np

#: A vertex is near the scan within this multiple of the local k-th-neighbour distance.
RADIUS_FACTOR = 1.25
#: Voxel of the stored picture: half the median neighbour distance, but at least this (field units),
#: so that a dense scan of millions of points stores at most a few hundred thousand support points.
MIN_VOXEL = 1.0 / 256.0


def scan_support(points: np.ndarray, spacing: np.ndarray) -> dict[str, np.ndarray]:
    """A voxel-thinned copy of the scan with a nearness radius per point (field units, float16).

    ``spacing`` is each point's distance to its k-th neighbour. Each voxel keeps one point and the
    largest radius of the points in it, so sparse parts of the scan keep their larger tolerance.
    """
    points = np.asarray(points, dtype=np.float32)
    spacing = np.asarray(spacing, dtype=np.float32)
    voxel = max(0.5 * float(np.median(spacing)), MIN_VOXEL)
    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(axis=0) if len(cells) else 0
    size = cells.max(axis=0) + 1 if len(cells) else np.ones(3, dtype=np.int64)
    keys = (cells[:, 0] * size[1] + cells[:, 1]) * size[2] + cells[:, 2]  # row order: as np.unique(axis=0)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    radius = np.zeros(len(first), dtype=np.float32)
    np.maximum.at(radius, inverse, RADIUS_FACTOR * np.maximum(spacing, 2.0 * voxel))
    return {"points": points[first].astype(np.float16), "radius": radius.astype(np.float16)}
