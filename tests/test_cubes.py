"""The torch marching cubes: a generated table that is closed, oriented and manifold on any input."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from extraction import extract
from skimage.measure import marching_cubes

from recon3d.mesh import cubes

pytestmark = pytest.mark.usefixtures("one_thread")


def edge_uses(faces: np.ndarray) -> Counter:
    """How many faces use each undirected edge."""
    edges = np.sort(np.concatenate((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]])), axis=1)
    return Counter(map(tuple, edges))


def assert_closed_manifold(verts: np.ndarray, faces: np.ndarray) -> None:
    """Every edge borders exactly two faces that traverse it in opposite directions; no degenerate faces."""
    assert len(faces) > 0
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()
    assert (faces[:, 0] != faces[:, 2]).all()
    uses = edge_uses(faces)
    assert set(uses.values()) == {2}, f"edges used {sorted(set(uses.values()))} times"
    directed = np.concatenate((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]))
    assert len(np.unique(directed, axis=0)) == len(directed), "two faces traverse an edge the same way"


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (verts[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def padded(u: np.ndarray) -> np.ndarray:
    """Surround a volume with one layer of outside values so its level set is closed."""
    return np.pad(u, 1, constant_values=1.0).astype(np.float32)


def blocks_of(volume: np.ndarray, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a volume of (n*b + 1)³ vertices into n³ blocks of b³ cells sharing their faces."""
    n = (volume.shape[0] - 1) // b
    t = torch.from_numpy(volume)
    values = t.unfold(0, b + 1, b).unfold(1, b + 1, b).unfold(2, b + 1, b).reshape(-1, b + 1, b + 1, b + 1)
    origins = torch.tensor([[i * b, j * b, k * b] for i in range(n) for j in range(n) for k in range(n)])
    return values.contiguous(), origins


def test_every_table_row_closes_into_loops() -> None:
    table, counts, centres = cubes.triangle_table()
    assert counts[0] == 0 and counts[255 * 64] == 0
    rows = np.flatnonzero(counts)
    assert len(rows) == 654  # 254 sign cases, each decision on an ambiguous face doubles its rows
    for row in rows:  # each row's triangles form a closed surface piece together with the cube faces
        triangles = table[row, : counts[row]]
        boundary = Counter()
        for tri in triangles:
            for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
                boundary[(a, b)] += 1
                boundary[(b, a)] -= 1
        crossing = [k for k in range(8) if (row // 64 >> k) & 1]
        assert crossing, row
        # interior (diagonal) edges cancel; what is left are the face segments, one per crossing
        segments = [e for e, v in boundary.items() if v == 1]
        assert len(segments) == len({a for a, _ in segments}) == len({b for _, b in segments})
        assert cubes.CENTRE not in {x for s in segments for x in s}
    assert 0 < np.count_nonzero(centres) <= 16  # a handful of loops need a centre vertex


def test_sphere_matches_lewiner_and_the_exact_volume() -> None:
    axis = np.arange(41, dtype=np.float64)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    u = (np.sqrt((x - 20.3) ** 2 + (y - 19.7) ** 2 + (z - 20.1) ** 2) - 12.0).astype(np.float32)
    verts, faces = cubes.triangulate(torch.from_numpy(u)[None], torch.zeros(1, 3, dtype=torch.int64), [41] * 3)
    assert_closed_manifold(verts, faces)
    ref_verts, ref_faces, _, _ = marching_cubes(u, 0.0, method="lewiner")
    assert len(faces) == len(ref_faces) and len(verts) == len(ref_verts)  # no ambiguity on a sphere
    assert signed_volume(verts, faces) == pytest.approx(signed_volume(ref_verts, ref_faces), rel=1e-4)  # float32 there
    assert signed_volume(verts, faces) == pytest.approx(4 / 3 * np.pi * 12**3, rel=0.005)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block", [4, 8])
def test_noise_fields_give_closed_manifold_meshes_across_blocks(seed: int, block: int) -> None:
    """White noise hits every ambiguous configuration; blocks must join without cracks."""
    rng = np.random.default_rng(seed)
    volume = padded(rng.standard_normal((15, 15, 15)))
    values, origins = blocks_of(volume, block if 16 % block == 0 else 8)
    verts, faces = cubes.triangulate(values, origins, [17] * 3)
    assert_closed_manifold(verts, faces)
    origin = torch.zeros(1, 3, dtype=torch.int64)
    whole_verts, whole_faces = cubes.triangulate(torch.from_numpy(volume)[None], origin, [17] * 3)
    assert len(whole_faces) == len(faces)  # the cut into blocks changes nothing
    assert signed_volume(verts, faces) == pytest.approx(signed_volume(whole_verts, whole_faces), rel=1e-9)
    assert signed_volume(verts, faces) > 0


def test_small_batches_give_the_same_mesh() -> None:
    volume = padded(np.random.default_rng(7).standard_normal((15, 15, 15)))
    values, origins = blocks_of(volume, 4)
    one = cubes.triangulate(values, origins, [17] * 3)
    many = cubes.triangulate(values, origins, [17] * 3, batch_cells=64)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])


