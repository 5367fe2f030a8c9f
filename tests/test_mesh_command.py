"""``recon3d mesh``: the input's kind picks the field (recon3d.io.input_kind), the one-process run gives
the same mesh as fit + extract-mesh with the same options, outputs are checked before any work, and a
folder of inputs meshes each one (recon3d.pipeline, recon3d.cli.mesh_command)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_ok, assert_one_error_line, run

from recon3d.errors import InputError
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.input_kind import input_kind
from recon3d.io.mesh import read_mesh, write_mesh
from recon3d.io.pointcloud import write_point_cloud
from recon3d.synthetic import sample_sphere, write_spheres_scene
from recon3d.types import TriMesh

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--steps", "30", "--batch", "512", "--resolution", "24", "--device", "cpu"]


def _box(size=(1.0, 2.0, 3.0), offset=(10.0, 0.0, 0.0)) -> TriMesh:
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    vertices = (corners - 0.5) * np.array(size) + np.array(offset)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return TriMesh(vertices=vertices, faces=faces)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mesh-inputs")
    ball = sample_sphere(600, radius=2.0, center=(5.0, -3.0, 1.0), seed=3)
    write_point_cloud(folder / "ball.ply", ball)
    write_point_cloud(folder / "ball.obj", ball)
    write_point_cloud(folder / "ball.off", ball)
    write_point_cloud(folder / "ball.npz", ball)
    box = _box()
    write_mesh(folder / "box.ply", box)
    write_mesh(folder / "box.obj", box)
    write_mesh(folder / "box.off", box)
    write_mesh(folder / "box.stl", box)
    np.savez(folder / "labelled.npz", points=np.zeros((4, 3)), occupancies=np.zeros(4, bool))
    write_spheres_scene(folder / "scene", n_train=2, n_val=1, size=8)
    return folder


@pytest.mark.parametrize(("name", "kind"), [
    ("ball.ply", "points"), ("ball.obj", "points"), ("ball.off", "points"), ("ball.npz", "points"),
    ("box.ply", "mesh"), ("box.obj", "mesh"), ("box.off", "mesh"), ("box.stl", "mesh"),
    ("labelled.npz", "labelled"), ("scene", "scene")])
def test_the_input_kind_is_read_from_the_header(files, name, kind):
    assert input_kind(files / name) == kind


def test_an_unknown_or_broken_input_is_one_clear_error(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(InputError, match="not a point cloud, mesh"):
        input_kind(tmp_path / "notes.md")
    (tmp_path / "bad.ply").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a PLY file"):
        input_kind(tmp_path / "bad.ply")
    with zipfile.ZipFile(tmp_path / "x.npz", "w"):
        pass
    assert input_kind(tmp_path / "x.npz") == "points"  # no occupancies: the point reader decides the rest


def test_mesh_equals_fit_sdf_then_extract_mesh(files, tmp_path):
    """One process, same options and seed: the very same mesh as the two commands, in input units."""
    one = tmp_path / "one.ply"
    result = run("mesh", files / "ball.ply", "-o", one, "--json", *TINY)
    assert_ok(result)
    summary = json.loads(result.stdout)
    assert summary["fit"]["kind"] == "sdf" and summary["fit"]["steps"] == 30 and summary["faces"] > 0
    model, two = tmp_path / "two.pt", tmp_path / "two.ply"
    assert_ok(run("fit-sdf", files / "ball.ply", "-o", model, "--steps", "30", "--batch", "512", "--device", "cpu"))
    assert_ok(run("extract-mesh", model, "-o", two, "--resolution", "24", "--device", "cpu"))
    a, b = read_mesh(one), read_mesh(two)
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices, rtol=0, atol=1e-9)
    radii = np.linalg.norm(a.vertices - [5.0, -3.0, 1.0], axis=1)
    assert 1.0 < radii.mean() < 3.0  # the sphere of radius 2 where the scan is, not in a unit box


def test_a_mesh_gets_an_occupancy_field_and_keep_model_writes_the_checkpoint(files, tmp_path):
    out, model = tmp_path / "box_fit.obj", tmp_path / "box.pt"
    result = run("mesh", files / "box.obj", "-o", out, "--keep-model", model, "--json", *TINY)
    assert_ok(result)
    summary = json.loads(result.stdout)
    assert summary["fit"]["kind"] == "occupancy" and summary["checkpoint"] == str(model)
    assert load_checkpoint(model)["kind"] == "occupancy"
    vertices = read_mesh(out).vertices
    assert 9.0 < vertices[:, 0].mean() < 11.0


def test_outputs_and_options_are_checked_before_any_work(files, tmp_path):
    assert_one_error_line(run("mesh", files / "ball.ply", "-o", files / "ball.ply", *TINY), "input")
    assert_one_error_line(run("mesh", files / "ball.ply", "--field", "occupancy", "-o", tmp_path / "x.ply", *TINY),
                          "--field sdf")
    assert_one_error_line(run("mesh", files / "box.obj", "--preset", "siren", "-o", tmp_path / "y.ply", *TINY),
                          "siren")
    assert_one_error_line(run("mesh", files / "ball.ply", "-o", tmp_path / "z.txt", *TINY))
    assert not any(tmp_path.iterdir())


def test_a_folder_of_inputs_is_meshed_each_and_a_rerun_skips_them(tmp_path):
    folder, out = tmp_path / "scans", tmp_path / "meshes"
    folder.mkdir()
    write_point_cloud(folder / "a.xyz", sample_sphere(300, radius=1.0, seed=1))
    write_mesh(folder / "b.obj", _box(offset=(0.0, 0.0, 0.0)))
    result = run("mesh", folder, "-o", out, "--json", *TINY)
    assert_ok(result)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["status"] for line in lines) == ["done", "done"]
    assert sorted(p.name for p in out.iterdir()) == ["a.ply", "b.ply"]
    kinds = {Path(line["input"]).name: line["fit"]["kind"] for line in lines}
    assert kinds == {"a.xyz": "sdf", "b.obj": "occupancy"}
    again = run("mesh", folder, "-o", out, "--json", *TINY)
    assert_ok(again)
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == ["skipped", "skipped"]



def test_a_folder_without_inputs_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not an input")
    assert_one_error_line(run("mesh", tmp_path / "empty", "-o", tmp_path / "out", *TINY), "no input", "fit-sdf")
