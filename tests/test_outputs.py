"""Outputs never destroy the user's data (issue 17, part A).

An output is never an input of the same run (same path, hard link, symbolic link); a symlink output is
written through to its target; folders, FIFOs and devices are refused; a fit checks ``-o`` before any slow
work; a second run writing the same output is refused while the first holds its lock; temporaries of a
killed run are removed by the next run; ``demo`` does not overwrite without ``--force``; ``--json`` is
strict JSON; bad option values and usage errors are one ``error:`` line; a closed or broken stdout is not
an internal error. Fits are tiny (a few steps on the CPU): these tests check the plumbing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import assert_one_error_line, run

from recon3d.errors import Recon3dError
from recon3d.io.atomic import atomic_write_bytes, lock_path, output_lock, protect_inputs, temporaries
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.mesh import read_mesh, write_mesh
from recon3d.io.pointcloud import write_point_cloud
from recon3d.synthetic import sample_sphere, write_spheres_scene
from recon3d.types import TriMesh

TINY = ["--steps", "3", "--batch", "64", "--device", "cpu", "--quiet"]
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries and lock files in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.suffix in (".tmp", ".lock"))


# ------------------------------------------------------------------------------------ inputs


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def scan(work) -> Path:
    path = work / "scan.ply"
    write_point_cloud(path, sample_sphere(400, radius=2.0, seed=0))
    return path


@pytest.fixture(scope="module")
def model(work, scan) -> Path:
    out = work / "model.pt"
    result = run("fit-sdf", scan, "-o", out, *TINY)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def box(work) -> Path:
    """A closed cube mesh (PLY) for fit-occupancy."""
    corners = np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    path = work / "box.ply"
    write_mesh(path, TriMesh(vertices=corners, faces=faces))
    return path


@pytest.fixture(scope="module")
def scene(work) -> Path:
    return write_spheres_scene(work / "scene", n_train=2, n_val=1, size=8)


@pytest.fixture(scope="module")
def nerf(work, scene) -> Path:
    out = work / "nerf.pt"
    result = run("fit-nerf", scene, "-o", out, "--steps", 2, "--batch", 64, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


# ------------------------------------------------------------------------------------ an output is never an input


SAME_PATH = {
    "fit-sdf scan -o scan": lambda f: ["fit-sdf", f["scan"], "-o", f["scan"], *TINY],
    "fit-occupancy mesh -o mesh": lambda f: ["fit-occupancy", f["box"], "-o", f["box"], *TINY],
    "fit-nerf scene -o its json": lambda f: ["fit-nerf", f["scene"], "-o", f["scene"] / "transforms_train.json",
                                             *TINY],
    "fit-nerf scene -o one of its images": lambda f: ["fit-nerf", f["scene"], "-o",
                                                      f["scene"] / "train" / "r_0.png", *TINY],
    "extract-mesh model -o model": lambda f: ["extract-mesh", f["model"], "-o", f["model"], "--format", "ply",
                                              "-r", 16, "--device", "cpu"],
}


@pytest.mark.parametrize("case", list(SAME_PATH))
def test_output_that_is_the_input_is_refused(case, scan, box, scene, model):
    files = {"scan": scan, "box": box, "scene": scene, "model": model}
    args = SAME_PATH[case](files)
    target = Path(args[args.index("-o") + 1])
    before = target.read_bytes()
    assert_one_error_line(run(*args), str(target), "input")
    assert target.read_bytes() == before
    assert leftovers(target.parent) == []


def test_hard_and_symbolic_links_to_an_input_are_refused(work, scan, model):
    folder = work / "links"
    folder.mkdir()
    hard, soft = folder / "hard.pt", folder / "soft.pt"
    os.link(scan, hard)
    soft.symlink_to(scan)
    before = scan.read_bytes()
    for out in (hard, soft):
        assert_one_error_line(run("fit-sdf", scan, "-o", out, *TINY), str(out), "same file as the input")
    mesh_link = folder / "model_link.ply"
    os.link(model, mesh_link)
    assert_one_error_line(run("extract-mesh", model, "-o", mesh_link, "-r", 16, "--device", "cpu"), "same file")
    assert scan.read_bytes() == before and load_checkpoint(model)["kind"] == "sdf"
    assert leftovers(folder) == [] and leftovers(work) == []


def test_render_refuses_a_folder_where_it_would_overwrite_an_input_image(work, scene, nerf):
    """A scene whose val images sit in the -o folder under names render writes (``val_000_r_0.png``:
    frame 0 is rendered under frame 1's file name); an orbit into a folder holding ``orbit_000.png``."""
    copy = shutil.copytree(scene, work / "render_scene")
    shutil.copyfile(copy / "val" / "r_0.png", copy / "val" / "val_000_r_0.png")
    meta = json.loads((copy / "transforms_val.json").read_text())
    meta["frames"].append({**meta["frames"][0], "file_path": "./val/val_000_r_0"})
    (copy / "transforms_val.json").write_text(json.dumps(meta))
    before = (copy / "val" / "val_000_r_0.png").read_bytes()
    line = assert_one_error_line(run("render", nerf, "--scene", copy, "--split", "val", "-o", copy / "val",
                                     "--device", "cpu", "--quiet"), "val_000_r_0.png", "overwrite")
    assert str(copy / "val") in line
    assert (copy / "val" / "val_000_r_0.png").read_bytes() == before
    shutil.copyfile(copy / "train" / "r_0.png", copy / "train" / "orbit_000.png")
    meta = json.loads((copy / "transforms_train.json").read_text())
    meta["frames"][1]["file_path"] = "./train/orbit_000"
    (copy / "transforms_train.json").write_text(json.dumps(meta))
    assert_one_error_line(run("render", nerf, "--scene", copy, "--orbit", 2, "-o", copy / "train",
                              "--device", "cpu", "--quiet"), "orbit_000.png")
    assert sorted(p.name for p in (copy / "train").iterdir()) == ["orbit_000.png", "r_0.png", "r_1.png"]


def test_atomic_writer_refuses_a_protected_input(work):
    path = work / "protected.bin"
    path.write_bytes(b"input")
    with protect_inputs([path]), pytest.raises(Recon3dError, match="input"):
        atomic_write_bytes(path, b"output")
    assert path.read_bytes() == b"input"
    atomic_write_bytes(path, b"output")  # no longer protected
    assert path.read_bytes() == b"output"


# ------------------------------------------------------------------------------------ symlinks and special files


def test_symlink_output_is_written_through(work, scan, model):
    """The link stays a link; its target is replaced atomically (temporary and lock next to the target)."""
    real, links = work / "real", work / "linkdir"
    real.mkdir()
    links.mkdir()
    target = real / "fit.pt"
    target.write_bytes(b"old")
    link = links / "fit.pt"
    link.symlink_to(target)
    result = run("fit-sdf", scan, "-o", link, *TINY)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert load_checkpoint(target)["kind"] == "sdf"
    dangling = links / "new.obj"
    dangling.symlink_to(real / "new.obj")
    result = run("extract-mesh", model, "-o", dangling, "-r", 16, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert dangling.is_symlink() and read_mesh(real / "new.obj").n_faces > 0
    assert leftovers(real) == [] and leftovers(links) == []


def test_special_file_outputs_are_refused(work, scan, model):
    """A FIFO, a link to a pipe (what ``-o dir/stdout`` → /proc/self/fd/1 is when stdout is a pipe), a
    device and a folder are refused before any work; ``-o -`` is the way to stdout."""
    folder = work / "special"
    folder.mkdir()
    fifo = folder / "fifo.pt"
    os.mkfifo(fifo)
    read_end, write_end = os.pipe()
    try:
        pipe_link = folder / "stdout.obj"
        pipe_link.symlink_to(f"/proc/self/fd/{write_end}")
        device_link = folder / "null.obj"
        device_link.symlink_to(os.devnull)
        assert_one_error_line(run("fit-sdf", scan, "-o", fifo, *TINY), "FIFO")
        assert_one_error_line(run("extract-mesh", model, "-o", pipe_link, "--device", "cpu"), "FIFO", "-o -")
        assert_one_error_line(run("extract-mesh", model, "-o", device_link, "--device", "cpu"), "device", "-o -")
        assert_one_error_line(run("extract-mesh", model, "-o", folder, "--device", "cpu"), "folder")
        os.set_blocking(read_end, False)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 1)  # nothing was written into the pipe
    finally:
        os.close(read_end)
        os.close(write_end)
    assert sorted(p.name for p in folder.iterdir()) == ["fifo.pt", "null.obj", "stdout.obj"]


# ------------------------------------------------------------------------------------ fits check -o first


@pytest.mark.parametrize("case", ["folder", "stdout", "extension", "missing folder"])
def test_fit_output_is_checked_before_training(case, work, scan):
    """A budget that would take many seconds: the refusal comes at once, nothing is written."""
    out = {"folder": work, "stdout": "-", "extension": work / "model.ckpt",
           "missing folder": work / "absent" / "model.pt"}[case]
    fragment = {"folder": "model.pt", "stdout": "model.pt", "extension": "model.pt", "missing folder": "absent"}[case]
    start = time.perf_counter()
    result = run("fit-sdf", scan, "-o", out, "--steps", 100_000, "--max-seconds", 30, "--batch", 64, "--device", "cpu")
    seconds = time.perf_counter() - start
    assert_one_error_line(result, fragment)
    assert seconds < 2.0, f"{seconds:.1f} s: the fit started before -o was checked"
    assert not Path("-").exists() and not (work / "model.ckpt").exists() and leftovers(work) == []


def test_diverging_fit_keeps_the_existing_output(work, scan, monkeypatch):
    """A failure during training writes nothing (the lr cap lifted so that training diverges)."""
    monkeypatch.setattr("recon3d.fit.presets.MAX_LR", 1e31)
    out = work / "precious_diverge.pt"
    out.write_bytes(b"precious bytes")
    result = run("fit-sdf", scan, "-o", out, "--steps", 3, "--batch", 64, "--lr", "1e30", "--preset", "siren",
                 "--device", "cpu", "--quiet")
    assert_one_error_line(result, "diverged")
    assert out.read_bytes() == b"precious bytes" and leftovers(work) == []


# ------------------------------------------------------------------------------------ locks and temporaries


def test_second_run_to_a_locked_output_is_refused(work, scan):
    folder = work / "concurrent"
    folder.mkdir()
    out = folder / "model.pt"
    lock = folder / ".model.pt.lock"
    first = subprocess.Popen(
        [sys.executable, "-m", "recon3d.cli", "fit-sdf", str(scan), "-o", str(out), "--steps", "1000000",
         "--max-seconds", "60", "--batch", "64", "--device", "cpu", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])))
    try:
        deadline = time.monotonic() + 90
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        assert lock_path(out) == lock
        assert_one_error_line(run("fit-sdf", scan, "-o", out, *TINY), "another recon3d run is writing",
                              f"pid {first.pid}")
        assert lock.exists() and first.poll() is None  # the holder's lock is left alone
    finally:
        first.kill()
        first.wait()
        first.stderr.close()
    assert not out.exists()
    result = run("fit-sdf", scan, "-o", out, *TINY)  # the killed run's lock no longer holds anyone back
    assert result.exit_code == 0, result.stderr
    assert leftovers(folder) == []


