"""The losses of every method, as named functions (nerfstudio's model_components/losses.py).

Shapes: N points or rays in a batch; values f are (N,), gradients ∇f and colours are (N, 3).
Each returns a scalar tensor (the batch mean).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def surface_loss(values: Tensor) -> Tensor:
    """mean |f(p)| over scan points p (N,): the points lie on the zero level set (IGR)."""
    return values.abs().mean()


def eikonal_loss(grad: Tensor) -> Tensor:
    """mean (‖∇f(q)‖ − 1)² over samples q (N, 3): f is a distance (IGR, Gropp et al. 2020)."""
    return ((grad.norm(dim=-1) - 1.0) ** 2).mean()


def normal_loss(grad: Tensor, normals: Tensor, oriented: bool = True) -> Tensor:
    """mean 1 − cos(∇f(p), n) (N, 3) against known normals; with ``oriented=False`` 1 − |cos|, which
    aligns only the tangent planes, for normals whose signs may be wrong."""
    cos = torch.nn.functional.cosine_similarity(grad, normals, dim=-1, eps=1e-8)
    return (1.0 - (cos if oriented else cos.abs())).mean()


def far_field_loss(values: Tensor, distance: Tensor, claims: Tensor, box_distance: Tensor, slack: float) -> Tensor:
    """No stray surface far from the scan, and the right side where it is known (all (N,)).

    mean relu(d(u) − slack − |f(u)|), where d is the distance from u to the nearest scan point, so
    the field does not come back to zero away from the scan (the slack lets holes close); where a
    claim c(u) = ±1 says which side u is on, c(u)·f(u) replaces |f(u)|. Plus
    mean relu(d_box(u) − f(u)) outside the scan's bounding box (d_box > 0): every closed surface
    around the scan has f ≥ the distance to that box there, which fixes the sign where an open scan
    would let "inside" leak out.
    """
    gap = distance - slack - torch.where(claims != 0, claims * values, values.abs())
    box_gap = torch.where(box_distance > 0, box_distance - values, torch.zeros_like(values))  # inside: no claim
    return torch.relu(gap).mean() + torch.relu(box_gap).mean()


def offsurface_loss(values: Tensor, alpha: float = 100.0) -> Tensor:
    """mean exp(−α |f(u)|) over samples u away from the scan (N,): no surface there (SIREN)."""
    return torch.exp(-alpha * values.abs()).mean()


def occupancy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of occupancy logits (N,) against labels in {0, 1} (Occupancy Networks)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def misclassified(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of points (N,) on the wrong side of τ = 0.5 (a logit of 0); not differentiable."""
    return ((logits > 0).float() != labels).float().mean().detach()


def color_loss(rgb: Tensor, target: Tensor) -> Tensor:
    """Mean squared colour error of rendered rays (N, 3) against their pixels (NeRF)."""
    return torch.mean((rgb - target) ** 2)


def psnr(mse: Tensor) -> Tensor:
    """Peak signal-to-noise ratio (dB) of a mean squared error of colours in [0, 1]; not differentiable."""
    return -10.0 * torch.log10(mse.detach().clamp_min(1e-10))


def color_l1(rgb: Tensor, target: Tensor) -> Tensor:
    """Mean absolute colour error of rendered rays (N, 3) against their pixels (NeuS)."""
    return (rgb - target).abs().mean()


def mask_loss(opacity: Tensor, alpha: Tensor) -> Tensor:
    """Binary cross-entropy of rays' opacities (N,) against the images' alpha (N,) in [0, 1] (NeuS's
    mask loss): rays off the object must stay empty, rays on it must be stopped."""
    return torch.nn.functional.binary_cross_entropy(opacity.clamp(1e-3, 1.0 - 1e-3), alpha.clamp(0.0, 1.0))


def outside_loss(values: Tensor) -> Tensor:
    """mean relu(−f(u)) over points (N,) known to be outside the object: a signed distance must not
    be negative there."""
    return torch.relu(-values).mean()


def normal_smoothness(normals: Tensor, nearby: Tensor) -> Tensor:
    """mean ‖n(x) − n(x + ε)‖ over surface points (N, 3): UNISURF's and DVR's smoothness prior."""
    return (normals - nearby).norm(dim=-1).mean()


def binary_entropy(logits: Tensor) -> Tensor:
    """mean binary entropy of occupancies o = sigmoid(logits) (N,): 0 where o is 0 or 1, log 2 at 0.5.
    Neural Volumes' prior towards opaque-or-empty (Lombardi et al. 2019), on each sample's occupancy."""
    o = torch.sigmoid(logits)
    return (o * torch.nn.functional.softplus(-logits) + (1 - o) * torch.nn.functional.softplus(logits)).mean()


def depth_termination_loss(weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                           depth: Tensor, sigma: Tensor, n_rays: int) -> Tensor:
    """DS-NeRF's ray-termination loss (Deng et al. 2022) on packed samples: for each ray, the cross
    entropy −Σᵢ gᵢ log(wᵢ) between a Gaussian at the observed depth D (n_rays,) with uncertainty σ
    (n_rays,), discretised on the ray's intervals (M,) and normalised to sum to 1 (gᵢ ∝ N(tᵢ; D, σ²) Δtᵢ,
    so it stays a distribution when σ is smaller than an interval), and the ray's compositing weights
    wᵢ (M,) of rays ``ray_indices`` (M,); the mean over rays. Small when the ray stops where the point is.
    Each ray counts by the share of the Gaussian its samples cover (at most 1): a ray whose samples miss
    the depth (space the occupancy grid skips) is not pushed to stop at whichever sample is nearest."""
    mids, lengths = 0.5 * (t_starts + t_ends), t_ends - t_starts
    target, spread = depth[ray_indices], sigma[ray_indices]
    mass = torch.exp(-0.5 * ((mids - target) / spread) ** 2) * lengths / (spread * math.sqrt(2.0 * math.pi))
    total = torch.zeros(n_rays, device=weights.device, dtype=mass.dtype).index_add(0, ray_indices, mass)
    covered = total[ray_indices].clamp(max=1.0)
    share = (mass / total[ray_indices].clamp_min(1e-12) * covered).detach()
    per_sample = -torch.log(weights + 1e-10) * share
    per_ray = torch.zeros(n_rays, device=weights.device, dtype=per_sample.dtype).index_add(0, ray_indices, per_sample)
    return per_ray.mean()
