"""The command line end to end: fit-sdf → extract-mesh → eval → info, and every bad input ending in
exactly one ``error:`` line on stderr, a non-zero exit code and no output file.

Runs in-process with typer's CliRunner (stdout and stderr kept apart). Fits are tiny (a few steps):
these tests check the plumbing; fit quality is tests/test_fit_sdf.py's job.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recon3d.cli import app
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.mesh import read_mesh
from recon3d.io.pointcloud import write_point_cloud
from recon3d.metrics import mesh_is_watertight
from recon3d.synthetic import sample_sphere

STEPS, BATCH, RES = 5, 256, 32


def make_runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told otherwise
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


RUNNER = make_runner()


def run(*args: str):
    return RUNNER.invoke(app, [str(a) for a in args])


def assert_ok(result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}; stderr: {result.stderr}; exception: {result.exception!r}"
    assert "error:" not in result.stderr


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit code 1 (a user error, not an internal one), nothing on stdout, one ``error:`` line."""
    assert result.exit_code == 1, f"exit {result.exit_code}; stderr: {result.stderr!r}; exception: {result.exception!r}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr: {result.stderr!r}"
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def scan(work) -> Path:
    path = work / "scan.ply"
    write_point_cloud(path, sample_sphere(1000, radius=3.0, center=(5.0, 0.0, -2.0), seed=0))
    return path


@pytest.fixture(scope="module")
def fitted(work, scan):
    out = work / "model.pt"
    result = run("fit-sdf", scan, "-o", out, "--steps", STEPS, "--batch", BATCH, "--device", "cpu")
    return out, result


@pytest.fixture(scope="module")
def model(fitted) -> Path:
    out, result = fitted
    assert_ok(result)
    return out


@pytest.fixture(scope="module")
def mesh_obj(work, model) -> Path:
    out = work / "mesh.obj"
    assert_ok(run("extract-mesh", model, "-o", out, "-r", RES, "--device", "cpu"))
    return out


# ------------------------------------------------------------------------------------ happy path


def test_fit_sdf_stdout_is_just_the_path(fitted):
    out, result = fitted
    assert_ok(result)
    assert result.stdout == f"{out}\n"
    assert out.exists()
    checkpoint = load_checkpoint(out)
    assert checkpoint["train"]["steps"] == STEPS and checkpoint["train"]["complete"]
    assert checkpoint["train"]["points"] == 1000 and checkpoint["train"]["normals"] == "file"


def test_fit_sdf_json(work, scan):
    out = work / "model_json.pt"
    result = run("fit-sdf", scan, "-o", out, "--steps", 3, "--batch", 128, "--device", "cpu",
                 "--normals", "ignore", "--json", "--quiet")
    assert_ok(result)
    assert result.stderr == ""  # --quiet: nothing but errors on stderr
    summary = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert summary["checkpoint"] == str(out) and summary["kind"] == "sdf"
    assert summary["steps"] == 3 and summary["complete"] is True and summary["stopped_by"] == "steps"
    assert summary["points"] == 1000 and summary["normals"] == "none" and summary["device"] == "cpu"
    assert math.isfinite(summary["loss"])
    assert load_checkpoint(out)["train"]["config"]["batch"] == 128


@pytest.mark.parametrize("ext", ["obj", "ply", "stl"])
def test_extract_mesh_formats(work, model, mesh_obj, ext):
    out = mesh_obj if ext == "obj" else work / f"mesh.{ext}"
    if ext != "obj":
        result = run("extract-mesh", model, "-o", out, "-r", RES, "--device", "cpu")
        assert_ok(result)
        assert result.stdout == f"{out}\n"
    mesh = read_mesh(out)
    assert mesh.n_faces > 100
    if ext != "stl":  # STL stores a triangle soup: no shared vertices to check closure with
        assert mesh_is_watertight(mesh)
    # in the scan's units and place: inside the scan's box (centre (5, 0, -2), radius 3) plus the
    # meshing margin, and not a speck (5 steps do not make an accurate surface: no closer check)
    offset = np.abs(mesh.vertices - [5.0, 0.0, -2.0])
    assert (offset <= 3.0 * 1.1 + 1e-6).all() and (offset.max(axis=0) > 1.0).all()


def test_extract_mesh_json(work, model):
    out = work / "mesh_json.off"
    result = run("extract-mesh", model, "-o", out, "-r", RES, "--device", "cpu", "--json")
    assert_ok(result)
    stats = json.loads(result.stdout)
    assert stats["mesh"] == str(out) and stats["faces"] > 100 and stats["vertices"] > 50
    assert stats["resolution"] and max(stats["resolution"]) >= RES


