"""The Triton ray-marching kernels against the torch marchers, run by Triton's CPU interpreter (skipped
where Triton is not installed; on a GPU the same kernels are compiled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

CHECKS = Path(__file__).with_name("march_kernel_checks.py")


def run_checks(*args: str, interpret: bool) -> list:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, str(CHECKS), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kernels_march_the_same_samples_as_torch():
    """Variable-size and fixed-size marching, with overflow: the same samples, intervals and flags."""
    rows = run_checks(interpret=True)
    assert len(rows) == 3
    for row in rows:
        assert row["samples_torch"] == row["samples_triton"] > 1000, row
        assert row["differ"] == 0.0 and row["interval"] == 0.0, row
        assert row["fixed_equal"] and row["overflow_equal"] and row["overflow_fits"] > 0, row


def test_kernels_compile_for_hopper():
    compiled = run_checks("--compile", interpret=False)
    assert len(compiled) == 2 and all(line.endswith(" B") for line in compiled), compiled
