"""Compares the Triton hash-grid kernels with the torch encoding; run in a process where
TRITON_INTERPRET=1 was set before Triton was imported (tests/test_hashgrid_kernels.py does so), it
prints one JSON object of relative errors (max |a − b| / max |b|) per case. With ``--device cuda`` the
same cases run compiled on a GPU (no interpreter)."""

from __future__ import annotations

import os
import re

import torch
from kernel_check_runner import check_main, compile_sm90

from recon3d.fields.encodings import KERNEL_ENV, HashGridEncoding


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def both(enc: HashGridEncoding, fn):
    """fn(enc) on the torch path, then on the kernels."""
    os.environ[KERNEL_ENV] = "torch"
    reference = fn(enc)
    os.environ[KERNEL_ENV] = "triton"
    return reference, fn(enc)


def case(name: str, n_features: int, log2_table: int, active: int | None, table_dtype: str,
         device: str = "cpu") -> dict[str, float]:
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=5, n_features=n_features, log2_table_size=log2_table, base_resolution=3,
                           max_resolution=70, init_scale=1.0, table_dtype=table_dtype).to(device)
    if active is not None:
        enc.set_active_levels(active)
    x = torch.rand(257, 3) * 2.4 - 1.2  # some points outside the cube, where ∂h/∂x is 0
    x[0] = torch.tensor([1.0, -1.0, 0.0])  # on the faces
    grad_out = torch.randn(257, enc.out_dim)
    grad_jac = torch.randn(257, enc.out_dim, 3)
    x, grad_out, grad_jac = x.to(device), grad_out.to(device), grad_jac.to(device)
    os.environ[KERNEL_ENV] = "triton"
    assert enc._kernels(x) is not None, "the Triton kernels did not engage"

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


def compile_for_hopper() -> list[str]:
    """Compile the kernels to sm_90 machine code without a GPU (Triton's bundled ptxas): catches what the
    interpreter lets through (constexpr rules, types) before a GPU call does."""
    from recon3d.fields import hashgrid_triton as kernels

    common = {"x_ptr": "*fp32", "table_ptr": "*fp32", "res_ptr": "*fp32", "offset_ptr": "*i64", "dense_ptr": "*i32",
              "mask_ptr": "*fp32"}
    encode = dict(common, out_ptr="*fp32", jac_ptr="*fp32", n_points="i32", hash_mask="i32")
    backward = dict(common, grad_out_ptr="*fp32", grad_jac_ptr="*fp32", grad_table_ptr="*fp32", grad_x_ptr="*fp32",
                    n_points="i32", hash_mask="i32")
    variants = [(kernels._encode_kernel, dict(encode, table_ptr=table), {"WITH_JAC": jac})
                for table in ("*fp32", "*fp16") for jac in (False, True)]
    variants += [(kernels._backward_kernel, dict(backward, table_ptr=table),
                  {"WITH_JAC": jac, "NEED_X": need_x, "VECTOR_ADD": vector, "F": features})
                 for table, jac, need_x in (("*fp32", True, True), ("*fp16", False, True), ("*fp32", False, False))
                 for vector, features in ((False, 2), (True, 2), (True, 4))]
    done = []
    for fn, signature, flags in variants:
        compiled = compile_sm90(fn, signature, {"N_LEVELS": 16, "F": 2, "BLOCK_N": 128, **flags})
        reductions = sorted(set(re.findall(r"\bred\.[\w.]+", compiled.asm["ptx"])))
        done.append(f"{fn.__name__} {signature['table_ptr']} {flags} {reductions}: {len(compiled.asm['cubin'])} B")
    return done


def checks(device: str) -> list[dict]:
    """Every case on ``device``."""
    specs = [("dense+hashed F2", 2, 10, None, "float32"), ("all dense F2", 2, 20, None, "float32"),
             ("all hashed F4", 4, 5, None, "float32"), ("coarse-to-fine 2 of 5", 2, 10, 2, "float32"),
             ("F1", 1, 10, None, "float32"), ("fp16 table", 2, 10, None, "float16"),
             ("bf16 table", 2, 10, None, "bfloat16")]
    return [case(*spec, device=device) for spec in specs]


if __name__ == "__main__":
    check_main(compile_for_hopper, checks)
