"""The console entry fails on a missing input before importing torch (recon3d.launch)."""

from __future__ import annotations

import subprocess
import sys

from recon3d.launch import missing_input


def test_missing_input_is_caught_only_where_it_is_unambiguous(tmp_path):
    there = tmp_path / "scan.ply"
    there.write_text("ply")
    assert missing_input(["fit-sdf", str(tmp_path / "nope.ply")]) == f"error: {tmp_path / 'nope.ply'}: no such file"
    assert missing_input(["fit-nerf", str(tmp_path / "scene")]).endswith("no such file or folder")
    assert missing_input(["fit-sdf", str(there)]) is None
    assert missing_input(["fit-sdf", str(tmp_path / "*.ply")]) is None  # a pattern: the command decides
    assert missing_input(["fit-sdf", "--steps", "10"]) is None
    assert missing_input(["demo", "nope"]) is None
    assert missing_input([]) is None


def test_a_missing_input_fails_without_importing_torch(tmp_path):
    code = ("import sys; sys.argv = ['recon3d', 'fit-sdf', 'missing.ply']\n"
            "import recon3d.launch\n"
            "try:\n    recon3d.launch.main()\nexcept SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["1", "False"]
    assert done.stderr.strip().splitlines() == ["error: missing.ply: no such file"]