def test_centre_vertex_case() -> None:
    """Corners 1, 2, 4 inside around corner 0: two of the three ambiguous faces at corner 0 join their
    inside corners, one does not; the loop of nine crossings has no allowed diagonal-only triangulation,
    so it gets a centre vertex, and the mesh stays closed."""
    u = np.ones((2, 2, 2), dtype=np.float32)
    u[0, 0, 0] = 0.5
    u[0, 0, 1], u[0, 1, 0], u[1, 0, 0] = -1.0, -0.6, -0.6  # faces x=0, y=0 joined (0.6 ≥ 0.5), z=0 not (0.36)
    row = 22 * 64 + cubes._decisions(torch.from_numpy(u.reshape(1, 8)), cubes._device_tables(torch.device("cpu")))
    assert cubes.triangle_table()[2][int(row)] != 0, "this configuration must use the centre vertex"
    volume = padded(u)
    verts, faces = cubes.triangulate(torch.from_numpy(volume)[None], torch.zeros(1, 3, dtype=torch.int64), [4] * 3)
    assert_closed_manifold(verts, faces)
    assert signed_volume(verts, faces) > 0


def test_values_on_the_level_stay_distinct_vertices() -> None:
    """A plane through lattice vertices: crossings stay SNAP cells off the vertices, so vertices stay
    distinct (also in float32) and no face degenerates."""
    axis = np.arange(12, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    u = padded(np.maximum(np.abs(x - 5.0) - 3.0, np.maximum(np.abs(y - 5.5) - 3.2, np.abs(z - 5.5) - 3.2)) * 1e-3)
    u[u == 0] = 1e-9  # what canonical() does: exact zeros nudged outside
    verts, faces = cubes.triangulate(torch.from_numpy(u)[None], torch.zeros(1, 3, dtype=torch.int64), [14] * 3)
    assert_closed_manifold(verts, faces)
    # the planes x = 2, 8 (+1 padding), moved SNAP cells inwards
    assert verts[:, 0].min() == pytest.approx(3.0 + cubes.SNAP) and verts[:, 0].max() == pytest.approx(9.0 - cubes.SNAP)
    assert len(np.unique(verts.astype(np.float32), axis=0)) == len(verts)
    ref_verts, ref_faces, _, _ = marching_cubes(u, 0.0, method="lewiner")  # the x planes moved by SNAP:
    assert signed_volume(verts, faces) == pytest.approx(signed_volume(ref_verts, ref_faces), rel=1e-3)


def test_extract_mesh_table_and_lewiner_agree_on_a_torus() -> None:
    def torus(p: torch.Tensor) -> torch.Tensor:
        ring = torch.stack((p[:, :2].norm(dim=1) - 0.55, p[:, 2]), 1)
        return ring.norm(dim=1) - 0.2

    box = np.array([[-1.0] * 3, [1.0] * 3])
    table = extract(torus, box, 64, marching_cubes="table", normals="none").mesh
    lewiner = extract(torus, box, 64, marching_cubes="lewiner", normals="none").mesh
    assert_closed_manifold(table.vertices, table.faces)
    exact = 2 * np.pi**2 * 0.55 * 0.2**2
    assert signed_volume(table.vertices, table.faces) == pytest.approx(exact, rel=0.01)
    assert signed_volume(table.vertices, table.faces) == pytest.approx(
        signed_volume(lewiner.vertices, lewiner.faces), rel=1e-3)


def test_near_level_lattice_values_survive_a_float32_file(tmp_path) -> None:
    """Lattice values within 1e-9 of the level put crossings a hair from lattice vertices; written as
    float32 PLY and read back, the vertices must still be distinct and the mesh closed."""
    from recon3d.io.mesh import read_mesh, write_mesh
    from recon3d.metrics import mesh_is_watertight

    cell = 2.0 / 48

    def nearly_flat(p: torch.Tensor) -> torch.Tensor:
        d = (p - torch.tensor([0.013, -0.021, 0.007])).norm(dim=1) - 0.61
        return torch.where(d.abs() < cell / 2, torch.sign(d) * 1e-9, d)

    mesh = extract(nearly_flat, np.array([[-1.0] * 3, [1.0] * 3]), 48, normals="none").mesh
    assert_closed_manifold(mesh.vertices, mesh.faces)
    write_mesh(tmp_path / "m.ply", mesh)
    back = read_mesh(tmp_path / "m.ply")
    assert back.n_vertices == mesh.n_vertices and mesh_is_watertight(back)
