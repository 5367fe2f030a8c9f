"""Many inputs in one fit command (a folder of inputs or a glob pattern): one checkpoint per input in the -o
folder, a bad input reported while the others go on, a rerun that skips the finished ones, and under torchrun
the inputs shared out by rank (recon3d.batch, recon3d.cli._run_many).

Tiny fits on the CPU (5 steps): these tests check the plumbing, not the fits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import assert_one_error_line, run

from recon3d import distributed
from recon3d.batch import finished_checkpoint, input_size, share
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.pointcloud import write_point_cloud
from recon3d.io.scene import distinct_scenes, is_scene_folder
from recon3d.launch import missing_input
from recon3d.synthetic import sample_sphere, sample_torus, write_spheres_scene
from recon3d.types import PointCloud

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--steps", "5", "--batch", "256", "--device", "cpu"]
GOOD = {"ball.xyz": "ball", "big_ball.PLY": "big_ball", "ring.ply": "ring", "cube.xyz": "cube"}
BAD = "broken.ply"


def _cube(n: int, seed: int) -> PointCloud:
    """Points on the faces of the cube [-1, 1]^3 with their outward normals."""
    rng = np.random.default_rng(seed)
    axis = rng.integers(0, 3, n)
    sign = rng.choice([-1.0, 1.0], n)
    points = rng.uniform(-1.0, 1.0, (n, 3))
    points[np.arange(n), axis] = sign
    normals = np.zeros((n, 3), np.float32)
    normals[np.arange(n), axis] = sign
    return PointCloud(points=points, normals=normals)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of four small point clouds, one file with a point-cloud suffix that is none, and files the
    command does not read (a note, a hidden file)."""
    folder = tmp_path_factory.mktemp("many") / "scans"
    folder.mkdir()
    write_point_cloud(folder / "ball.xyz", sample_sphere(300, radius=1.0, seed=1))
    write_point_cloud(folder / "big_ball.PLY", sample_sphere(500, radius=3.0, center=(1.0, 2.0, 3.0), seed=2))
    write_point_cloud(folder / "ring.ply", sample_torus(400, seed=3))
    write_point_cloud(folder / "cube.xyz", _cube(350, seed=4))
    (folder / BAD).write_bytes(b"ply\nthis is not a point cloud\n\x00\x01garbage")
    (folder / "notes.md").write_text("not an input")
    (folder / ".hidden.ply").write_text("skipped: hidden")
    return folder


def _lines(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert all(isinstance(record, dict) for record in records)
    return records


def _by_input(records: list[dict]) -> dict[str, dict]:
    names = [Path(record["input"]).name for record in records]
    assert len(names) == len(set(names)), f"an input reported twice: {names}"
    return dict(zip(names, records))


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _check_first_run(records: list[dict], out: Path, ranks: set[int]) -> None:
    found = _by_input(records)
    assert sorted(found) == sorted([*GOOD, BAD])
    for name, stem in GOOD.items():
        record = found[name]
        assert record["status"] == "done", record
        assert record["output"] == str(out / f"{stem}.sdf.pt") and record["steps"] == 5
        assert record["rank"] in ranks
    assert found[BAD]["status"] == "failed" and BAD in found[BAD]["error"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}.sdf.pt" for stem in GOOD.values())
    for stem in GOOD.values():
        checkpoint = load_checkpoint(out / f"{stem}.sdf.pt")
        assert checkpoint["train"]["complete"] and checkpoint["train"]["steps"] == 5
        assert finished_checkpoint(out / f"{stem}.sdf.pt", ("sdf",))
    points = {name: load_checkpoint(out / f"{stem}.sdf.pt")["train"]["points"] for name, stem in GOOD.items()}
    assert points == {"ball.xyz": 300, "big_ball.PLY": 500, "ring.ply": 400, "cube.xyz": 350}  # each its own


def _check_rerun(records: list[dict], out: Path, before: dict[str, int]) -> None:
    found = _by_input(records)
    assert sorted(found) == sorted([*GOOD, BAD])
    assert all(found[name]["status"] == "skipped" for name in GOOD), records
    assert found[BAD]["status"] == "failed"
    assert _mtimes(out) == before  # nothing rewritten


# ------------------------------------------------------------------------------------------ one process


def test_a_folder_fits_every_input_reports_the_bad_one_and_a_rerun_skips(inputs, tmp_path):
    out = tmp_path / "models"  # created by the command
    result = run("fit-sdf", inputs, "-o", out, *TINY, "--json")
    assert result.exit_code == 1, result.stderr
    _check_first_run(_lines(result.stdout), out, {0})
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and BAD in errors[0], result.stderr
    assert "fit-sdf: 4 done, 0 skipped, 1 failed in " in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr

    before = _mtimes(out)
    again = run("fit-sdf", inputs, "-o", out, *TINY, "--json")
    assert again.exit_code == 1
    _check_rerun(_lines(again.stdout), out, before)
    assert "fit-sdf: 0 done, 4 skipped, 1 failed in " in again.stderr

    forced = run("fit-sdf", str(inputs / "ball.*"), "-o", out, *TINY, "--force", "-q")
    assert forced.exit_code == 0, forced.stderr
    assert forced.stdout == f"{out / 'ball.sdf.pt'}\n" and forced.stderr == ""
    assert (out / "ball.sdf.pt").stat().st_mtime_ns != before["ball.sdf.pt"]


def test_a_pattern_fits_what_it_matches_and_prints_the_written_paths(inputs, tmp_path):
    out = tmp_path / "xyz"
    result = run("fit-sdf", str(inputs / "*.xyz"), "-o", out, *TINY)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(out / "ball.sdf.pt"), str(out / "cube.sdf.pt")]
    assert sorted(p.name for p in out.iterdir()) == ["ball.sdf.pt", "cube.sdf.pt"]
    assert "fit-sdf: 2 done, 0 skipped, 0 failed in " in result.stderr


