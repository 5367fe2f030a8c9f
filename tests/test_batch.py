"""Many inputs: expanding a pattern or folder, naming outputs, sharing by rank, running with skips
and failures (recon3d.batch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon3d.batch import expand_inputs, output_names, run_all, share, summary_line
from recon3d.errors import Recon3dError


def _touch(path: Path, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_expand_pattern_and_folder(tmp_path):
    for name in ("b.ply", "a.ply", "c.txt", ".hidden.ply"):
        _touch(tmp_path / name)
    takes = lambda p: p.suffix == ".ply"  # noqa: E731
    assert [p.name for p in expand_inputs(str(tmp_path / "*.ply"), takes)] == ["a.ply", "b.ply"]
    assert [p.name for p in expand_inputs(str(tmp_path), takes)] == ["a.ply", "b.ply"]
    with pytest.raises(Recon3dError, match="no input"):
        expand_inputs(str(tmp_path / "*.obj"), takes)
    with pytest.raises(Recon3dError, match="not a folder"):
        expand_inputs(str(tmp_path / "missing"), takes)


def test_output_names_never_collide(tmp_path):
    inputs = [_touch(tmp_path / "a" / "x.ply"), _touch(tmp_path / "b" / "x.ply"), _touch(tmp_path / "y.ply")]
    names = [p.name for p in output_names(inputs, tmp_path / "out", ".pt")]
    assert names == ["a-x.pt", "b-x.pt", "y.pt"]
    assert len(set(names)) == len(names)


def test_share_is_balanced_and_deterministic():
    sizes = [100, 1, 1, 50, 49, 1]
    owner = share(sizes, 2)
    assert owner == share(sizes, 2)
    loads = [sum(s for s, o in zip(sizes, owner) if o == r) for r in range(2)]
    assert max(loads) - min(loads) <= 3
    assert share(sizes, 1) == [0] * len(sizes)
    assert sorted(set(share(sizes, 8))) == list(range(6))  # more ranks than inputs: one each


def test_run_all_skips_done_reports_failures_and_goes_on(tmp_path):
    inputs = [_touch(tmp_path / f"{name}.ply") for name in ("a", "bad", "c")]
    outputs = output_names(inputs, tmp_path / "out", ".txt")
    (tmp_path / "out").mkdir()
    outputs[2].write_text("already there")

    def work(source: Path, output: Path) -> dict:
        if source.stem == "bad":
            raise Recon3dError(f"{source}: not a point cloud")
        output.write_text("made")
        return {"points": 3}

    seen = []
    outcomes = run_all(list(zip(inputs, outputs)), work, done=Path.exists, on_outcome=seen.append)
    assert [o.status for o in outcomes] == ["done", "failed", "skipped"] == [o.status for o in seen]
    assert "not a point cloud" in outcomes[1].error
    assert outcomes[0].record()["points"] == 3
    assert outputs[0].read_text() == "made" and outputs[2].read_text() == "already there"
    assert summary_line(outcomes, 60.0).startswith("1 done, 1 skipped, 1 failed in 1:00")
    again = run_all(list(zip(inputs, outputs)), work, done=Path.exists)
    assert [o.status for o in again] == ["skipped", "failed", "skipped"]


def test_ranks_split_the_inputs_without_overlap(tmp_path):
    inputs = [_touch(tmp_path / f"{i}.ply", size=10 + i) for i in range(7)]
    jobs = list(zip(inputs, output_names(inputs, tmp_path / "out", ".txt")))
    parts = [run_all(jobs, lambda s, o: {}, done=lambda o: False, rank=r, world=3) for r in range(3)]
    ran = [o.input for part in parts for o in part]
    assert sorted(ran) == sorted(str(p) for p in inputs)
    assert all(part for part in parts)
