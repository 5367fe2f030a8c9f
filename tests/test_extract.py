"""Mesh extraction from analytic fields: closed, outward, exact (sparse == dense), on the surface."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from extraction import extract
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from recon3d.errors import Recon3dError
from recon3d.mesh.extract import ExtractResult

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
SMALL, LARGE = (torch.tensor([0.55, 0.0, 0.0]), 0.25), (torch.tensor([-0.4, 0.0, 0.0]), 0.45)


pytestmark = pytest.mark.usefixtures("one_thread")


def sphere(p: torch.Tensor, centre: torch.Tensor | None = None, radius: float = 0.5) -> torch.Tensor:
    return (p if centre is None else p - centre.to(p)).norm(dim=-1) - radius


def torus(p: torch.Tensor) -> torch.Tensor:
    ring = torch.stack((p[:, :2].norm(dim=1) - 0.55, p[:, 2]), 1)
    return ring.norm(dim=1) - 0.2


def two_spheres(p: torch.Tensor) -> torch.Tensor:
    return torch.minimum(sphere(p, *SMALL), sphere(p, *LARGE))


def box(p: torch.Tensor) -> torch.Tensor:
    q = p.abs() - 0.5
    return q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0)


def needle(p: torch.Tensor) -> torch.Tensor:
    """A sphere with a spike thinner than a coarse cell: found only by following the surface at full resolution."""
    spike = torch.maximum(p[:, 1:].norm(dim=1) - 0.012, torch.maximum(p[:, 0] - 0.85, -p[:, 0]))
    return torch.minimum(sphere(p, radius=0.3), spike)


FIELDS = {"sphere": sphere, "torus": torus, "two_spheres": two_spheres, "box": box, "needle": needle}


@lru_cache(maxsize=None)
def extracted(name: str, resolution: int, method: str, normals: str = "none") -> ExtractResult:
    return extract(FIELDS[name], BOX, resolution, method=method, normals=normals)


def directed_edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]))


def assert_watertight(faces: np.ndarray) -> None:
    """Every edge is shared by exactly two faces, used once in each direction."""
    assert len(faces) > 0
    edges = directed_edges(faces)
    n = int(faces.max()) + 1
    forward, backward = edges[:, 0] * n + edges[:, 1], edges[:, 1] * n + edges[:, 0]
    assert len(np.unique(forward)) == len(forward), "an edge is used twice in the same direction"
    assert np.isin(backward, forward).all(), "an edge has no opposite half: the mesh has a hole"


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def assert_same_mesh(a: ExtractResult, b: ExtractResult) -> None:
    """Same face count and the same vertex set: a one-to-one nearest-neighbour match within 1e-6."""
    assert a.mesh.n_faces == b.mesh.n_faces
    assert a.mesh.n_vertices == b.mesh.n_vertices
    distance, nearest = cKDTree(b.mesh.vertices).query(a.mesh.vertices)
    assert distance.max() < 1e-6
    assert len(np.unique(nearest)) == len(nearest)


@pytest.mark.parametrize(
    ("name", "resolution"), [("sphere", 128), ("torus", 80), ("two_spheres", 64), ("box", 64), ("needle", 96)]
)
def test_sparse_matches_dense(name: str, resolution: int) -> None:
    assert_same_mesh(extracted(name, resolution, "sparse"), extracted(name, resolution, "dense"))


def test_blocks_match_one_marching_cubes_call() -> None:
    """Block-wise marching cubes plus welding reproduces one skimage call on the whole volume."""
    centre = torch.tensor([0.01, 0.02, 0.03])
    result = extract(lambda p: sphere(p, centre), BOX, 48, method="dense", normals="none")
    axis = np.linspace(-1.0, 1.0, 49)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    volume = (np.linalg.norm(points - centre.numpy(), axis=-1) - 0.5).astype(np.float32)
    verts, faces, _, _ = marching_cubes(volume, 0.0, method="lewiner")
    assert result.mesh.n_faces == len(faces) and result.mesh.n_vertices == len(verts)
    distance, _ = cKDTree(result.mesh.vertices).query(verts * (2.0 / 48) - 1.0)
    assert distance.max() < 1e-5


@pytest.mark.parametrize("name", ["sphere", "torus", "two_spheres", "box"])
@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_closed_and_outward(name: str, method: str) -> None:
    mesh = extracted(name, 64, method).mesh
    assert_watertight(mesh.faces)
    assert signed_volume(mesh.vertices, mesh.faces) > 0
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64


def test_sphere_volume_and_surface_distance() -> None:
    result = extracted("sphere", 128, "sparse")
    mesh = result.mesh
    assert result.resolution == (128, 128, 128)
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.01)
    cell = 2.0 / 128
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).max() < cell / 2


def test_thin_spike_is_followed_to_its_tip() -> None:
    mesh = extracted("needle", 96, "sparse").mesh
    assert_watertight(mesh.faces)
    assert mesh.vertices[:, 0].max() == pytest.approx(0.85, abs=2.0 / 96)


def test_torus_vertices_on_surface() -> None:
    vertices = extracted("torus", 80, "sparse").mesh.vertices
    assert torus(torch.as_tensor(vertices)).abs().max() < (2.0 / 80) / 2


def test_box_on_grid_values_give_no_degenerate_faces() -> None:
    mesh = extracted("box", 64, "sparse").mesh  # box faces fall exactly on lattice planes: f == 0 there
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    assert np.linalg.norm(np.cross(b - a, c - a), axis=1).min() > 0
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_surface_leaving_the_box_is_capped(method: str) -> None:
    bounds = np.array([[-0.3, -1.0, -1.0], [1.0, 1.0, 0.2]])
    result = extract(sphere, bounds, 64, method=method, normals="mesh")
    mesh = result.mesh
    assert_watertight(mesh.faces)
    assert signed_volume(mesh.vertices, mesh.faces) > 0
    assert result.resolution == (42, 64, 39)  # ceil(1.3 / cell), 64, ceil(1.2 / cell)
    cell = 2.0 / 64
    assert mesh.vertices[:, 0].min() > -0.3 - cell and mesh.vertices[:, 2].max() < 0.2 + cell
    cap = mesh.vertices[:, 0] < -0.3  # the cap lies just outside the box, its normals point along -x
    assert cap.any() and (mesh.vertex_normals[cap, 0] < 0).all()


def test_capped_sparse_matches_dense() -> None:
    bounds = np.array([[-0.3, -1.0, -1.0], [1.0, 1.0, 0.2]])
    sparse, dense = (extract(sphere, bounds, 80, method=m, normals="none") for m in ("sparse", "dense"))
    assert_same_mesh(sparse, dense)


def test_inside_above_matches_mirrored_sdf() -> None:
    mirrored = extract(lambda p: -sphere(p), BOX, 64, inside="above", normals="none")
    assert_same_mesh(mirrored, extracted("sphere", 64, "sparse"))


def test_occupancy_probability_field() -> None:
    def occupancy(p: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-sphere(p) / 0.05)

    result = extract(occupancy, BOX, 64, level=0.5, inside="above", normals="field")
    mesh = result.mesh
    assert_watertight(mesh.faces)
    assert signed_volume(mesh.vertices, mesh.faces) > 0
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).max() < (2.0 / 64) / 2
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", mesh.vertex_normals, radial).mean() > 0.99


@pytest.mark.parametrize("differentiable", [True, False])
def test_field_normals_match_analytic(differentiable: bool) -> None:
    def frozen(p: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sphere(p)

    field = sphere if differentiable else frozen
    mesh = extract(field, BOX, 64, normals="field").mesh
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    cosine = np.einsum("ij,ij->i", mesh.vertex_normals, radial)
    assert mesh.vertex_normals.dtype == np.float32
    assert cosine.mean() > 0.99 and cosine.min() > 0.9


def test_mesh_normals_point_outward() -> None:
    mesh = extracted("sphere", 64, "sparse", "mesh").mesh
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", mesh.vertex_normals, radial).mean() > 0.99
    assert extracted("sphere", 64, "sparse").mesh.vertex_normals is None


def test_largest_component_keeps_the_larger_sphere() -> None:
    both = extracted("two_spheres", 64, "sparse").mesh
    result = extract(two_spheres, BOX, 64, largest_component=True, normals="none")
    mesh = result.mesh
    assert_watertight(mesh.faces)
    assert mesh.n_faces < both.n_faces
    centre, radius = LARGE
    assert np.abs(np.linalg.norm(mesh.vertices - centre.numpy(), axis=1) - radius).max() < 2.0 / 64
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.03)


def test_sparse_needs_far_fewer_queries() -> None:
    sparse, dense = extracted("sphere", 128, "sparse"), extracted("sphere", 128, "dense")
    assert dense.queries == 129**3
    assert sparse.queries < dense.queries / 5


def test_lipschitz_culling_is_exact() -> None:
    result = extract(torus, BOX, 80, lipschitz=1.0, normals="none")
    assert_same_mesh(result, extracted("torus", 80, "dense"))


def test_isolated_speck_needs_lipschitz() -> None:
    """The documented limitation: a speck smaller than a coarse cell, far from other surface, is only
    found by the sparse sampler when the Lipschitz bound makes its culling exact."""
    speck = (torch.tensor([0.55, 0.05, 0.05]), 0.02)

    def field(p: torch.Tensor) -> torch.Tensor:
        return torch.minimum(sphere(p, torch.tensor([-0.5, 0.0, 0.0]), 0.3), sphere(p, *speck))

    plain, exact = (extract(field, BOX, 80, normals="none", lipschitz=lip) for lip in (None, 1.0))
    assert (plain.mesh.vertices[:, 0] > 0).sum() == 0
    assert (exact.mesh.vertices[:, 0] > 0).sum() > 0
    assert_same_mesh(exact, extract(field, BOX, 80, method="dense", normals="none"))


def test_constant_fields() -> None:
    for method in ("sparse", "dense"):
        empty = extract(lambda p: torch.ones(len(p)), BOX, 32, method=method)
        assert empty.mesh.n_faces == 0 and empty.mesh.n_vertices == 0
        assert empty.mesh.vertices.shape == (0, 3) and empty.mesh.faces.shape == (0, 3)
        full = extract(lambda p: -torch.ones(len(p)), BOX, 32, method=method, normals="mesh")
        assert_watertight(full.mesh.faces)  # everything inside: the padding closes it as the box
        assert signed_volume(full.mesh.vertices, full.mesh.faces) >= 8.0


def test_chunk_limit_progress_and_timings() -> None:
    sizes: list[int] = []
    stages: set[str] = set()

    def counted(p: torch.Tensor) -> torch.Tensor:
        sizes.append(len(p))
        return sphere(p)

    result = extract(counted, BOX, 64, chunk=5000, progress=lambda stage, _: stages.add(stage))
    assert max(sizes) <= 5000
    assert sum(sizes) == result.queries
    assert {"evaluate", "marching_cubes", "normals"} <= stages
    assert {"evaluate", "marching_cubes", "total"} <= set(result.seconds)


def test_non_cubic_bounds_keep_cubic_cells() -> None:
    bounds = np.array([[-1.0, -0.5, -0.25], [1.0, 0.5, 0.25]])
    result = extract(lambda p: sphere(p, radius=0.2), bounds, 64, normals="none")
    assert result.resolution == (64, 32, 16)
    assert_watertight(result.mesh.faces)


@pytest.mark.parametrize(
    "options",
    [{"inside": "left"}, {"method": "octree"}, {"normals": "smooth"}, {"resolution": 0}, {"lipschitz": -1.0}],
)
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(Recon3dError):
        extract(sphere, BOX, **{"resolution": 16, **options})


def test_bad_bounds_raise() -> None:
    with pytest.raises(Recon3dError):
        extract(sphere, np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]), 16)


def test_value_range_leaves_out_nan_and_keeps_infinities() -> None:
    from recon3d.mesh.grid import Lattice, Sampler

    values = iter([torch.tensor([float("nan")] * 4), torch.tensor([0.5, float("nan"), -2.0, 1.0]),
                   torch.tensor([float("nan"), float("inf"), 0.25, 0.0])])
    sampler = Sampler(lambda x: next(values), Lattice.from_bounds(np.array([[0.0] * 3, [1.0] * 3]), 4), 0.25, -1.0,
                      4, torch.device("cpu"))
    u = sampler.evaluate(torch.zeros(4, 3))
    assert sampler.value_range() is None  # only NaN so far
    assert torch.equal(u, torch.ones(4))  # NaN is outside
    sampler.evaluate(torch.zeros(4, 3))
    assert sampler.value_range() == (-2.0, 1.0)
    u = sampler.evaluate(torch.zeros(4, 3))
    assert sampler.value_range() == (-2.0, float("inf"))
    assert u[0] == 1.0 and u[1] == -float("inf") and u[2] > 0 and u[2] < 1e-5  # 0.25 is the level: nudged outside


def test_integer_index_helpers() -> None:
    from recon3d.mesh.grid import Lattice, _Codec, int_divmod

    a = torch.arange(0, 1000, 7)
    q, r = int_divmod(a, 13)
    assert torch.equal(q, a // 13) and torch.equal(r, a % 13)
    codec = _Codec([5, 6, 7])
    axes = torch.meshgrid(torch.arange(5), torch.arange(6), torch.arange(7), indexing="ij")
    idx = torch.stack(axes, -1).reshape(-1, 3)
    assert torch.equal(codec.decode(codec.encode(idx)), idx)
    lattice = Lattice.from_bounds(np.array([[0.0] * 3, [1.0] * 3]), 4)  # sampled padded indices 1..5
    real = lattice.is_real(torch.tensor([[0, 3, 3], [1, 1, 1], [5, 5, 5], [6, 1, 1], [3, 3, 6]]))
    assert real.tolist() == [False, True, True, False, False]
