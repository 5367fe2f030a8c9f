"""A background for captures without masks: what a ray sees after it leaves the fitting box.

Everything outside the region of interest is explained by a small radiance field over contracted
space (mip-NeRF 360, Barron et al. 2022: x ↦ (2 − 1/‖x‖) x/‖x‖ beyond the unit ball), sampled from
the box's exit to far away, evenly in inverse depth (NeRF++'s and nerfacto's background sampling).
The surface field then only has to hold the object: the wall behind it is the background's.
Coordinates are the surface field's normalised ones, whose unit ball holds the fitting box.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon3d.render.compositing import composite
from recon3d.render.rays import ray_aabb

#: How far the background samples reach (field units: the fitting box spans about 2).
FAR = 1000.0
#: Background samples per ray.
BACKGROUND_SAMPLES = 32


def contract(x: Tensor) -> Tensor:
    """(…, 3) points → the ball of radius 2: the identity inside the unit ball, (2 − 1/‖x‖) x/‖x‖ outside."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.where(norm <= 1.0, x, (2.0 - 1.0 / norm) * x / norm)


def background_samples(t_exit: Tensor, n: int, train: bool, generator: torch.Generator | None = None) -> Tensor:
    """(R, n) sorted distances from ``t_exit`` (R,) to FAR, evenly spaced in 1/t (stratified in training)."""
    steps = torch.arange(n, device=t_exit.device, dtype=torch.float32)
    if train:
        jitter = torch.rand((t_exit.shape[0], n), device=t_exit.device, generator=generator)
    else:
        jitter = torch.full((t_exit.shape[0], n), 0.5, device=t_exit.device)
    s = (steps + jitter) / n
    near = t_exit.clamp_min(1e-3)[:, None]
    return 1.0 / ((1.0 - s) / near + s / FAR)


def render_background(field: torch.nn.Module, origins: Tensor, directions: Tensor, t_exit: Tensor, n: int,
                      colour: Tensor, *, train: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """(R, 3) colours of the rays' backgrounds: the radiance ``field`` (taking contracted points and
    view directions) composited over [t_exit, FAR], then ``colour`` (3,) or (R, 3) behind it."""
    t = background_samples(t_exit, n, train, generator)  # (R, n)
    ends = torch.cat([t[:, 1:], torch.full_like(t[:, :1], FAR)], dim=1)
    starts_c = contract(origins[:, None, :] + directions[:, None, :] * t[..., None])
    ends_c = contract(origins[:, None, :] + directions[:, None, :] * ends[..., None])
    # Densities integrate over lengths in contracted space, which stay bounded however far the ray goes.
    length = (ends_c - starts_c).norm(dim=-1)
    cumulative = torch.cumsum(length, dim=1)
    sigmas, rgbs = field(0.5 * (starts_c + ends_c), directions[:, None, :].expand_as(starts_c))
    return composite(sigmas, rgbs, cumulative - length, cumulative, colour).rgb


def region_exit(origins: Tensor, directions: Tensor, box: Tensor, plane: Tensor | None = None) -> Tensor:
    """(R,) where rays leave the region: the box (:func:`box_exit`), or before that where a ray from
    the front of ``plane`` (4,) ``n, c`` (the region is n·x ≥ c) crosses to its back: the support the
    object rests on, which the background explains."""
    exits = box_exit(origins, directions, box)
    if plane is None:
        return exits
    normal, offset = plane[:3].to(origins), plane[3].to(origins)
    height, rate = origins @ normal - offset, directions @ normal
    crossing = torch.where((height > 0) & (rate < 0), -height / rate.clamp_max(-1e-12), torch.full_like(height, FAR))
    return torch.minimum(exits, crossing)


def box_exit(origins: Tensor, directions: Tensor, box: Tensor) -> Tensor:
    """(R,) where rays leave the box; for rays that miss it, their closest approach to the origin."""
    _, t_far, hit = ray_aabb(origins, directions, box)
    closest = (-(origins * directions).sum(dim=-1) / (directions * directions).sum(dim=-1).clamp_min(1e-12))
    closest = closest.clamp_min(0.0)
    return torch.where(hit, t_far, closest)
