"""Compares the Triton hash-grid kernels with the torch encoding; run in a process where
TRITON_INTERPRET=1 was set before Triton was imported (tests/test_hashgrid_kernels.py does so), it
prints one JSON object of relative errors (max |a − b| / max |b|) per case."""

from __future__ import annotations

import json
import os

import torch

from recon3d.fields.encodings import KERNEL_ENV, HashGridEncoding


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def both(enc: HashGridEncoding, fn):
    """fn(enc) on the torch path, then on the kernels."""
    os.environ[KERNEL_ENV] = "torch"
    reference = fn(enc)
    os.environ[KERNEL_ENV] = "triton"
    return reference, fn(enc)


def case(name: str, n_features: int, log2_table: int, active: int | None, table_dtype: str) -> dict[str, float]:
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=5, n_features=n_features, log2_table_size=log2_table, base_resolution=3,
                           max_resolution=70, init_scale=1.0, table_dtype=table_dtype)
    if active is not None:
        enc.set_active_levels(active)
    x = torch.rand(257, 3) * 2.4 - 1.2  # some points outside the cube, where ∂h/∂x is 0
    x[0] = torch.tensor([1.0, -1.0, 0.0])  # on the faces
    grad_out = torch.randn(257, enc.out_dim)
    grad_jac = torch.randn(257, enc.out_dim, 3)

    def plain(e):
        xi = x.clone().requires_grad_(True)
        out = e(xi)
        gx, gt = torch.autograd.grad((out * grad_out).sum(), [xi, e.embeddings])
        return out.detach(), gx, gt

    def with_jacobian(e):
        out, jac = e.forward_with_jacobian(x)
        (gt,) = torch.autograd.grad((out * grad_out).sum() + (jac * grad_jac).sum(), e.embeddings)
        return out.detach(), jac.detach(), gt

    ref, got = both(enc, plain)
    ref_j, got_j = both(enc, with_jacobian)
    levels = [bool(d) for d in enc.dense]
    return {"case": name, "dense_levels": sum(levels), "hashed_levels": len(levels) - sum(levels),
            "out": relative(got[0], ref[0]), "grad_x": relative(got[1], ref[1]),
            "grad_table": relative(got[2], ref[2]), "jac_out": relative(got_j[0], ref_j[0]),
            "jacobian": relative(got_j[1], ref_j[1]), "jac_grad_table": relative(got_j[2], ref_j[2])}


def main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    cases = [case("dense+hashed F2", 2, 10, None, "float32"), case("all dense F2", 2, 20, None, "float32"),
             case("all hashed F4", 4, 5, None, "float32"), case("coarse-to-fine 2 of 5", 2, 10, 2, "float32"),
             case("F1", 1, 10, None, "float32"), case("fp16 table", 2, 10, None, "float16"),
             case("bf16 table", 2, 10, None, "bfloat16")]
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
