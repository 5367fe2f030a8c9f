"""Sign claims, normal orientation, denoising and data support: the guards against wrong-signed regions.

References that cannot lie: spheres and cubes with known inside and outside, planes with known noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from test_cli import make_runner

from recon3d.cli import app
from recon3d.errors import Recon3dError
from recon3d.fit import sdf as sdf_fit
from recon3d.fit.run import run_config
from recon3d.fit.sdf import SdfFromPoints, SDFOptions, fit_sdf, prepare_scan
from recon3d.io.checkpoint import load_checkpoint, save_checkpoint
from recon3d.io.mesh import read_mesh
from recon3d.io.pointcloud import write_point_cloud
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint
from recon3d.mesh.support import component_labels, supported_faces
from recon3d.metrics import mesh_is_watertight
from recon3d.points import normals as normals_module
from recon3d.points.denoise import (
    NOISE_THRESHOLD,
    noise_ratio,
    project_to_planes,
    project_to_quadrics,
    smooth_until_quiet,
)
from recon3d.points.distance import DISTANCE_GRID, distance_grid
from recon3d.points.normals import neighbourhood, orient_normals, sign_disagreement
from recon3d.points.outliers import isolated_points
from recon3d.points.support import scan_support
from recon3d.synthetic import sample_sphere
from recon3d.types import PointCloud

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
G = DISTANCE_GRID


def _lattice_index(point: np.ndarray) -> tuple[int, int, int]:
    """[z, y, x] index of the distance lattice point nearest to ``point`` (field coordinates)."""
    i = np.rint((np.asarray(point) + 1.0) / 2.0 * (G - 1)).astype(int)
    return int(i[2]), int(i[1]), int(i[0])


def _sphere(n: int = 4000, radius: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    cloud = sample_sphere(n, radius=radius, seed=seed)
    return cloud.points.astype(np.float32), cloud.normals.astype(np.float32)


# ----------------------------------------------------------------------------------- sign claims


def test_claims_on_a_closed_sphere_are_outside_out_and_inside_in():
    points, normals = _sphere()
    dist, claims = distance_grid(points, normals=normals, tau=0.1)
    assert claims[_lattice_index([0.0, 0.0, 0.0])] == -1  # the centre, cut off from the border
    assert claims[_lattice_index([0.95, 0.95, 0.95])] == 1  # a corner of the domain
    assert claims[_lattice_index([0.0, 0.0, 0.6])] == 0  # on the surface: not free space
    assert (claims[dist <= 0.1] == 0).all()


def test_claims_need_both_witnesses():
    """Normals pointing inwards contradict the flood fill everywhere: no claim at all, rather than wrong ones."""
    points, normals = _sphere()
    _, claims = distance_grid(points, normals=-normals, tau=0.1)
    assert not claims.any()


def test_claims_of_an_open_scan_leave_the_leaky_inside_unclaimed():
    """A hemisphere: the inside is connected to the border, and the normals call it inside: no claim."""
    points, normals = _sphere(8000)
    keep = points[:, 2] > -0.1
    _, claims = distance_grid(points[keep], normals=normals[keep], tau=0.1)
    assert claims[_lattice_index([0.0, 0.0, 0.2])] == 0
    assert claims[_lattice_index([0.0, 0.0, 0.95])] == 1


def test_claims_are_off_without_normals():
    points, _ = _sphere()
    _, claims = distance_grid(points, normals=None, tau=0.1)
    assert not claims.any()


# ------------------------------------------------------------------------------ orientation


def _cube_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform samples of a unit cube's surface, turned 45° about x so an edge is the top."""
    rng = np.random.default_rng(seed)
    axis = rng.integers(0, 3, n)
    side = rng.choice([-0.5, 0.5], n)
    points = rng.uniform(-0.5, 0.5, (n, 3))
    points[np.arange(n), axis] = side
    normals = np.zeros((n, 3))
    normals[np.arange(n), axis] = np.sign(side)
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    turn = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return (points @ turn.T).astype(np.float32), (normals @ turn.T).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orientation_is_outward_when_the_top_is_a_sharp_edge(seed):
    """The highest point lies on an edge, where the PCA normal is horizontal and its sign a coin toss;
    the flux vote orients the whole piece outward anyway."""
    points, exact = _cube_points(6000, seed)
    unoriented, _, neighbours = neighbourhood(points)
    oriented = orient_normals(points, unoriented, neighbours)
    agree = np.einsum("ij,ij->i", oriented, exact)
    assert np.mean(agree > 0) > 0.9, np.mean(agree > 0)


