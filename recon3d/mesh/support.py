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
import torch

from recon3d.mesh.components import vertex_components

#: A component is kept when at least this fraction of its vertices is near the scan.
MIN_SUPPORTED_FRACTION = 0.5
#: Query × support pairs a GPU compares at once when it finds each vertex's nearest support point.
PAIRS_PER_CHUNK = 1 << 26


def component_labels(n_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, component of each face); faces sharing a vertex are connected."""
    count, labels = vertex_components(n_vertices, faces)
    return count, labels[faces[:, 0]]


def nearest(points: np.ndarray, queries: np.ndarray, device: torch.device | str = "cpu",
            brute_force: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index of the nearest of ``points`` (N, 3)) for each of ``queries`` (Q, 3), float32: by brute
    force in chunks on a GPU (exact differences, no matrix-product shortcut), with SciPy's k-d tree on a CPU
    (``brute_force`` overrides the choice)."""
    if brute_force is None:
        brute_force = torch.device(device).type == "cuda"
    if not brute_force or len(points) == 0:
        from scipy.spatial import cKDTree  # imported only here: 0.2-0.4 s of start-up the GPU path skips

        distance, index = cKDTree(points).query(queries, k=1, workers=-1)
        return distance.astype(np.float32), index.astype(np.int64)
    target = torch.as_tensor(points, dtype=torch.float32, device=device)
    query = torch.as_tensor(queries, dtype=torch.float32, device=device)
    step = max(1, PAIRS_PER_CHUNK // len(target))
    distance, index = [], []
    for start in range(0, len(query), step):
        d = torch.cdist(query[start:start + step], target, compute_mode="donot_use_mm_for_euclid_dist")
        best = d.min(dim=1)
        distance.append(best.values)
        index.append(best.indices)
    if not distance:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(distance).cpu().numpy(), torch.cat(index).cpu().numpy()


def supported_faces(vertices: np.ndarray, faces: np.ndarray, support: dict[str, np.ndarray],
                    min_fraction: float = MIN_SUPPORTED_FRACTION,
                    device: torch.device | str = "cpu") -> tuple[np.ndarray, int]:
    """(mask of the faces to keep, number of components dropped).

    ``vertices`` are in field coordinates, like ``support``. The largest component is always kept. The
    nearest support points are found on ``device``.
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
    distance, closest = nearest(np.asarray(support["points"], dtype=np.float32),
                                np.asarray(vertices[queried], dtype=np.float32), device)
    near = distance <= np.asarray(support["radius"], dtype=np.float32)[closest]
    labels = vertex_label[queried]
    fraction = np.bincount(labels, weights=near, minlength=count) / np.maximum(np.bincount(labels, minlength=count), 1)
    unsupported = fraction < min_fraction
    unsupported[largest] = False
    drop = unsupported[face_label]
    keep[drop] = False
    return keep, int(np.count_nonzero(unsupported & (np.bincount(face_label, minlength=count) > 0)))
