"""Volume compositing of packed samples in one Triton kernel each way, one ray per lane (instant-ngp's and
nerfacc's CUDA layout).

:func:`recon3d.render.compositing.composite_packed` composites with a dozen torch passes over the samples
(binary searches for each ray's first sample, a float64 prefix sum, three scatters, and their backward).
Here each lane walks its ray's samples front to back once: T ← T·exp(−σδ), C += T·α·c, O += T·α. The
backward walks them again with the final C and O (NeRF's quadrature differentiated in closed form, as
instant-ngp does):

    ∂L/∂cᵢ = wᵢ ∂L/∂C,
    ∂L/∂σᵢ = δᵢ [∂L/∂C · (Tᵢ₊₁ cᵢ − (C − C≤ᵢ)) + ∂L/∂O (Tᵢ₊₁ − (O − O≤ᵢ))],

with wᵢ = Tᵢ αᵢ, αᵢ = 1 − exp(−σᵢ δᵢ) and C≤ᵢ, O≤ᵢ the sums up to and including sample i. The
transmittance is a running product in float32 (the torch path sums σδ in float64 then exponentiates: the
two agree to float32 rounding). Samples: rays own the contiguous slot ranges [start, end) of the packed
buffer, sorted by t; slots no ray owns get zero gradients.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from recon3d.device import triton_can_run

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

#: Rays per program.
BLOCK_RAYS = 128


def available(x: torch.Tensor) -> bool:
    """Whether the kernels can composite samples on x's device (a GPU, or Triton's CPU interpreter, for
    tests), unless ``RECON3D_COMPOSITE_KERNEL=torch``."""
    if triton is None or os.environ.get("RECON3D_COMPOSITE_KERNEL") == "torch":
        return False
    return triton_can_run(x)


if triton is not None:

    @triton.jit
    def _sample(i, start, n, valid, sigma_ptr, rgb_ptr, t0_ptr, t1_ptr):
        """Sample i of each lane's ray: (mask, σ·δ, δ, r, g, b); zeros past the ray's end."""
        live = valid & (i < n)
        slot = start + i
        sigma = tl.load(sigma_ptr + slot, mask=live, other=0.0)
        delta = tl.load(t1_ptr + slot, mask=live, other=0.0) - tl.load(t0_ptr + slot, mask=live, other=0.0)
        r = tl.load(rgb_ptr + slot * 3 + 0, mask=live, other=0.0)
        g = tl.load(rgb_ptr + slot * 3 + 1, mask=live, other=0.0)
        b = tl.load(rgb_ptr + slot * 3 + 2, mask=live, other=0.0)
        return live, sigma * delta, delta, r, g, b, slot

    @triton.jit
    def _composite_forward_kernel(start_ptr, end_ptr, sigma_ptr, rgb_ptr, t0_ptr, t1_ptr, out_rgb_ptr, out_opacity_ptr,
                        n_rays, BLOCK: tl.constexpr):
        rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = rays < n_rays
        start = tl.load(start_ptr + rays, mask=valid, other=0).to(tl.int64)
        n = tl.load(end_ptr + rays, mask=valid, other=0).to(tl.int64) - start
        transmittance = tl.full((BLOCK,), 1.0, dtype=tl.float32)
        acc_r = tl.zeros((BLOCK,), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK,), dtype=tl.float32)
        acc_b = tl.zeros((BLOCK,), dtype=tl.float32)
        opacity = tl.zeros((BLOCK,), dtype=tl.float32)
        for i in range(0, tl.max(n, axis=0)):
            live, tau, delta, r, g, b, slot = _sample(i, start, n, valid, sigma_ptr, rgb_ptr, t0_ptr, t1_ptr)
            keep = tl.exp(-tau)
            weight = transmittance * (1.0 - keep)
            acc_r += weight * r
            acc_g += weight * g
            acc_b += weight * b
            opacity += weight
            transmittance *= keep
        tl.store(out_rgb_ptr + rays * 3 + 0, acc_r, mask=valid)
        tl.store(out_rgb_ptr + rays * 3 + 1, acc_g, mask=valid)
        tl.store(out_rgb_ptr + rays * 3 + 2, acc_b, mask=valid)
        tl.store(out_opacity_ptr + rays, opacity, mask=valid)

    @triton.jit
    def _composite_backward_kernel(start_ptr, end_ptr, sigma_ptr, rgb_ptr, t0_ptr, t1_ptr, out_rgb_ptr, out_opacity_ptr,
                         grad_rgb_ptr, grad_opacity_ptr, grad_sigma_ptr, grad_colour_ptr, n_rays, BLOCK: tl.constexpr):
        rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = rays < n_rays
        start = tl.load(start_ptr + rays, mask=valid, other=0).to(tl.int64)
        n = tl.load(end_ptr + rays, mask=valid, other=0).to(tl.int64) - start
        g_r = tl.load(grad_rgb_ptr + rays * 3 + 0, mask=valid, other=0.0)
        g_g = tl.load(grad_rgb_ptr + rays * 3 + 1, mask=valid, other=0.0)
        g_b = tl.load(grad_rgb_ptr + rays * 3 + 2, mask=valid, other=0.0)
        g_o = tl.load(grad_opacity_ptr + rays, mask=valid, other=0.0)
        # What the samples after i add, dotted with the incoming gradient: starts as the whole ray's.
        rest = (g_r * tl.load(out_rgb_ptr + rays * 3 + 0, mask=valid, other=0.0)
                + g_g * tl.load(out_rgb_ptr + rays * 3 + 1, mask=valid, other=0.0)
                + g_b * tl.load(out_rgb_ptr + rays * 3 + 2, mask=valid, other=0.0)
                + g_o * tl.load(out_opacity_ptr + rays, mask=valid, other=0.0))
        transmittance = tl.full((BLOCK,), 1.0, dtype=tl.float32)
        for i in range(0, tl.max(n, axis=0)):
            live, tau, delta, r, g, b, slot = _sample(i, start, n, valid, sigma_ptr, rgb_ptr, t0_ptr, t1_ptr)
            keep = tl.exp(-tau)
            weight = transmittance * (1.0 - keep)
            after = transmittance * keep
            here = g_r * r + g_g * g + g_b * b + g_o
            rest -= weight * here
            tl.store(grad_sigma_ptr + slot, delta * (after * here - rest), mask=live)
            tl.store(grad_colour_ptr + slot * 3 + 0, weight * g_r, mask=live)
            tl.store(grad_colour_ptr + slot * 3 + 1, weight * g_g, mask=live)
            tl.store(grad_colour_ptr + slot * 3 + 2, weight * g_b, mask=live)
            transmittance = after


def _grid(n_rays: int) -> tuple[int]:
    return (triton.cdiv(n_rays, BLOCK_RAYS),)


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, starts: torch.Tensor, ends: torch.Tensor, sigmas: torch.Tensor, rgbs: torch.Tensor,
                t_starts: torch.Tensor, t_ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts, ends = starts.contiguous(), ends.contiguous()
        sigmas, rgbs = sigmas.float().contiguous(), rgbs.float().contiguous()
        t_starts, t_ends = t_starts.float().contiguous(), t_ends.float().contiguous()
        n_rays = starts.shape[0]
        rgb = torch.empty((n_rays, 3), dtype=torch.float32, device=sigmas.device)
        opacity = torch.empty((n_rays,), dtype=torch.float32, device=sigmas.device)
        if n_rays > 0:
            _composite_forward_kernel[_grid(n_rays)](starts, ends, sigmas, rgbs, t_starts, t_ends, rgb, opacity,
                                                     n_rays, BLOCK=BLOCK_RAYS)
        ctx.save_for_backward(starts, ends, sigmas, rgbs, t_starts, t_ends, rgb, opacity)
        return rgb, opacity

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rgb: torch.Tensor | None,
                 grad_opacity: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        starts, ends, sigmas, rgbs, t_starts, t_ends, rgb, opacity = ctx.saved_tensors
        grad_rgb = torch.zeros_like(rgb) if grad_rgb is None else grad_rgb.float().contiguous()
        grad_opacity = torch.zeros_like(opacity) if grad_opacity is None else grad_opacity.float().contiguous()
        grad_sigma = torch.zeros_like(sigmas)  # slots no ray owns keep 0
        grad_colour = torch.zeros_like(rgbs)
        n_rays = starts.shape[0]
        if n_rays > 0:
            _composite_backward_kernel[_grid(n_rays)](starts, ends, sigmas, rgbs, t_starts, t_ends, rgb, opacity,
                                                      grad_rgb, grad_opacity, grad_sigma, grad_colour, n_rays,
                                                      BLOCK=BLOCK_RAYS)
        return None, None, grad_sigma, grad_colour, None, None


def composite_ranges(starts: torch.Tensor, ends: torch.Tensor, sigmas: torch.Tensor, rgbs: torch.Tensor,
                     t_starts: torch.Tensor, t_ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (R, 3) and opacity (R,) of R rays whose samples fill the slots [starts[r], ends[r]) (int64 (R,))
    of packed ``sigmas`` (M,), ``rgbs`` (M, 3) and intervals (M,), sorted by t within a ray; black
    background. Differentiable (first order) in ``sigmas`` and ``rgbs``. Call only where :func:`available`."""
    return _Composite.apply(starts, ends, sigmas, rgbs, t_starts, t_ends)