def _slab(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a closed slab 1.4 point spacings thick and their outward normals."""
    slab = trimesh.creation.box(extents=(1.6, 1.6, 0.05))
    points, faces = trimesh.sample.sample_surface(slab, n, seed=seed)
    return points.astype(np.float32), slab.face_normals[faces].astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orientation_keeps_the_two_faces_of_a_thin_slab_apart(seed):
    """A closed slab 1.4 point spacings thick: 16 neighbours reach across it and both faces fit the
    same plane, so 1 − |nᵢ·nⱼ| alone lets the tree cross and sign both faces alike (half wrong); the
    cost of leaving the tangent plane keeps the tree on each face."""
    points, exact = _slab(seed=seed)
    unoriented, spacing, neighbours = neighbourhood(points)
    assert 0.05 < 1.6 * float(np.median(spacing))  # the neighbourhoods do span the thickness
    right = lambda normals: np.mean(np.einsum("ij,ij->i", normals, exact) > 0)  # noqa: E731
    assert right(orient_normals(points, unoriented, neighbours)) > 0.99
    assert right(orient_normals(points, unoriented, neighbours, tangent_weight=0.0)) < 0.9  # Hoppe's cost alone


def test_sign_disagreement_tells_soups_from_oriented_normals():
    """Oriented normals (even across a slab thinner than the neighbourhood) disagree almost never;
    random signs and a double-sided soup (every sample twice, once per side) half the time."""
    points, normals = _slab()
    _, _, neighbours = neighbourhood(points)
    assert sign_disagreement(points, normals, neighbours) < 0.01
    # a seed other than the sampling seed
    coin = np.where(np.random.default_rng(99).random(len(points)) < 0.5, -1.0, 1.0).astype(np.float32)
    assert sign_disagreement(points, normals * coin[:, None], neighbours) > 0.4
    assert sign_disagreement(points, normals, neighbours, sample=2000) < 0.01  # large scans: a subset
    assert sign_disagreement(points, normals * coin[:, None], neighbours, sample=2000) > 0.4
    soup, soup_normals = np.concatenate([points, points]), np.concatenate([normals, -normals])
    _, _, soup_neighbours = neighbourhood(soup)
    assert sign_disagreement(soup, soup_normals, soup_neighbours) > 0.4


def test_prepare_scan_estimates_normals_when_the_files_signs_disagree(capsys):
    """Random signs in the file: a warning, then the same normals as for the points alone (outward);
    consistent normals are used as they are."""
    cloud = sample_sphere(4000, seed=2)
    coin = np.where(np.random.default_rng(1).random(len(cloud)) < 0.5, -1.0, 1.0)
    scan = prepare_scan(PointCloud(cloud.points, cloud.normals * coin[:, None]), "auto", CPU, "coins")
    assert "estimating normals instead" in capsys.readouterr().err
    assert scan.origin == "estimated"
    estimated = prepare_scan(PointCloud(cloud.points), "auto", CPU, "bare")
    np.testing.assert_array_equal(scan.normals.numpy(), estimated.normals.numpy())
    assert np.all(np.einsum("ij,ij->i", scan.normals.numpy(), scan.points.numpy()) > 0)  # outward
    kept = prepare_scan(cloud, "auto", CPU, "sphere")
    assert kept.origin == "file"
    np.testing.assert_array_equal(kept.normals.numpy(), cloud.normals.astype(np.float32))


# ---------------------------------------------------------------------------------- denoising


def _plane(n: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.column_stack([rng.uniform(-1, 1, (n, 2)), np.zeros(n)])
    points[:, 2] += rng.normal(scale=noise, size=n)
    return points


def test_noise_ratio_separates_clean_from_noisy():
    spacing = np.sqrt(4.0 / 20_000)  # mean spacing of 20k points on a 2×2 square
    assert noise_ratio(_plane(20_000, 0.0)) < 0.01
    assert noise_ratio(sample_sphere(20_000, seed=0).points) < 0.05  # curvature alone
    assert noise_ratio(_plane(20_000, 0.5 * spacing)) > NOISE_THRESHOLD


def test_projection_removes_most_of_the_noise():
    noisy = _plane(20_000, 0.005)
    smoothed = project_to_planes(noisy, 64)
    assert smoothed.dtype == noisy.dtype and smoothed.shape == noisy.shape
    assert np.sqrt(np.mean(smoothed[:, 2] ** 2)) < np.sqrt(np.mean(noisy[:, 2] ** 2)) / 3


def test_quadric_projection_leaves_a_quadric_surface_in_place():
    """Points on z = 0.3x² − 0.2y² + 0.1xy lie on their neighbours' quadric: they must not move. A plane
    fit cuts the chord of the curve and does move them (the reference that the quadric removes)."""
    xy = np.random.default_rng(0).uniform(-1, 1, (20_000, 2))
    points = np.column_stack([xy, 0.3 * xy[:, 0] ** 2 - 0.2 * xy[:, 1] ** 2 + 0.1 * xy[:, 0] * xy[:, 1]])
    assert np.abs(project_to_quadrics(points, 64) - points).max() < 1e-4
    assert np.abs(project_to_planes(points, 64) - points).max() > 5e-4


def test_quadric_projection_does_not_shrink_a_noisy_sphere():
    sphere = sample_sphere(20_000, seed=0).points  # unit radius
    noisy = sphere + np.random.default_rng(1).normal(scale=0.01, size=sphere.shape)
    radius = {f.__name__: np.linalg.norm(f(noisy, 64), axis=1) for f in (project_to_planes, project_to_quadrics)}
    plane_bias, quadric_bias = (radius[name].mean() - 1.0 for name in ("project_to_planes", "project_to_quadrics"))
    assert plane_bias < -0.002  # pulled inside the curve by about κr²/4
    assert abs(quadric_bias) < abs(plane_bias) / 4
    assert np.sqrt(np.mean((radius["project_to_quadrics"] - 1.0) ** 2)) < 0.01 / 3


def test_smoothing_repeats_only_while_the_scan_is_still_noisy():
    sphere = sample_sphere(20_000, seed=0).points
    rng = np.random.default_rng(1)
    passes = ("plane", "quadric", "quadric")
    _, once = smooth_until_quiet(sphere + rng.normal(scale=0.03, size=sphere.shape), 64, passes, 0.1)
    assert len(once) == 1 and once[0] < 0.1
    very_noisy = sphere + rng.normal(scale=0.05, size=sphere.shape)  # one pass leaves it at ~0.2
    smoothed, ratios = smooth_until_quiet(very_noisy, 64, passes, 0.1)
    assert len(ratios) == 2 and ratios[0] >= 0.1 > ratios[1]
    one_pass, _ = smooth_until_quiet(very_noisy, 64, ("plane",), 0.1)
    rms = lambda p: np.sqrt(np.mean((np.linalg.norm(p, axis=1) - 1.0) ** 2))  # noqa: E731
    assert rms(smoothed) < rms(one_pass) / 1.5


def test_smoothing_passes_may_reuse_the_first_neighbour_ids(monkeypatch):
    """Later passes keep the first pass's neighbours (points move by about the noise); the result stays
    that of fresh queries to well within the noise."""
    sphere = sample_sphere(20_000, seed=0).points
    very_noisy = sphere + np.random.default_rng(1).normal(scale=0.05, size=sphere.shape)
    passes = ("plane", "quadric", "quadric")
    reused, ratios = smooth_until_quiet(very_noisy, 64, passes, 0.1)
    monkeypatch.setattr("recon3d.points.denoise.REUSE_NEIGHBOUR_IDS", 0)
    queried, ratios_queried = smooth_until_quiet(very_noisy, 64, passes, 0.1)
    assert len(ratios) == len(ratios_queried) == 2
    assert np.sqrt(np.mean(np.sum((reused - queried) ** 2, axis=1))) < 0.05 / 5


def test_prepare_scan_denoises_noisy_scans_only_in_auto():
    clean = sample_sphere(4000, seed=0)
    noisy = PointCloud(clean.points + np.random.default_rng(1).normal(scale=0.04, size=clean.points.shape), None)
    assert prepare_scan(noisy, "auto", CPU, "noisy").denoised
    assert prepare_scan(noisy, "auto", CPU, "noisy").smoothing_passes >= 1
    assert prepare_scan(PointCloud(clean.points, None), "auto", CPU, "clean").smoothing_passes == 0
    assert not prepare_scan(noisy, "auto", CPU, "noisy", denoise="off").denoised
    assert not prepare_scan(PointCloud(clean.points, None), "auto", CPU, "clean").denoised
    assert prepare_scan(PointCloud(clean.points, None), "auto", CPU, "clean", denoise="on").denoised
    with pytest.raises(Recon3dError, match="--denoise"):
        fit_sdf(clean, SDFOptions(denoise="sometimes"), Path("unused.pt"), CPU)


def test_clean_scans_anneal_further_than_noisy_ones(tmp_path):
    """The schedule's final learning rate follows the measured noise (see sdf.CLEAN_LR_FINAL), is stored
    in the checkpoint, and a resumed run keeps it."""
    clean = sample_sphere(2000, seed=0)
    noisy = PointCloud(clean.points + np.random.default_rng(1).normal(scale=0.02, size=clean.points.shape), None)
    ratios = {}
    for name, cloud in (("clean", PointCloud(clean.points, None)), ("noisy", noisy)):
        fit_sdf(cloud, SDFOptions(steps=4, batch=256), tmp_path / f"{name}.pt", CPU, show_progress=False)
        train = load_checkpoint(tmp_path / f"{name}.pt")["train"]
        ratios[name] = (train["noise_ratio"], train["config"]["settings"]["lr_final_ratio"])
    assert ratios["clean"][0] < sdf_fit.CLEAN_NOISE <= ratios["noisy"][0], ratios
    assert ratios["clean"][1] == sdf_fit.CLEAN_LR_FINAL and ratios["noisy"][1] == 0.05
    resumed = load_checkpoint(tmp_path / "clean.pt")
    settings = run_config(SdfFromPoints(), SDFOptions(steps=8), None, CPU, {**resumed, "resume": {}})["settings"]
    assert settings.lr_final_ratio == sdf_fit.CLEAN_LR_FINAL and settings.steps == 8


# ---------------------------------------------------------------------------------- data support


def _two_spheres() -> tuple[np.ndarray, np.ndarray, trimesh.Trimesh, trimesh.Trimesh]:
    big = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    small = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    small.apply_translation([0.6, 0.0, 0.0])
    both = trimesh.util.concatenate([big, small])
    return np.asarray(both.vertices), np.asarray(both.faces), big, small


def _support(*meshes: trimesh.Trimesh, n: int = 6000) -> dict[str, np.ndarray]:
    points = np.concatenate([m.sample(n, return_index=False) for m in meshes]).astype(np.float32)
    _, spacing, _ = neighbourhood(points, pca=False)
    support = scan_support(points, spacing)
    return {key: value.astype(np.float32) for key, value in support.items()}


def test_scan_support_thins_but_covers_every_point():
    points = sample_sphere(50_000, radius=0.5, seed=0).points.astype(np.float32)
    _, spacing, _ = neighbourhood(points, pca=False)
    support = scan_support(points, spacing)
    assert support["points"].dtype == np.float16 and len(support["points"]) < 0.7 * len(points)
    from scipy.spatial import cKDTree
    dist, nearest = cKDTree(support["points"].astype(np.float32)).query(points)
    assert (dist <= support["radius"].astype(np.float32)[nearest]).all()


def test_unsupported_piece_is_dropped_supported_ones_kept():
    vertices, faces, big, small = _two_spheres()
    keep, dropped = supported_faces(vertices, faces, _support(big))
    assert dropped == 1 and keep.sum() == len(big.faces)
    keep, dropped = supported_faces(vertices, faces, _support(big, small))
    assert dropped == 0 and keep.all()


def test_partly_supported_piece_kept_above_half():
    """A piece is kept when most of it is near the scan (a hole the fit closed), dropped when little is."""
    vertices, faces, big, small = _two_spheres()
    samples = small.sample(6000)
    for fraction, expect_dropped in ((0.2, 1), (0.8, 0)):
        cut = np.quantile(samples[:, 0], fraction)
        part = samples[samples[:, 0] <= cut].astype(np.float32)
        points = np.concatenate([big.sample(6000).astype(np.float32), part])
        _, spacing, _ = neighbourhood(points, pca=False)
        support = {k: v.astype(np.float32) for k, v in scan_support(points, spacing).items()}
        _, dropped = supported_faces(vertices, faces, support)
        assert dropped == expect_dropped, fraction


def test_largest_piece_is_never_dropped():
    vertices, faces, _, small = _two_spheres()
    keep, dropped = supported_faces(vertices, faces, _support(small))
    assert dropped == 0 and keep.all()


@pytest.fixture(scope="module")
def two_sphere_fit(tmp_path_factory) -> tuple[Path, dict]:
    """fit-sdf on a scan of two separate spheres; the checkpoint and its loaded dict."""
    work = tmp_path_factory.mktemp("support")
    a = sample_sphere(3000, radius=1.0, seed=0)
    b = sample_sphere(1500, radius=0.5, center=(2.2, 0.0, 0.0), seed=1)
    cloud = PointCloud(np.concatenate([a.points, b.points]), np.concatenate([a.normals, b.normals]))
    path = work / "two.pt"
    fit_sdf(cloud, SDFOptions(steps=150, batch=1024, seed=0), path, CPU, show_progress=False)
    return path, load_checkpoint(path)


def test_fit_stores_support_and_both_real_pieces_survive(two_sphere_fit):
    _, checkpoint = two_sphere_fit
    assert checkpoint["support"]["points"].dtype == torch.float16
    mesh, _ = mesh_from_checkpoint(checkpoint, MeshOptions(resolution=64), CPU)
    count, labels = component_labels(len(mesh.vertices), mesh.faces)
    assert count == 2, count  # at this tiny budget a speck between the spheres may appear; it is dropped
    assert mesh.vertices[:, 0].min() < -0.9 and mesh.vertices[:, 0].max() > 2.6  # both spheres are whole
    assert mesh_is_watertight(mesh)


def test_extraction_drops_a_piece_the_scan_does_not_support(two_sphere_fit, tmp_path):
    """Remove the small sphere's points from the support: its surface now has no scan points near it."""
    _, checkpoint = two_sphere_fit
    support = checkpoint["support"]
    to_world = checkpoint["to_world"]
    world = support["points"].float().numpy() * to_world["scale"] + np.asarray(to_world["translation"])
    mask = torch.from_numpy(world[:, 0] < 1.5)
    edited = {**checkpoint, "support": {k: v[mask] for k, v in support.items()}}
    _, before = mesh_from_checkpoint(checkpoint, MeshOptions(resolution=64), CPU)
    mesh, stats = mesh_from_checkpoint(edited, MeshOptions(resolution=64), CPU)
    assert stats["dropped_unsupported"] == before["dropped_unsupported"] + 1
    assert mesh.vertices[:, 0].max() < 1.2 and mesh_is_watertight(mesh)
    kept, stats = mesh_from_checkpoint(edited, MeshOptions(resolution=64, keep_unsupported=True), CPU)
    assert stats["dropped_unsupported"] == 0 and kept.vertices[:, 0].max() > 2.5
    _, stats = mesh_from_checkpoint(edited, MeshOptions(resolution=64, level=0.01), CPU)
    assert stats["dropped_unsupported"] == 0  # an offset surface is away from the scan by design
    # The CLI says what it dropped (stderr) and --keep-unsupported keeps it.
    path = tmp_path / "edited.pt"
    save_checkpoint(path, edited)
    runner = make_runner()
    out = str(tmp_path / "a.ply")
    result = runner.invoke(app, ["extract-mesh", str(path), "-o", out, "-r", "64", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "dropped" in result.stderr and "closed piece" in result.stderr
    assert read_mesh(tmp_path / "a.ply").vertices[:, 0].max() < 1.2
    result = runner.invoke(app, ["extract-mesh", str(path), "-o", str(tmp_path / "b.ply"), "-r", "64",
                                 "--device", "cpu", "--keep-unsupported"])
    assert result.exit_code == 0 and "dropped" not in result.stderr
    assert read_mesh(tmp_path / "b.ply").vertices[:, 0].max() > 2.5


def test_cli_denoise_option(tmp_path):
    scan = tmp_path / "s.ply"
    write_point_cloud(scan, sample_sphere(600, seed=0))
    result = make_runner().invoke(app, ["fit-sdf", str(scan), "-o", str(tmp_path / "m.pt"), "--denoise", "maybe",
                                      "--device", "cpu", "--steps", "2"])
    assert result.exit_code != 0 and "--denoise maybe" in result.stderr
    assert not (tmp_path / "m.pt").exists()


# ---------------------------------------------------------------------------------- isolated points


def _sphere_with_strays(n: int = 4000) -> tuple[np.ndarray, int]:
    """Unit-sphere samples, then 3 lone points and a cluster of 5 (fewer than 16) far away."""
    sphere = sample_sphere(n, seed=0).points
    lone = np.array([[6.0, 0.0, 0.0], [0.0, -4.0, 3.0], [2.5, 2.5, 2.5]])
    cluster = np.array([0.0, 0.0, 8.0]) + np.random.default_rng(2).normal(scale=0.01, size=(5, 3))
    return np.concatenate([sphere, lone, cluster]), 8


def test_isolated_points_are_strays_not_sparse_parts():
    points, strays = _sphere_with_strays()
    mask = isolated_points(points)
    assert mask[-strays:].all() and not mask[:-strays].any()
    # Half the sphere 25× sparser (16th neighbour 5× farther, as on real scans' far sides): nothing isolated.
    sphere = sample_sphere(40_000, seed=1).points
    uneven = np.concatenate([sphere[sphere[:, 0] > 0], sphere[sphere[:, 0] <= 0][::25]])
    assert not isolated_points(uneven).any()
    assert not isolated_points(np.repeat(sphere[:10], 20, axis=0)).any()  # duplicates: no spacing to judge


def test_prepare_scan_leaves_strays_out_of_the_box(capsys):
    points, strays = _sphere_with_strays()
    clean = prepare_scan(PointCloud(points[:-strays], None), "auto", CPU, "clean")
    dropped = prepare_scan(PointCloud(points, None), "auto", CPU, "scan")
    assert dropped.outliers_dropped == strays and len(dropped.points) == len(points) - strays
    assert dropped.to_world["scale"] == pytest.approx(clean.to_world["scale"])
    assert f"left out {strays} isolated points" in capsys.readouterr().err
    kept = prepare_scan(PointCloud(points, None), "auto", CPU, "scan", outliers="keep")
    assert kept.outliers_dropped == 0 and kept.to_world["scale"] > 3 * clean.to_world["scale"]


def test_cli_outliers_option_and_checkpoint_record(tmp_path):
    points, strays = _sphere_with_strays(1000)
    scan = tmp_path / "s.ply"
    write_point_cloud(scan, PointCloud(points, None))
    runner = make_runner()
    result = runner.invoke(app, ["fit-sdf", str(scan), "-o", str(tmp_path / "m.pt"), "--outliers", "maybe",
                                 "--device", "cpu", "--steps", "2"])
    assert result.exit_code != 0 and "--outliers maybe" in result.stderr
    assert not (tmp_path / "m.pt").exists()
    result = runner.invoke(app, ["fit-sdf", str(scan), "-o", str(tmp_path / "m.pt"), "--device", "cpu",
                                 "--steps", "2", "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    train = load_checkpoint(tmp_path / "m.pt")["train"]
    assert train["points"] == len(points) and train["outliers_dropped"] == strays
    assert train["config"]["outliers"] == "drop"
    shown = runner.invoke(app, ["info", str(tmp_path / "m.pt"), "--json"])
    assert shown.exit_code == 0 and '"outliers_dropped": 8' in shown.stdout


def test_the_orientation_graph_is_sorted_where_it_fits(monkeypatch):
    """The orientation graph's sort runs on the scan's GPU when it takes at most half of the free memory,
    on the CPU otherwise (a 10M-point scan would need about 10 GB), and on the CPU for a CPU scan."""
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    for free, edges, expected in ((10**12, 10**6, gpu), (10**9, 10**8, cpu), (None, 10**8, gpu)):
        monkeypatch.setattr(normals_module, "available_bytes", lambda device, free=free: free)
        assert normals_module._graph_device(gpu, edges) == expected
    assert normals_module._graph_device(cpu, 10) == cpu


def test_vertex_components_number_components_as_scipy_does():
    """Random meshes of several pieces, shuffled vertex numbers and vertices in no face: the same count and
    labels as SciPy's connected_components (which the extraction no longer imports)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from recon3d.mesh.components import vertex_components

    rng = np.random.default_rng(0)
    for _trial in range(5):
        n = 2000
        order = rng.permutation(n)
        pieces = [order[i:i + 150] for i in range(0, 1500, 150)]  # 10 pieces; 500 vertices in no face
        faces = np.concatenate([rng.choice(piece, size=(300, 3)) for piece in pieces])
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
        edges = np.concatenate((faces[:, :2], faces[:, 1:]))
        graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
        want_count, want = connected_components(graph, directed=False)
        count, labels = vertex_components(n, faces)
        assert count == want_count and np.array_equal(labels, want)
    assert vertex_components(4, np.zeros((0, 3), dtype=np.int64))[0] == 4


def test_nearest_by_brute_force_matches_the_kd_tree():
    from recon3d.mesh.support import PAIRS_PER_CHUNK, nearest

    rng = np.random.default_rng(1)
    points = rng.random((5000, 3), dtype=np.float32)
    queries = rng.random((3000, 3), dtype=np.float32)
    distance, index = nearest(points, queries)
    import recon3d.mesh.support as support_module

    before = support_module.PAIRS_PER_CHUNK
    support_module.PAIRS_PER_CHUNK = 5000 * 7  # several chunks, the last one short
    try:
        brute_distance, brute_index = nearest(points, queries, brute_force=True)
    finally:
        support_module.PAIRS_PER_CHUNK = before
    assert PAIRS_PER_CHUNK == before
    assert np.array_equal(index, brute_index) and np.allclose(distance, brute_distance, rtol=1e-6, atol=1e-7)
    empty = nearest(points, queries[:0], brute_force=True)
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
