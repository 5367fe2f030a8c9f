"""Normals for scans that have none.

PCA of each point's k nearest neighbours gives the tangent plane; the sign is propagated along a
minimum spanning tree of the neighbour graph weighted by 1 − |nᵢ·nⱼ| (Hoppe et al. 1992), so it
flips only where neighbouring planes agree; each connected piece then gets the sign whose normals
have positive flux Σ nᵢ·(pᵢ − centroid), which is outward for a closed surface. Propagation can still
err on thin parts and noise, so the SDF loss trusts these signs only early in training and uses
them sign-agnostically afterwards. The neighbour query also yields each point's local spacing,
which sets the scale of the near-surface samples (IGR's local σ).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree


def neighbourhood(points: np.ndarray, k: int = 16,
                  pca: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Return (unoriented unit normals (N,3) float32, k-th neighbour distance (N,), neighbour ids (N,k)).

    With ``pca=False`` only the neighbour query runs (the spacing is all a scan with its own normals, or
    one fitted without normals, needs) and the normals are None.
    """
    k = int(min(k, len(points)))
    tree = cKDTree(points)
    dist, idx = tree.query(points, k=k, workers=-1)
    normals = pca_normals(points, idx) if pca else None
    return normals, dist[:, -1].astype(np.float32), idx


def pca_normals(points: np.ndarray, neighbours: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """(N,3) float32 unoriented unit normals: the least-variance axis of each point's neighbours (N,k)."""
    normals = np.empty((len(points), 3), dtype=np.float32)
    for start in range(0, len(points), chunk):
        nb = points[neighbours[start:start + chunk]]  # (n, k, 3)
        centred = nb - nb.mean(axis=1, keepdims=True)
        cov = np.einsum("nki,nkj->nij", centred, centred)
        _, vecs = np.linalg.eigh(cov)
        normals[start:start + chunk] = vecs[:, :, 0]
    return normals


def orient_normals(points: np.ndarray, normals: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Consistently signed copy of ``normals`` by MST propagation over the neighbour graph."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k - 1)
    cols = neighbours[:, 1:].reshape(-1)
    dots = np.abs(np.einsum("ij,ij->i", normals[rows], normals[cols]))
    weights = 1.0 - dots + 1e-6  # zero weights would vanish from the sparse graph
    graph = coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    tree = minimum_spanning_tree(graph)
    tree = tree + tree.T
    n_parts, labels = connected_components(tree, directed=False)
    oriented = normals.copy()
    for part in range(n_parts):
        members = np.flatnonzero(labels == part)
        root = int(members[np.argmax(points[members, 2])])
        order, parent = breadth_first_order(tree, root, directed=False, return_predecessors=True)
        _propagate(oriented, order, parent)
        # One sign for the whole piece: outward normals have positive flux of the position field,
        # ∮ n·(p − c) dA = 3 × volume > 0 (divergence theorem), a vote of every point rather than of
        # one root whose normal may lie flat (the top of a sharp edge).
        flux = np.einsum("ij,ij->", oriented[members], points[members] - points[members].mean(axis=0))
        if flux < 0:
            oriented[members] *= -1
    return oriented


def _propagate(normals: np.ndarray, order: np.ndarray, parent: np.ndarray) -> None:
    """Flip each node (in BFS order) to agree with its tree parent."""
    children = order[1:]
    parents = parent[children]
    agree = np.einsum("ij,ij->i", normals[children], normals[parents]) >= 0  # raw, before flips
    # sign(child) = sign(parent) · (agree ? 1 : -1), accumulated along BFS order
    sign = np.ones(len(normals), dtype=np.int8)
    flip = np.where(agree, 1, -1).astype(np.int8).tolist()
    sign_list = sign.tolist()
    for child, par, f in zip(children.tolist(), parents.tolist(), flip):
        sign_list[child] = sign_list[par] * f
    normals *= np.asarray(sign_list, dtype=np.float32)[:, None]
