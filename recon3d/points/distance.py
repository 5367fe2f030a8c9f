"""Distance to a scan on a lattice, and which side of its surface far points lie on.

Priors for fitting a signed distance field to a scan: away from the scan |f| must reach the distance
to the nearest point, and where two independent witnesses agree (flood fill from the border and the
oriented normals of the nearest points) the sign of f is known too (:func:`sign_claims`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

#: Lattice points per side of the unsigned-distance prior over [-1, 1]³.
DISTANCE_GRID = 64
#: Sign claims (see sign_claims): lattice points count as far from the scan beyond
#: max(one lattice step, FREE_SPACING × the median neighbour distance); CLAIM_NEIGHBOURS normals vote
#: and CLAIM_VOTE of them (net) must agree.
FREE_SPACING = 1.5
CLAIM_NEIGHBOURS = 8
CLAIM_VOTE = 0.75


def distance_grid(points: np.ndarray, size: int = DISTANCE_GRID,
                  normals: np.ndarray | None = None, tau: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned distance from a size³ lattice over [-1, 1]^3 to the nearest scan point, and sign claims.

    Both are (size, size, size) arrays indexed [z, y, x]; the claims are +1 (outside), −1 (inside) or 0
    (no claim, see :func:`sign_claims`; all 0 without oriented ``normals``).
    """
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    lattice = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    # An unbalanced tree answers queries far from the data (most of the lattice) much faster than the
    # default balanced one; the distances are exact either way.
    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)
    # With normals one query serves both: its first column is the distance, its rows the voters.
    k = min(CLAIM_NEIGHBOURS, len(points)) if normals is not None else 1
    dist, nearest = tree.query(lattice, k=k, workers=-1)
    dist, nearest = dist.reshape(len(lattice), k), nearest.reshape(len(lattice), k)
    grid = dist[:, 0].astype(np.float32).reshape(size, size, size)
    claims = np.zeros((size, size, size), dtype=np.int8)
    if normals is not None:
        claims = sign_claims(points, normals, lattice, nearest, grid, tau)
    return grid, claims


def free_space_threshold(spacing: np.ndarray, size: int = DISTANCE_GRID) -> float:
    """Distance beyond which a lattice point is free space: no sampled surface passes between two such
    neighbours (more than half a lattice step) and no gap of an ordinary sampling density reaches it."""
    return max(2.0 / (size - 1), FREE_SPACING * float(np.median(spacing)))


def sign_claims(points: np.ndarray, normals: np.ndarray, lattice: np.ndarray, nearest: np.ndarray,
                dist: np.ndarray, tau: float) -> np.ndarray:
    """Which side of the surface the lattice points far from the scan (distance > tau) are on.

    Two independent witnesses must agree. Flood fill: free lattice points connected to the border of
    the domain through free points are outside unless the scan has holes, those cut off from it are
    inside unless the scan has an enclosed cavity. Normals: the oriented normals of the nearest scan
    points say which side a point is on, unless the orientation is wrong there. A point is claimed
    outside (+1) when it is connected to the border and ≥ CLAIM_VOTE of its neighbours' normals face
    it, inside (−1) when it is cut off and as many face away; otherwise 0. With a signed claim the
    far-field prior can flip a wrong-signed region (a trapped remnant of the initial sphere) instead
    of only keeping |f| large, which would lock the wrong sign in.
    """
    from scipy import ndimage  # here, not at the top: it is slow to import and only this needs it

    free = dist > tau
    labels, _ = ndimage.label(free)
    border = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()])
    reachable = np.isin(labels, np.unique(border[border > 0]))
    ids = np.flatnonzero(free)
    claims = np.zeros(free.size, dtype=np.int8)
    if len(ids) == 0:
        return claims.reshape(free.shape)
    voters = nearest[ids]
    # (u − p)·n for each voter, without an (n, k, 3) copy of the offsets.
    side = np.einsum("nj,nkj->nk", lattice[ids], normals[voters]) - np.einsum("ij,ij->i", points, normals)[voters]
    vote = np.sign(side).mean(axis=1)
    outside = reachable.ravel()[ids]
    claims[ids[outside & (vote >= CLAIM_VOTE)]] = 1
    claims[ids[~outside & (vote <= -CLAIM_VOTE)]] = -1
    return claims.reshape(free.shape)