def test_extract_mesh_to_stdout(model, mesh_obj):
    result = run("extract-mesh", model, "-o", "-", "--format", "off", "-r", RES, "--device", "cpu")
    assert_ok(result)
    text = result.stdout_bytes.decode("ascii")
    lines = text.splitlines()
    assert lines[0].strip() in ("OFF", "NOFF")
    n_vertices, n_faces, _ = map(int, lines[1].split())
    assert n_faces > 100 and len(lines) == 2 + n_vertices + n_faces
    assert all(line.startswith("3 ") for line in lines[2 + n_vertices:])
    assert n_faces == read_mesh(mesh_obj).n_faces  # same mesh as written to a file
    assert not Path("-").exists()


def test_eval_json(work, mesh_obj, scan):
    result = run("eval", mesh_obj, scan, "--samples", 2000, "--json", "--quiet")
    assert_ok(result)
    metrics = json.loads(result.stdout)
    assert metrics["pred"] == str(mesh_obj) and metrics["ref"] == str(scan)
    for key in ("chamfer_l1", "chamfer_l2", "hausdorff", "fscore@1%"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]) and metrics[key] >= 0
    assert metrics["watertight"] is True
    assert metrics["diagonal"] == pytest.approx(6.0 * math.sqrt(3), rel=0.05)
    plain = run("eval", mesh_obj, scan, "--samples", 2000, "--quiet")
    assert_ok(plain)
    assert "chamfer_l1" in plain.stdout and "{" not in plain.stdout


def test_info_json(model):
    result = run("info", model, "--json")
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["checkpoint"] == str(model) and info["kind"] == "sdf" and info["steps"] == STEPS
    assert info["complete"] is True and info["resumable"] is False and info["points"] == 1000
    assert info["encoding"] == "hashgrid" and info["parameters"] > 0
    plain = run("info", model)
    assert_ok(plain)
    assert plain.stdout.splitlines()[0].split() == ["kind", "sdf"]


def test_version_and_help():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("recon3d ")
    assert run("--help").exit_code == 0


# ------------------------------------------------------------------------------------ bad inputs


@pytest.fixture(scope="module")
def bad_scans(work) -> dict[str, Path]:
    folder = work / "bad"
    folder.mkdir()
    rng = np.random.default_rng(0)
    (folder / "empty.ply").write_bytes(b"")
    (folder / "scan.foo").write_text("0 0 0\n1 1 1\n")
    np.savetxt(folder / "nan.xyz", np.full((50, 3), np.nan))
    np.savetxt(folder / "three.xyz", rng.random((3, 3)))
    np.savetxt(folder / "same.xyz", np.tile([1.5, -2.0, 3.0], (100, 1)))
    (folder / "garbage.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 10\nproperty float x\nend_header\n")
    return {p.name: p for p in folder.iterdir()}


