"""The Triton ray-marching kernels against the torch marchers, run by Triton's CPU interpreter (skipped
where Triton is not installed; on a GPU the same kernels are compiled)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_check_runner import run_checks

pytest.importorskip("triton")

CHECKS = Path(__file__).with_name("march_kernel_checks.py")


def test_kernels_march_the_same_samples_as_torch():
    """Variable-size and fixed-size marching, with overflow: the same samples, intervals and flags."""
    rows = run_checks(CHECKS, interpret=True)
    assert len(rows) == 3
    for row in rows:
        assert row["samples_torch"] == row["samples_triton"] > 1000, row
        assert row["differ"] == 0.0 and row["interval"] == 0.0, row
        assert row["fixed_equal"] and row["overflow_equal"] and row["overflow_fits"] > 0, row


def test_kernels_compile_for_hopper():
    compiled = run_checks(CHECKS, "--compile", interpret=False)
    assert len(compiled) == 2 and all(line.endswith(" B") for line in compiled), compiled
