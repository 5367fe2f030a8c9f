"""Isolated points: stray returns of a scanner, far from every surface the scan samples.

One such point decides the scan's bounding box as much as the object does: the normalisation shrinks
the object to fit it in, the field loses resolution, and the fit closes a small surface around the
stray point. A point counts as isolated when its k-th nearest neighbour is more than ``factor`` times
farther than the scan's median k-th neighbour distance: with k = 16 and factor 10 that is a
neighbourhood 100 times sparser than the typical one. On real and sampled scans the largest ratio is
far below that (docs/constants.md), while a lone stray point, or a cluster of fewer than k of them,
is far above it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

ISOLATION_NEIGHBOURS = 16
ISOLATION_FACTOR = 10.0
OUTLIER_MODES = ("drop", "keep")


def isolated_points(points: np.ndarray, k: int = ISOLATION_NEIGHBOURS, factor: float = ISOLATION_FACTOR,
                    distances: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (N,) of the isolated points (see the module); all False when nothing can be judged.

    ``distances`` (N, k): each point's sorted neighbour distances, itself first, when already queried
    (in other coordinates, such as float32 field coordinates). When most of them are zero although the
    points differ, those coordinates have collapsed the points together (one stray point 10⁹ away shrinks
    a unit object below float32's resolution), so the points are judged again in their own coordinates.
    """
    n = len(points)
    k = int(min(k, n))
    if k < 2:
        return np.zeros(n, dtype=bool)
    given = distances is not None
    if distances is None:
        distances, _ = cKDTree(points).query(points, k=k, workers=-1)
    reach = distances[:, k - 1]
    typical = float(np.median(reach))
    if not typical > 0:  # most points coincide: judge in the points' own coordinates, else nothing to judge
        if given:
            return isolated_points(np.asarray(points, dtype=np.float64), k, factor)
        return np.zeros(n, dtype=bool)
    return reach > factor * typical
