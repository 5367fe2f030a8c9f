"""Occupancy-grid marching as two Triton kernels on a GPU (instant-ngp's and nerfacc's ray marcher).

The torch marcher (recon3d.render.samplers, recon3d.render.fixed_march) materialises every candidate
step of every ray, its position and its cell index before it can drop the empty ones: a dozen passes
over millions of elements per batch. Here one kernel counts each ray's steps in occupied cells and a
second writes them, packed in ray order, into the slots a prefix sum gives (up to ``capacity``);
positions and cells live in registers. Tiles of rays × steps keep many independent grid reads in
flight. Same conventions and arithmetic as the torch marchers (step k of a ray spans
[t0 + (k + offset)·step, min(t0 + (k + 1 + offset)·step, t1)), occupancy at its midpoint), so the samples
agree up to float rounding (fused multiply-adds) at cell boundaries.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from recon3d.device import triton_can_run

try:  # Triton ships with CUDA builds of torch; elsewhere the torch marcher runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

#: Rays and steps per tile.
BLOCK_RAYS, BLOCK_STEPS = 16, 64


def available(origins: Tensor) -> bool:
    """Whether the kernels can march these rays: Triton installed, the rays on a CUDA device (or Triton's
    CPU interpreter switched on, for tests), and ``RECON3D_MARCH_KERNEL`` not ``torch``."""
    if triton is None or os.environ.get("RECON3D_MARCH_KERNEL", "triton") == "torch":
        return False
    return triton_can_run(origins)


if triton is not None:

    @triton.jit
    def _tile(origins, directions, t0s, t1s, offsets, counts, occupied, rays, k, ray_mask, lo_x, lo_y, lo_z,
              size_x, size_y, size_z, hi_x, hi_y, hi_z, step, resolution):
        """Steps ``k`` (BLOCK_STEPS,) of ``rays`` (BLOCK_RAYS,): (t_start, t_end, occupied) tiles."""
        t0 = tl.load(t0s + rays, mask=ray_mask, other=0.0)[:, None]
        t1 = tl.load(t1s + rays, mask=ray_mask, other=0.0)[:, None]
        offset = tl.load(offsets + rays, mask=ray_mask, other=0.0)[:, None]
        n = tl.load(counts + rays, mask=ray_mask, other=0)[:, None]
        starts = t0 + (k[None, :].to(tl.float32) + offset) * step
        ends = tl.minimum(starts + step, t1)
        mids = 0.5 * (starts + ends)
        px = tl.load(origins + rays * 3, mask=ray_mask, other=0.0)[:, None] \
            + tl.load(directions + rays * 3, mask=ray_mask, other=0.0)[:, None] * mids
        py = tl.load(origins + rays * 3 + 1, mask=ray_mask, other=0.0)[:, None] \
            + tl.load(directions + rays * 3 + 1, mask=ray_mask, other=0.0)[:, None] * mids
        pz = tl.load(origins + rays * 3 + 2, mask=ray_mask, other=0.0)[:, None] \
            + tl.load(directions + rays * 3 + 2, mask=ray_mask, other=0.0)[:, None] * mids
        inside = (px >= lo_x) & (px <= hi_x) & (py >= lo_y) & (py <= hi_y) & (pz >= lo_z) & (pz <= hi_z)
        last = resolution - 1
        i = tl.minimum(tl.maximum(tl.floor((px - lo_x) / size_x * resolution).to(tl.int32), 0), last)
        j = tl.minimum(tl.maximum(tl.floor((py - lo_y) / size_y * resolution).to(tl.int32), 0), last)
        m = tl.minimum(tl.maximum(tl.floor((pz - lo_z) / size_z * resolution).to(tl.int32), 0), last)
        live = ray_mask[:, None] & (k[None, :] < n) & inside
        cell = (i * resolution + j) * resolution + m
        occupied_here = tl.load(occupied + cell, mask=live, other=0) != 0
        return starts, ends, live & occupied_here

    @triton.jit
    def _count_kernel(origins, directions, t0s, t1s, offsets, counts, occupied, out_counts, n_rays, lo_x, lo_y,
                      lo_z, size_x, size_y, size_z, hi_x, hi_y, hi_z, step, resolution,
                      BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        ray_mask = rays < n_rays
        longest = tl.max(tl.load(counts + rays, mask=ray_mask, other=0), axis=0)
        total = tl.zeros((BLOCK_R,), dtype=tl.int32)
        for first in range(0, longest, BLOCK_K):
            k = first + tl.arange(0, BLOCK_K)
            _, _, keep = _tile(origins, directions, t0s, t1s, offsets, counts, occupied, rays, k, ray_mask,
                               lo_x, lo_y, lo_z, size_x, size_y, size_z, hi_x, hi_y, hi_z, step, resolution)
            total += tl.sum(keep.to(tl.int32), axis=1)
        tl.store(out_counts + rays, total, mask=ray_mask)

    @triton.jit
    def _write_kernel(origins, directions, t0s, t1s, offsets, counts, occupied, firsts, out_rays, out_starts,
                      out_ends, capacity, n_rays, lo_x, lo_y, lo_z, size_x, size_y, size_z, hi_x, hi_y, hi_z, step,
                      resolution, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        ray_mask = rays < n_rays
        longest = tl.max(tl.load(counts + rays, mask=ray_mask, other=0), axis=0)
        slot = tl.load(firsts + rays, mask=ray_mask, other=0)  # the next free slot of each ray
        for first in range(0, longest, BLOCK_K):
            k = first + tl.arange(0, BLOCK_K)
            starts, ends, keep = _tile(origins, directions, t0s, t1s, offsets, counts, occupied, rays, k,
                                       ray_mask, lo_x, lo_y, lo_z, size_x, size_y, size_z, hi_x, hi_y, hi_z,
                                       step, resolution)
            kept = keep.to(tl.int64)
            slots = slot[:, None] + tl.cumsum(kept, axis=1) - kept
            write = keep & (slots < capacity)
            tl.store(out_rays + slots, (rays[:, None] + 0 * slots).to(tl.int64), mask=write)
            tl.store(out_starts + slots, starts, mask=write)
            tl.store(out_ends + slots, ends, mask=write)
            slot += tl.sum(kept, axis=1)


def _grid_args(grid) -> tuple:
    """The grid's box and resolution as kernel scalars (read on the host: once per grid, not per step)."""
    cached = getattr(grid, "_kernel_box", None)
    key = grid.aabb._version
    if cached is None or cached[0] != key:
        lo, hi = grid.aabb.double().cpu().tolist()
        size = [float(torch.tensor(b, dtype=torch.float32) - torch.tensor(a, dtype=torch.float32))
                for a, b in zip(lo, hi)]  # hi - lo in float32, as the torch marcher divides by it
        cached = (key, (*lo, *size, *hi, int(grid.resolution)))
        grid._kernel_box = cached
    return cached[1]


