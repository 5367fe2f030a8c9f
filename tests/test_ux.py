"""What users see and touch (issue 21): progress in logs, threads, default names, file modes, previews and
plots, lighter meshes, several outputs, help texts, honest warnings, rendering in chunks.

Tiny fits on the CPU (a few steps): these tests check what the user sees, not fit quality.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_ok, assert_one_error_line, run

from recon3d import console
from recon3d.device import default_threads, use_threads
from recon3d.fit.registry import get_method
from recon3d.fit.run import default_output
from recon3d.io.atomic import atomic_write_bytes
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.mesh import read_mesh, write_mesh
from recon3d.io.pointcloud import write_point_cloud
from recon3d.mesh.decimate import decimate
from recon3d.metrics import mesh_is_watertight
from recon3d.samples import sample_shape
from recon3d.synthetic import sample_sphere, write_spheres_scene

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--steps", "5", "--batch", "256", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ux")


@pytest.fixture(scope="module")
def scan(work) -> Path:
    path = work / "ball.ply"
    write_point_cloud(path, sample_sphere(1000, radius=2.0, center=(1.0, 2.0, 3.0), seed=0))
    return path


@pytest.fixture(scope="module")
def model(work, scan) -> Path:
    out = work / "ball.pt"
    assert_ok(run("fit-sdf", scan, "-o", out, *TINY, "-q"))
    return out


@pytest.fixture(scope="module")
def scene(work) -> Path:
    return write_spheres_scene(work / "scene", n_train=2, n_val=1, size=12)


@pytest.fixture(scope="module")
def nerf(work, scene) -> Path:
    out = work / "scene.nerf.pt"
    assert_ok(run("fit-nerf", scene, "-o", out, "--steps", 2, "--batch", 64, "--device", "cpu", "-q"))
    return out


@pytest.fixture
def plain_lines(monkeypatch):
    """Progress lines as often as there is progress (stderr is not a terminal under CliRunner)."""
    monkeypatch.setattr(console, "PROGRESS_SECONDS", 0.0)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format in ("PNG", "GIF")
        return image.size


def not_blank(path: Path) -> bool:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return pixels.std() > 1.0


# ------------------------------------------------------------------------------------------ progress


def test_training_progress_is_plain_lines_when_stderr_is_not_a_terminal(work, scan, plain_lines):
    out = work / "progress.pt"
    result = run("fit-sdf", scan, "-o", out, "--steps", 30, "--batch", 128, "--device", "cpu")
    assert_ok(result)
    lines = result.stderr.splitlines()
    steps = [line for line in lines if re.match(r"fit-sdf: \d+/30 steps \(\d+%\)", line)]
    assert steps, result.stderr
    assert all(", ETA " in line and "steps/s" in line for line in steps)
    assert any("loss " in line for line in steps[1:])  # the loss is known from the first logged step on
    counts = [int(re.match(r"fit-sdf: (\d+)/", line).group(1)) for line in steps]
    assert counts == sorted(counts) and counts[-1] < 30  # fresh, not one stale line
    final = [line for line in lines if re.match(r"fit-sdf: 30/30 steps in .* \(.* steps/s\), loss ", line)]
    assert len(final) == 1, result.stderr
    assert lines[-1].startswith("fitted in ") and lines[-1].endswith(f"wrote {out}")
    assert "\x1b[" not in result.stderr  # no terminal escapes in a log


def test_progress_interval_and_quiet(work, scan):
    """The default interval prints no periodic line for a run shorter than it; -q prints nothing at all."""
    result = run("fit-sdf", scan, "-o", work / "quiet.pt", "--steps", 3, "--batch", 64, "--device", "cpu")
    assert_ok(result)
    assert not [line for line in result.stderr.splitlines() if "ETA" in line]
    assert "fit-sdf: 3/3 steps in" in result.stderr
    quiet = run("fit-sdf", scan, "-o", work / "quiet.pt", "--steps", 3, "--batch", 64, "--device", "cpu", "-q")
    assert_ok(quiet)
    assert quiet.stderr == ""


def test_extraction_and_render_progress(work, model, nerf, scene, plain_lines):
    result = run("extract-mesh", model, "-o", work / "progress.obj", "-r", 24, "--device", "cpu")
    assert_ok(result)
    assert re.search(r"extract-mesh: evaluating the field \d+%", result.stderr), result.stderr
    assert re.search(r"extract-mesh: done in ", result.stderr)
    rendered = run("render", nerf, "--scene", scene, "--split", "val", "--device", "cpu")
    assert_ok(rendered)
    assert re.search(r"render: 1/1 views in ", rendered.stderr), rendered.stderr


def test_progress_reporter_eta_respects_the_time_budget(monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(console.time, "perf_counter", lambda: float(next(clock)))
    progress = console.Progress("job", 1000, "steps", budget_seconds=25.0, interval=0.0)
    with progress:
        progress.update(10)  # 10 steps in 10 s: 990 s left by the rate, but the budget ends in 5 s
        assert progress.eta() == pytest.approx(0.0, abs=10.0)
        assert "ETA" in progress.line() and "job: 10/1000 steps (1%)" in progress.line()


# ------------------------------------------------------------------------------------------ threads


def test_threads_option_and_default(work, scan, monkeypatch):
    seen = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), original(n)))
    assert_ok(run("fit-sdf", scan, "-o", work / "threads.pt", "--steps", 2, "--batch", 64, "--device", "cpu",
                  "--threads", 2, "-q"))
    assert 2 in seen and torch.get_num_threads() == 1  # used while the command ran, restored after it
    assert_one_error_line(run("info", work / "threads.pt", "--threads", 0), "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= default_threads() <= len(os.sched_getaffinity(0))
    with use_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1


# ------------------------------------------------------------------------------------------ names


def test_default_names_do_not_collide():
    sdf, occupancy, nerf = get_method("fit-sdf"), get_method("fit-occupancy"), get_method("fit-nerf")
    assert default_output(sdf, Path("meshes/spot.obj")) == Path("spot.sdf.pt")
    assert default_output(occupancy, Path("meshes/spot.obj")) == Path("spot.occupancy.pt")
    assert default_output(sdf, Path("ShapeNet/02691156/1a04e3/pointcloud.npz")) == Path("1a04e3-pointcloud.sdf.pt")
    assert default_output(occupancy, Path("ShapeNet/02691156/1a04e3/points.npz")) == Path("1a04e3-points.occupancy.pt")
    assert default_output(nerf, Path("data/fox/transforms.json")) == Path("fox.nerf.pt")
    assert default_output(nerf, Path("data/lego")) == Path("lego.nerf.pt")
    assert default_output(nerf, Path("data/lego/")) == Path("lego.nerf.pt")


def test_a_checkpoint_of_another_method_is_not_replaced_without_force(work, scan, model):
    out = work / "other.pt"
    box = work / "cube.ply"
    write_mesh(box, sample_shape(16))
    assert_ok(run("fit-occupancy", box, "-o", out, "--steps", 2, "--batch", 64, "--device", "cpu", "-q"))
    before = out.read_bytes()
    assert_one_error_line(run("fit-sdf", scan, "-o", out, *TINY), "occupancy", "--force")
    assert out.read_bytes() == before
    assert_ok(run("fit-sdf", scan, "-o", out, *TINY, "--force", "-q"))
    assert load_checkpoint(out)["kind"] == "sdf"
    assert_ok(run("fit-sdf", scan, "-o", out, *TINY, "-q"))  # the same method replaces its own


def test_fit_without_output_writes_the_default_name(work, scan, monkeypatch):
    monkeypatch.chdir(work)
    result = run("fit-sdf", scan, "--steps", 2, "--batch", 64, "--device", "cpu", "-q")
    assert_ok(result)
    assert result.stdout == "ball.sdf.pt\n" and (work / "ball.sdf.pt").is_file()


# ------------------------------------------------------------------------------------------ file modes


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_respect_the_umask(work, mask):
    previous = os.umask(mask)
    try:
        path = work / f"mode_{mask:o}.bin"
        path.unlink(missing_ok=True)
        atomic_write_bytes(path, b"data")
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    finally:
        os.umask(previous)


def test_command_outputs_respect_the_umask_and_replaced_files_keep_their_mode(work, model):
    previous = os.umask(0o027)
    try:
        out = work / "mode.obj"
        assert_ok(run("extract-mesh", model, "-o", out, "-r", 16, "--device", "cpu", "-q"))
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
        out.chmod(0o604)
        assert_ok(run("extract-mesh", model, "-o", out, "-r", 16, "--device", "cpu", "-q"))
        assert stat.S_IMODE(out.stat().st_mode) == 0o604
    finally:
        os.umask(previous)


# ------------------------------------------------------------------------------------------ pictures


def test_preview_png_and_turntable_gif(work):
    mesh = work / "shape.ply"
    write_mesh(mesh, sample_shape(24))
    png = work / "shape.png"
    result = run("preview", mesh, "-o", png, "--size", 48)
    assert_ok(result)
    assert result.stdout == f"{png}\n" and png_size(png) == (48, 48) and not_blank(png)
    gif = work / "shape.gif"
    assert_ok(run("preview", mesh, "-o", gif, "--gif", "--size", 32, "--frames", 4, "-q"))
    with Image.open(gif) as image:
        assert image.size == (32, 32) and image.n_frames == 4
    assert_one_error_line(run("preview", mesh, "-o", work / "shape.jpg"), "shape.jpg")
    assert_one_error_line(run("preview", mesh, "-o", work / "shape.png", "--gif"), ".gif")


def test_extract_mesh_preview_and_several_outputs(work, model):
    a, b, picture = work / "many.obj", work / "many.ply", work / "many.png"
    result = run("extract-mesh", model, "-o", a, "-o", b, "--preview", picture, "-r", 20, "--device", "cpu",
                 "--json", "-q")
    assert_ok(result)
    summary = json.loads(result.stdout)
    assert summary["meshes"] == [str(a), str(b)] and summary["preview"] == str(picture)
    first, second = read_mesh(a), read_mesh(b)
    assert first.n_faces == second.n_faces == summary["faces"] and np.allclose(first.vertices, second.vertices)
    assert png_size(picture) == (512, 512) and not_blank(picture)
    assert_one_error_line(run("extract-mesh", model, "-o", a, "-o", a, "--device", "cpu"), "twice")


def test_json_with_mesh_on_stdout_goes_to_stderr(model):
    result = run("extract-mesh", model, "-o", "-", "--format", "off", "-r", 16, "--device", "cpu", "--json", "-q")
    assert_ok(result)
    assert result.stdout_bytes.startswith(b"OFF") or result.stdout_bytes.startswith(b"NOFF")
    stats = json.loads(result.stderr.splitlines()[-1])
    assert stats["faces"] > 0 and stats["meshes"] == ["-"]


def test_render_writes_side_by_side_pictures_and_chunks_do_not_change_them(work, nerf, scene):
    out = work / "renders"
    result = run("render", nerf, "--scene", scene, "--split", "val", "-o", out, "--device", "cpu", "--json", "-q")
    assert_ok(result)
    view = json.loads(result.stdout)["views"][0]
    assert png_size(Path(view["image"])) == (12, 12)
    assert png_size(Path(view["side_by_side"])) == (48, 12)  # ground truth | prediction | depth | normals
    small = work / "renders_small_chunks"
    again = run("render", nerf, "--scene", scene, "--split", "val", "-o", small, "--chunk", 7, "--device", "cpu",
                "--json", "-q", "--no-side-by-side")
    assert_ok(again)
    view_again = json.loads(again.stdout)["views"][0]
    assert "side_by_side" not in view_again and view_again["psnr"] == pytest.approx(view["psnr"], abs=1e-4)
    assert np.abs(np.asarray(Image.open(view["image"]), float)
                  - np.asarray(Image.open(view_again["image"]), float)).max() <= 1.0


def test_side_by_side_panels_with_labels_and_normals():
    from recon3d.render.views import _depth_normals, side_by_side_picture

    height, width = 40, 120
    target = np.ones((height, width, 3)) * 0.5
    rendered = {"rgb": np.ones((height, width, 3), np.float32) * 0.4,
                "depth": np.tile(np.linspace(2, 3, width, dtype=np.float32), (height, 1)),
                "opacity": np.ones((height, width), np.float32)}
    normals = np.zeros((height, width, 3))
    normals[..., 2] = 1.0
    picture = side_by_side_picture(target, rendered, normals, (1.0, 1.0, 1.0))
    assert picture.shape[1] == 4 * width and picture.shape[0] > height  # a band for the labels
    # a plane seen head-on: its depth normals face the camera
    ys, xs = np.mgrid[0:8, 0:8].astype(float)
    points = np.stack([xs, ys, np.zeros_like(xs)], -1)
    directions = np.broadcast_to([0.0, 0.0, -1.0], points.shape)
    found = _depth_normals(points, directions, np.ones((8, 8), bool))
    assert np.allclose(found, [0.0, 0.0, 1.0])


def test_fit_plot_and_info_history(work, scan):
    out, plot = work / "plotted.pt", work / "loss.png"
    result = run("fit-sdf", scan, "-o", out, "--steps", 60, "--batch", 64, "--device", "cpu", "--plot", plot,
                 "--json", "-q")
    assert_ok(result)
    summary = json.loads(result.stdout)
    assert summary["plot"] == str(plot) and summary["history"]["last_step"] == 60
    assert summary["history"]["min_loss"] <= summary["history"]["first_loss"]
    assert png_size(plot)[0] == 720 and not_blank(plot)
    info = run("info", out, "--history")
    assert_ok(info)
    assert "first_loss" in info.stdout and "min_loss" in info.stdout
    assert re.search(r"^60  ", info.stdout, re.MULTILINE) and "step  loss" in info.stdout
    full = json.loads(run("info", out, "--json").stdout)
    assert len(full["history_rows"]) == summary["history"]["rows"] and full["history_terms"][0] == "loss"
    again = work / "again.png"
    assert_ok(run("info", out, "--plot", again, "-q"))
    assert png_size(again) == png_size(plot) and not_blank(again)


def test_psnr_curve_for_image_fits():
    from recon3d.plots import history_picture

    history = [[25.0 * k, 1.0 / k, 10.0 + k] for k in range(1, 9)]
    two_panels = history_picture(history, ["loss", "psnr"])
    one_panel = history_picture([row[:2] for row in history], ["loss"])
    assert two_panels.shape[0] > one_panel.shape[0] and two_panels.shape[1] == one_panel.shape[1] == 720


# ------------------------------------------------------------------------------------------ lighter meshes


def test_decimation_keeps_a_watertight_mesh_watertight():
    mesh = sample_shape(40)
    assert mesh_is_watertight(mesh)
    light = decimate(mesh, 1500)
    assert light.watertight_before and light.watertight and mesh_is_watertight(light.mesh)
    assert 1000 <= light.mesh.n_faces <= 1500 < mesh.n_faces == light.faces_before


def test_extract_mesh_faces(work, model):
    out = work / "light.ply"
    result = run("extract-mesh", model, "-o", out, "-r", 32, "--faces", 400, "--device", "cpu", "--json")
    assert_ok(result)
    stats = json.loads(result.stdout)
    mesh = read_mesh(out)
    assert mesh.n_faces <= 400 < stats["faces_before_decimation"] and stats["watertight"] is True
    assert mesh_is_watertight(mesh) and mesh.vertex_normals is not None
    assert "still watertight" in result.stderr
    assert_one_error_line(run("extract-mesh", model, "-o", out, "--faces", 2), "--faces")


def test_faces_without_open3d_is_one_clear_error(work, model, monkeypatch):
    from recon3d.errors import Recon3dError
    from recon3d.mesh import decimate as module

    def missing():
        raise Recon3dError("--faces needs Open3D for its quadric decimation (open3d is not usable: none); install "
                           "open3d, or leave --faces out")

    monkeypatch.setattr(module, "import_for_decimation", missing)
    assert_one_error_line(run("extract-mesh", model, "-o", work / "x.obj", "-r", 16, "--faces", 50,
                              "--device", "cpu"), "--faces needs Open3D")


# ------------------------------------------------------------------------------------------ honest warnings


def test_level_outside_the_field_is_one_error_with_its_range(work, model):
    line = assert_one_error_line(run("extract-mesh", model, "-o", work / "none.obj", "-r", 16, "--level", -50,
                                     "--device", "cpu"), "range over", "--level", "--steps")
    assert "no surface at level -50" in line and not (work / "none.obj").exists()


def test_tiny_and_whole_box_meshes_are_warned(work, model):
    from recon3d.fields.surface import Surface
    from recon3d.mesh.from_field import MeshOptions, result_warnings
    from recon3d.types import TriMesh

    checkpoint = load_checkpoint(model)
    speck = TriMesh(vertices=np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01]], float),
                    faces=np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    bounds = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    stats = {"faces": 4, "resolution": [256, 256, 256], "value_range": [-0.2, 0.9]}
    surface = Surface(lambda x: x[:, 0], 0.0, "above")
    (message,) = result_warnings(speck, stats, checkpoint, surface, bounds, MeshOptions())
    assert message.startswith("the mesh is tiny (4 faces") and "5 steps" in message
    assert "more --steps" in message and "a lower --level encloses more" in message
    whole = run("extract-mesh", model, "-o", work / "whole.obj", "-r", 16, "--level", 100, "--device", "cpu")
    assert_ok(whole)
    assert "warning: the whole box is inside the surface at level 100" in whole.stderr
    assert "a lower --level encloses less" in whole.stderr


# ------------------------------------------------------------------------------------------ help texts


def test_help_shows_flags_choices_examples(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for command in ("fit-sdf", "fit-occupancy", "fit-nerf", "render", "extract-mesh", "preview", "eval", "info",
                    "demo", "sample-data"):
        text = run(command, "--help").stdout
        assert "Example" in text, command
        assert "<bool>" not in text, command
        assert "{" not in text.splitlines()[1], command  # usage names arguments plainly
        assert "--threads" in text, command
    fit = run("fit-sdf", "--help").stdout
    assert "fit-sdf [OPTIONS] INPUT" in fit and "<fast|paper|siren|fourier>" in fit
    assert "1500 steps × 4096 points on a CPU" in fit and "on a GPU" in fit
    root = run("--help").stdout
    for command in ("fit-sdf", "extract-mesh", "preview", "sample-data"):
        assert re.search(rf"│ {command} +\S", root), command  # one line each
    assert_one_error_line(run("fit-sdf", "x.ply", "--preset", "nope"), "--preset", "fast")
    assert_one_error_line(run("fit-sdf", "x.ply", "--json", "true"), "true")


def test_shell_completion_is_available():
    """The root has --install-completion / --show-completion, and the shells' completion protocol completes
    commands and choices (what the installed script asks; the shell itself is not needed here)."""
    from test_cli import RUNNER

    from recon3d.cli import app

    assert "--install-completion" in run("--help").stdout
    env = {"_RECON3D_COMPLETE": "complete_bash", "COMP_WORDS": "recon3d fit-sdf x --preset ", "COMP_CWORD": "4"}
    result = RUNNER.invoke(app, [], env=env, prog_name="recon3d")
    assert result.exit_code == 0 and result.stdout.split() == ["fast", "paper", "siren", "fourier"]
    env.update(COMP_WORDS="recon3d fit-", COMP_CWORD="1")
    assert RUNNER.invoke(app, [], env=env, prog_name="recon3d").stdout.split() == ["fit-sdf", "fit-occupancy",
                                                                                   "fit-nerf"]


def test_eval_says_its_units(work, model, scan):
    mesh = work / "units.obj"
    assert_ok(run("extract-mesh", model, "-o", mesh, "-r", 16, "--device", "cpu", "-q"))
    result = run("eval", mesh, scan, "--samples", 2000)
    assert_ok(result)
    assert "fraction of the diagonal" in result.stdout and "fractions of the reference's" in result.stderr
    assert json.loads(run("eval", mesh, scan, "--samples", 2000, "--json", "-q").stdout)["distance_unit"]


def test_a_mesh_given_as_a_model_says_what_it_is(scan):
    line = assert_one_error_line(run("info", scan))
    assert "not a recon3d checkpoint but a PLY file" in line and "refused" not in line


# ------------------------------------------------------------------------------------------ sample data


def test_sample_data_writes_a_scan_a_mesh_and_a_scene(work, monkeypatch):
    from recon3d import samples

    monkeypatch.setattr(samples, "SCENE_VIEWS", (2, 1))
    monkeypatch.setattr(samples, "SCENE_SIZE", 16)
    monkeypatch.setattr(samples, "SHAPE_RESOLUTION", 20)
    monkeypatch.setattr("recon3d.demo.make_demo_scan", _small_scan(samples))
    folder = work / "samples"
    result = run("sample-data", "-o", folder, "-q")
    assert_ok(result)
    assert result.stdout.split() == [str(folder / "scan.ply"), str(folder / "shape.obj"), str(folder / "scene")]
    assert mesh_is_watertight(read_mesh(folder / "shape.obj"))
    assert (folder / "scene" / "transforms_train.json").is_file() and (folder / "scene" / "mesh.ply").is_file()
    assert_one_error_line(run("sample-data", "-o", folder), "--force")


def _small_scan(samples):
    from recon3d.demo import make_demo_scan

    return lambda n=60_000, seed=0: make_demo_scan(2000, seed)


# ------------------------------------------------------------------------------------------ Python API


def test_api_fit_matches_the_command_and_evaluates_in_input_units(work, scan, model):
    import recon3d

    api = recon3d.fit_sdf(scan, steps=5, batch=256, device="cpu", progress=False)
    cli = load_checkpoint(model)
    for key, value in cli["state_dict"].items():
        assert torch.equal(api.checkpoint["state_dict"][key], value), key  # the same fit, seed for seed
    assert api.checkpoint["to_world"] == cli["to_world"] and api.kind == "sdf" and api.method == "fit-sdf"
    same = recon3d.fit_sdf(scan, steps=5, batch=256, device=torch.device("cpu"), progress=False)
    assert torch.equal(same.checkpoint["state_dict"]["mlp.layers.0.weight"],
                       api.checkpoint["state_dict"]["mlp.layers.0.weight"])
    centre, outside = api.sdf([[1.0, 2.0, 3.0], [1.0, 2.0, 9.0]])
    assert centre < 0 < outside  # negative inside, in the scan's units
    path = api.save(work / "api.sdf.pt")
    loaded = recon3d.load(path, device="cpu")
    assert np.allclose(loaded.values([[1.0, 2.0, 3.0]]), centre)
    mesh = loaded.mesh(resolution=20, progress=False)
    assert isinstance(mesh, recon3d.Mesh) and mesh.to_trimesh().is_watertight
    assert len(mesh.to_open3d().triangles) == mesh.n_faces
    with pytest.raises(recon3d.Recon3dError, match="occupancy"):
        loaded.occupancy([[0.0, 0.0, 0.0]])
    with pytest.raises(recon3d.Recon3dError, match="no surface"):
        loaded.mesh(resolution=16, level=-50.0, progress=False)


def test_api_occupancy_probabilities_and_arrays(work):
    import recon3d

    occupancy = recon3d.fit_occupancy(sample_shape(16), steps=3, batch=256, device="cpu", progress=False)
    values = occupancy.occupancy(np.zeros((5, 3)))
    assert values.shape == (5,) and ((values >= 0) & (values <= 1)).all()
    sphere = recon3d.fit_sdf(np.random.default_rng(0).normal(size=(300, 6)), steps=2, batch=64, device="cpu",
                             progress=False)
    assert sphere.history and sphere.history_terms[0] == "loss"
    with pytest.raises(recon3d.Recon3dError, match="model.mesh"):
        sphere.mesh(resolution=16, colour="red")
    other = work / "api_other.pt"
    occupancy.save(other)
    with pytest.raises(recon3d.Recon3dError, match="force=True"):
        sphere.save(other)
    sphere.save(other, force=True)
    assert load_checkpoint(other)["kind"] == "sdf"
