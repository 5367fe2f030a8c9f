"""Data support: which surface pieces of a fitted field the scan actually vouches for.

An SDF fitted to a scan can keep a closed surface piece far from every scan point: a remnant of the
initial sphere trapped where the far-field prior (|f| ≥ distance to the scan) forbids the field to
pass through zero on its way to the right sign, e.g. a bubble of "outside" deep inside a solid part or
a blob of "inside" floating in a through-hole. Such a piece is a closed component of the zero set
with (almost) no scan point near it. fit-sdf stores a compact picture of the scan in the checkpoint
(:func:`recon3d.points.support.scan_support`); extraction drops the components whose vertices are
mostly farther from the scan than the local point spacing (:func:`supported_faces`). Dropping a
closed component leaves a closed mesh. The largest component is always kept, and a hole the fit
closed is part of a supported component, so hole filling is unaffected.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

#: A component is kept when at least this fraction of its vertices is near the scan.
MIN_SUPPORTED_FRACTION = 0.5


def component_labels(n_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, component of each face); faces sharing a vertex are connected."""
    edges = np.concatenate((faces[:, :2], faces[:, 1:]))
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n_vertices,) * 2)
    count, labels = connected_components(graph, directed=False)
    return count, labels[faces[:, 0]]


def supported_faces(vertices: np.ndarray, faces: np.ndarray, support: dict[str, np.ndarray],
                    min_fraction: float = MIN_SUPPORTED_FRACTION) -> tuple[np.ndarray, int]:
    """(mask of the faces to keep, number of components dropped).

    ``vertices`` are in field coordinates, like ``support``. The largest component is always kept.
    """
    keep = np.ones(len(faces), dtype=bool)
    if len(faces) == 0 or len(support["points"]) == 0:
        return keep, 0
    count, face_label = component_labels(len(vertices), faces)
    if count <= 1:
        return keep, 0
    largest = int(np.bincount(face_label, minlength=count).argmax())
    vertex_label = np.full(len(vertices), -1, dtype=np.int64)
    vertex_label[faces.reshape(-1)] = np.repeat(face_label, 3)
    queried = np.flatnonzero((vertex_label >= 0) & (vertex_label != largest))
    tree = cKDTree(np.asarray(support["points"], dtype=np.float32))
    distance, nearest = tree.query(vertices[queried], k=1, workers=-1)
    near = distance <= np.asarray(support["radius"], dtype=np.float32)[nearest]
    labels = vertex_label[queried]
    fraction = np.bincount(labels, weights=near, minlength=count) / np.maximum(np.bincount(labels, minlength=count), 1)
    unsupported = fraction < min_fraction
    unsupported[largest] = False
    drop = unsupported[face_label]
    keep[drop] = False
    return keep, int(np.count_nonzero(unsupported & (np.bincount(face_label, minlength=count) > 0)))
