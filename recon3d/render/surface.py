"""Where rays meet an implicit surface: a coarse search for the first crossing, refined by the secant
method (DVR, Niemeyer et al. 2020), and the implicit-differentiation trick that makes the hit point
depend on the field's parameters.

For a hit p̂ = o + t̂ d with f(p̂) = τ, the implicit function theorem gives
∂p̂/∂θ = −d (∇f(p̂)·d)⁻¹ ∂f(p̂)/∂θ (DVR eq. 7). :func:`differentiable_hits` builds the point
p = o + (t̂ − (f(p̂) − τ) / (∇f(p̂)·d)) d with t̂ and the denominator detached: its value is p̂ and its
gradient in θ is exactly that one.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

FieldFn = Callable[[Tensor], Tensor]


@torch.no_grad()
def find_surface(fn: FieldFn, origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor,
                 *, level: float = 0.0, inside: str = "above", coarse: int = 128, secant: int = 8,
                 chunk: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """The first crossing of ``fn = level`` from outside to inside along each ray (R,) within
    [t_near, t_far] (R,): (t (R,), hit (R,) bool; t = t_far where there is none).

    ``inside="above"``: the object is where fn > level (occupancy logits); ``"below"``: fn < level
    (signed distances). ``coarse`` evenly spaced evaluations find the first interval whose ends lie on
    both sides, ``secant`` steps refine the crossing inside it (keeping a bracketing interval).
    """
    sign = 1.0 if inside == "above" else -1.0
    n_rays = origins.shape[0]
    steps = torch.linspace(0.0, 1.0, coarse, device=origins.device)
    t = t_near[:, None] + (t_far - t_near)[:, None] * steps  # (R, C)
    points = origins[:, None, :] + directions[:, None, :] * t[..., None]
    flat = points.reshape(-1, 3)
    values = torch.cat([fn(flat[i:i + chunk]).reshape(-1).float() for i in range(0, len(flat), chunk)])
    values = sign * (values.reshape(n_rays, coarse) - level)  # > 0 inside
    crossing = (values[:, :-1] <= 0) & (values[:, 1:] > 0)
    hit = crossing.any(dim=1) & (t_far > t_near)
    first = crossing.float().argmax(dim=1)
    rows = torch.arange(n_rays, device=origins.device)
    t_lo, t_hi = t[rows, first], t[rows, first + 1]
    f_lo, f_hi = values[rows, first], values[rows, first + 1]
    for _ in range(secant):
        denominator = (f_hi - f_lo).clamp_min(1e-12)
        t_mid = t_lo - f_lo * (t_hi - t_lo) / denominator
        f_mid = sign * (fn(origins + directions * t_mid[:, None]).reshape(-1).float() - level)
        outside = f_mid <= 0
        t_lo, f_lo = torch.where(outside, t_mid, t_lo), torch.where(outside, f_mid, f_lo)
        t_hi, f_hi = torch.where(outside, t_hi, t_mid), torch.where(outside, f_hi, f_mid)
    t_hit = t_lo - f_lo * (t_hi - t_lo) / (f_hi - f_lo).clamp_min(1e-12)
    return torch.where(hit, t_hit, t_far), hit


def differentiable_hits(fn_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]], origins: Tensor,
                        directions: Tensor, t_hit: Tensor, level: float = 0.0) -> Tensor:
    """(H, 3) hit points whose gradient in the field's parameters is DVR's implicit one (see the module
    docstring). ``fn_and_grad(points) -> (f (H,), ∇f (H, 3))``; ``t_hit`` (H,) from find_surface."""
    t_hit = t_hit.detach()
    surface = (origins + directions * t_hit[:, None]).detach()
    values, grad = fn_and_grad(surface)
    slope = (grad * directions).sum(dim=-1).detach()
    slope = torch.where(slope.abs() < 1e-6, torch.full_like(slope, 1e-6) * torch.sign(slope + 1e-12), slope)
    t = t_hit - (values - level) / slope
    return origins + directions * t[:, None]


class SurfaceRenderer:
    """Renders world-space rays of an implicit field with colours by surface rendering: the first
    crossing of the field's level (:func:`find_surface`) inside ``bounds`` (field coordinates), the
    colour there seen along the ray, the background elsewhere (DVR's renderer)."""

    def __init__(self, field: torch.nn.Module, to_world: dict, bounds: Tensor, coarse: int = 128) -> None:
        self.field, self.coarse = field, int(coarse)
        self.scale = float(to_world["scale"])
        self.translation = torch.as_tensor(to_world["translation"], dtype=torch.float32)
        self.bounds = torch.as_tensor(bounds, dtype=torch.float32)

    def field_rays(self, rays) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """World rays in field coordinates: origins and unit directions (R, 3), where they enter and leave
        the box (R,) (both the entry for rays that miss it) and whether they meet it (R,)."""
        from recon3d.render.rays import ray_aabb

        device = rays.origins.device
        origins = (rays.origins.reshape(-1, 3).float() - self.translation.to(device)) / self.scale
        directions = torch.nn.functional.normalize(rays.directions.reshape(-1, 3).float(), dim=-1)
        t0, t1, box_hit = ray_aabb(origins, directions, self.bounds.to(device))
        t0 = t0.clamp_min(0.0)
        return origins, directions, t0, torch.where(box_hit, t1, t0), box_hit

    def background_of(self, origins: Tensor, directions: Tensor, background: Tensor) -> Tensor:
        """(R, 3) what each ray shows beyond the box: the fit's background field, else ``background``."""
        background = torch.as_tensor(background, device=origins.device, dtype=origins.dtype).expand_as(origins)
        if self.field.background is None:
            return background
        from recon3d.render.background import BACKGROUND_SAMPLES, box_exit, render_background

        exit_ = box_exit(origins, directions, self.bounds.to(origins.device))
        return render_background(self.field.background, origins, directions, exit_, BACKGROUND_SAMPLES, background)

    def render(self, rays, background: Tensor):
        """(R,) rays → a :class:`recon3d.render.compositing.Composite` (depth in world units)."""
        from recon3d.render.compositing import Composite

        origins, directions, t0, t1, _ = self.field_rays(rays)
        surface = self.field.surface()
        t, hit = find_surface(surface.function, origins, directions, t0, t1, level=surface.level,
                              inside=surface.inside, coarse=self.coarse)
        rgb = torch.zeros_like(origins)
        if bool(hit.any()):
            points = origins[hit] + directions[hit] * t[hit, None]
            _, features, grad = self.field.geometry(points, create_graph=False)
            rgb[hit] = self.field.appearance(features, self.field.outward(grad), directions[hit])
        opacity = hit.float()
        background = self.background_of(origins, directions, background)
        rgb = rgb * opacity[:, None] + background * (1.0 - opacity[:, None])
        depth = torch.where(hit, t * self.scale, torch.zeros_like(t))
        return Composite(rgb, opacity, depth, opacity)
