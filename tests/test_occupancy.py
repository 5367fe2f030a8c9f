"""fit-occupancy end to end, the inside tests it labels with, ONet's points.npz, and MISE extraction.

References that cannot lie: analytic spheres and boxes, exact volumes. Fits are small CPU budgets made
once per module; every quality bound is checked to be meaningful (an untrained field fails it).
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from extraction import extract
from typer.testing import CliRunner

from recon3d.cli import app
from recon3d.errors import InputError
from recon3d.fit import occupancy as occ
from recon3d.fit.occupancy import OccupancyOptions, clean_mesh, fit_occupancy
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.labelled import read_labelled_points, write_labelled_points
from recon3d.io.mesh import write_mesh
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint
from recon3d.mesh.inside import RayParity, WindingNumber
from recon3d.metrics import mesh_is_watertight, mesh_volume, volume_iou
from recon3d.types import TriMesh

CPU = torch.device("cpu")
STEPS, BATCH, RESOLUTION = 150, 2048, 64
#: Volume IoU of the fitted box and sphere (measured about 0.98 with this budget; an untrained field is
#: far below).
IOU_BOUND = 0.9


pytestmark = pytest.mark.usefixtures("one_thread")


def as_trimesh(mesh: trimesh.Trimesh) -> TriMesh:
    return TriMesh(vertices=np.asarray(mesh.vertices, dtype=np.float64), faces=np.asarray(mesh.faces, dtype=np.int64))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("occupancy")


@pytest.fixture(scope="module")
def box_mesh() -> TriMesh:
    """A 40 x 20 x 10 mm box away from the origin: units and placement must survive."""
    box = trimesh.creation.box(extents=(40.0, 20.0, 10.0))
    box.apply_translation((100.0, -50.0, 7.0))
    return as_trimesh(box)


@pytest.fixture(scope="module")
def sphere_mesh() -> TriMesh:
    return as_trimesh(trimesh.creation.icosphere(subdivisions=4, radius=1.0))


def fitted_mesh(path: Path, resolution: int = RESOLUTION) -> TriMesh:
    mesh, _ = mesh_from_checkpoint(load_checkpoint(path), MeshOptions(resolution=resolution), CPU)
    return mesh


@pytest.fixture(scope="module")
def box_fit(work: Path, box_mesh: TriMesh) -> Path:
    path = work / "box.obj"
    write_mesh(path, box_mesh)
    out = work / "box.pt"
    result = CliRunner().invoke(app, ["fit-occupancy", str(path), "-o", str(out), "--steps", str(STEPS),
                                      "--batch", str(BATCH), "--device", "cpu", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


# ----------------------------------------------------------------------------------- inside tests


def test_parity_and_winding_number_agree_with_the_sphere(sphere_mesh: TriMesh) -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.5, 1.5, (4000, 3))
    radius = np.linalg.norm(points, axis=1)
    clear = np.abs(radius - 1.0) > 0.02  # the icosphere is within 1% of the sphere
    parity = RayParity(sphere_mesh)(points).numpy()
    winding = WindingNumber(sphere_mesh)(points).numpy()
    assert (parity[clear] == (radius[clear] < 1.0)).all()
    assert ((winding[clear] > 0.5) == (radius[clear] < 1.0)).all()
    assert np.abs(winding[clear] - (radius[clear] < 1.0)).max() < 0.05  # dipoles stay accurate
    flipped = TriMesh(sphere_mesh.vertices, sphere_mesh.faces[:, ::-1].copy())
    assert np.allclose(WindingNumber(flipped)(points).numpy(), -winding, atol=1e-5)


def test_winding_number_labels_an_open_mesh_sensibly(sphere_mesh: TriMesh) -> None:
    """A sphere with a cap cut away: parity is meaningless, the winding number still says 'inside'."""
    centres = sphere_mesh.vertices[sphere_mesh.faces].mean(axis=1)
    open_mesh = TriMesh(sphere_mesh.vertices, sphere_mesh.faces[centres[:, 2] < 0.8])
    assert not mesh_is_watertight(open_mesh)
    winding = WindingNumber(open_mesh)(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -0.5], [0.0, 0.0, 2.0], [2.0, 0, 0]]))
    assert (winding[:2] > 0.8).all() and (winding[2:].abs() < 0.2).all()


def test_double_sided_soup_falls_back_to_the_enclosed_volume(sphere_mesh: TriMesh) -> None:
    """Every face twice, opposite ways (as in many ShapeNet models): winding numbers cancel to 0."""
    soup = TriMesh(sphere_mesh.vertices, np.vstack([sphere_mesh.faces, sphere_mesh.faces[:, ::-1]]))
    assert np.abs(WindingNumber(soup)(np.zeros((1, 3))).numpy()).max() < 1e-6
    shape = occ.prepare_mesh(soup, CPU, "soup.obj")
    assert shape.rule == "enclosed"
    field_points = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.2, -0.1], [0.9, 0.0, 0.0], [0.0, 0.0, -0.95]])
    assert shape.labeller(field_points).tolist() == [True, True, False, False]


def test_clean_mesh_welds_seams_and_drops_degenerate_faces(sphere_mesh: TriMesh) -> None:
    split = TriMesh(sphere_mesh.vertices[sphere_mesh.faces].reshape(-1, 3),
                    np.arange(sphere_mesh.n_faces * 3).reshape(-1, 3))  # a triangle soup of a closed surface
    degenerate = np.vstack([split.faces, [[0, 0, 1]]])
    cleaned, closed = clean_mesh(TriMesh(split.vertices, degenerate), "soup")
    assert closed and cleaned.n_faces == sphere_mesh.n_faces and cleaned.n_vertices == sphere_mesh.n_vertices
    with pytest.raises(InputError, match="zero-area|non-zero area"):
        clean_mesh(TriMesh(np.zeros((3, 3)), np.array([[0, 1, 2]])), "flat.obj")


# ----------------------------------------------------------------------------------- points.npz


@pytest.mark.parametrize("packed", [True, False])
def test_points_npz_round_trip(tmp_path: Path, packed: bool) -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(-0.55, 0.55, (1001, 3)).astype(np.float16)
    labels = np.linalg.norm(points.astype(np.float64), axis=1) < 0.4
    path = tmp_path / "points.npz"
    write_labelled_points(path, points, labels, packed=packed, loc=np.array([1.0, 2.0, 3.0]), scale=2.0)
    if packed:
        assert np.load(path)["occupancies"].size == (1001 + 7) // 8
    data = read_labelled_points(path)
    assert (data.occupancies == labels).all()
    assert np.allclose(data.points, points.astype(np.float64) * 2.0 + [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [({"points": np.zeros((10, 3))}, "no 'occupancies'"),
     ({"points": np.zeros((10, 3)), "occupancies": np.zeros(5, bool)}, "5 entries for 10 points"),
     ({"points": np.zeros((10, 2)), "occupancies": np.zeros(10, bool)}, r"\(N, 3\)"),
     ({"points": np.random.rand(10, 3), "occupancies": np.zeros(10, bool)}, "no point is labelled inside")],
)
def test_points_npz_errors_name_the_file(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message) as caught:
        read_labelled_points(path)
    assert str(path) in str(caught.value)


# ----------------------------------------------------------------------------------- fitting


def test_box_fit_is_watertight_in_millimetres_with_high_iou(box_fit: Path, box_mesh: TriMesh) -> None:
    checkpoint = load_checkpoint(box_fit)
    assert checkpoint["kind"] == "occupancy" and checkpoint["level"] == 0.0 and checkpoint["inside"] == "above"
    assert checkpoint["train"]["labels"].startswith("ray parity")
    mesh = fitted_mesh(box_fit)
    assert mesh_is_watertight(mesh)
    assert np.allclose(mesh.vertices.mean(axis=0), [100.0, -50.0, 7.0], atol=1.0)
    assert mesh_volume(mesh) == pytest.approx(40 * 20 * 10, rel=0.08)
    assert volume_iou(mesh, box_mesh, n=50_000) > IOU_BOUND


def test_untrained_field_fails_the_iou_bound(work: Path, box_mesh: TriMesh) -> None:
    out = work / "untrained.pt"
    fit_occupancy(box_mesh, OccupancyOptions(steps=1, batch=256), out, CPU, show_progress=False)
    try:
        mesh = fitted_mesh(out)
    except Exception:  # no surface at all also fails
        return
    assert mesh.n_faces == 0 or volume_iou(mesh, box_mesh, n=50_000) < IOU_BOUND


def test_sphere_from_points_npz(work: Path) -> None:
    """ONet's format in its own normalised frame (loc/scale) comes back in the original units."""
    rng = np.random.default_rng(2)
    stored = rng.uniform(-0.55, 0.55, (60_000, 3))
    labels = np.linalg.norm(stored, axis=1) < 0.4
    path = work / "points.npz"
    write_labelled_points(path, stored, labels, packed=True, loc=np.array([5.0, 0.0, 0.0]), scale=10.0)
    out = work / "points.pt"
    fit_occupancy(read_labelled_points(path), OccupancyOptions(steps=STEPS, batch=BATCH), out, CPU,
                  show_progress=False)
    mesh = fitted_mesh(out)
    assert mesh_is_watertight(mesh)
    radius = np.linalg.norm(mesh.vertices - [5.0, 0.0, 0.0], axis=1)
    assert np.median(np.abs(radius - 4.0)) < 0.15  # 4 units = 0.4 * scale 10


