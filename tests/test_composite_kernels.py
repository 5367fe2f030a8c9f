"""The Triton compositing kernels against the torch path, run by Triton's CPU interpreter (skipped where
Triton is not installed; tests/composite_kernel_checks.py --device cuda runs them compiled)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_check_runner import run_checks

pytest.importorskip("triton")

CHECKS = Path(__file__).with_name("composite_kernel_checks.py")


def test_fused_compositing_matches_the_torch_path():
    """rgb, opacity and the gradients of σ and colour on rays with no, one and 200 samples and spare slots
    that no ray owns (their gradients stay 0)."""
    errors = run_checks(CHECKS, interpret=True)
    assert errors.pop("spare_slot_gradients") == 0.0
    assert all(value < 1e-5 for value in errors.values()), errors


def test_kernels_compile_for_hopper():
    compiled = run_checks(CHECKS, "--compile", interpret=False)
    assert len(compiled) == 2 and all(line.endswith(" B") for line in compiled), compiled