def march_counts(grid, origins: Tensor, directions: Tensor, t0: Tensor, t1: Tensor, offset: Tensor,
                 counts: Tensor, step: float) -> Tensor:
    """(R,) int32: each ray's steps in occupied cells; ``counts`` (R,) int32 its steps in [t0, t1]."""
    n_rays = origins.shape[0]
    out = torch.empty(n_rays, dtype=torch.int32, device=origins.device)
    if n_rays == 0:
        return out
    lo_x, lo_y, lo_z, sx, sy, sz, hx, hy, hz, resolution = _grid_args(grid)
    _count_kernel[(triton.cdiv(n_rays, BLOCK_RAYS),)](
        origins.contiguous(), directions.contiguous(), t0.contiguous(), t1.contiguous(), offset.contiguous(),
        counts.contiguous(), grid.occupied.view(torch.uint8), out, n_rays, lo_x, lo_y, lo_z, sx, sy, sz, hx, hy, hz,
        float(step), resolution, BLOCK_R=BLOCK_RAYS, BLOCK_K=BLOCK_STEPS)
    return out


def march_write(grid, origins: Tensor, directions: Tensor, t0: Tensor, t1: Tensor, offset: Tensor, counts: Tensor,
                firsts: Tensor, step: float, capacity: int, rays_out: Tensor, starts_out: Tensor,
                ends_out: Tensor) -> None:
    """Write each ray's occupied steps from slot ``firsts`` (R,) int64 on, those below ``capacity``, into
    ``rays_out`` (int64), ``starts_out`` and ``ends_out`` (float32)."""
    n_rays = origins.shape[0]
    if n_rays == 0:
        return
    lo_x, lo_y, lo_z, sx, sy, sz, hx, hy, hz, resolution = _grid_args(grid)
    _write_kernel[(triton.cdiv(n_rays, BLOCK_RAYS),)](
        origins.contiguous(), directions.contiguous(), t0.contiguous(), t1.contiguous(), offset.contiguous(),
        counts.contiguous(), grid.occupied.view(torch.uint8), firsts.contiguous(), rays_out, starts_out, ends_out,
        int(capacity), n_rays, lo_x, lo_y, lo_z, sx, sy, sz, hx, hy, hz, float(step), resolution,
        BLOCK_R=BLOCK_RAYS, BLOCK_K=BLOCK_STEPS)


def march_packed(grid, origins: Tensor, directions: Tensor, t0: Tensor, t1: Tensor, offset: Tensor, counts: Tensor,
                 step: float, capacity: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both kernels: (ray indices, t_starts, t_ends, occupied steps per ray (R,), their running total (R,)).
    ``capacity`` None: exactly the samples there are (their count read back on the host); else that many
    slots, the unused ones the padding ray R's with empty intervals (no host synchronisation)."""
    args = (origins.float(), directions.float(), t0.float(), t1.float(), offset.float(), counts.int())
    per_ray = march_counts(grid, *args, step)
    ends = torch.cumsum(per_ray.long(), 0)
    device, n_rays = origins.device, origins.shape[0]
    if capacity is None:
        capacity = int(ends[-1])
        rays = torch.empty(capacity, dtype=torch.int64, device=device)
        starts, stops = (torch.empty(capacity, dtype=torch.float32, device=device) for _ in range(2))
    else:
        rays = torch.full((capacity,), n_rays, dtype=torch.int64, device=device)
        starts, stops = (torch.zeros(capacity, dtype=torch.float32, device=device) for _ in range(2))
    march_write(grid, *args, ends - per_ray, step, capacity, rays, starts, stops)
    return rays, starts, stops, per_ray, ends
