"""Occupancy-grid marching into buffers of a fixed size, with no host synchronisation.

:meth:`recon3d.render.samplers.OccupancyGrid.march` returns as many samples as the rays need, which
the host must read back before it can allocate them. A training step replayed as one CUDA graph
(recon3d.fit.captured) needs every shape fixed in advance, as instant-ngp's fixed-size sample buffer
does (Müller et al. 2022): every ray is marched over the most steps any ray can take through the box,
the samples in occupied cells are compacted in ray order into ``capacity`` slots, and rays whose
samples do not all fit are flagged so the loss leaves them out. Unused slots belong to a padding ray
(index R) with empty intervals (t_start = t_end), whose weights are zero.

For the same per-ray offsets the samples that fit are exactly ``OccupancyGrid.march``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from recon3d.render import march_triton
from recon3d.render.samplers import OccupancyGrid


@dataclass
class FixedSamples:
    """Packed samples in ``capacity`` slots, sorted by ray then t; padding slots have ray index R.

    ray_indices: (C,) int64; t_starts, t_ends: (C,); ray_ends: (R,) one past each ray's last slot, and
    per_ray: (R,) its sample count, before clipping to ``capacity`` (C).
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor
    ray_ends: Tensor
    per_ray: Tensor

    @property
    def fits(self) -> Tensor:
        """(R,) bool: every sample of the ray is in the buffer."""
        return (self.ray_ends <= self.ray_indices.shape[0]) | (self.per_ray == 0)

    @property
    def samples(self) -> Tensor:
        """() int64: the samples the rays have (the slots in use, up to ``capacity``)."""
        return self.ray_ends[-1]

    def slot_ranges(self) -> tuple[Tensor, Tensor]:
        """(starts, ends), each (R,) int64: the slots [start, end) of each ray's samples in the buffer."""
        capacity = self.ray_indices.shape[0]
        ends = self.ray_ends.to(torch.int64)
        return (ends - self.per_ray.to(torch.int64)).clamp_max(capacity), ends.clamp_max(capacity)


def steps_per_ray(grid: OccupancyGrid, step_size: float | None = None) -> int:
    """The most marching steps a ray can take through the grid's box: its diagonal / step, plus one
    for the random offset."""
    step = float(step_size or grid.step_size)
    return int(math.ceil(float((grid.aabb[1] - grid.aabb[0]).norm()) / step)) + 1


@torch.no_grad()
def march_fixed(grid: OccupancyGrid, origins: Tensor, directions: Tensor, offset: Tensor, capacity: int,
                near: float | None = None, far: float | None = None, step_size: float | None = None,
                limit: int | None = None) -> FixedSamples:
    """March (R,) rays (``origins``, unit ``directions`` (R, 3)) through ``grid`` into ``capacity`` slots.

    ``offset`` (R,) in [0, 1): each ray's steps start that fraction of a step after it enters the box
    (zeros: evaluation), as in ``OccupancyGrid.march(stratified=True)``. Costs R × ``limit`` candidate
    steps whatever the occupancy. ``step_size`` (default: the grid's) and ``limit`` (default:
    :func:`steps_per_ray`) are read from the grid's box on the host when not given: a captured step
    must pass both.
    """
    step = float(step_size or grid.step_size)
    n_rays, device = origins.shape[0], origins.device
    limit = steps_per_ray(grid, step) if limit is None else int(limit)
    t0, t1, counts = grid.ray_steps(origins, directions, offset, step, near, far)
    counts = counts.clamp_max(limit)
    if march_triton.available(origins):
        rays, starts, stops, per_ray, ends = march_triton.march_packed(grid, origins, directions, t0, t1, offset,
                                                                       counts, step, capacity)
        return FixedSamples(rays, starts, stops, ends, per_ray)
    k = torch.arange(limit, device=device, dtype=t0.dtype)
    t_starts = t0[:, None] + (k + offset[:, None]) * step  # (R, K)
    t_ends = torch.minimum(t_starts + step, t1[:, None])
    mids = 0.5 * (t_starts + t_ends)
    keep = (k < counts[:, None]) & grid.is_occupied(origins[:, None, :] + directions[:, None, :] * mids[..., None])
    per_ray = keep.sum(dim=1)
    ends = torch.cumsum(per_ray, 0)
    slot = torch.cumsum(keep.reshape(-1), 0) - 1  # the slot of each kept candidate, in ray order
    slot = torch.where(keep.reshape(-1) & (slot < capacity), slot, capacity)  # the rest go to a spare slot
    rays = torch.arange(n_rays, device=device)[:, None].expand(n_rays, limit)

    def packed(values: Tensor, fill: float | int) -> Tensor:
        out = torch.full((capacity + 1,), fill, dtype=values.dtype, device=device)
        return out.scatter_(0, slot, values.reshape(-1))[:capacity]

    return FixedSamples(packed(rays, n_rays), packed(t_starts, 0.0), packed(t_ends, 0.0), ends, per_ray)

