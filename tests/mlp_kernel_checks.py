"""Compares the fused Triton MLP (recon3d.fields.mlp_triton) with torch's layers; run in a process where
TRITON_INTERPRET=1 was set before Triton was imported (tests/test_mlp_kernels.py does so), it prints one
JSON object per case: the largest relative error (max |a − b| / max |b|) of the output and of each gradient.
With ``--device cuda`` the same cases run compiled on a GPU (TF32 products there); ``--compile`` compiles the
kernels for sm_90 without a GPU and reports ptxas's register and spill figures."""

from __future__ import annotations

import torch
from kernel_check_runner import check_main, compile_sm90

from recon3d.fields.mlp import MLP

#: (name, in, hidden, out, hidden layers, rows)
CASES = [("density 32-64-16", 32, 64, 16, 1, 300), ("colour 32-64-64-3", 32, 64, 3, 2, 300),
         ("odd widths 19-24-5", 19, 24, 5, 2, 131), ("one row", 32, 64, 16, 1, 1), ("no rows", 32, 64, 3, 2, 0)]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0


def case(name: str, n_in: int, hidden: int, n_out: int, layers: int, rows: int, device: str) -> dict:
    torch.manual_seed(0)
    mlp = MLP(n_in, n_out, hidden=hidden, n_layers=layers, activation="relu").to(device)
    x = torch.randn(rows, n_in, device=device)
    gy = torch.randn(rows, n_out, device=device)

    def run(fused: bool) -> list[torch.Tensor]:
        mlp.fused = fused
        xi = x.clone().requires_grad_(True)
        y = mlp(xi)
        grads = torch.autograd.grad((y * gy).sum(), [xi, *mlp.parameters()], allow_unused=False)
        return [y.detach(), *grads]

    from recon3d.fields import mlp_triton

    assert mlp_triton.supported(x, list(mlp.layers)), "the fused kernels did not engage"
    ref, got = run(False), run(True)
    names = ["out", "grad_x"] + [f"grad_{n}" for n, _ in mlp.named_parameters()]
    return {"case": name, **{n: relative(g, r) for n, g, r in zip(names, got, ref)}}


def compile_for_hopper() -> list[str]:
    """Compile both kernels for sm_90 with Triton's bundled compiler (no GPU): catches what the interpreter
    lets through."""
    from recon3d.fields import mlp_triton as kernels

    weights = {f"{kind}{i}": "*fp32" for i in range(3) for kind in ("w", "b")}
    sizes = {"n_rows": "i32", "n_in": "i32", "n_hidden": "i32", "n_out": "i32"}
    forward = {"x_ptr": "*fp32", **weights, "y_ptr": "*fp32", **sizes}
    backward = {"x_ptr": "*fp32", **weights, "gy_ptr": "*fp32", "gx_ptr": "*fp32", "partial_ptr": "*fp32", **sizes,
                "n_blocks": "i32", "partial_width": "i32"}
    done = []
    for three in (False, True):
        for fn, signature, extra in ((kernels._mlp_forward_kernel, forward, {}),
                                     (kernels._mlp_backward_kernel, backward, {"NEED_X": True})):
            constexprs = {"IN": 32, "HID": 64, "OUT": 16, "THREE": three, "HALF": kernels.HALF,
                          "BLOCK": kernels.BLOCK_M, **extra}
            compiled = compile_sm90(fn, signature, constexprs,
                                    kernels.BACKWARD_WARPS if extra else kernels.FORWARD_WARPS)
            done.append(f"{fn.__name__} THREE={three}: {len(compiled.asm['cubin'])} B")
    return done


def checks(device: str) -> list[dict]:
    """Every case on ``device``."""
    return [case(*spec, device=device) for spec in CASES]


if __name__ == "__main__":
    check_main(compile_for_hopper, checks)
