"""Forward + backward of fit-nerf's two MLPs (instant-ngp's widths) on a GPU: torch's layers in float32 and
in TF32 against the fused Triton kernels (recon3d.fields.mlp_triton), at one training step's sample count;
the largest relative error of each against a float64 reference.

    python benchmarks/mlp_speed.py            # needs a CUDA device
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hashgrid_kernels import timed as cuda_seconds  # noqa: E402  (this folder is on sys.path as a script)

from recon3d.fields.mlp import MLP  # noqa: E402
from recon3d.fields.mlp_triton import KERNEL_ENV  # noqa: E402

SHAPES = {"density 32→64→16": (32, 16, 1), "colour 32→64→64→3": (32, 3, 2)}


def run(mlp: MLP, x: torch.Tensor, gy: torch.Tensor) -> list[torch.Tensor]:
    xi = x.detach().requires_grad_(True)
    y = mlp(xi)
    grads = torch.autograd.grad((y * gy).sum(), [xi, *mlp.parameters()])
    return [y.detach(), *grads]


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` on the GPU (CUDA events; hashgrid_kernels.py's timer)."""
    return 1e3 * cuda_seconds(fn, repeats)


def sweep(rows: int, repeats: int) -> None:
    """Forward and backward apart for each kernel setting (block rows, warps, bfloat16 operands)."""
    from recon3d.fields import mlp_triton

    device = torch.device("cuda")
    print("| MLP | block | warps fwd/bwd | operands | forward ms | backward ms | max rel. error vs float64 |")
    print("|---|---|---|---|---|---|---|")
    for name, (n_in, n_out, n_layers) in SHAPES.items():
        torch.manual_seed(0)
        mlp = MLP(n_in, n_out, hidden=64, n_layers=n_layers, activation="relu").to(device)
        x = torch.randn(rows, n_in, device=device)
        gy = torch.randn(rows, n_out, device=device)
        reference = run(mlp.double(), x.double(), gy.double())
        mlp.float()
        mlp.fused = True
        for block, forward_warps, backward_warps, half in itertools.product((64, 128), (4,), (4, 8), (False, True)):
            mlp_triton.BLOCK_M, mlp_triton.FORWARD_WARPS = block, forward_warps
            mlp_triton.BACKWARD_WARPS, mlp_triton.HALF = backward_warps, half
            try:
                got = run(mlp, x, gy)
                xi = x.detach().requires_grad_(True)
                forward = timed(lambda m=mlp, a=xi: m(a), repeats)
                y = mlp(xi)
                backward = timed(lambda o=y, g=gy, a=xi, m=mlp: torch.autograd.grad(o, [a, *m.parameters()], g,
                                                                                    retain_graph=True), repeats)
            except Exception as exc:  # a setting that does not compile or run: say so, go on
                print(f"| {name} | {block} | {forward_warps}/{backward_warps} | {'bf16' if half else 'tf32'} | "
                      f"failed: {type(exc).__name__} |")
                continue
            error = max(float((g.double() - r).abs().max() / r.abs().max()) for g, r in zip(got, reference))
            print(f"| {name} | {block} | {forward_warps}/{backward_warps} | {'bf16' if half else 'tf32'} | "
                  f"{forward:.3f} | {backward:.3f} | {error:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=288 * 1024)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--sweep", action="store_true", help="time the kernels' settings, forward and backward")
    args = parser.parse_args()
    if args.sweep:
        sweep(args.rows, args.repeats)
        return
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.rows} rows, forward + backward")
    print("| MLP | path | ms | max rel. error vs float64 |\n|---|---|---|---|")
    for name, (n_in, n_out, n_layers) in SHAPES.items():
        torch.manual_seed(0)
        mlp = MLP(n_in, n_out, hidden=64, n_layers=n_layers, activation="relu").to(device)
        x = torch.randn(args.rows, n_in, device=device)
        gy = torch.randn(args.rows, n_out, device=device)
        reference = run(mlp.double(), x.double(), gy.double())
        mlp.float()
        for path in ("torch fp32", "torch tf32", "fused"):
            mlp.fused = path == "fused"
            os.environ[KERNEL_ENV] = "triton"
            torch.backends.cuda.matmul.allow_tf32 = path == "torch tf32"
            got = run(mlp, x, gy)
            error = max(float((g.double() - r).abs().max() / r.abs().max()) for g, r in zip(got, reference))
            ms = timed(lambda m=mlp, a=x, g=gy: run(m, a, g), args.repeats)
            print(f"| {name} | {path} | {ms:.3f} | {error:.1e} |")
        torch.backends.cuda.matmul.allow_tf32 = False


if __name__ == "__main__":
    main()