FIT_CASES = {
    "missing scan": (["fit-sdf", "{bad}/nope.ply"], "no such file"),
    "empty file": (["fit-sdf", "{bad}/empty.ply"], "empty"),
    "unknown extension": (["fit-sdf", "{bad}/scan.foo"], "extension"),
    "all-NaN coordinates": (["fit-sdf", "{bad}/nan.xyz"], "NaN"),
    "3-point cloud": (["fit-sdf", "{bad}/three.xyz"], "3 points"),
    "identical points": (["fit-sdf", "{bad}/same.xyz"], "identical"),
    "malformed PLY": (["fit-sdf", "{bad}/garbage.ply"], "garbage.ply"),
    "unknown preset": (["fit-sdf", "{scan}", "--preset", "nope"], "--preset"),
    "steps 0": (["fit-sdf", "{scan}", "--steps", "0"], "--steps"),
    "batch 0": (["fit-sdf", "{scan}", "--batch", "0"], "--batch"),
    "unknown normals mode": (["fit-sdf", "{scan}", "--normals", "sideways"], "--normals"),
    "unknown encoding": (["fit-sdf", "{scan}", "--encoding", "zip"], "--encoding"),
    "cuda on a CPU-only machine": (["fit-sdf", "{scan}", "--device", "cuda"], "CUDA"),
    "resume without checkpoint": (["fit-sdf", "{scan}", "--resume"], "nothing to resume"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_sdf_bad_input(case, work, scan, bad_scans):
    args, fragment = FIT_CASES[case]
    out = work / "bad" / f"out_{abs(hash(case))}.pt"
    args = [a.format(bad=work / "bad", scan=scan) for a in args]
    extra = ([] if "--device" in args else ["--device", "cpu"]) + ([] if "--steps" in args else ["--steps", 2])
    result = run(*args, "-o", out, *extra)
    assert_one_error_line(result, fragment)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]


def test_resume_of_a_finished_fit_is_refused(model, scan):
    before = model.read_bytes()
    assert_one_error_line(run("fit-sdf", scan, "-o", model, "--resume", "--device", "cpu"), "nothing to resume")
    assert model.read_bytes() == before


def test_mesh_not_checkpoint_as_model(work, mesh_obj, scan):
    for bogus in (scan, mesh_obj):
        out = work / "bad" / "from_bogus.obj"
        line = assert_one_error_line(run("extract-mesh", bogus, "-o", out, "-r", RES, "--device", "cpu"))
        assert str(bogus) in line
        assert not out.exists()
        assert_one_error_line(run("info", bogus), str(bogus))


@pytest.mark.parametrize("case", ["unknown output extension", "stdout without --format", "unknown --format",
                                  "cuda", "missing model", "resolution too small", "unknown method"])
def test_extract_mesh_bad_input(case, work, model):
    out = work / "bad" / "mesh.obj"
    args = {
        "unknown output extension": ["-o", work / "bad" / "mesh.xyz"],
        "stdout without --format": ["-o", "-"],
        "unknown --format": ["-o", "-", "--format", "vrml", "-r", RES],
        "cuda": ["-o", out, "--device", "cuda"],
        "missing model": ["-o", out],
        "resolution too small": ["-o", out, "-r", 2],
        "unknown method": ["-o", out, "--method", "magic"],
    }[case]
    target = work / "bad" / "absent.pt" if case == "missing model" else model
    device = [] if "--device" in args else ["--device", "cpu"]
    result = run("extract-mesh", target, *args, *device)
    assert_one_error_line(result)
    assert result.stdout_bytes == b""
    assert not out.exists() and not (work / "bad" / "mesh.xyz").exists()


def test_eval_bad_inputs(work, mesh_obj, scan, bad_scans):
    assert_one_error_line(run("eval", mesh_obj, work / "bad" / "nope.ply"), "no such file")
    assert_one_error_line(run("eval", mesh_obj, bad_scans["scan.foo"]), "extension")
    assert_one_error_line(run("eval", mesh_obj, scan, "--samples", 10), "--samples")


# ------------------------------------------------------------------------------------ existing outputs


def test_failed_fit_leaves_existing_output_untouched(work, scan, bad_scans):
    out = work / "precious.pt"
    out.write_bytes(b"precious bytes")
    for args in (["fit-sdf", bad_scans["three.xyz"]], ["fit-sdf", scan, "--steps", 0],
                 ["fit-sdf", scan, "--preset", "nope"], ["fit-sdf", scan, "--device", "cuda"]):
        assert_one_error_line(run(*args, "-o", out, *([] if "--device" in args else ["--device", "cpu"])))
        assert out.read_bytes() == b"precious bytes"


def test_diverging_fit_fails_cleanly_and_leaves_existing_output_untouched(work, scan, monkeypatch):
    """A failure during training (loss becomes NaN/inf) writes nothing. (--lr is capped for users; the
    cap is lifted here to make the fit diverge.)"""
    monkeypatch.setattr("recon3d.fit.presets.MAX_LR", 1e31)
    out = work / "precious_diverge.pt"
    out.write_bytes(b"precious bytes")
    result = run("fit-sdf", scan, "-o", out, "--steps", 3, "--batch", 64, "--lr", "1e30",
                 "--preset", "siren", "--device", "cpu", "--quiet")
    assert_one_error_line(result, "diverged")
    assert out.read_bytes() == b"precious bytes"


def test_failed_extract_leaves_existing_output_untouched(work, model, scan):
    out = work / "precious.obj"
    out.write_bytes(b"precious mesh")
    for args in ([scan, "-o", out, "--device", "cpu"], [model, "-o", out, "--device", "cuda"],
                 [model, "-o", out, "-r", 1, "--device", "cpu"]):
        assert_one_error_line(run("extract-mesh", *args))
        assert out.read_bytes() == b"precious mesh"
