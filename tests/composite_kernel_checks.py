"""Compares the Triton compositing kernels (recon3d.render.composite_triton) with the torch path
(recon3d.render.compositing.composite_packed); run where TRITON_INTERPRET=1 was set before Triton was
imported (tests/test_composite_kernels.py does so), or with ``--device cuda`` compiled on a GPU (``--compile``:
for sm_90 without a GPU). Prints one
JSON object: the largest relative error of rgb, opacity and the gradients of σ and colour."""

from __future__ import annotations

import torch
from kernel_check_runner import check_main, compile_sm90

from recon3d.render.composite_triton import available, composite_ranges
from recon3d.render.compositing import composite_packed


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def compile_for_hopper() -> list[str]:
    """Compile both kernels for sm_90 with Triton's bundled compiler (no GPU)."""
    from recon3d.render import composite_triton as kernels

    common = {"start_ptr": "*i64", "end_ptr": "*i64", "sigma_ptr": "*fp32", "rgb_ptr": "*fp32", "t0_ptr": "*fp32",
              "t1_ptr": "*fp32", "out_rgb_ptr": "*fp32", "out_opacity_ptr": "*fp32"}
    forward = dict(common, n_rays="i32")
    backward = dict(common, grad_rgb_ptr="*fp32", grad_opacity_ptr="*fp32", grad_sigma_ptr="*fp32",
                    grad_colour_ptr="*fp32", n_rays="i32")
    done = []
    for fn, signature in ((kernels._composite_forward_kernel, forward), (kernels._composite_backward_kernel, backward)):
        compiled = compile_sm90(fn, signature, {"BLOCK": kernels.BLOCK_RAYS})
        done.append(f"{fn.__name__}: {len(compiled.asm['cubin'])} B")
    return done


def checks(device: str) -> dict[str, float]:
    """The kernels against composite_packed on ``device``: relative errors, and spare slots' gradients."""
    torch.manual_seed(0)
    counts = torch.tensor([0, 1, 5, 17, 0, 3, 200, 2] * 40)  # empty rays, one sample, long rays; 320 rays
    n_rays = len(counts)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    slots = int(ends[-1]) + 7  # spare slots that no ray owns, as in the fixed buffer
    rays = torch.full((slots,), n_rays, dtype=torch.int64)
    for ray in range(n_rays):
        rays[starts[ray]:ends[ray]] = ray
    t_starts = torch.rand(slots).sort().values * 3
    t_ends = t_starts + torch.rand(slots) * 0.05
    sigmas = torch.rand(slots) * 30
    sigmas[::11] = 0.0
    colours = torch.rand(slots, 3)
    grad_rgb, grad_opacity = torch.randn(n_rays, 3), torch.randn(n_rays)
    tensors = [t.to(device) for t in (starts, ends, rays, t_starts, t_ends, sigmas, colours, grad_rgb, grad_opacity)]
    starts, ends, rays, t_starts, t_ends, sigmas, colours, grad_rgb, grad_opacity = tensors
    sigmas.requires_grad_(True)
    colours.requires_grad_(True)
    assert available(sigmas), "the Triton kernels did not engage"
    rgb, opacity = composite_ranges(starts, ends, sigmas, colours, t_starts, t_ends)
    got = torch.autograd.grad((rgb * grad_rgb).sum() + (opacity * grad_opacity).sum(), [sigmas, colours])
    ref = composite_packed(rays, sigmas, colours, t_starts, t_ends, n_rays + 1, None)
    want = torch.autograd.grad((ref.rgb[:n_rays] * grad_rgb).sum() + (ref.opacity[:n_rays] * grad_opacity).sum(),
                               [sigmas, colours])
    spare = slice(int(ends[-1]), slots)
    return {"rgb": relative(rgb, ref.rgb[:n_rays]), "opacity": relative(opacity, ref.opacity[:n_rays]),
            "grad_sigma": relative(got[0], want[0]), "grad_colour": relative(got[1], want[1]),
            "spare_slot_gradients": float(got[0][spare].abs().sum() + got[1][spare].abs().sum())}


if __name__ == "__main__":
    check_main(compile_for_hopper, checks)
