"""Rendering a signed distance field with NeuS's weights (Wang et al. 2021).

The weight of a point is the logistic density of its SDF scaled by the learnt sharpness s, made
unbiased and occlusion-aware: for an interval of a ray through [p_i, p_i+1],
α_i = max((Φ_s(f(p_i)) − Φ_s(f(p_i+1))) / Φ_s(f(p_i)), 0), Φ_s the sigmoid of s·f (NeuS eq. 13).
With packed samples only the interval's midpoint is evaluated; the SDF at its ends is estimated
from the midpoint's value and the directional derivative ∇f·d (instant-nsr-pl, NeuS2), whose
cosine is annealed from half-weight to full over training as in NeuS.

:class:`SdfRenderer` marches rays through an occupancy grid in the field's normalised coordinates
(the box the field was fitted in), so only the shell around the surface is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recon3d.render.background import BACKGROUND_SAMPLES, region_exit, render_background
from recon3d.render.compositing import Composite, composite_alphas_packed
from recon3d.render.rays import Rays
from recon3d.render.samplers import OccupancyGrid


def neus_alphas(sdf: Tensor, cos: Tensor, lengths: Tensor, inv_s: Tensor | float,
                cos_anneal: float = 1.0) -> Tensor:
    """(M,) opacities of intervals of length ``lengths`` (M,) with midpoint SDF ``sdf`` (M,) and
    ``cos`` = ∇f·d (M,) (negative where the ray enters the surface). ``cos_anneal`` in [0, 1]:
    0 lets rays leaving a surface keep half their slope (early training), 1 is NeuS's estimate."""
    entering = -(torch.relu(-cos * 0.5 + 0.5) * (1.0 - cos_anneal) + torch.relu(-cos) * cos_anneal)
    half = entering * lengths * 0.5
    prev_cdf = torch.sigmoid((sdf - half) * inv_s)
    next_cdf = torch.sigmoid((sdf + half) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def shell_alphas(sdf: Tensor, inv_s: Tensor | float, step: float) -> Tensor:
    """The largest opacity a marching step of length ``step`` at SDF ``sdf`` (M,) can have (the ray
    crossing the surface head-on): what an occupancy grid keeps a cell for."""
    prev_cdf = torch.sigmoid((sdf + 0.5 * step) * inv_s)
    next_cdf = torch.sigmoid((sdf - 0.5 * step) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


@dataclass
class SdfRendering:
    """What :meth:`SdfRenderer.render_rays` returns: the composite (depth in world units) and the
    per-sample values the losses need."""

    result: Composite
    sdf: Tensor  # (M,)
    grad: Tensor  # (M, 3) ∇f at the samples
    samples: int
    ray_indices: Tensor | None = None  # (M,) the samples' rays
    t_starts: Tensor | None = None  # (M,) their intervals, world units
    t_ends: Tensor | None = None


class SdfRenderer:
    """Renders world-space rays of a field fitted to images: NeuS weights on the field's SDF and
    colour, samples marched through ``grid`` (in field coordinates) at ``step_size``.

    ``to_world`` maps field coordinates to the scene's (x = scale · u + translation); ``plane`` (4,)
    ``n, c`` in field coordinates, where the region ends at a support plane (n·u ≥ c), else None.
    """

    def __init__(self, field: torch.nn.Module, grid: OccupancyGrid, to_world: dict, step_size: float,
                 plane: Any = None) -> None:
        self.field, self.grid, self.step_size = field, grid, float(step_size)
        self.plane = None if plane is None else torch.as_tensor(plane, dtype=torch.float32).reshape(4)
        self.scale = float(to_world["scale"])
        self.translation = torch.as_tensor(to_world["translation"], dtype=torch.float32)

    def to_field(self, rays: Rays) -> tuple[Tensor, Tensor]:
        """(R, 3) origins in field coordinates and (R, 3) unit directions (unchanged)."""
        origins = (rays.origins.reshape(-1, 3).float() - self.translation.to(rays.origins.device)) / self.scale
        return origins, F.normalize(rays.directions.reshape(-1, 3).float(), dim=-1)

    def density(self, points: Tensor) -> Tensor:
        """A density whose one-step opacity is :func:`shell_alphas`: the grid's occupancy test."""
        with torch.no_grad():
            sdf = self.field(points)
            return shell_alphas(sdf, self.field.inv_s().detach(), self.step_size) / self.step_size

    def render(self, rays: Rays, background: Tensor) -> Composite:
        """(R,) rays → their composite (depth in world units), for pictures and metrics."""
        return self.render_rays(rays, background).result

    def render_rays(self, rays: Rays, background: Tensor, *, train: bool = False,
                    generator: torch.Generator | None = None, cos_anneal: float = 1.0) -> SdfRendering:
        """Render (R,) rays; ``background`` (3,) or (R, 3); differentiable in the field when ``train``."""
        origins, directions = self.to_field(rays)
        n_rays = origins.shape[0]
        ray_indices, t_starts, t_ends = self.grid.march(origins, directions, step_size=self.step_size,
                                                        stratified=train, generator=generator)
        mids = 0.5 * (t_starts + t_ends)
        dirs = directions[ray_indices]
        positions = origins[ray_indices] + dirs * mids[:, None]
        sdf, features, grad = self.field.geometry(positions, create_graph=train)
        rgbs = self.field.appearance(features, self.field.outward(grad), dirs)
        alphas = neus_alphas(sdf, (dirs * grad).sum(dim=-1), t_ends - t_starts, self.field.inv_s(), cos_anneal)
        behind = background if self.field.background is None else None
        result = composite_alphas_packed(ray_indices, alphas, rgbs, t_starts * self.scale, t_ends * self.scale,
                                         n_rays, behind)
        if self.field.background is not None:
            result.rgb = with_background(self.field.background, result, origins, directions, self.grid.aabb,
                                         background, train, generator, self.plane)
        return SdfRendering(result, sdf, grad, int(ray_indices.numel()), ray_indices, t_starts * self.scale,
                            t_ends * self.scale)


def with_background(field: torch.nn.Module, result: Composite, origins: Tensor, directions: Tensor, box: Tensor,
                    colour: Tensor, train: bool, generator: torch.Generator | None,
                    plane: Tensor | None = None) -> Tensor:
    """(R, 3) the foreground's colour (composited on black) plus what its transmittance lets through
    of the background radiance ``field`` seen beyond the fitting ``box`` (field coordinates) or, sooner,
    behind the support ``plane``."""
    seen = render_background(field, origins, directions, region_exit(origins, directions, box, plane),
                             BACKGROUND_SAMPLES, colour, train=train, generator=generator)
    return result.rgb + (1.0 - result.opacity[:, None]) * seen