def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next_run(work, scan, model):
    """What a SIGKILL during a write leaves: the temporary and the lock file (the kernel drops the lock)."""
    folder = work / "killed"
    folder.mkdir()
    stale = [folder / ".model.pt.k1ll3d_x.tmp", folder / ".mesh.obj.abcdefgh.tmp"]
    others = [folder / ".other.pt.abcdefgh.tmp", folder / ".model.pt.tmp", folder / ".model.pt.abc.tmp"]
    for path in stale + others:
        path.write_bytes(b"x" * 1000)
    (folder / ".model.pt.lock").write_text("999999\n")
    assert [p.name for p in temporaries(folder / "model.pt")] == [stale[0].name]
    assert run("fit-sdf", scan, "-o", folder / "model.pt", *TINY).exit_code == 0
    assert run("extract-mesh", model, "-o", folder / "mesh.obj", "-r", 16, "--device", "cpu", "-q").exit_code == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)
    assert not (folder / ".model.pt.lock").exists()


def test_output_lock_is_reentrant_and_removed(work):
    out = work / "reentrant.pt"
    with output_lock(out):
        assert lock_path(out).exists()
        with output_lock(out):
            pass
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


# ------------------------------------------------------------------------------------ demo


@pytest.fixture
def small_demo(monkeypatch):
    """The demo on a 2000-point scan and 5000 evaluation samples (the plumbing, not the quality)."""
    import recon3d.demo as demo
    from recon3d.metrics import evaluate
    from recon3d.synthetic import sample_torus, simulated_scan

    def small_scan(n: int = 2000, seed: int = 0):
        exact = sample_torus(n, major=demo.MAJOR_MM, minor=demo.MINOR_MM, seed=seed)
        exact.points = exact.points + demo.OFFSET_MM
        reference = sample_torus(5000, major=demo.MAJOR_MM, minor=demo.MINOR_MM, seed=seed + 2)
        reference.points = reference.points + demo.OFFSET_MM
        return simulated_scan(exact, noise=0.05, seed=seed + 1), reference

    monkeypatch.setattr(demo, "make_demo_scan", small_scan)
    monkeypatch.setattr(demo, "evaluate", functools.partial(evaluate, n_samples=5000))
    return ["--steps", 5, "--resolution", 16, "--device", "cpu", "--quiet"]


