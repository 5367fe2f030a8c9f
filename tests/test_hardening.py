"""Hardening: bad input never crashes with a traceback and never leaves a half-written file.

Every case ends in exactly one ``error: …`` line on stderr naming the file, exit code 1 and the output
path untouched (absent, or byte-identical when it existed). Also: read-only output folders, a full disk,
SIGTERM while reading or writing, GPU out-of-memory retries with smaller chunks (extraction, rendering,
vertex colours; simulated on the CPU) and fuzzed readers.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recon3d.cli import app
from recon3d.errors import Recon3dError
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.pointcloud import write_point_cloud
from recon3d.synthetic import sample_sphere, write_spheres_scene

CPU_FIT = ["--steps", "2", "--batch", "64", "--device", "cpu", "--quiet"]


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told otherwise
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


RUNNER = _runner()


def run(*args):
    return RUNNER.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, f"exit {result.exit_code}; stderr: {result.stderr!r}; exception: {result.exception!r}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"stderr: {result.stderr!r}"
    assert "Traceback" not in result.stderr and "internal error" not in errors[0], result.stderr
    for fragment in fragments:
        assert str(fragment) in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ inputs


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hardening")


@pytest.fixture(scope="module")
def scan(work) -> Path:
    path = work / "scan.ply"
    write_point_cloud(path, sample_sphere(400, radius=2.0, seed=0))
    return path


@pytest.fixture(scope="module")
def sdf_model(work, scan) -> Path:
    out = work / "sdf.pt"
    result = run("fit-sdf", scan, "-o", out, *CPU_FIT)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def scene(work) -> Path:
    return write_spheres_scene(work / "scene", n_train=2, n_val=1, size=8)


def _copy_scene(scene: Path, dest: Path) -> Path:
    shutil.copytree(scene, dest)
    return dest


def _edit_json(folder: Path, edit) -> Path:
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return path


def _png(path: Path, h: int, w: int) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((h, w, 4), np.uint8)).save(path)


@pytest.fixture(scope="module")
def bad(work, scan, sdf_model, scene) -> dict[str, Path]:
    """name -> the bad input file (or folder)."""
    folder = work / "bad"
    folder.mkdir()
    files: dict[str, Path] = {"missing": folder / "nope.ply"}
    (folder / "empty.ply").write_bytes(b"")
    files["empty"] = folder / "empty.ply"
    binary = folder / "binary.ply"
    write_point_cloud(binary, sample_sphere(200, seed=1), binary=True)
    data = binary.read_bytes()
    (folder / "truncated.ply").write_bytes(data[: len(data) - 1000 - 7])
    files["truncated"] = folder / "truncated.ply"
    (folder / "short.ply").write_bytes(data.replace(b"element vertex 200", b"element vertex 500"))
    files["short"] = folder / "short.ply"
    (folder / "scan.foo").write_text("0 0 0\n1 1 1\n")
    files["ext"] = folder / "scan.foo"
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        np.savetxt(folder / f"n{n}.xyz", rng.random((n, 3)))
        files[f"n{n}"] = folder / f"n{n}.xyz"
    np.savetxt(folder / "same.xyz", np.tile([1.5, -2.0, 3.0], (100, 1)))
    files["same"] = folder / "same.xyz"
    np.savetxt(folder / "nan.xyz", np.full((50, 3), np.nan))
    files["nan"] = folder / "nan.xyz"
    np.savetxt(folder / "inf.xyz", np.where(rng.random((50, 3)) < 0.5, np.inf, -np.inf))
    files["inf"] = folder / "inf.xyz"
    np.savez(folder / "nopoints.npz", normals=rng.random((50, 3)))
    files["nopoints"] = folder / "nopoints.npz"
    # meshes for fit-occupancy
    (folder / "nofaces.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n")
    files["nofaces"] = folder / "nofaces.obj"
    (folder / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nv 0 1 0\nf 1 2 3\nf 1 1 4\n")
    files["flat"] = folder / "flat.obj"
    # scenes for fit-nerf
    s = _copy_scene(scene, folder / "scene_key")
    _edit_json(s, lambda m: m.pop("camera_angle_x"))
    files["scene_key"] = s
    s = _copy_scene(scene, folder / "scene_frame_key")
    _edit_json(s, lambda m: m["frames"][1].pop("transform_matrix"))
    files["scene_frame_key"] = s
    s = _copy_scene(scene, folder / "scene_image")
    (s / "train" / "r_1.png").unlink()
    files["scene_image"] = s
    s = _copy_scene(scene, folder / "scene_sizes")
    _png(s / "train" / "r_1.png", 8, 12)
    files["scene_sizes"] = s
    s = _copy_scene(scene, folder / "scene_scaled")

    def scale(meta):
        pose = np.array(meta["frames"][1]["transform_matrix"])
        pose[:3, :3] *= 2.0
        meta["frames"][1]["transform_matrix"] = pose.tolist()

    _edit_json(s, scale)
    files["scene_scaled"] = s
    s = _copy_scene(scene, folder / "scene_singular")
    _edit_json(s, lambda m: m["frames"][0].update(transform_matrix=np.diag([0.0, 0.0, 0.0, 1.0]).tolist()))
    files["scene_singular"] = s
    s = _copy_scene(scene, folder / "scene_corrupt_image")
    (s / "train" / "r_1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    files["scene_corrupt_image"] = s
    # checkpoints
    checkpoint = load_checkpoint(sdf_model)
    checkpoint["version"] = 99
    torch.save(checkpoint, folder / "newer.pt")
    files["newer"] = folder / "newer.pt"
    checkpoint = load_checkpoint(sdf_model)
    checkpoint["kind"] = "occupancy"
    checkpoint["resume"] = {}
    torch.save(checkpoint, folder / "occ.pt")
    files["occ"] = folder / "occ.pt"
    files["sdf"] = sdf_model
    (folder / "corrupt.pt").write_bytes(sdf_model.read_bytes()[:500])
    files["corrupt"] = folder / "corrupt.pt"
    return files


# case -> (command and arguments before -o, the input's key, message fragment, output is a folder)
CASES = {
    "missing file": (["fit-sdf", "{missing}"], "missing", "no such file"),
    "empty file": (["fit-sdf", "{empty}"], "empty", "empty"),
    "truncated binary PLY": (["fit-sdf", "{truncated}"], "truncated", "truncated"),
    "PLY header counts more vertices": (["fit-sdf", "{short}"], "short", "500"),
    "unknown extension": (["fit-sdf", "{ext}"], "ext", "extension"),
    "1 point": (["fit-sdf", "{n1}"], "n1", "1 point"),
    "2 points": (["fit-sdf", "{n2}"], "n2", "2 points"),
    "3 points": (["fit-sdf", "{n3}"], "n3", "3 points"),
    "identical points": (["fit-sdf", "{same}"], "same", "identical"),
    "all-NaN coordinates": (["fit-sdf", "{nan}"], "nan", "NaN"),
    "all-infinite coordinates": (["fit-sdf", "{inf}"], "inf", "finite"),
    "pointcloud.npz without points": (["fit-sdf", "{nopoints}"], "nopoints", "points"),
    "mesh without faces": (["fit-occupancy", "{nofaces}"], "nofaces", "no faces"),
    "mesh of zero-area faces": (["fit-occupancy", "{flat}"], "flat", "area"),
    "occupancy from a missing file": (["fit-occupancy", "{missing}"], "missing", "no such file"),
    "scene json missing a key": (["fit-nerf", "{scene_key}"], "scene_key", "camera_angle_x"),
    "scene frame missing a pose": (["fit-nerf", "{scene_frame_key}"], "scene_frame_key", "transform_matrix"),
    "scene missing an image": (["fit-nerf", "{scene_image}"], "scene_image", "not found"),
    "scene of mixed image sizes": (["fit-nerf", "{scene_sizes}"], "scene_sizes", "12x8"),
    "scene with a scaled rotation": (["fit-nerf", "{scene_scaled}"], "scene_scaled", "orthonormal"),
    "scene with a singular pose": (["fit-nerf", "{scene_singular}"], "scene_singular", "orthonormal"),
    "scene with an unreadable image": (["fit-nerf", "{scene_corrupt_image}"], "scene_corrupt_image",
                                       "cannot read image"),
    "render an sdf checkpoint": (["render", "{sdf}", "--scene", "{scene}"], "sdf", "nerf"),
    "render a newer checkpoint": (["render", "{newer}", "--scene", "{scene}"], "newer", "99"),
    "extract from a newer checkpoint": (["extract-mesh", "{newer}"], "newer", "99"),
    "extract from a corrupt checkpoint": (["extract-mesh", "{corrupt}"], "corrupt", "checkpoint"),
    "info of a newer checkpoint": (["info", "{newer}"], "newer", "99"),
    "resume from another kind": (["fit-sdf", "{scan}", "--resume"], "occ", "sdf"),
    "resume from a newer checkpoint": (["fit-sdf", "{scan}", "--resume"], "newer", "99"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing"])
def test_bad_input_is_one_error_line(case, existing, work, bad, scan, scene):
    args, key, fragment = CASES[case]
    command = args[0]
    names = {**{k: str(v) for k, v in bad.items()}, "scan": str(scan), "scene": str(scene)}
    args = [a.format(**names) for a in args]
    folder = work / f"out_{abs(hash((case, existing)))}"
    folder.mkdir()
    suffix = {"extract-mesh": ".obj", "render": ""}.get(command, ".pt")
    out = folder / f"result{suffix}"
    if "--resume" in args:  # the bad file is the checkpoint being resumed: it is the output too
        out = folder / "resume.pt"
        shutil.copyfile(bad[key], out)
    elif existing and command == "render":
        out.mkdir()
        (out / "keep.txt").write_bytes(b"precious")
    elif existing:
        out.write_bytes(b"precious bytes")
    before = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    extra = [] if command == "info" else ["-o", out]
    extra += [] if command in ("info", "render", "extract-mesh") else CPU_FIT
    extra += ["--device", "cpu"] if command in ("render", "extract-mesh") else []
    result = run(*args, *extra)
    line = assert_clean_error(result, fragment)
    assert str(bad[key] if "--resume" not in args else out) in line, line
    after = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    if not existing and "--resume" not in args:
        assert not out.exists()
    assert no_temporaries(folder)


#: The scene cases of fit-nerf, which the image-based fit-sdf and fit-occupancy read with the same reader.
SCENE_CASES = [case for case, (args, _, _) in CASES.items() if args[0] == "fit-nerf"]


@pytest.mark.parametrize("command", ["fit-sdf", "fit-occupancy"])
@pytest.mark.parametrize("case", SCENE_CASES)
def test_bad_scenes_are_one_error_line_for_the_image_fits(case, command, work, bad):
    """Every bad scene fit-nerf refuses is refused the same way by fit-sdf and fit-occupancy on a scene."""
    args, key, fragment = CASES[case]
    folder = work / f"scene_out_{abs(hash((case, command)))}"
    folder.mkdir()
    out = folder / "result.pt"
    result = run(command, args[1].format(**{k: str(v) for k, v in bad.items()}), "-o", out, *CPU_FIT)
    line = assert_clean_error(result, fragment)
    assert str(bad[key]) in line, line
    assert not out.exists() and no_temporaries(folder)


def test_unreadable_input_is_one_error_line(work, scan, monkeypatch):
    """A scan the user may not read (EACCES, simulated: as root every file is readable)."""
    real = Path.read_bytes

    def denied(self):
        if self == Path(scan):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    out = work / "unreadable.pt"
    line = assert_clean_error(run("fit-sdf", scan, "-o", out, *CPU_FIT), "Permission denied")
    assert str(scan) in line and not out.exists()


def test_some_nan_rows_warn_and_fit(work):
    path = work / "some_nan.xyz"
    points = sample_sphere(300, seed=2).points
    points[::10] = np.nan
    np.savetxt(path, points)
    out = work / "some_nan.pt"
    result = run("fit-sdf", path, "-o", out, *CPU_FIT)
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "NaN" in result.stderr and "error:" not in result.stderr
    assert load_checkpoint(out)["kind"] == "sdf"


# ------------------------------------------------------------------------------------ outputs


def _read_only(folder: Path):
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway
        folder.chmod(0o755)
        pytest.skip("running as root, which may write into a 0o555 folder, so a read-only folder cannot be "
                    "made here; test_unwritable_output_folder_simulated covers the same path with a simulated EACCES")


@pytest.mark.parametrize("command", ["fit-sdf", "extract-mesh"])
def test_read_only_output_folder(command, work, scan, sdf_model):
    folder = work / f"read_only_{command}"
    folder.mkdir()
    _read_only(folder)
    try:
        out = folder / ("model.pt" if command == "fit-sdf" else "mesh.obj")
        extract = [sdf_model, "-o", out, "-r", 16, "--device", "cpu"]
        args = [scan, "-o", out, *CPU_FIT] if command == "fit-sdf" else extract
        assert_clean_error(run(command, *args), out)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def _deny_temporaries(monkeypatch):
    """Simulate a folder we may not write into (works as root too)."""
    import recon3d.io.atomic as atomic

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)


def _assert_output_fault_keeps_old_file(fault, message, command, work, scan, sdf_model, monkeypatch):
    """``fault(monkeypatch)`` breaks writing; the command ends with one error line, the old file intact."""
    folder = work / f"{fault.__name__}_{command}"
    folder.mkdir()
    out = folder / ("model.pt" if command == "fit-sdf" else "mesh.obj")
    out.write_bytes(b"precious")
    fault(monkeypatch)
    args = [scan, "-o", out, *CPU_FIT] if command == "fit-sdf" else [sdf_model, "-o", out, "-r", 16, "--device", "cpu"]
    assert_clean_error(run(command, *args), out, message)
    assert [p.name for p in folder.iterdir()] == [out.name] and out.read_bytes() == b"precious"


@pytest.mark.parametrize("command", ["fit-sdf", "extract-mesh"])
def test_unwritable_output_folder_simulated(command, work, scan, sdf_model, monkeypatch):
    _assert_output_fault_keeps_old_file(_deny_temporaries, "Permission denied", command, work, scan, sdf_model,
                                        monkeypatch)


def test_render_into_a_folder_that_cannot_be_made(work, tiny_nerf, monkeypatch):
    """An OSError outside the atomic writer (here mkdir) is one clean line naming the path, exit 1."""
    target = work / "cannot_make"

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    result = _render_with_patched_mkdir(work, target, refuse, monkeypatch)
    assert_clean_error(result, target, "Permission denied")
    assert not target.exists()


@pytest.fixture(scope="module")
def tiny_nerf(work, scene) -> Path:
    """A real radiance field after 2 steps on the 8×8 scene."""
    model = work / "tiny_nerf.pt"
    result = run("fit-nerf", scene, "-o", model, "--steps", 2, "--batch", 64, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    return model


def _render_with_patched_mkdir(work, target, refuse, monkeypatch):
    """render the tiny radiance field with Path.mkdir refusing."""
    scene, model = work / "scene", work / "tiny_nerf.pt"
    monkeypatch.setattr(Path, "mkdir", refuse)
    return run("render", model, "--scene", scene, "--split", "val", "-o", target, "--device", "cpu", "--quiet")


def test_corrupt_checkpoint_leaves_existing_mesh_identical(work, bad):
    out = work / "existing_mesh.obj"
    out.write_bytes(b"v 0 0 0\n")
    assert_clean_error(run("extract-mesh", bad["corrupt"], "-o", out, "--device", "cpu"), bad["corrupt"])
    assert out.read_bytes() == b"v 0 0 0\n" and no_temporaries(work)


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()
        return False


def _full_disk(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k)))


def test_full_disk_library_write_keeps_the_old_file(work, monkeypatch):
    path = work / "full_disk.ply"
    write_point_cloud(path, sample_sphere(50, seed=3))
    before = path.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(Recon3dError, match=r"full_disk\.ply: .*disk is full"):
        write_point_cloud(path, sample_sphere(60, seed=4))
    assert path.read_bytes() == before and no_temporaries(work)


@pytest.mark.parametrize("command", ["fit-sdf", "extract-mesh"])
def test_full_disk_cli(command, work, scan, sdf_model, monkeypatch):
    _assert_output_fault_keeps_old_file(_full_disk, "disk is full", command, work, scan, sdf_model, monkeypatch)


# ------------------------------------------------------------------------------------ SIGTERM


#: Runs the CLI in a fresh interpreter after patching one function to send SIGTERM to the process
#: itself: while the input is read, or while the output is written (inside the atomic writer).
_SIGTERM_SCRIPT = """
import os, signal, sys
import recon3d.io.pointcloud as pointcloud
phase = sys.argv.pop(1)

