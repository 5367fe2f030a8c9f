"""Outputs, concurrency and option values (issue 17, part A): an output that is an input (same path, hard
or symbolic link), links written through or refused, special files, fits checking ``-o`` before training,
a second run to a locked output, a killed run's temporaries, ``demo`` without ``--force``, strict JSON,
and option values that used to end in "internal error" or a boxed usage panel.

Each case builds its own inputs under ``work`` (tiny fits through the library) and, where the exit code
alone does not tell, checks that nothing was overwritten. A closed or broken stdout is covered by
tests/test_outputs.py (the runner captures stdout).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.hostile.case import Case

REPO = Path(__file__).resolve().parents[2]
TINY = ["--steps", "3", "--batch", "64", "--device", "cpu", "--quiet"]
#: A budget far beyond a case's timeout: a fit that started training instead of refusing shows as a timeout.
ENDLESS = ["--steps", "10000000", "--max-seconds", "600", "--batch", "64", "--device", "cpu", "--quiet"]


# ------------------------------------------------------------------------------------ inputs


def _scan(work: Path) -> Path:
    from recon3d.io.pointcloud import write_point_cloud
    from recon3d.synthetic import sample_sphere

    path = work / "scan.ply"
    write_point_cloud(path, sample_sphere(400, radius=2.0, seed=0))
    return path


def _box(work: Path) -> Path:
    import numpy as np

    from recon3d.io.mesh import write_mesh
    from recon3d.types import TriMesh

    corners = np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    path = work / "mesh.ply"
    write_mesh(path, TriMesh(vertices=corners, faces=faces))
    return path


def _model(work: Path) -> Path:
    """A 2-step fit-sdf checkpoint (library call: not part of the case's time)."""
    import torch

    from recon3d.fit.sdf import SDFOptions, fit_sdf
    from recon3d.io.pointcloud import read_point_cloud

    scan = _scan(work)
    path = work / "model.pt"
    fit_sdf(read_point_cloud(scan), SDFOptions(steps=2, batch=64), path, torch.device("cpu"), show_progress=False)
    return path


def _scene(work: Path) -> Path:
    from recon3d.synthetic import write_spheres_scene

    return write_spheres_scene(work / "scene", n_train=2, n_val=1, size=8)


def _nerf(work: Path) -> Path:
    import torch

    from recon3d.fit.nerf import NerfOptions, fit_nerf
    from recon3d.io.scene import read_scene

    scene = _scene(work)
    path = work / "nerf.pt"
    fit_nerf(read_scene(scene, "train"), NerfOptions(steps=2, batch=64), path, torch.device("cpu"),
             show_progress=False)
    return path


def _keep(*paths: Path) -> None:
    """Remember the bytes of ``paths`` (``NAME.orig`` beside each) for :func:`_unchanged`."""
    for path in paths:
        path.with_name(path.name + ".orig").write_bytes(path.read_bytes())


def _unchanged(*names: str):
    """A check: each file kept by :func:`_keep` is byte-identical, and no temporary or lock is left."""

    def check(work: Path, result) -> str | None:
        for name in names:
            path = work / name
            if not path.is_file() or path.read_bytes() != path.with_name(path.name + ".orig").read_bytes():
                return f"{name} was changed"
        left = [str(p.relative_to(work)) for p in work.rglob(".*") if p.suffix in (".tmp", ".lock")]
        return f"left behind: {', '.join(left)}" if left else None

    return check


def _absent(*names: str):
    """A check: none of ``names`` was created (and nothing kept by :func:`_keep` changed)."""

    def check(work: Path, result) -> str | None:
        made = [name for name in names if (work / name).exists() or (work / name).is_symlink()]
        return f"created {', '.join(made)}" if made else _unchanged()(work, result)

    return check


# ------------------------------------------------------------------------------------ an output that is an input


def _same_scan(work: Path) -> list[str]:
    _keep(_scan(work))
    return ["fit-sdf", "scan.ply", "-o", "scan.ply", *TINY]


def _same_mesh(work: Path) -> list[str]:
    _keep(_box(work))
    return ["fit-occupancy", "mesh.ply", "-o", "mesh.ply", *TINY]


def _same_scene_json(work: Path) -> list[str]:
    _keep(_scene(work) / "transforms_train.json")
    return ["fit-nerf", "scene", "-o", "scene/transforms_train.json", *TINY]


def _same_scene_image(work: Path) -> list[str]:
    _keep(_scene(work) / "train" / "r_0.png")
    return ["fit-nerf", "scene", "-o", "scene/train/r_0.png", *TINY]


def _same_model(work: Path) -> list[str]:
    _keep(_model(work))
    return ["extract-mesh", "model.pt", "-o", "model.pt", "--format", "ply", "-r", "16", "--device", "cpu"]


def _render_over_an_image(work: Path) -> list[str]:
    """Frame 0 (r_0) would be rendered as val_000_r_0.png, which is frame 1's image in the -o folder."""
    _nerf(work)
    scene = work / "scene"
    image = scene / "val" / "val_000_r_0.png"
    image.write_bytes((scene / "val" / "r_0.png").read_bytes())
    meta = json.loads((scene / "transforms_val.json").read_text())
    meta["frames"].append({**meta["frames"][0], "file_path": "./val/val_000_r_0"})
    (scene / "transforms_val.json").write_text(json.dumps(meta))
    _keep(image)
    return ["render", "nerf.pt", "--scene", "scene", "--split", "val", "-o", "scene/val", "--device", "cpu", "-q"]


def _hard_link(work: Path) -> list[str]:
    _keep(_scan(work))
    os.link(work / "scan.ply", work / "out.pt")
    return ["fit-sdf", "scan.ply", "-o", "out.pt", *TINY]


def _symlink_to_input(work: Path) -> list[str]:
    _keep(_scan(work))
    (work / "out.pt").symlink_to("scan.ply")
    return ["fit-sdf", "scan.ply", "-o", "out.pt", *TINY]


# ------------------------------------------------------------------------------------ links and special files


def _symlink_written_through(work: Path) -> list[str]:
    _scan(work)
    (work / "real").mkdir()
    (work / "real" / "model.pt").write_bytes(b"an old checkpoint")
    (work / "link.pt").symlink_to("real/model.pt")
    return ["fit-sdf", "scan.ply", "-o", "link.pt", *TINY]


def _check_written_through(work: Path, result) -> str | None:
    from recon3d.io.checkpoint import load_checkpoint

    link = work / "link.pt"
    if not link.is_symlink() or os.readlink(link) != "real/model.pt":
        return "the link was replaced"
    if load_checkpoint(work / "real" / "model.pt")["kind"] != "sdf":
        return "the target is not the new checkpoint"
    return _unchanged()(work, result)


def _link_to_stdout(work: Path) -> list[str]:
    """``-o dir/stdout`` → /proc/self/fd/1 (the runner's pipe)."""
    _model(work)
    (work / "dir").mkdir()
    (work / "dir" / "stdout").symlink_to("/proc/self/fd/1")
    return ["extract-mesh", "model.pt", "-o", "dir/stdout", "--format", "obj", "-r", "16", "--device", "cpu"]


def _check_stdout_empty(work: Path, result) -> str | None:
    if result.stdout:
        return f"{len(result.stdout)} characters written to stdout"
    return None if (work / "dir" / "stdout").is_symlink() else "the link was replaced"


def _fifo(work: Path) -> list[str]:
    _scan(work)
    os.mkfifo(work / "fifo.pt")
    return ["fit-sdf", "scan.ply", "-o", "fifo.pt", *ENDLESS]


def _device(work: Path) -> list[str]:
    _model(work)
    (work / "null.obj").symlink_to(os.devnull)
    return ["extract-mesh", "model.pt", "-o", "null.obj", "--device", "cpu"]


# ------------------------------------------------------------------------------------ fits check -o first


def _fit_to(output: str):
    def build(work: Path) -> list[str]:
        _scan(work)
        (work / "folder").mkdir()
        return ["fit-sdf", "scan.ply", "-o", output, *ENDLESS]

    return build


# ------------------------------------------------------------------------------------ locks and temporaries


def _holder_pid(work: Path) -> int:
    return int((work / "holder.pid").read_text())


def _locked(work: Path) -> list[str]:
    """A first fit-sdf (endless) holds model.pt's lock; the case is the second one."""
    _scan(work)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    holder = subprocess.Popen([sys.executable, "-m", "recon3d.cli", "fit-sdf", "scan.ply", "-o", "model.pt",
                               "--steps", "10000000", "--max-seconds", "120", "--batch", "64", "--device", "cpu",
                               "--quiet"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    (work / "holder.pid").write_text(str(holder.pid))
    lock, deadline = work / ".model.pt.lock", time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and holder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return ["fit-sdf", "scan.ply", "-o", "model.pt", *TINY]


def _check_locked(work: Path, result) -> str | None:
    pid = _holder_pid(work)
    alive = (work / ".model.pt.lock").exists()
    os.kill(pid, signal.SIGKILL)
    with_pid = f"pid {pid}" in result.stderr
    if (work / "model.pt").exists():
        return "model.pt was written"
    return None if alive and with_pid else "the holder's lock or pid is missing"


_KILLED_WRITER = """
import os, signal, sys
from recon3d.io.atomic import atomic_open, output_lock
with output_lock(sys.argv[1]):
    with atomic_open(sys.argv[1]) as handle:
        handle.write(b"x" * 1_000_000)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_run(work: Path) -> list[str]:
    """A writer killed (SIGKILL) mid-write leaves its temporary and lock file; the next run cleans up."""
    _scan(work)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, "model.pt"], cwd=work, env=env, check=False)
    if not list(work.glob(".model.pt.*.tmp")):
        raise RuntimeError("the killed writer left no temporary")
    return ["fit-sdf", "scan.ply", "-o", "model.pt", *TINY]


# ------------------------------------------------------------------------------------ demo, JSON


def _demo_over_user_files(work: Path) -> list[str]:
    (work / "demo").mkdir()
    (work / "demo" / "metrics.json").write_text("the user's own numbers\n")
    _keep(work / "demo" / "metrics.json")
    return ["demo", "-o", "demo", "--steps", "5", "--resolution", "16", "--device", "cpu"]


def _nan_history(work: Path) -> list[str]:
    import math

    import torch

    from recon3d.io.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(_model(work))
    checkpoint["train"]["history"][-1][1] = math.nan
    torch.save(checkpoint, work / "nan.pt")
    return ["info", "nan.pt", "--json"]


def _check_strict_json(work: Path, result) -> str | None:
    def refuse(constant: str):
        raise ValueError(constant)

    try:
        json.loads(result.stdout, parse_constant=refuse)
    except ValueError as exc:
        return f"not strict JSON: {exc}"
    return None


# ------------------------------------------------------------------------------------ option values


def _options(command: str, *options: str):
    def build(work: Path) -> list[str]:
        inputs = {"fit-sdf": lambda: ["scan.ply", "-o", "model.pt"], "eval": lambda: ["scan.ply", "scan.ply"],
                  "fit-nerf": lambda: [_scene(work).name, "-o", "model.pt"],
                  "extract-mesh": lambda: [_model(work).name, "-o", "mesh.obj"]}
        _scan(work)
        return [command, *inputs[command](), *options]

    return build


CASES: list[Case] = [
    Case("output is the input: fit-sdf scan -o scan", _same_scan, check=_unchanged("scan.ply")),
    Case("output is the input: fit-occupancy mesh -o mesh", _same_mesh, check=_unchanged("mesh.ply")),
    Case("output is the input: fit-nerf -o the scene's json", _same_scene_json,
         check=_unchanged("scene/transforms_train.json")),
    Case("output is the input: fit-nerf -o a scene image", _same_scene_image, check=_unchanged("scene/train/r_0.png")),
    Case("output is the input: extract-mesh m.pt -o m.pt", _same_model, check=_unchanged("model.pt")),
    Case("output is the input: render over an input image", _render_over_an_image,
         check=_unchanged("scene/val/val_000_r_0.png")),
    Case("output is a hard link to the input", _hard_link, check=_unchanged("scan.ply")),
    Case("output is a symlink to the input", _symlink_to_input, check=_unchanged("scan.ply")),
    Case("symlink output written through", _symlink_written_through, expect="ok", check=_check_written_through),
    Case("output links to /proc/self/fd/1", _link_to_stdout, check=_check_stdout_empty),
    Case("output is a FIFO", _fifo, bounded=True, timeout=60, check=_unchanged()),
    Case("output links to a device", _device, check=_unchanged()),
    Case("fit -o a folder", _fit_to("folder"), bounded=True, timeout=60, check=_absent("folder/model.pt")),
    Case("fit -o -", _fit_to("-"), bounded=True, timeout=60, check=_absent("-")),
    Case("fit -o model.ckpt", _fit_to("model.ckpt"), bounded=True, timeout=60, check=_absent("model.ckpt")),
    Case("fit -o in a missing folder", _fit_to("absent/model.pt"), bounded=True, timeout=60, check=_absent("absent")),
    Case("second run to a locked output", _locked, timeout=60, check=_check_locked),
    Case("temporary of a killed run removed", _killed_run, expect="ok", check=_unchanged()),
    Case("demo over the user's files", _demo_over_user_files, check=_unchanged("demo/metrics.json")),
    Case("info --json of a NaN history", _nan_history, expect="ok", check=_check_strict_json),
    Case("--seed 2**64", _options("fit-sdf", "--seed", str(2**64), *TINY), check=_absent("model.pt")),
    Case("--seed -1", _options("fit-sdf", "--seed", "-1", *TINY), check=_absent("model.pt")),
    Case("eval --seed -1", _options("eval", "--seed", "-1")),
    Case("eval --samples 10**9", _options("eval", "--samples", str(10**9))),
    Case("--lr 1e300", _options("fit-sdf", "--lr", "1e300", *TINY), check=_absent("model.pt")),
    Case("--lr nan", _options("fit-sdf", "--lr", "nan", *TINY), check=_absent("model.pt")),
    Case("--steps nan", _options("fit-sdf", "--steps", "nan"), check=_absent("model.pt")),
    Case("--steps abc", _options("fit-sdf", "--steps", "abc"), check=_absent("model.pt")),
    Case("--max-seconds inf", _options("fit-sdf", "--max-seconds", "inf", *TINY), check=_absent("model.pt")),
    Case("--batch 1e9", _options("fit-sdf", "--batch", "1e9"), check=_absent("model.pt")),
    Case("fit-nerf --batch 2**64", _options("fit-nerf", "--batch", str(2**64), *TINY[:2], *TINY[4:]),
         check=_absent("model.pt")),
    Case("extract-mesh --chunk 0", _options("extract-mesh", "--chunk", "0", "--device", "cpu"),
         check=_absent("mesh.obj")),
    Case("unknown option", _options("fit-sdf", "--stepz", "3"), check=_absent("model.pt")),
]