def test_demo_does_not_overwrite_without_force(work, small_demo):
    folder = work / "demo"
    folder.mkdir()
    (folder / "metrics.json").write_text("my own numbers")
    line = assert_one_error_line(run("demo", "-o", folder, *small_demo), "metrics.json", "--force")
    assert "scan.ply" not in line
    assert [p.name for p in folder.iterdir()] == ["metrics.json"]
    assert (folder / "metrics.json").read_text() == "my own numbers"
    result = run("demo", "-o", folder, "--force", *small_demo)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{folder / 'mesh.ply'}\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["scan.ply", "reference.ply", "model.pt", "mesh.ply", "metrics.json"])
    assert json.loads((folder / "metrics.json").read_text())["metrics"]["watertight"] in (True, False)
    assert_one_error_line(run("demo", "-o", folder, *small_demo), "scan.ply", "--force")
    assert_one_error_line(run("demo", "-o", folder / "scan.ply", *small_demo), "not a folder")


def test_demo_write_failure_says_what_was_written(work, small_demo, monkeypatch):
    import recon3d.demo as demo

    def full_disk(path, mesh, fmt=None):
        raise Recon3dError(f"{path}: write failed (No space left on device: the disk is full)")

    monkeypatch.setattr(demo, "write_mesh", full_disk)
    folder = work / "demo_full"
    line = assert_one_error_line(run("demo", "-o", folder, *small_demo), "disk is full", "already written")
    for name in ("scan.ply", "reference.ply", "model.pt"):
        assert str(folder / name) in line
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "reference.ply", "scan.ply"]


