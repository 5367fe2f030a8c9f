"""Volume rendering (NeRF's quadrature): densities and colours along rays to pixels.

For the intervals i of a ray, with density sigma_i over length delta_i = t_end - t_start:
alpha_i = 1 - exp(-sigma_i delta_i), transmittance T_i = exp(-sum_{j<i} sigma_j delta_j), weight
w_i = T_i alpha_i; colour C = sum w_i c_i + background (1 - opacity), opacity = sum w_i, and
depth = sum w_i t_mid_i (the expected depth of the surface is depth / opacity).

Two layouts, same numbers: padded (R, S) tensors, and packed samples (M,) with ``ray_indices``
sorted by ray then t (what :meth:`recon3d.render.samplers.OccupancyGrid.march` returns). Packed
transmittance is an exclusive cumulative sum per ray, computed as one global cumsum in float64
minus its value at each ray's first sample, found by binary search in the sorted ray indices
(float32 would lose the per-ray sums against the running total of many rays). Everything is
differentiable and follows the inputs' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class Composite:
    """What a batch of R rays renders to.

    rgb: (R, 3); opacity: (R,) = sum of weights; depth: (R,) = sum w_i t_mid_i (0 for empty rays);
    weights: per sample, (R, S) padded or (M,) packed.
    """

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    weights: Tensor

    @property
    def expected_depth(self) -> Tensor:
        """(R,) depth / opacity: the expected distance of what the ray hits (0 if it hits none)."""
        return self.depth / self.opacity.clamp_min(1e-10)


def _flat_sigmas(sigmas: Tensor, ndim: int) -> Tensor:
    """Accept densities with a trailing channel of 1, as fields often return them."""
    return sigmas.squeeze(-1) if sigmas.dim() == ndim + 1 and sigmas.shape[-1] == 1 else sigmas


def _with_background(rgb: Tensor, opacity: Tensor, background) -> Tensor:
    if background is None:
        return rgb
    bg = torch.as_tensor(background, device=rgb.device, dtype=rgb.dtype)
    return rgb + bg * (1.0 - opacity[:, None])


# ------------------------------------------------------------------------------------- padded


def render_weights(sigmas: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(weights, transmittance, alphas), each (R, S), from densities and lengths (R, S)."""
    tau = _flat_sigmas(sigmas, 2) * deltas
    alphas = 1.0 - torch.exp(-tau)
    before = torch.cumsum(tau, dim=-1)[:, :-1]
    transmittance = torch.exp(-torch.cat([torch.zeros_like(tau[:, :1]), before], dim=-1))
    return transmittance * alphas, transmittance, alphas


def composite(
    sigmas: Tensor,
    rgbs: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    background: Tensor | tuple[float, float, float] | None = None,
) -> Composite:
    """Render padded samples: ``sigmas`` (R, S) (or (R, S, 1)), ``rgbs`` (R, S, 3), intervals
    (R, S); ``background`` (3,) or (R, 3) fills what the ray does not hit (None: black)."""
    weights, _, _ = render_weights(sigmas, t_ends - t_starts)
    opacity = weights.sum(dim=-1)
    rgb = (weights[..., None] * rgbs).sum(dim=-2)
    depth = (weights * 0.5 * (t_starts + t_ends)).sum(dim=-1)
    return Composite(_with_background(rgb, opacity, background), opacity, depth, weights)


# ------------------------------------------------------------------------------------- packed