def terminating(real):
    def call(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    return call

if phase == "read":
    pointcloud.read_point_cloud = terminating(pointcloud.read_point_cloud)
else:
    os.fsync = terminating(os.fsync)
from recon3d.cli import main
sys.argv[0] = "recon3d"
main()
"""


@pytest.mark.parametrize("phase", ["read", "write"])
def test_sigterm_outside_training_is_one_error_line_and_no_temporary(phase, work, scan, sdf_model):
    """SIGTERM while reading a scan (fit-sdf) or writing a mesh (extract-mesh) ends like Ctrl-C:
    ``error: interrupted``, exit 130, the old output untouched and no temporary file (the default
    action would kill the process mid-write and leave one behind). A fit's final checkpoint write
    holds signals instead: see test_signal_during_the_final_checkpoint_write."""
    import subprocess
    import sys

    folder = work / f"sigterm_{phase}"
    folder.mkdir()
    if phase == "read":
        out = folder / "model.pt"
        command = ["fit-sdf", str(scan), "-o", str(out), *CPU_FIT]
    else:
        out = folder / "mesh.ply"
        command = ["extract-mesh", str(sdf_model), "-o", str(out), "--resolution", "16", "--device", "cpu", "--quiet"]
    out.write_bytes(b"precious")
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_SCRIPT, phase, *command],
                          capture_output=True, text=True, env=env, cwd=repo, timeout=120)
    assert proc.returncode == 130, f"exit {proc.returncode}; stderr: {proc.stderr!r}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: interrupted"] and "Traceback" not in proc.stderr, proc.stderr
    assert [p.name for p in folder.iterdir()] == [out.name] and out.read_bytes() == b"precious"


@pytest.mark.parametrize("signals", [1, 2], ids=["one", "two"])
def test_signal_during_the_final_checkpoint_write(signals, work, scan, monkeypatch):
    """One SIGTERM while the finished fit is being written is held: the command completes with a
    complete checkpoint. A second one gives up at once: error, the old file kept, no temporary file."""
    import signal

    folder = work / f"late_signal_{signals}"
    folder.mkdir()
    out = folder / "model.pt"
    out.write_bytes(b"precious")
    real_fsync = os.fsync
    sent = []

    def fsync_with_signals(fd):
        if not sent:
            sent.append(True)
            for _ in range(signals):
                signal.raise_signal(signal.SIGTERM)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_with_signals)
    result = run("fit-sdf", scan, "-o", out, *CPU_FIT)
    assert sent
    if signals == 1:
        assert result.exit_code == 0, result.stderr
        checkpoint = load_checkpoint(out)
        assert checkpoint["train"]["complete"] and "resume" not in checkpoint
    else:
        assert result.exit_code == 130 and "error: interrupted" in result.stderr, result.stderr
        assert out.read_bytes() == b"precious"
    assert [p.name for p in folder.iterdir()] == ["model.pt"]


# ------------------------------------------------------------------------------------ GPU out of memory


OOM = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)


class _FailsAbove:
    """Wraps a function of a batch; raises a GPU out-of-memory error for batches above ``limit``."""

    def __init__(self, fn, limit: int, arg: int = 0):
        self.fn, self.limit, self.arg, self.sizes, self.failures = fn, limit, arg, [], 0

    def __call__(self, *args, **kwargs):
        size = len(args[self.arg])
        if size > self.limit:
            self.failures += 1
            raise OOM("CUDA out of memory (simulated)")
        self.sizes.append(size)
        return self.fn(*args, **kwargs)


def _sphere(points: torch.Tensor) -> torch.Tensor:
    return points.norm(dim=-1) - 0.6


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_extraction_retries_with_smaller_chunks_on_oom(method):
    from extraction import extract

    bounds = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    kwargs = dict(bounds=bounds, resolution=32, method=method, normals="field", chunk=2**16)
    expected = extract(_sphere, **kwargs)
    failing = _FailsAbove(_sphere, 3000)
    got = extract(failing, **kwargs)
    assert failing.failures > 0 and max(failing.sizes) <= 3000
    np.testing.assert_array_equal(got.mesh.faces, expected.mesh.faces)
    np.testing.assert_allclose(got.mesh.vertices, expected.mesh.vertices, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.mesh.vertex_normals, expected.mesh.vertex_normals, atol=1e-5)
    assert got.lattice_queries == expected.lattice_queries


def test_refine_and_field_normals_retry_with_smaller_chunks_on_oom():
    """Out of memory only in the gradient passes (Newton refinement, field normals): they halve too."""
    from extraction import extract

    def gradient_hungry(points: torch.Tensor) -> torch.Tensor:
        if points.requires_grad and len(points) > 1500:
            gradient_hungry.failures += 1
            raise OOM("CUDA out of memory (simulated)")
        return _sphere(points)

    gradient_hungry.failures = 0
    kwargs = dict(bounds=np.array([[-1.0] * 3, [1.0] * 3]), resolution=32, normals="field", refine=2, chunk=2**16)
    expected = extract(_sphere, **kwargs)
    got = extract(gradient_hungry, **kwargs)
    assert gradient_hungry.failures > 0
    np.testing.assert_array_equal(got.mesh.faces, expected.mesh.faces)
    np.testing.assert_allclose(got.mesh.vertices, expected.mesh.vertices, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.mesh.vertex_normals, expected.mesh.vertex_normals, atol=1e-5)
    assert np.abs(np.linalg.norm(got.mesh.vertices, axis=1) - 0.6).max() < 1e-4  # refinement did run


def test_sampler_chunk_halves_to_the_floor_then_raises():
    from recon3d.device import MIN_CHUNK
    from recon3d.mesh.grid import Lattice, Sampler

    lattice = Lattice.from_bounds(np.array([[-1.0] * 3, [1.0] * 3]), 16)
    points = torch.rand(5000, 3) * 2 - 1
    sampler = Sampler(_FailsAbove(_sphere, 2500), lattice, 0.0, 1.0, 2**14, torch.device("cpu"))
    np.testing.assert_allclose(sampler.evaluate(points).numpy(), _sphere(points).numpy(), atol=1e-6)
    assert sampler.chunk == 2048  # 16384 -> 8192 -> 4096 -> 2048
    hopeless = Sampler(_FailsAbove(_sphere, 100), lattice, 0.0, 1.0, 2**14, torch.device("cpu"))
    with pytest.raises(OOM):  # 16384 -> ... -> MIN_CHUNK, still too big: the error comes out
        hopeless.evaluate(points)
    assert MIN_CHUNK > 100


def test_render_image_retries_with_smaller_chunks_on_oom(work, tiny_nerf, monkeypatch):
    from recon3d.io.scene import read_scene
    from recon3d.render import renderer
    from recon3d.render.model import load_renderer

    big = write_spheres_scene(work / "big_scene", n_train=1, n_val=0, size=48)  # 2304 rays
    views = read_scene(big, "train")
    model = load_renderer(load_checkpoint(tiny_nerf), torch.device("cpu"))
    field, grid, sampling = model.field, model.grid, model.sampling
    expected = renderer.render_image(field, views, 0, sampling, grid)
    failing = _FailsAbove(renderer.render_rays, 1500, arg=1)
    monkeypatch.setattr(renderer, "render_rays", failing)
    got = renderer.render_image(field, views, 0, sampling, grid)
    assert failing.failures > 0 and set(failing.sizes) == {1024, 256}  # 2304 = 2 x 1024 + 256
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


def test_map_in_chunks_halves_on_oom_keeps_order_and_raises_at_the_floor(monkeypatch):
    from recon3d import device

    released = []
    monkeypatch.setattr(device, "release_cached_memory", released.append)
    data = torch.arange(10_000)
    double = _FailsAbove(lambda piece: piece * 2, 3000)
    parts, chunk = device.map_in_chunks(lambda start, stop: double(data[start:stop]), len(data), 8192, "cpu")
    assert torch.equal(torch.cat(parts), data * 2)
    assert double.failures == 2 and double.sizes == [2048] * 4 + [1808] and chunk == 2048  # 8192 -> 4096 -> 2048
    assert released == ["cpu", "cpu"]
    assert device.map_in_chunks(lambda start, stop: 1 / 0, 0, 8192, "cpu") == ([], 8192)
    hopeless = _FailsAbove(lambda piece: piece, 10)
    with pytest.raises(OOM):
        device.map_in_chunks(lambda start, stop: hopeless(data[start:stop]), len(data), 8192, "cpu", min_chunk=512)
    assert hopeless.failures == 5 and not hopeless.sizes  # 8192, 4096, 2048, 1024, then 512 is the floor
    errors = []
    with pytest.raises(ZeroDivisionError):  # other errors pass through at once
        device.map_in_chunks(lambda start, stop: errors.append(start) or 1 / 0, len(data), 8192, "cpu")
    assert errors == [0]


def test_vertex_colors_retry_with_smaller_chunks_on_oom(tiny_nerf):
    from recon3d.device import MIN_CHUNK
    from recon3d.mesh.from_field import load_field, vertex_colors

    checkpoint = load_checkpoint(tiny_nerf)
    field = load_field(checkpoint, torch.device("cpu"))
    lo, hi = np.asarray(checkpoint["bounds"])
    vertices = lo + np.random.default_rng(0).random((5000, 3)) * (hi - lo)
    expected = vertex_colors(field.surface(), vertices, torch.device("cpu"), chunk=2**16)  # 4096 vertices per call
    failing = field.color = _FailsAbove(field.color, 1500)
    got = vertex_colors(field.surface(), vertices, torch.device("cpu"), chunk=2**16)
    assert failing.failures == 2 and set(failing.sizes) == {1024, 904}  # 4096 -> 2048 -> 1024; 5000 = 4 x 1024 + 904
    # the same colours; a batch-size-dependent rounding of the last float bit may move one uint8 step
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    hopeless = field.color = _FailsAbove(failing.fn, 10)
    with pytest.raises(OOM):
        vertex_colors(field.surface(), vertices, torch.device("cpu"), chunk=2**16)
    # 4096 ... 64 vertices: the floor is MIN_CHUNK field points, 16 per vertex (14 view directions)
    assert hopeless.failures == 7 and MIN_CHUNK // 16 == 64


def test_extract_mesh_of_a_radiance_field_out_of_memory_is_one_error_line(work, tiny_nerf, monkeypatch):
    """Colouring that runs out of GPU memory even at the smallest chunk: one error line, no mesh."""
    from recon3d.fields.radiance import RadianceField

    lo, hi = torch.tensor(load_checkpoint(tiny_nerf)["bounds"], dtype=torch.float32)
    centre, radius = (lo + hi) / 2, 0.3 * float((hi - lo).min())
    # a ball of density: the 2-step field has no surface at the default level σ = 10
    monkeypatch.setattr(RadianceField, "density", lambda self, x: 40.0 * (1.0 - (x - centre).norm(dim=-1) / radius))
    calls = []

    def out_of_memory(self, x, *args, **kwargs):
        calls.append(len(x))
        raise OOM("CUDA out of memory (simulated)")

    monkeypatch.setattr(RadianceField, "color", out_of_memory)
    folder = work / "oom_colours"
    folder.mkdir()
    out = folder / "mesh.ply"
    result = run("extract-mesh", tiny_nerf, "-o", out, "-r", 16, "--chunk", 4096, "--device", "cpu", "--quiet")
    assert_clean_error(result, "GPU out of memory", "--chunk")
    assert calls and calls[-1] <= 64 and not list(folder.iterdir())


# ------------------------------------------------------------------------------------ fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from recon3d.io.pointcloud import read_point_cloud  # noqa: E402
from recon3d.io.scene import read_scene  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EXTENSIONS = [".ply", ".pcd", ".xyz", ".pts", ".txt", ".obj", ".off", ".npz"]


def _only_input_errors(read, path):
    """Reading may succeed or raise our errors, nothing else (warnings on stderr are fine)."""
    try:
        read(path)
    except Recon3dError as exc:
        assert str(path) in str(exc) or path.name in str(exc), str(exc)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few bytes replaced, deleted or inserted, or cut short."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "replace" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid_files(fuzz_dir) -> dict[str, bytes]:
    cloud = sample_sphere(20, seed=5)
    out = {}
    for ext in EXTENSIONS:
        for binary in (True, False):
            path = fuzz_dir / f"valid_{int(binary)}{ext}"
            write_point_cloud(path, cloud, binary=binary)
            out[f"{int(binary)}{ext}"] = path.read_bytes()
    return out


@FUZZ
@given(ext=st.sampled_from(EXTENSIONS), data=st.binary(max_size=600))
def test_fuzz_random_bytes_point_cloud(fuzz_dir, ext, data):
    path = fuzz_dir / f"random{ext}"
    path.write_bytes(data)
    _only_input_errors(read_point_cloud, path)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_point_cloud(fuzz_dir, valid_files, data):
    key = data.draw(st.sampled_from(sorted(valid_files)))
    path = fuzz_dir / f"mutated{key[1:]}"
    path.write_bytes(data.draw(mutated(valid_files[key])))
    _only_input_errors(read_point_cloud, path)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def fuzz_scene(fuzz_dir) -> tuple[Path, str]:
    folder = write_spheres_scene(fuzz_dir / "scene", n_train=2, n_val=0, size=4)
    return folder, (folder / "transforms_train.json").read_text()


def _read_train(folder: Path):
    return read_scene(folder, "train")


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_transforms_text(fuzz_scene, data):
    folder, text = fuzz_scene
    (folder / "transforms_train.json").write_bytes(data.draw(mutated(text.encode())))
    _only_input_errors(_read_train, folder)


@FUZZ
@given(data=st.data())
def test_fuzz_transforms_values(fuzz_scene, data):
    """Replace one value anywhere in the json (a key's value, a frame, a matrix entry) with random JSON."""
    folder, text = fuzz_scene
    meta = json.loads(text)
    node, path = meta, []
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        path.append(key)
        if not isinstance(node[key], (dict, list)) or data.draw(st.booleans()):
            break
        node = node[key]
    if path:
        node[path[-1]] = data.draw(JSON_VALUES)
    else:
        meta = data.draw(JSON_VALUES)
    (folder / "transforms_train.json").write_text(json.dumps(meta))
    _only_input_errors(_read_train, folder)
