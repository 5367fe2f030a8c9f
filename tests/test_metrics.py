"""Metrics checked against references that cannot lie: exact spheres, analytic volumes, skimage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from skimage.metrics import structural_similarity

from recon3d import metrics
from recon3d._open3d import import_open3d
from recon3d.errors import InputError, Recon3dError
from recon3d.types import PointCloud, TriMesh


def _open3d_usable() -> bool:
    try:
        import_open3d()
    except Recon3dError:
        return False
    return True


needs_open3d = pytest.mark.skipif(not _open3d_usable(), reason="open3d is not usable here")


def icosphere(radius: float = 1.0, center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> TriMesh:
    """A closed, outward-oriented sphere mesh (20480 faces)."""
    ico = trimesh.creation.icosphere(subdivisions=5)
    vertices = np.asarray(ico.vertices, dtype=np.float64) * radius + np.asarray(center)
    return TriMesh(vertices, np.asarray(ico.faces, dtype=np.int64))


def exact_sphere_cloud(n: int, seed: int = 0) -> PointCloud:
    """Points drawn uniformly from the exact unit sphere, with their exact normals."""
    points = np.random.default_rng(seed).normal(size=(n, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return PointCloud(points, points.astype(np.float32))


@pytest.fixture(scope="module")
def sphere() -> TriMesh:
    return icosphere()


@pytest.fixture
def without_open3d(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make metrics behave as on the GPU machine, where open3d is missing."""

    def unusable() -> None:
        raise Recon3dError("open3d is not usable: No module named 'open3d'")

    monkeypatch.setattr(metrics, "import_open3d", unusable)


# ------------------------------------------------------------------------------------ meshes


def test_sample_surface_is_on_surface_deterministic_and_area_weighted(sphere: TriMesh) -> None:
    points, normals = metrics.sample_surface(sphere, 5000, seed=3)
    again, _ = metrics.sample_surface(sphere, 5000, seed=3)
    np.testing.assert_array_equal(points, again)
    radius = np.linalg.norm(points, axis=1)
    assert np.all((radius > 0.999) & (radius <= 1.0 + 1e-12))
    assert np.all(np.einsum("ij,ij->i", normals, points) > 0.99)

    # Two triangles, the second with three times the area of the first.
    two = TriMesh(
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 1, 1]], float),
        np.array([[0, 1, 2], [3, 4, 5]]),
    )
    points, _ = metrics.sample_surface(two, 40_000, seed=0)
    assert np.mean(points[:, 2] > 0.5) == pytest.approx(0.75, abs=0.01)


def test_sample_surface_rejects_meshes_without_area() -> None:
    flat = TriMesh(np.zeros((3, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(InputError):
        metrics.sample_surface(flat, 10)


def test_face_normals_point_outwards_on_a_sphere(sphere: TriMesh) -> None:
    normals = metrics.face_normals(sphere)
    centroids = sphere.vertices[sphere.faces].mean(axis=1)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    assert np.all(np.einsum("ij,ij->i", normals, centroids) > 0)


def test_watertight_detects_holes_flips_and_bad_indices(sphere: TriMesh) -> None:
    assert metrics.mesh_is_watertight(sphere)
    assert not metrics.mesh_is_watertight(TriMesh(sphere.vertices, sphere.faces[1:]))
    flipped = sphere.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not metrics.mesh_is_watertight(TriMesh(sphere.vertices, flipped))
    out_of_range = sphere.faces.copy()
    out_of_range[0, 0] = sphere.n_vertices
    assert not metrics.mesh_is_watertight(TriMesh(sphere.vertices, out_of_range))
    assert not metrics.mesh_is_watertight(TriMesh(sphere.vertices, np.zeros((0, 3), np.int64)))


def test_volume_of_icosphere_matches_ball() -> None:
    mesh = icosphere(radius=2.0, center=(5.0, -3.0, 1.0))
    assert metrics.mesh_volume(mesh) == pytest.approx(4.0 / 3.0 * np.pi * 8.0, rel=0.01)
    flipped = TriMesh(mesh.vertices, mesh.faces[:, ::-1])
    assert metrics.mesh_volume(flipped) == pytest.approx(-metrics.mesh_volume(mesh))


def test_bbox_diagonal() -> None:
    assert metrics.bbox_diagonal(np.array([[0, 0, 0], [1, 2, 2], [0.5, 0.5, 0.5]])) == 3.0
    with pytest.raises(InputError):
        metrics.bbox_diagonal(np.zeros((0, 3)))


# ------------------------------------------------------------------------------- inside test


@pytest.mark.parametrize("backend", ["numpy", pytest.param("open3d", marks=needs_open3d)])
def test_inside_known_points(sphere: TriMesh, backend: str) -> None:
    points = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0, 0, -0.99], [2, 0, 0], [0.6, 0.6, 0.6]])
    expected = [True, True, True, False, False]
    assert metrics.inside_mesh(sphere, points, backend=backend).tolist() == expected


@pytest.mark.parametrize("backend", ["numpy", pytest.param("open3d", marks=needs_open3d)])
def test_inside_rays_through_vertices_and_edges(sphere: TriMesh, backend: str) -> None:
    """Rays along +z that pass exactly through mesh vertices or edges are counted once."""
    v = sphere.vertices
    edges = sphere.faces[:, :2]
    midpoints = 0.5 * (v[edges[:, 0]] + v[edges[:, 1]])
    upper = np.concatenate([v[v[:, 2] > 0.2], midpoints[midpoints[:, 2] > 0.2]])
    below_surface = np.c_[upper[:, :2], np.zeros(len(upper))]
    below_sphere = np.c_[upper[:, :2], np.full(len(upper), -2.0)]
    assert metrics.inside_mesh(sphere, below_surface, backend=backend).all()
    assert not metrics.inside_mesh(sphere, below_sphere, backend=backend).any()


def test_inside_numpy_on_axis_aligned_box() -> None:
    """Vertical faces and rays along shared edges of a box, with the analytic answer."""
    box = trimesh.creation.box()
    mesh = TriMesh(np.asarray(box.vertices, float), np.asarray(box.faces, np.int64))
    axis = np.linspace(-1.0, 1.0, 9)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    off_surface = np.all(np.abs(np.abs(grid) - 0.5) > 1e-9, axis=1)
    expected = np.all(np.abs(grid) < 0.5, axis=1)
    inside = metrics.inside_mesh(mesh, grid, backend="numpy")
    np.testing.assert_array_equal(inside[off_surface], expected[off_surface])


@needs_open3d
def test_inside_backends_agree_with_the_sphere(sphere: TriMesh) -> None:
    points = np.random.default_rng(7).uniform(-1.3, 1.3, size=(50_000, 3))
    radius = np.linalg.norm(points, axis=1)
    clear = (radius < 0.999) | (radius > 1.0)  # the icosphere lies between radii 0.9998 and 1
    by_numpy = metrics.inside_mesh(sphere, points, backend="numpy")
    by_open3d = metrics.inside_mesh(sphere, points, backend="open3d")
    np.testing.assert_array_equal(by_numpy, by_open3d)
    np.testing.assert_array_equal(by_numpy[clear], (radius < 1.0)[clear])


def test_inside_falls_back_without_open3d(sphere: TriMesh, without_open3d: None) -> None:
    assert metrics.inside_mesh(sphere, np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.5]])).tolist() == [
        True,
        False,
    ]
    with pytest.raises(Recon3dError):
        metrics.inside_mesh(sphere, np.zeros((1, 3)), backend="open3d")


