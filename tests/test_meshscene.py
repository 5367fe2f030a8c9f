"""recon3d.meshscene: ray casting against an independent reference and the analytic sphere, and
scenes whose pixels agree with the geometry they were rendered from."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from recon3d import meshscene
from recon3d.errors import Recon3dError
from recon3d.io.scene import read_scene
from recon3d.meshscene import Camera, MeshCaster, icosphere, raycast, raycast_torch

pytestmark = pytest.mark.usefixtures("one_thread")


def _open3d_usable() -> bool:
    from recon3d._open3d import import_open3d

    try:
        import_open3d()
    except Recon3dError:
        return False
    return True


HAVE_OPEN3D = _open3d_usable()
needs_open3d = pytest.mark.skipif(not HAVE_OPEN3D, reason="open3d is not usable here")
BACKEND = "open3d" if HAVE_OPEN3D else "torch"

CENTRE = np.array([0.3, -0.2, 0.1])  # off the origin, so a mirrored camera axis cannot go unnoticed
RADIUS = 0.8


def _rays_at(target_radius: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit rays from a sphere of radius 3 towards random points within ``target_radius`` of the origin."""
    rng = np.random.default_rng(seed)
    origins = rng.normal(size=(n, 3))
    origins *= 3.0 / np.linalg.norm(origins, axis=1, keepdims=True)
    targets = rng.normal(size=(n, 3))
    targets *= target_radius * rng.random((n, 1)) ** (1 / 3) / np.linalg.norm(targets, axis=1, keepdims=True)
    directions = targets - origins
    return origins, directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _chord_error(mesh) -> float:
    """Largest gap between the unit-sphere mesh and the sphere: radius minus the nearest face plane."""
    normals = meshscene.face_normals(mesh.vertices, mesh.faces)
    return float(1.0 - np.abs(np.einsum("ij,ij->i", normals, mesh.vertices[mesh.faces[:, 0]])).min())


@needs_open3d
def test_raycast_agrees_with_brute_force_torch() -> None:
    mesh = icosphere(2)
    origins, directions = _rays_at(1.4, 3000, seed=1)  # some rays miss
    t, face, normal, hit = raycast(mesh, origins, directions)
    t_ref, face_ref, normal_ref, hit_ref = raycast_torch(mesh, origins, directions)
    assert 0 < hit.sum() < len(hit)
    assert np.array_equal(hit, hit_ref)
    assert np.all(face[~hit] == -1) and np.all(np.isinf(t[~hit]))
    assert np.abs(t[hit] - t_ref[hit]).max() < 1e-5
    # Face ids must agree wherever the hit is clearly inside one triangle (not on an edge).
    points = origins[hit] + t_ref[hit, None] * directions[hit]
    corners = mesh.vertices[mesh.faces[face_ref[hit]]]
    inside = meshscene._barycentric(points, corners).min(axis=1) > 1e-4
    assert inside.mean() > 0.95
    assert np.array_equal(face[hit][inside], face_ref[hit][inside])
    assert np.allclose(normal[hit][inside], normal_ref[hit][inside])


@needs_open3d
def test_torch_camera_caster_agrees_with_open3d() -> None:
    mesh = icosphere(2, RADIUS, CENTRE)
    pose = meshscene.scene_poses(1, 0, seed=3)[0][0]
    camera = Camera.blender(pose, 40, 32, meshscene.CAMERA_ANGLE_X)
    _, _, t, face = MeshCaster(mesh, "open3d").cast(camera)
    _, _, t_torch, face_torch = MeshCaster(mesh, "torch").cast(camera)
    hit = np.isfinite(t)
    assert 0 < hit.sum() < len(hit)
    assert np.array_equal(hit, np.isfinite(t_torch))
    assert np.abs(t[hit] - t_torch[hit]).max() < 1e-5
    assert (face[hit] == face_torch[hit]).mean() > 0.95


@pytest.mark.parametrize("cast", [raycast_torch] + ([raycast] if HAVE_OPEN3D else []))
def test_raycast_depths_match_the_analytic_sphere(cast) -> None:
    mesh = icosphere(3)
    origins, directions = _rays_at(0.5, 500, seed=2)  # incidence at most 30 degrees
    t, _, normal, hit = cast(mesh, origins, directions)
    assert hit.all()
    b = np.einsum("ij,ij->i", origins, directions)
    t_sphere = -b - np.sqrt(b * b - (np.einsum("ij,ij->i", origins, origins) - 1.0))
    chord = _chord_error(mesh)
    slack = t - t_sphere
    assert slack.min() > -1e-5  # the inscribed mesh is never hit before the sphere
    assert slack.max() < chord / math.cos(math.radians(30)) + 1e-5
    points = origins + t[:, None] * directions
    assert np.einsum("ij,ij->i", normal, points).min() > 0.97  # outward face normals


def _analytic_margin(scene, index: int, oversample: int = 1) -> np.ndarray:
    """(H*s, W*s) how far each pixel centre (or with ``oversample`` s, each of s x s sub-pixel centres)
    lies outside the true sphere's silhouette, in pixels (negative inside), from rays built here with
    the scene's own intrinsics and camera-to-world matrix."""
    c2w = scene.c2w[index].double().numpy()
    fx, fy = float(scene.fx[index]), float(scene.fy[index])
    cx, cy = float(scene.cx[index]), float(scene.cy[index])
    steps = (np.arange(oversample) + 0.5) / oversample
    v, u = np.meshgrid((np.arange(scene.height)[:, None] + steps).ravel(),
                       (np.arange(scene.width)[:, None] + steps).ravel(), indexing="ij")
    local = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1)
    directions = local @ c2w[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    to_centre = CENTRE - c2w[:3, 3]
    distance = np.linalg.norm(to_centre)
    angle = np.arccos(np.clip(directions @ to_centre / distance, -1.0, 1.0))
    return (angle - math.asin(RADIUS / distance)) * fx


@pytest.fixture(scope="module")
def sphere_scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sphere_scene")
    mesh = icosphere(3, RADIUS, CENTRE)
    meshscene.write_mesh_scene(mesh, folder, n_train=3, n_test=2, size=48, seed=5, backend=BACKEND)
    return folder, mesh


def test_written_scene_reads_back_with_exact_alpha(sphere_scene) -> None:
    folder, mesh = sphere_scene
    assert (folder / "mesh.ply").is_file() and (folder / "meshscene.json").is_file()
    chord_px = RADIUS * _chord_error(icosphere(3)) * 70.0 / 3.0  # chord at depth >= 3, fx ~ 67 px
    for split, count in (("train", 3), ("test", 2)):
        scene = read_scene(folder, split, keep_alpha=True)
        assert len(scene) == count and (scene.width, scene.height) == (48, 48)
        assert scene.format == "blender" and scene.alphas is not None
        for i in range(count):
            alpha, margin = scene.alphas[i].numpy(), _analytic_margin(scene, i)
            assert (alpha == 1.0).sum() > 100 and (alpha == 0.0).sum() > 100
            assert np.all(alpha[margin <= -1.0 - chord_px] == 1.0)  # inside the silhouette: opaque
            assert np.all(alpha[margin >= 1.0] == 0.0)  # outside: transparent
            edge = (alpha > 0) & (alpha < 1)
            assert np.abs(margin[edge]).max() < 1.0 + chord_px  # fractional alpha only on the boundary
            # Anti-aliased coverage puts the silhouette where the true one is, to a small part of a pixel.
            fine = _analytic_margin(scene, i, oversample=8) < 0
            rows, columns = np.mgrid[0 : 48 * 8, 0 : 48 * 8]
            true_centre = (np.array([columns[fine].mean(), rows[fine].mean()]) + 0.5) / 8
            rows, columns = np.mgrid[0:48, 0:48] + 0.5
            seen_centre = np.array([(columns * alpha).sum(), (rows * alpha).sum()]) / alpha.sum()
            assert np.abs(seen_centre - true_centre).max() < 0.1
            assert alpha.sum() == pytest.approx(fine.sum() / 64, rel=0.03)


def test_mesh_points_project_onto_opaque_pixels(sphere_scene) -> None:
    folder, mesh = sphere_scene
    scene = read_scene(folder, "train", keep_alpha=True)
    for i in range(len(scene)):
        c2w = scene.c2w[i].double().numpy()
        local = (mesh.vertices - c2w[:3, 3]) @ c2w[:3, :3]  # world → camera (OpenGL: looking down -z)
        depth = -local[:, 2]
        assert depth.min() > 0
        u = float(scene.cx[i]) + float(scene.fx[i]) * local[:, 0] / depth
        v = float(scene.cy[i]) - float(scene.fy[i]) * local[:, 1] / depth
        column, row = np.floor(u).astype(int), np.floor(v).astype(int)  # pixel (c, r) spans [c, c+1) x [r, r+1)
        margin = _analytic_margin(scene, i)[row, column]
        alpha = scene.alphas[i].numpy()[row, column]
        assert np.all(alpha[margin < -1.5] == 1.0)
        assert np.all(alpha[margin < -0.75] > 0.0)
        assert (margin < -1.5).mean() > 0.5


def test_scene_mesh_fits_the_scene_box() -> None:
    mesh = icosphere(1, 3.0, (10.0, 0.0, -5.0))
    placed = meshscene.scene_mesh(mesh)
    assert np.linalg.norm(placed.vertices, axis=1).max() == pytest.approx(meshscene.SCENE_RADIUS)
    assert np.abs(placed.vertices.min(axis=0) + placed.vertices.max(axis=0)).max() < 1e-12


def test_preview_writes_a_png_of_the_requested_size(tmp_path) -> None:
    path = meshscene.preview(icosphere(2), tmp_path / "preview.png", size=40, views=3, backend=BACKEND)
    with Image.open(path) as image:
        assert image.size == (120, 40) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert (pixels < 250).any(axis=-1).mean() > 0.1  # the mesh is drawn, not just the background
