"""Cavities (inward-facing closed pieces) are found by signed volume and dropped from fits from images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon3d.fields.surface import Surface
from recon3d.mesh.cavities import cavity_faces
from recon3d.mesh.extract import ExtractOptions, extract_mesh
from recon3d.mesh.from_field import seen_from_outside
from recon3d.mesh.support import component_labels

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def _signed_volumes(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    count, label = component_labels(len(vertices), faces)
    v0, v1, v2 = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return np.bincount(label, weights=np.einsum("ij,ij->i", v0, np.cross(v1, v2)), minlength=count) / 6.0


def _hollow_ball(x: torch.Tensor) -> torch.Tensor:
    """Signed distance of a ball of radius 0.7 with a sealed spherical void of radius 0.3 at its centre."""
    r = x.norm(dim=1)
    return torch.maximum(r - 0.7, 0.3 - r)


@pytest.mark.parametrize("marching", ["table", "lewiner"])
def test_a_sealed_void_is_a_piece_of_negative_volume_and_is_dropped(marching):
    surface = Surface(_hollow_ball, 0.0, "below", lipschitz=1.0)
    kept = extract_mesh(surface, BOX, ExtractOptions(resolution=48, marching_cubes=marching))
    volumes = np.sort(_signed_volumes(kept.mesh.vertices, kept.mesh.faces))
    assert len(volumes) == 2 and kept.cavities == 0
    assert volumes[0] == pytest.approx(-4 / 3 * np.pi * 0.3**3, rel=0.05)  # the void, facing inward
    assert volumes[1] == pytest.approx(4 / 3 * np.pi * 0.7**3, rel=0.05)
    dropped = extract_mesh(surface, BOX, ExtractOptions(resolution=48, marching_cubes=marching, drop_cavities=True))
    assert dropped.cavities == 1
    assert _signed_volumes(dropped.mesh.vertices, dropped.mesh.faces) == pytest.approx([4 / 3 * np.pi * 0.7**3],
                                                                                       rel=0.05)


def test_separate_solid_pieces_stay_and_the_largest_piece_always_stays():
    def two_balls(x: torch.Tensor) -> torch.Tensor:
        return torch.minimum((x - torch.tensor([0.4, 0.0, 0.0])).norm(dim=1) - 0.3,
                             (x + torch.tensor([0.5, 0.0, 0.0])).norm(dim=1) - 0.2)

    result = extract_mesh(Surface(two_balls, 0.0, "below", lipschitz=1.0), BOX,
                          ExtractOptions(resolution=48, drop_cavities=True))
    assert result.cavities == 0 and (_signed_volumes(result.mesh.vertices, result.mesh.faces) > 0).sum() == 2
    # A mesh whose only piece faces inward keeps it: nothing else would be left.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    inward = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    assert _signed_volumes(vertices, inward)[0] < 0
    keep, dropped = cavity_faces(vertices, inward)
    assert keep.all() and dropped == 0


def test_only_fits_from_images_drop_cavities():
    assert seen_from_outside({"train": {"images": 100}})
    assert not seen_from_outside({"train": {"points": 1000}})
    assert not seen_from_outside({})