# ------------------------------------------------------------------------------------ JSON


def test_info_json_is_strict_json_with_nan_history(work, model):
    checkpoint = load_checkpoint(model)
    checkpoint["train"]["history"][-1][1] = math.nan
    path = work / "nan_history.pt"
    torch.save(checkpoint, path)
    result = run("info", path, "--json")
    assert result.exit_code == 0, result.stderr

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    info = json.loads(result.stdout, parse_constant=refuse)
    assert info["kind"] == "sdf" and None in info.values()


# ------------------------------------------------------------------------------------ options and usage errors


BAD_OPTIONS = {
    "seed 2**64": (["fit-sdf", "{scan}", "--seed", str(2**64)], "--seed"),
    "seed -1": (["fit-sdf", "{scan}", "--seed", "-1"], "--seed"),
    "lr 1e300": (["fit-sdf", "{scan}", "--lr", "1e300"], "--lr"),
    "lr nan": (["fit-sdf", "{scan}", "--lr", "nan"], "--lr"),
    "lr 0": (["fit-occupancy", "{box}", "--lr", "0"], "--lr"),
    "steps nan": (["fit-sdf", "{scan}", "--steps", "nan"], "--steps"),
    "steps abc": (["fit-sdf", "{scan}", "--steps", "abc"], "--steps"),
    "steps 0": (["fit-nerf", "{scene}", "--steps", "0"], "--steps"),
    "max-seconds inf": (["fit-sdf", "{scan}", "--max-seconds", "inf"], "--max-seconds"),
    "max-seconds 0": (["fit-sdf", "{scan}", "--max-seconds", "0"], "--max-seconds"),
    "batch 0": (["fit-occupancy", "{box}", "--batch", "0"], "--batch"),
    "batch 1e9 (not an integer)": (["fit-sdf", "{scan}", "--batch", "1e9"], "--batch"),
    "batch 2**64": (["fit-nerf", "{scene}", "--batch", str(2**64)], "--batch"),
    "steps 2**31": (["fit-sdf", "{scan}", "--steps", str(2**31)], "--steps"),
    "fit-nerf seed -1": (["fit-nerf", "{scene}", "--seed", "-1"], "--seed"),
    "eval seed -1": (["eval", "{scan}", "{scan}", "--seed", "-1"], "--seed"),
    "eval samples 1e9": (["eval", "{scan}", "{scan}", "--samples", str(10**9)], "--samples"),
    "eval samples 10": (["eval", "{scan}", "{scan}", "--samples", "10"], "--samples"),
    "extract chunk 0": (["extract-mesh", "{model}", "-o", "{work}/m.obj", "--chunk", "0"], "--chunk"),
    "extract resolution abc": (["extract-mesh", "{model}", "-o", "{work}/m.obj", "-r", "abc"], "--resolution"),
    "demo steps 0": (["demo", "-o", "{work}/demo_bad", "--steps", "0"], "--steps"),
    "demo resolution 2": (["demo", "-o", "{work}/demo_bad", "--resolution", "2"], "--resolution"),
    "render limit abc": (["render", "{model}", "--scene", "{scene}", "--limit", "abc"], "--limit"),
    "render -o -": (["render", "{model}", "--scene", "{scene}", "-o", "-"], "-o -"),
    "unknown option": (["fit-sdf", "{scan}", "--stepz", "3"], "--stepz"),
    "missing argument": (["fit-sdf"], "Missing argument"),
    "unknown command": (["fit-sdfs", "{scan}"], "fit-sdfs"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_values_are_one_error_line(case, work, scan, box, scene, model):
    args, fragment = BAD_OPTIONS[case]
    names = {"scan": scan, "box": box, "scene": scene, "model": model, "work": work}
    args = [a.format(**names) for a in args]
    device = ["--device", "cpu"] if args[0] not in ("eval",) and "--device" not in args and len(args) > 1 else []
    assert_one_error_line(run(*args, *device), fragment)
    assert not (work / "demo_bad").exists() and not (work / "m.obj").exists() and leftovers(work) == []


@pytest.mark.parametrize("command", ["fit-sdf", "fit-occupancy", "fit-nerf", "render", "extract-mesh", "eval",
                                     "info", "demo"])
def test_help_still_prints(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout and result.stderr == ""


def test_bare_command_prints_the_help():
    result = run()
    assert result.exit_code == 0 and "fit-sdf" in result.stdout


# ------------------------------------------------------------------------------------ stdout closed or broken


def test_broken_or_closed_stdout_is_one_error_line(model):
    """``recon3d info m.pt --json | head -c0`` (the reader is gone before the result is printed) and
    ``recon3d info m.pt --json >&-``, run side by side: exit 1, one error line each, no traceback, no
    "internal error", no second error at shutdown."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "recon3d.cli", "info", str(model), "--json"]
    broken = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    broken.stdout.close()  # the reader leaves before the child has even started
    closed = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    for proc, expected in ((broken, "broken pipe"), (closed, "stdout is closed")):
        stderr = proc.stderr.read()
        proc.stderr.close()
        proc.wait(timeout=120)
        lines = stderr.splitlines()
        assert proc.returncode == 1, stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr
        assert "internal error" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr
