"""Rays → colours through a radiance field: the two sampling strategies and whole-image rendering.

* ``grid``: march fixed steps through the cells an :class:`OccupancyGrid` marks occupied (instant-ngp),
  query the field at the packed samples, composite per ray.
* ``hierarchical``: NeRF's coarse stratified samples, then fine samples drawn from the coarse weights
  (inverse CDF); both sets are composited and both losses trained (the paper's scheme, here with one
  network for both passes, as mip-NeRF does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from recon3d.device import map_in_chunks
from recon3d.memory import available_bytes, field_point_bytes
from recon3d.render.background import BACKGROUND_SAMPLES, box_exit, render_background
from recon3d.render.compositing import Composite, composite, composite_packed
from recon3d.render.rays import Rays, image_rays, ray_aabb
from recon3d.render.samplers import OccupancyGrid, importance_samples, samples_to_intervals, stratified_samples

#: What a render may hold at once for its field evaluations, per device type, at most half of what is
#: available: the rays of a view go in chunks whose samples fit (:func:`rays_per_chunk`).
RENDER_BYTES = {"cpu": 1 << 29, "cuda": 1 << 31}
#: Secant and colour queries per ray of surface rendering, besides its coarse samples.
SURFACE_EXTRA_SAMPLES = 16


@dataclass
class Sampling:
    """How rays are sampled: ``grid`` (occupancy-grid marching) or ``hierarchical`` (coarse + fine)."""

    kind: str = "grid"
    near: float = 2.0
    far: float = 6.0
    coarse: int = 64
    fine: int = 128
    step_size: float | None = None  # grid marching step; None: the grid's default

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Rendered:
    """A rendering of rays: the fine (final) composite, the coarse one for hierarchical sampling."""

    result: Composite
    coarse: Composite | None
    samples: int
    #: Grid sampling: the packed samples' rays (M,) and intervals (M,), which the weights belong to.
    ray_indices: Tensor | None = None
    t_starts: Tensor | None = None
    t_ends: Tensor | None = None


def render_rays(field: torch.nn.Module, rays: Rays, sampling: Sampling, grid: OccupancyGrid | None,
                background: Tensor, train: bool = False, generator: torch.Generator | None = None,
                noise_std: float = 0.0) -> Rendered:
    """Render (R,) rays; ``background`` is (3,) or (R, 3); differentiable with respect to the field."""
    origins, directions = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
    n_rays = origins.shape[0]
    if sampling.kind == "grid":
        assert grid is not None, "grid sampling needs an occupancy grid"
        ray_indices, t_starts, t_ends = grid.march(origins, directions, sampling.near, sampling.far,
                                                   step_size=sampling.step_size, stratified=train,
                                                   generator=generator)
        mids = 0.5 * (t_starts + t_ends)
        positions = origins[ray_indices] + directions[ray_indices] * mids[:, None]
        sigmas, rgbs = field(positions, directions[ray_indices], noise_std=noise_std)
        samples = (ray_indices, t_starts, t_ends)
        if getattr(field, "background", None) is None:
            result = composite_packed(ray_indices, sigmas, rgbs, t_starts, t_ends, n_rays, background)
            return Rendered(result, None, int(ray_indices.numel()), *samples)
        result = composite_packed(ray_indices, sigmas, rgbs, t_starts, t_ends, n_rays, None)
        result.rgb = _with_background(field, result, origins, directions, background, train, generator)
        return Rendered(result, None, int(ray_indices.numel()) + n_rays * BACKGROUND_SAMPLES, *samples)
    if sampling.kind != "hierarchical":
        raise ValueError(f"unknown sampling {sampling.kind!r} (known: grid, hierarchical)")
    near = torch.full((n_rays,), sampling.near, device=origins.device)
    far = torch.full((n_rays,), sampling.far, device=origins.device)
    t_coarse = stratified_samples(near, far, sampling.coarse, train=train, generator=generator)
    coarse = _composite_at(field, origins, directions, t_coarse, near, far, background, noise_std)
    t_all = importance_samples(t_coarse, coarse.weights, sampling.fine, near, far, train=train, generator=generator)
    fine = _composite_at(field, origins, directions, t_all, near, far, background, noise_std)
    return Rendered(fine, coarse, n_rays * (sampling.coarse + t_all.shape[1]))


def _composite_at(field: torch.nn.Module, origins: Tensor, directions: Tensor, t: Tensor, near: Tensor,
                  far: Tensor, background: Tensor, noise_std: float) -> Composite:
    t_starts, t_ends = samples_to_intervals(t, near, far)
    positions = origins[:, None, :] + directions[:, None, :] * t[..., None]
    dirs = directions[:, None, :].expand_as(positions)
    sigmas, rgbs = field(positions, dirs, noise_std=noise_std)
    return composite(sigmas, rgbs, t_starts, t_ends, background)


def samples_per_ray(model, rays: Rays) -> int:
    """An upper bound of the field samples one of ``rays`` costs ``model`` (a renderer of
    recon3d.render.model): the marching steps across its box for grid sampling (occupancy only lowers
    it), the fixed counts of hierarchical and surface rendering."""
    origins, directions = rays.origins.reshape(-1, 3).float(), rays.directions.reshape(-1, 3).float()
    sampling = getattr(model, "sampling", None)
    if sampling is not None and sampling.kind == "hierarchical":
        return 2 * int(sampling.coarse) + int(sampling.fine)
    if sampling is not None:
        grid, step = model.grid, float(sampling.step_size or model.grid.step_size)
        near, far = sampling.near, sampling.far
    elif hasattr(model, "to_field") and hasattr(model, "grid"):
        origins, directions = model.to_field(rays)
        grid, step, near, far = model.grid, float(model.step_size), None, None
    else:
        return int(getattr(model, "coarse", 128)) + SURFACE_EXTRA_SAMPLES
    t0, t1, hit = ray_aabb(origins, directions, grid.aabb.to(origins.device))
    if near is not None:
        t0 = t0.clamp_min(float(near))
    if far is not None:
        t1 = t1.clamp_max(float(far))
    length = torch.where(hit & (t1 > t0), t1 - t0, torch.zeros_like(t0))
    return int(math.ceil(float(length.max()) / step)) + 2 if len(length) else 1


def ray_bytes(model, rays: Rays) -> float:
    """Peak bytes one of ``rays`` takes while ``model`` renders it: its samples (:func:`samples_per_ray`)
    times the field's bytes per sample (with autograd for renderers that take gradients: NeuS), plus
    the background field's samples when there is one."""
    field = model.field if hasattr(model, "field") else model
    gradients = hasattr(model, "to_field") or hasattr(model, "coarse")
    total = samples_per_ray(model, rays) * field_point_bytes(field.config, "gradient" if gradients else "eval")
    background = getattr(field, "background", None)
    if background is not None:
        total += BACKGROUND_SAMPLES * field_point_bytes(background.config, "eval")
    return float(total)


def rays_per_chunk(model, rays: Rays, device: torch.device, budget: float | None = None) -> int:
    """How many of ``rays`` to render at once so that their samples fit in ``budget`` bytes (default:
    :data:`RENDER_BYTES` for the device type, at most half of what it has available)."""
    if budget is None:
        budget = float(RENDER_BYTES.get(torch.device(device).type, RENDER_BYTES["cpu"]))
        available = available_bytes(device)
        if available is not None:
            budget = min(budget, 0.5 * available)
    return max(1, int(budget // max(ray_bytes(model, rays), 1.0)))


@torch.no_grad()
def render_image(model, scene, index: int, sampling: Sampling | None = None, grid: OccupancyGrid | None = None,
                 chunk: int = 1 << 15, progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Render view ``index`` of ``scene``: rgb (H, W, 3), depth and opacity (H, W), as float32 arrays.

    ``model`` is a radiance field rendered with ``sampling`` (and ``grid``), or any renderer with a
    ``render(rays, background) -> Composite`` method and a ``field`` (recon3d.render.model). Rays go
    ``chunk`` at a time (:func:`rays_per_chunk` picks one that fits in memory); on GPU out-of-memory the
    chunk is halved and rendering continues where it stopped (:func:`recon3d.device.map_in_chunks`).
    ``progress(rays_done, rays)`` is called after each chunk.
    """
    field = model if sampling is not None else model.field
    device = next(field.parameters()).device
    rays = image_rays(scene, index, device=device).flatten()
    background = torch.tensor(scene.background, dtype=torch.float32, device=device)

    def piece(start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:  # not the per-sample weights
        if sampling is not None:
            out = render_rays(field, rays[start:stop], sampling, grid, background).result
        else:
            out = model.render(rays[start:stop], background)
        if progress is not None:
            progress(stop, len(rays))
        return out.rgb.clamp(0, 1), out.expected_depth, out.opacity

    parts, _ = map_in_chunks(piece, len(rays), chunk, device)
    rgb, depth, opacity = (torch.cat(values) for values in zip(*parts))
    shape = (scene.height, scene.width)
    return {
        "rgb": rgb.reshape(*shape, 3).float().cpu().numpy(),
        "depth": depth.reshape(shape).float().cpu().numpy(),
        "opacity": opacity.reshape(shape).float().cpu().numpy(),
    }


def _with_background(field: torch.nn.Module, result: Composite, origins: Tensor, directions: Tensor,
                     colour: Tensor, train: bool, generator: torch.Generator | None) -> Tensor:
    """(R, 3) the foreground over black plus what its transmittance lets through of the field's
    background radiance field, in the field's normalised coordinates (its box is [-1, 1]^3)."""
    lo, hi = field.aabb_min, field.aabb_max
    scale = 2.0 / (hi - lo)
    normalised_origins = field.normalize(origins)
    normalised_directions = directions * scale  # not unit length when the box is not a cube
    box = torch.stack([-torch.ones(3, device=lo.device), torch.ones(3, device=lo.device)])
    exits = box_exit(normalised_origins, normalised_directions, box)
    seen = render_background(field.background, normalised_origins, normalised_directions, exits,
                             BACKGROUND_SAMPLES, colour, train=train, generator=generator)
    return result.rgb + (1.0 - result.opacity[:, None]) * seen
