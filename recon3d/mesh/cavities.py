"""Cavities: closed surface pieces that face inward, voids sealed inside solid material.

A field fitted from images can keep a bubble of "outside" inside the object (UNISURF's occupancy on spot,
in our GPU benchmark). No ray reaches it, since every camera sees the outer surface first, so nothing in
the images supports it, and it counts against the mesh in every distance to the true surface. Marching
cubes orients each closed piece's faces outward, so a cavity is the piece whose signed volume
(1/6) Σ v₀·(v₁ × v₂) (the divergence theorem) is negative. The largest piece is always kept.
"""

from __future__ import annotations

import numpy as np

from recon3d.mesh.support import component_labels


def cavity_faces(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask of the faces to keep (F,), number of cavities dropped) for a mesh of closed pieces,
    ``vertices`` (V, 3) and outward-oriented ``faces`` (F, 3)."""
    keep = np.ones(len(faces), dtype=bool)
    if len(faces) == 0:
        return keep, 0
    count, label = component_labels(len(vertices), faces)
    if count <= 1:
        return keep, 0
    v = np.asarray(vertices, dtype=np.float64)
    v0, v1, v2 = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    volume = np.bincount(label, weights=np.einsum("ij,ij->i", v0, np.cross(v1, v2)), minlength=count) / 6.0
    cavity = volume < 0  # a component without faces has volume 0
    cavity[int(np.bincount(label, minlength=count).argmax())] = False
    keep[cavity[label]] = False
    return keep, int(np.count_nonzero(cavity))