def test_metrics_imports_without_open3d() -> None:
    code = (
        "import sys; sys.modules['open3d'] = None\n"
        "import numpy as np, recon3d.metrics as m\n"
        "from recon3d.types import TriMesh\n"
        "t = TriMesh(np.array([[0,0,0],[1,0,0],[0,1,0],[0,0,1.]]),"
        " np.array([[0,2,1],[0,1,3],[0,3,2],[1,2,3]]))\n"
        "assert m.inside_mesh(t, np.array([[.1,.1,.1],[1,1,1.]])).tolist() == [True, False]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------- evaluate


def test_icosphere_against_exact_sphere_is_tiny(sphere: TriMesh) -> None:
    """At 400k samples the sample-to-sample floor is ~8e-4 of the diagonal (1.1e-3 at 200k)."""
    n = 400_000
    result = metrics.evaluate(sphere, exact_sphere_cloud(n), n_samples=n)
    assert result["diagonal"] == pytest.approx(2.0 * np.sqrt(3.0), rel=1e-3)
    assert result["chamfer_l1"] < 1e-3
    assert result["normal_consistency"] > 0.999
    assert result["fscore@0.5%"] > 0.999
    assert result["ref_watertight"] is None and result["volume_iou"] is None


def test_scaled_sphere_distances(sphere: TriMesh) -> None:
    bigger = TriMesh(sphere.vertices * 1.01, sphere.faces)
    result = metrics.evaluate(bigger, sphere, n_samples=200_000)
    diagonal = 2.0 * np.sqrt(3.0)
    expected = 0.01 / diagonal
    assert result["diagonal"] == pytest.approx(diagonal, rel=1e-3)
    assert result["chamfer_l1"] == pytest.approx(expected, rel=0.2)
    assert result["accuracy"] == pytest.approx(expected, rel=0.2)
    assert result["completeness"] == pytest.approx(expected, rel=0.2)
    assert result["chamfer_l2"] == pytest.approx(expected**2, rel=0.25)
    assert result["chamfer_l1_abs"] == pytest.approx(0.01, rel=0.2)
    assert 0.01 <= result["hausdorff_abs"] < 0.03
    assert result["hausdorff"] == pytest.approx(result["hausdorff_abs"] / diagonal)
    expected_iou = (1.0 / 1.01) ** 3
    assert result["volume_iou"] == pytest.approx(expected_iou, abs=0.01)


def test_fscore_identical_and_far_apart(sphere: TriMesh) -> None:
    same = metrics.evaluate(sphere, sphere, n_samples=100_000)  # fewer lets gaps exceed 0.5%
    for key in ("fscore@0.5%", "fscore@1%", "precision@1%", "recall@1%"):
        assert same[key] == pytest.approx(1.0, abs=1e-3)
    far = TriMesh(sphere.vertices + [3.0, 0.0, 0.0], sphere.faces)
    apart = metrics.evaluate(far, sphere, n_samples=20_000)
    assert apart["fscore@0.5%"] == 0.0 and apart["fscore@1%"] == 0.0
    assert apart["volume_iou"] == 0.0


def test_normal_consistency_random_normals_and_missing_normals(sphere: TriMesh) -> None:
    cloud = exact_sphere_cloud(20_000)
    random = np.random.default_rng(1).normal(size=(20_000, 3)).astype(np.float32)
    noisy = metrics.evaluate(sphere, PointCloud(cloud.points, random), n_samples=20_000)
    assert noisy["normal_consistency"] < 0.8
    bare = metrics.evaluate(PointCloud(cloud.points), sphere, n_samples=20_000)
    assert bare["normal_consistency"] is None
    assert bare["watertight"] is None and bare["n_pred_faces"] is None


def _lens_iou(d: float, r: float = 1.0) -> float:
    lens = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12.0
    ball = 4.0 / 3.0 * np.pi * r**3
    return lens / (2 * ball - lens)


@pytest.mark.parametrize("d", [0.3, 1.0])
@pytest.mark.parametrize("open3d_present", [pytest.param(True, marks=needs_open3d), False])
def test_volume_iou_of_offset_spheres_matches_lens(
    sphere: TriMesh, d: float, open3d_present: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not open3d_present:
        monkeypatch.setattr(metrics, "import_open3d", _raise_unusable)
    moved = TriMesh(sphere.vertices + [d, 0.0, 0.0], sphere.faces)
    assert metrics.volume_iou(moved, sphere, n=100_000) == pytest.approx(_lens_iou(d), abs=0.01)


def _raise_unusable() -> None:
    raise Recon3dError("open3d is not usable")


def test_evaluate_returns_plain_json_values(sphere: TriMesh) -> None:
    result = metrics.evaluate(sphere, exact_sphere_cloud(5000), n_samples=5000, seed=4)
    assert result == metrics.evaluate(sphere, exact_sphere_cloud(5000), n_samples=5000, seed=4)
    json.dumps(result)
    assert all(v is None or type(v) in (float, bool, int) for v in result.values())
    assert result["watertight"] is True
    assert result["n_pred_vertices"] == sphere.n_vertices
    assert result["n_pred_faces"] == sphere.n_faces
    for label in ("0.5%", "1%"):
        assert {f"fscore@{label}", f"precision@{label}", f"recall@{label}"} <= result.keys()


def test_evaluate_subsamples_large_clouds(sphere: TriMesh) -> None:
    result = metrics.evaluate(exact_sphere_cloud(50_000), sphere, n_samples=10_000)
    assert result["accuracy"] < 0.01


def test_evaluate_rejects_degenerate_reference(sphere: TriMesh) -> None:
    with pytest.raises(InputError):
        metrics.evaluate(sphere, PointCloud(np.ones((10, 3))))


# ---------------------------------------------------------------------------------- images


def test_psnr_known_values() -> None:
    a = np.zeros((8, 8, 3))
    assert metrics.psnr(a, a + 0.1) == pytest.approx(20.0)
    assert metrics.psnr(a + 0.5, a + 0.51) == pytest.approx(40.0)
    assert metrics.psnr(a, a + 25.5, max_val=255.0) == pytest.approx(20.0)
    assert metrics.psnr(a, a) == float("inf")
    with pytest.raises(InputError):
        metrics.psnr(a, np.zeros((8, 8)))


def test_ssim_identical_and_against_skimage() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((48, 64, 3))
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    other = np.clip(image + rng.normal(scale=0.1, size=image.shape), 0, 1)
    smooth = np.clip(image * 0.5 + 0.2, 0, 1)
    for candidate in (other, smooth, rng.random(image.shape)):
        expected = structural_similarity(
            image, candidate, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0, channel_axis=-1,
        )
        assert metrics.ssim(image, candidate) == pytest.approx(expected, abs=1e-9)
