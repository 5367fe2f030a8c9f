"""The Triton hash-grid kernels against the torch encoding, run by Triton's CPU interpreter (skipped
where Triton is not installed; on a GPU the same kernels are compiled)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kernel_check_runner import run_checks

pytest.importorskip("triton")

CHECKS = Path(__file__).with_name("hashgrid_kernel_checks.py")


@pytest.fixture(scope="module")
def errors() -> dict[str, dict[str, float]]:
    return {row["case"]: row for row in run_checks(CHECKS, interpret=True)}


def test_every_level_type_is_covered(errors):
    assert errors["dense+hashed F2"]["dense_levels"] >= 1 and errors["dense+hashed F2"]["hashed_levels"] >= 1
    assert errors["all dense F2"]["hashed_levels"] == 0
    assert errors["all hashed F4"]["dense_levels"] == 0


@pytest.mark.parametrize("name", ["dense+hashed F2", "all dense F2", "all hashed F4", "coarse-to-fine 2 of 5", "F1"])
def test_fp32_kernels_match_torch(errors, name):
    row = errors[name]
    for key in ("out", "grad_x", "grad_table", "jac_out", "jacobian", "jac_grad_table"):
        assert row[key] < 1e-5, (name, key, row[key])


@pytest.mark.parametrize(("name", "tolerance"), [("fp16 table", 2e-3), ("bf16 table", 1e-2)])
def test_half_tables_are_close(errors, name, tolerance):
    row = errors[name]
    assert row["out"] < tolerance and row["jacobian"] < tolerance, row
    assert row["grad_table"] < 1e-5, row  # the gradient's weights do not read the table


def test_kernels_compile_for_hopper():
    """The interpreter accepts code the compiler rejects (a constexpr reassigned in an unrolled loop did
    once): compile every kernel variant the encoder launches to sm_90 machine code, no GPU needed."""
    compiled = run_checks(CHECKS, "--compile", interpret=False)
    assert len(compiled) == 13 and all(line.endswith(" B") for line in compiled), compiled
    backward = [line for line in compiled if line.startswith("_backward_kernel")]
    vector = {"'F': 2": "red.relaxed.gpu.global.add.v2.f32", "'F': 4": "red.relaxed.gpu.global.add.v4.f32"}
    for line in backward:  # one vector reduction per row where asked for, scalar atomics otherwise
        wanted = next(op for key, op in vector.items() if key in line) if "'VECTOR_ADD': True" in line \
            else "red.global.gpu.relaxed.add.f32"
        assert f"['{wanted}']" in line, line


def test_the_cache_key_is_computed_in_the_background():
    """start_kernel_key leaves Triton's cache key computed (and cached) by a thread, so the first launch
    in the main thread finds it; resolving a device starts nothing (only work that will launch the kernels
    does: a fit on a GPU, a command that trains or renders)."""
    code = (
        "import threading\n"
        "from triton.runtime.cache import triton_key\n"
        "from recon3d.device import resolve_device\n"
        "resolve_device('cpu')\n"
        "print(triton_key.cache_info().currsize, [t.name for t in threading.enumerate() if t.name == 'triton-key'])\n"
        "from recon3d.device import start_kernel_key\n"
        "start_kernel_key()\n"
        "[t.join() for t in threading.enumerate() if t.name == 'triton-key']\n"
        "print(triton_key.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["0", "[]", "1"]


def test_a_fresh_process_extracts_with_the_torch_encoding(monkeypatch):
    """extract-mesh's one-shot evaluation: in a process that has not run the kernels, every hash grid of the
    loaded field takes the torch path (their start-up would not pay), except for a dense lattice too large;
    once the kernels have run (a fit in the same process) they keep serving it."""
    import torch

    from recon3d.fields import build_field, hashgrid_triton
    from recon3d.fields.encodings import HashGridEncoding
    from recon3d.mesh.from_field import COLD_TORCH_POINTS, MeshOptions, cold_kernels

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the kernels "can run" on this CPU
    cpu = torch.device("cpu")
    config = {"encoding": {"type": "hashgrid", "n_levels": 4, "log2_table_size": 10, "max_resolution": 64},
              "mlp": {"hidden": 16, "n_layers": 1}}
    x = torch.rand(16, 3) * 2 - 1

    def grids(options: MeshOptions, launched: bool) -> list[str]:
        monkeypatch.setattr(hashgrid_triton, "launched", launched)
        field = build_field("sdf", config)
        cold_kernels(field, options, cpu)
        return [module.kernel for module in field.modules() if isinstance(module, HashGridEncoding)]

    assert grids(MeshOptions(resolution=2048), launched=False) == ["torch"]
    big = round(COLD_TORCH_POINTS ** (1 / 3)) + 2
    assert grids(MeshOptions(resolution=big, method="dense"), launched=False) == ["auto"]
    assert grids(MeshOptions(resolution=128, method="dense"), launched=False) == ["torch"]
    assert grids(MeshOptions(resolution=256), launched=True) == ["auto"]
    encoding = HashGridEncoding(n_levels=4, log2_table_size=10, max_resolution=64)
    assert encoding._kernels(x) is hashgrid_triton
    encoding.kernel = "torch"
    assert encoding._kernels(x) is None