def test_open_mesh_gets_labels_and_a_warning(work: Path) -> None:
    sphere = as_trimesh(trimesh.creation.icosphere(subdivisions=2))
    centres = sphere.vertices[sphere.faces].mean(axis=1)
    path = work / "open.ply"
    write_mesh(path, TriMesh(sphere.vertices, sphere.faces[centres[:, 2] < 0.9]))
    out = work / "open.pt"
    result = CliRunner().invoke(app, ["fit-occupancy", str(path), "-o", str(out), "--steps", "30", "--batch", "1024",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert "not closed" in result.stderr and "winding number" in result.stderr
    assert "winding" in load_checkpoint(out)["train"]["labels"]


def test_interrupt_then_resume_equals_one_run(work: Path, sphere_mesh: TriMesh, monkeypatch) -> None:
    """SIGINT mid-run writes a resumable checkpoint; resuming redraws the same pools, same weights."""
    options = OccupancyOptions(steps=40, batch=512)
    reference = work / "reference.pt"
    fit_occupancy(sphere_mesh, options, reference, CPU, show_progress=False)

    make_step = occ.make_step

    def interrupting(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def wrapped(index: int, gen: torch.Generator):
            if index == 23:
                signal.raise_signal(signal.SIGINT)
            return step(index, gen)

        return wrapped

    out = work / "resumed.pt"
    monkeypatch.setattr(occ, "make_step", interrupting)
    fit_occupancy(sphere_mesh, options, out, CPU, show_progress=False)
    monkeypatch.setattr(occ, "make_step", make_step)
    interrupted = load_checkpoint(out)
    assert interrupted["train"]["steps"] == 24 and "resume" in interrupted
    fit_occupancy(sphere_mesh, options, out, CPU, show_progress=False, resume=interrupted)
    resumed, expected = load_checkpoint(out), load_checkpoint(reference)
    assert resumed["train"]["complete"] and resumed["train"]["steps"] == 40
    for key, value in expected["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][key], value, rtol=1e-6, atol=1e-7), key


def test_extract_level_is_a_probability(box_fit: Path, work: Path) -> None:
    runner = CliRunner()
    out = work / "box_tau.ply"
    result = runner.invoke(app, ["extract-mesh", str(box_fit), "-o", str(out), "-r", "48", "--level", "0.3",
                                 "--device", "cpu", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert '"level": 0.3' in result.stdout
    bad = runner.invoke(app, ["extract-mesh", str(box_fit), "-o", str(work / "x.ply"), "--level", "1.5",
                              "--device", "cpu"])
    assert bad.exit_code == 1 and "between 0 and 1" in bad.stderr and not (work / "x.ply").exists()
    info = runner.invoke(app, ["info", str(box_fit), "--json"])
    assert '"threshold": 0.5' in info.stdout and '"kind": "occupancy"' in info.stdout


@pytest.mark.parametrize("content", [b"", b"not a zip"])
def test_bad_inputs_one_error_line(work: Path, content: bytes) -> None:
    path = work / "broken.npz"
    path.write_bytes(content)
    out = work / "never.pt"
    result = CliRunner().invoke(app, ["fit-occupancy", str(path), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.stderr.count("error:") == 1 and str(path) in result.stderr
    assert not out.exists()


def test_point_cloud_is_refused_with_advice(work: Path) -> None:
    path = work / "cloud.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                    "property float z\nend_header\n0 0 0\n")
    result = CliRunner().invoke(app, ["fit-occupancy", str(path), "-o", str(work / "c.pt"), "--device", "cpu"])
    assert result.exit_code == 1 and "fit-sdf" in result.stderr


# ----------------------------------------------------------------------------------- MISE


def two_blobs_logits(p: torch.Tensor) -> torch.Tensor:
    """Occupancy-like logits: steep inside two spheres, saturating far away (no Lipschitz bound)."""
    d1 = (p - torch.tensor([0.3, 0.0, 0.0])).norm(dim=-1) - 0.35
    d2 = (p - torch.tensor([-0.45, 0.1, 0.0])).norm(dim=-1) - 0.2
    return 8.0 * torch.tanh(-torch.minimum(d1, d2) / 0.03)


def test_mise_matches_dense_with_far_fewer_queries() -> None:
    bounds = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    mise = extract(two_blobs_logits, bounds, 128, level=0.0, inside="above", method="sparse", normals="none")
    dense = extract(two_blobs_logits, bounds, 128, level=0.0, inside="above", method="dense", normals="none")
    assert np.array_equal(mise.mesh.faces.shape, dense.mesh.faces.shape)
    assert np.allclose(np.sort(mise.mesh.vertices, axis=0), np.sort(dense.mesh.vertices, axis=0), atol=1e-9)
    assert dense.queries >= 10 * mise.queries
    assert mesh_is_watertight(mise.mesh)


def test_refinement_moves_vertices_onto_the_boundary() -> None:
    """Logits far from linear across a cell: Newton steps beat linear interpolation."""
    def logits(p: torch.Tensor) -> torch.Tensor:
        return 8.0 * torch.tanh((0.5 - p.norm(dim=-1)) / 0.01)

    bounds = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    plain = extract(logits, bounds, 48, inside="above", normals="none")
    refined = extract(logits, bounds, 48, inside="above", normals="none", refine=3)
    error = lambda mesh: np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).mean()  # noqa: E731
    assert error(refined.mesh) < 0.3 * error(plain.mesh)
    assert np.array_equal(refined.mesh.faces, plain.mesh.faces)
