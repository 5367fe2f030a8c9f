"""The fused Triton MLP against torch's layers, run by Triton's CPU interpreter (skipped where Triton is not
installed; on a GPU the same kernels are compiled: tests/mlp_kernel_checks.py --device cuda)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kernel_check_runner import run_checks

from recon3d.fields.mlp import MLP
from recon3d.fields.radiance import RadianceField, radiance_preset

pytest.importorskip("triton")

CHECKS = Path(__file__).with_name("mlp_kernel_checks.py")


@pytest.fixture(scope="module")
def errors() -> dict[str, dict[str, float]]:
    return {row["case"]: row for row in run_checks(CHECKS, interpret=True)}


@pytest.mark.parametrize("name", ["density 32-64-16", "colour 32-64-64-3", "odd widths 19-24-5", "one row",
                                  "no rows"])
def test_fused_mlp_matches_torch(errors, name):
    """Output, input gradient and every weight and bias gradient, float32 products in the interpreter;
    padded widths, rows not a multiple of the block, several programs summing their gradients."""
    row = errors[name]
    assert len(row) >= 6 and all(value < 1e-5 for key, value in row.items() if key != "case"), row


def test_kernels_compile_for_hopper():
    compiled = run_checks(CHECKS, "--compile", interpret=False)
    assert len(compiled) == 4 and all(line.endswith(" B") for line in compiled), compiled


def test_only_mlps_the_kernels_can_run_are_fused(monkeypatch):
    from recon3d.fields import mlp_triton

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.zeros(4, 8)
    layers = list(MLP(8, 3, hidden=16, n_layers=2, activation="relu").layers)
    assert mlp_triton.supported(x, layers)
    assert not mlp_triton.supported(x.double(), layers)
    assert not mlp_triton.supported(x, list(MLP(8, 3, hidden=16, n_layers=3, activation="relu").layers))
    assert not mlp_triton.supported(torch.zeros(4, 200), list(MLP(200, 3, hidden=16, n_layers=1).layers))
    uneven = [torch.nn.Linear(8, 16), torch.nn.Linear(16, 32), torch.nn.Linear(32, 3)]
    assert not mlp_triton.supported(x, uneven)
    monkeypatch.setenv(mlp_triton.KERNEL_ENV, "torch")
    assert not mlp_triton.supported(x, layers)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.delenv(mlp_triton.KERNEL_ENV)
    assert not mlp_triton.supported(x, layers)  # a CPU tensor without the interpreter
    softplus = MLP(8, 3, hidden=16, n_layers=2, activation="softplus")
    softplus.fused = True
    assert not softplus._fusable(x)


def test_the_fast_radiance_field_fuses_its_mlps_and_nothing_else_does():
    fast = RadianceField(**radiance_preset("fast"))
    paper = RadianceField(**radiance_preset("paper"))
    assert fast.trunk.mlp.fused and fast.color_mlp.fused
    assert not paper.color_mlp.fused and not MLP(3, 1).fused
