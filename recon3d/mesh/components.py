"""Connected components of a mesh's vertex graph, in torch (no SciPy import on the extraction path).

Shiloach–Vishkin style: every edge hooks the larger of its two ends' labels onto the smaller (a scatter
of minima), then pointer jumping makes every label point at its tree's root; a few rounds until no edge
joins two labels. Each component ends labelled by its smallest vertex index, then numbered 0, 1, … in
that order, as SciPy's ``connected_components`` numbers them.
"""

from __future__ import annotations

import numpy as np
import torch

from recon3d.points.spanning import jump_to_roots


def vertex_components(n_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, component of each vertex (V,) int64) of the graph whose edges are the faces'
    sides (F, 3); a vertex in no face is a component of its own."""
    faces_t = torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64))
    u = torch.cat([faces_t[:, 0], faces_t[:, 1], faces_t[:, 2]])
    v = torch.cat([faces_t[:, 1], faces_t[:, 2], faces_t[:, 0]])
    parent = torch.arange(n_vertices, dtype=torch.int64)
    while u.numel():
        pu, pv = parent[u], parent[v]
        joined = pu != pv
        if not bool(joined.any()):
            break
        u, v, pu, pv = u[joined], v[joined], pu[joined], pv[joined]
        parent.scatter_reduce_(0, torch.maximum(pu, pv), torch.minimum(pu, pv), "amin")
        parent, _ = jump_to_roots(parent)
    roots, labels = torch.unique(parent, return_inverse=True)
    return int(roots.numel()), labels.numpy()