def test_a_file_as_output_folder_and_other_mistakes_are_one_error_line(inputs, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert_one_error_line(run("fit-sdf", inputs, "-o", taken, *TINY), f"-o {taken}: is a file", "folder")
    assert taken.read_text() == "a file"
    assert_one_error_line(run("fit-sdf", inputs, "-o", tmp_path / "model.pt", *TINY), "give a folder")
    assert_one_error_line(run("fit-sdf", inputs, "-o", tmp_path / "x", "--plot", tmp_path / "a.png", *TINY),
                          "--plot")
    assert_one_error_line(run("fit-sdf", str(inputs / "*.stl"), "-o", tmp_path / "x", *TINY),
                          "matches no input", "fit-sdf reads point clouds")
    assert_one_error_line(run("fit-sdf", inputs, "-o", tmp_path / "x", "--lr", "100", *TINY), "--lr")
    assert not (tmp_path / "x").exists() and not (tmp_path / "model.pt").exists()


def test_folders_and_patterns_are_told_from_scenes(inputs, tmp_path):
    scene = write_spheres_scene(tmp_path / "scenes" / "spheres", n_train=2, n_val=1, size=8)
    assert is_scene_folder(scene) and not is_scene_folder(inputs) and not is_scene_folder(tmp_path / "scenes")
    jsons = sorted(scene.glob("transforms_*.json"))
    assert len(jsons) >= 2
    assert distinct_scenes([scene, *jsons]) == [scene]
    assert distinct_scenes(jsons) == jsons[:1]
    # the console entry's fast check leaves folders and patterns to the command
    assert missing_input(["fit-sdf", str(inputs)]) is None
    assert missing_input(["fit-sdf", str(inputs / "*.ply")]) is None
    assert missing_input(["fit-nerf", str(tmp_path / "scenes")]) is None


def test_fit_nerf_on_a_folder_of_scenes_names_each_after_its_folder(tmp_path):
    scenes = tmp_path / "scenes"
    for name in ("a", "b"):
        write_spheres_scene(scenes / name, n_train=2, n_val=1, size=8)
    (scenes / "not_a_scene").mkdir()
    out = tmp_path / "radiance"
    result = run("fit-nerf", scenes, "-o", out, "--steps", 2, "--batch", 64, "--device", "cpu", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    records = _lines(result.stdout)
    assert [(Path(r["input"]).name, r["status"]) for r in records] == [("a", "done"), ("b", "done")]
    assert sorted(p.name for p in out.iterdir()) == ["a.nerf.pt", "b.nerf.pt"]
    # a pattern over each scene's jsons is still one fit per scene
    again = run("fit-nerf", str(scenes / "*" / "transforms_*.json"), "-o", out, "--json", "-q")
    assert again.exit_code == 0, again.stderr
    assert [(Path(r["output"]).name, r["status"]) for r in _lines(again.stdout)] == [("a.nerf.pt", "skipped"),
                                                                                      ("b.nerf.pt", "skipped")]


def test_alone_hides_the_process_group():
    assert not distributed.active() and distributed.leader()
    with distributed.alone():
        assert not distributed.active() and distributed.leader()
    assert distributed.gather(1) == [1]


# ------------------------------------------------------------------------------------------ torchrun

needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def _torchrun(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "recon3d", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@needs_gloo
def test_two_ranks_share_the_inputs_and_a_rerun_skips(inputs, tmp_path):
    out = tmp_path / "ranked"
    done = _torchrun(["fit-sdf", inputs, "-o", out, *TINY, "--json"], tmp_path)
    assert done.returncode == 1, done.stderr[-4000:]
    records = _lines(done.stdout)
    assert len(records) == 5, done.stdout  # each input once, from the rank that had it
    _check_first_run(records, out, {0, 1})
    ranks = {Path(r["input"]).name: r["rank"] for r in records}
    assert set(ranks.values()) == {0, 1}  # both ranks worked, on disjoint shares
    names = sorted([*GOOD, BAD])  # the plan every rank computes: balanced by size, deterministic
    plan = share([input_size(inputs / name) for name in names], 2)
    assert [ranks[name] for name in names] == plan
    assert sum(line.startswith(f"error: {inputs / BAD}") for line in done.stderr.splitlines()) == 1
    summaries = [line for line in done.stderr.splitlines() if " done, " in line]
    assert summaries == [summaries[0]] and "fit-sdf: 4 done, 0 skipped, 1 failed in " in summaries[0]

    before = _mtimes(out)
    again = _torchrun(["fit-sdf", inputs, "-o", out, *TINY, "--json"], tmp_path)
    assert again.returncode == 1, again.stderr[-4000:]
    _check_rerun(_lines(again.stdout), out, before)
    assert "fit-sdf: 0 done, 4 skipped, 1 failed in " in again.stderr


@needs_gloo
def test_one_input_under_two_ranks_is_one_data_parallel_fit(inputs, tmp_path):
    out = tmp_path / "ring.pt"
    done = _torchrun(["fit-sdf", inputs / "ring.ply", "-o", out, *TINY, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)  # one JSON object: rank 0 alone prints
    assert summary["checkpoint"] == str(out) and summary["steps"] == 5
    assert done.stderr.count("fitted in ") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.pt"]
    assert load_checkpoint(out)["train"]["complete"]