def render_weights_packed(
    ray_indices: Tensor, sigmas: Tensor, deltas: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(weights, transmittance, alphas), each (M,), of packed samples (sorted by ray, then t)."""
    tau = _flat_sigmas(sigmas, 1) * deltas
    alphas = 1.0 - torch.exp(-tau)
    m = tau.shape[0]
    if m == 0:
        return tau * 0.0, torch.ones_like(tau), alphas
    transmittance = torch.exp(-exclusive_sum_packed(ray_indices, tau))
    return transmittance * alphas, transmittance, alphas


class _ExclusiveSumPacked(torch.autograd.Function):
    """Per-ray exclusive prefix sums of packed values, with the gradient in closed form.

    Autograd through ``exclusive[start]`` would scatter every sample's gradient into its ray's first
    sample (CUDA's sort-based index_put backward, the slowest kernel of a training step); the gradient
    of S_i = Σ_{start ≤ j < i} x_j is instead the per-ray exclusive suffix sum of the incoming one.
    """

    @staticmethod
    def forward(ctx, ray_indices: Tensor, values: Tensor) -> Tensor:  # type: ignore[override]
        first = torch.searchsorted(ray_indices, ray_indices)  # each sample's ray's first sample (sorted)
        ctx.save_for_backward(torch.searchsorted(ray_indices, ray_indices, right=True))  # one past its last
        v = values.double()
        exclusive = torch.cumsum(v, dim=0) - v
        return (exclusive - exclusive[first]).to(values.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        (last,) = ctx.saved_tensors
        g = grad.double()
        suffix = torch.cumsum(g.flip(0), dim=0).flip(0)  # Σ_{i ≥ j} g_i over all samples
        suffix = torch.cat([suffix, suffix.new_zeros(1)])
        return None, (suffix[:-1] - g - suffix[last]).to(grad.dtype)


def exclusive_sum_packed(ray_indices: Tensor, values: Tensor) -> Tensor:
    """(M,) Σ of the values before each sample along its own ray (0 at a ray's first sample), for
    packed samples sorted by ray; summed in float64, since float32 would lose the per-ray sums
    against the running total of many rays."""
    return _ExclusiveSumPacked.apply(ray_indices, values)


def accumulate_packed(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray sums of packed values (M,) or (M, C) -> (n_rays,) or (n_rays, C); 0 for rays
    without samples. (index_add: bitwise reproducible on CUDA only under
    ``torch.use_deterministic_algorithms(True)``.)"""
    out = torch.zeros((n_rays, *values.shape[1:]), device=values.device, dtype=values.dtype)
    return out.index_add(0, ray_indices, values)


def composite_packed(
    ray_indices: Tensor,
    sigmas: Tensor,
    rgbs: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    n_rays: int,
    background: Tensor | tuple[float, float, float] | None = None,
) -> Composite:
    """Render packed samples: ``ray_indices`` (M,) int64 sorted, ``sigmas`` (M,) (or (M, 1)),
    ``rgbs`` (M, 3), intervals (M,); ``n_rays`` rays in all (rays without samples render the
    background). ``background`` (3,) or (n_rays, 3), None for black."""
    weights, _, _ = render_weights_packed(ray_indices, sigmas, t_ends - t_starts)
    opacity = accumulate_packed(weights, ray_indices, n_rays)
    rgb = accumulate_packed(weights[:, None] * rgbs, ray_indices, n_rays)
    depth = accumulate_packed(weights * 0.5 * (t_starts + t_ends), ray_indices, n_rays)
    return Composite(_with_background(rgb, opacity, background), opacity, depth, weights)


def composite_alphas(
    alphas: Tensor,
    rgbs: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    background: Tensor | tuple[float, float, float] | None = None,
) -> Composite:
    """Render padded samples whose opacities ``alphas`` (R, S) are given directly (UNISURF's
    occupancies): w_i = α_i Π_{j<i} (1 − α_j); ``rgbs`` (R, S, 3), intervals (R, S)."""
    tau = -torch.log1p(-alphas.clamp(0.0, 1.0 - 1e-6))
    weights, _, _ = render_weights(tau, torch.ones_like(tau))
    opacity = weights.sum(dim=-1)
    rgb = (weights[..., None] * rgbs).sum(dim=-2)
    depth = (weights * 0.5 * (t_starts + t_ends)).sum(dim=-1)
    return Composite(_with_background(rgb, opacity, background), opacity, depth, weights)


def composite_alphas_packed(
    ray_indices: Tensor,
    alphas: Tensor,
    rgbs: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    n_rays: int,
    background: Tensor | tuple[float, float, float] | None = None,
) -> Composite:
    """Render packed samples whose opacities ``alphas`` (M,) in [0, 1] are given directly (surface
    methods: NeuS, UNISURF) rather than as densities: w_i = α_i Π_{j<i} (1 − α_j). Otherwise as
    :func:`composite_packed`."""
    tau = -torch.log1p(-alphas.clamp(0.0, 1.0 - 1e-6))  # α = 1 − exp(−τ)
    weights, _, _ = render_weights_packed(ray_indices, tau, torch.ones_like(tau))
    opacity = accumulate_packed(weights, ray_indices, n_rays)
    rgb = accumulate_packed(weights[:, None] * rgbs, ray_indices, n_rays)
    depth = accumulate_packed(weights * 0.5 * (t_starts + t_ends), ray_indices, n_rays)
    return Composite(_with_background(rgb, opacity, background), opacity, depth, weights)
