"""Where to evaluate the field along rays: stratified, hierarchical (importance) and grid marching.

Two layouts, as in nerfstudio / nerfacc:

* **padded**: the same number S of samples on every ray, tensors (R, S). The NeRF paper's
  stratified coarse samples and inverse-CDF fine samples (:func:`stratified_samples`,
  :func:`sample_pdf`, :func:`importance_samples`).
* **packed**: a variable number per ray, flattened into (M,) tensors with ``ray_indices`` (sorted by
  ray, then by t). The occupancy-grid marcher (:class:`OccupancyGrid`, instant-ngp) emits these,
  skipping empty space.

Samples are positions t along unit-length rays. Compositing works on intervals
[t_start, t_end); :func:`samples_to_intervals` turns sorted padded samples into the intervals that
partition [near, far] (boundaries halfway between neighbours), so no sample gets the paper's
infinite last interval and nothing behind ``far`` is counted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recon3d.render.rays import ray_aabb

Tensor = torch.Tensor


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) drawn from ``generator`` (on its own device), then moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def _column(value: Tensor | float, n_rays: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """near/far given as a float, (R,) or (R, 1) as an (R, 1) tensor."""
    tensor = torch.as_tensor(value, device=device, dtype=dtype)
    return tensor.reshape(-1, 1).expand(n_rays, 1) if tensor.numel() == 1 else tensor.reshape(n_rays, 1)


# ------------------------------------------------------------------------------------- padded


def stratified_samples(
    near: Tensor | float,
    far: Tensor | float,
    n_samples: int,
    *,
    train: bool = True,
    generator: torch.Generator | None = None,
    n_rays: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(R, S) sorted samples in [near, far]: one uniform draw in each of S equal bins when
    ``train``, the bin midpoints otherwise (deterministic evaluation).

    ``near``/``far``: (R,) tensors, or floats with ``n_rays`` (and ``device``).
    """
    like = near if isinstance(near, Tensor) else far if isinstance(far, Tensor) else None
    if like is not None:
        n_rays = like.reshape(-1).shape[0] if n_rays is None else n_rays
        device = like.device
        dtype = like.dtype if like.is_floating_point() else torch.float32
    else:
        if n_rays is None:
            raise ValueError("stratified_samples with float near/far needs n_rays")
        device, dtype = torch.device(device or "cpu"), torch.float32
    lo = _column(near, n_rays, device, dtype)
    hi = _column(far, n_rays, device, dtype)
    steps = torch.arange(n_samples, device=device, dtype=dtype)
    if train:
        u = (steps + _uniform((n_rays, n_samples), generator, device, dtype)) / n_samples
    else:
        u = ((steps + 0.5) / n_samples).expand(n_rays, n_samples)
    return (lo + (hi - lo) * u).clamp(lo, hi)


def samples_to_intervals(t: Tensor, near: Tensor | float, far: Tensor | float) -> tuple[Tensor, Tensor]:
    """(t_starts, t_ends), each (R, S), of sorted samples ``t`` (R, S): boundaries halfway between
    neighbours, the first interval starting at ``near`` and the last ending at ``far``."""
    n_rays = t.shape[0]
    lo = _column(near, n_rays, t.device, t.dtype)
    hi = _column(far, n_rays, t.device, t.dtype)
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    return torch.cat([lo, mids], dim=-1), torch.cat([mids, hi], dim=-1)


def sample_pdf(
    bins: Tensor,
    weights: Tensor,
    n_samples: int,
    *,
    train: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(R, n_samples) sorted samples drawn from the piecewise-constant density of ``weights``.

    ``bins`` (R, B + 1) are interval edges and ``weights`` (R, B) the compositing weights of the
    intervals (NeRF's hierarchical sampling, inverse transform sampling). Stratified uniforms in
    training, evenly spaced ones otherwise; a small constant (1e-5) is added to every weight so
    empty rays still sample their whole range. No gradient flows into the samples.
    """
    bins, weights = bins.detach(), weights.detach()
    n_rays, n_bins = weights.shape
    weights = weights + 1e-5
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, dim=-1).clamp_max(1.0)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)  # (R, B + 1)
    cdf[:, -1] = 1.0
    steps = torch.arange(n_samples, device=bins.device, dtype=bins.dtype)
    if train:
        u = (steps + _uniform((n_rays, n_samples), generator, bins.device, bins.dtype)) / n_samples
    else:
        u = ((steps + 0.5) / n_samples).expand(n_rays, n_samples)
    u = u.contiguous()
    above = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, n_bins)
    below = above - 1
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    span = cdf_hi - cdf_lo
    fraction = torch.where(span > 1e-12, (u - cdf_lo) / span.clamp_min(1e-12), torch.zeros_like(u))
    return bin_lo + fraction.clamp(0.0, 1.0) * (bin_hi - bin_lo)


def importance_samples(
    t_coarse: Tensor,
    weights: Tensor,
    n_fine: int,
    near: Tensor | float,
    far: Tensor | float,
    *,
    train: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The fine pass's samples: ``n_fine`` drawn from the coarse weights (R, Sc) over the coarse
    intervals, merged with the coarse samples; (R, Sc + n_fine), sorted."""
    starts, ends = samples_to_intervals(t_coarse, near, far)
    bins = torch.cat([starts, ends[:, -1:]], dim=-1)
    fine = sample_pdf(bins, weights, n_fine, train=train, generator=generator)
    return torch.sort(torch.cat([t_coarse.detach(), fine], dim=-1), dim=-1).values


def packed_positions(origins: Tensor, directions: Tensor, ray_indices: Tensor, t_starts: Tensor,
                     t_ends: Tensor) -> Tensor:
    """(M, 3) world positions of the midpoints of packed intervals."""
    t = 0.5 * (t_starts + t_ends)
    return origins[ray_indices] + directions[ray_indices] * t[:, None]


# ----------------------------------------------------------------------------- occupancy grid


class OccupancyGrid(nn.Module):
    """instant-ngp's density grid: which cells of the box may hold matter, to skip empty space.

    Cells (``resolution``^3 over ``aabb``) keep an exponential moving maximum of the field's density
    (``density = max(density * decay, new)`` at a random point in the cell). A cell is occupied when
    its density times the marching step (the opacity of one step) exceeds ``threshold``, or the
    grid's mean if that is lower (so a field that is faint everywhere early in training is not
    culled away). Until the first update every cell is occupied. :meth:`maybe_update` runs
    every ``update_every`` steps: on all cells during the first ``warmup_steps``, then on a quarter
    of the cells drawn uniformly plus as many drawn among the occupied ones (nerfacc's schedule).

    The state lives in buffers (``aabb``, ``density``, ``occupied``), so it is saved with the model's
    ``state_dict``. The marching step defaults to the box diagonal / ``steps_per_diagonal``
    (sqrt(3) * 3 / 1024 ~ 5e-3 for the Blender box, nerfacc's value), so no ray takes more than
    about ``steps_per_diagonal`` steps through the box.
    """

    def __init__(
        self,
        aabb: Tensor,
        resolution: int = 128,
        *,
        threshold: float = 0.01,
        decay: float = 0.95,
        update_every: int = 16,
        warmup_steps: int = 256,
        steps_per_diagonal: int = 1024,
    ) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone()
        if not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"aabb must have max > min on every axis, got {aabb.tolist()}")
        self.resolution = int(resolution)
        self.threshold, self.decay = float(threshold), float(decay)
        self.update_every, self.warmup_steps = int(update_every), int(warmup_steps)
        #: When set, updates draw their random cells from it rather than the caller's generator: the
        #: training loop gives data-parallel ranks one shared generator, so every rank's grid stays equal.
        self.generator: torch.Generator | None = None
        self._updated_at: int | None = None
        self.steps_per_diagonal = int(steps_per_diagonal)
        cells = self.resolution**3
        self.register_buffer("aabb", aabb)
        self.register_buffer("density", torch.zeros(cells))
        self.register_buffer("occupied", torch.ones(cells, dtype=torch.bool))
        self.allowed: Tensor | None = None  # see restrict(); not saved: the occupancy already obeys it

    def restrict(self, allowed: Tensor) -> None:
        """Only the cells where ``allowed`` (cells,) is True may ever be occupied (e.g. a visual hull);
        updates evaluate only those."""
        self.allowed = allowed.to(device=self.occupied.device, dtype=torch.bool).reshape(-1)
        self.occupied &= self.allowed

    @property
    def step_size(self) -> float:
        """The default marching step: the box diagonal / ``steps_per_diagonal``."""
        return float((self.aabb[1] - self.aabb[0]).norm()) / self.steps_per_diagonal

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_indices(self, points: Tensor) -> Tensor:
        """Flat index (x-major) of the cell holding each point (...,3); clamped to the grid."""
        lo, hi = self.aabb[0], self.aabb[1]
        ijk = ((points - lo) / (hi - lo) * self.resolution).floor().long()
        ijk = ijk.clamp(0, self.resolution - 1)
        return (ijk[..., 0] * self.resolution + ijk[..., 1]) * self.resolution + ijk[..., 2]

    def cell_centers(self, indices: Tensor | None = None) -> Tensor:
        """(K, 3) world centres of the cells ``indices`` (all cells when None)."""
        return self._cell_points(indices, None)

    def is_occupied(self, points: Tensor) -> Tensor:
        """(...,) bool: the point is inside the box and its cell is occupied."""
        inside = ((points >= self.aabb[0]) & (points <= self.aabb[1])).all(dim=-1)
        return inside & self.occupied[self.cell_indices(points)]

    def _cell_points(self, indices: Tensor | None, jitter: Tensor | None) -> Tensor:
        res = self.resolution
        if indices is None:
            indices = torch.arange(res**3, device=self.aabb.device)
        ijk = torch.stack([indices // (res * res), (indices // res) % res, indices % res], dim=-1)
        offset = 0.5 if jitter is None else jitter
        unit = (ijk.to(self.aabb.dtype) + offset) / res
        return self.aabb[0] + unit * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[Tensor], Tensor],
        *,
        all_cells: bool = True,
        generator: torch.Generator | None = None,
        chunk: int = 1 << 18,
    ) -> None:
        """Evaluate ``density_fn`` ((K, 3) world points -> (K,) or (K, 1) densities) at one random
        point in each chosen cell and refresh the occupancy (see the class docstring)."""
        device = self.aabb.device
        cells = self.resolution**3
        if all_cells:
            indices = torch.arange(cells, device=device)
        else:
            quarter = max(cells // 4, 1)
            source = generator.device if generator is not None else device
            uniform = torch.randint(0, cells, (quarter,), generator=generator, device=source)
            indices = uniform.to(device)
            occupied = self.occupied.nonzero().reshape(-1)
            if occupied.numel() > 0:
                pick = torch.randint(0, occupied.numel(), (quarter,), generator=generator,
                                     device=source).to(device)  # fmt: skip
                indices = torch.cat([indices, occupied[pick]])
        if self.allowed is not None:
            indices = self.allowed.nonzero().reshape(-1) if all_cells else indices[self.allowed[indices]]
        jitter = _uniform((indices.numel(), 3), generator, device, self.aabb.dtype)
        points = self._cell_points(indices, jitter)
        with torch.autocast(device.type, enabled=False):  # densities in float32 even in a bf16 run
            sigma = torch.cat([density_fn(points[i : i + chunk]).reshape(-1).float()
                               for i in range(0, points.shape[0], chunk)])  # fmt: skip
        sigma = torch.nan_to_num(sigma, nan=0.0, posinf=1e10, neginf=0.0).clamp_min(0.0)
        fresh = torch.zeros(cells, device=device).scatter_reduce(
            0, indices, sigma, reduce="amax", include_self=False
        )
        self.density[indices] = torch.maximum(self.density[indices] * self.decay, fresh[indices])
        limit = min(self.threshold / self.step_size, float(self.density.mean()))
        occupied = self.density > limit
        if self.allowed is not None:
            occupied &= self.allowed
        if bool(occupied.any()):  # a field with no density anywhere keeps every cell: never cull it all
            self.occupied.copy_(occupied)
        elif self.allowed is not None:
            self.occupied.copy_(self.allowed)
        else:
            self.occupied.fill_(True)

    def maybe_update(
        self,
        step: int,
        density_fn: Callable[[Tensor], Tensor],
        generator: torch.Generator | None = None,
    ) -> bool:
        """Update every ``update_every`` steps (all cells while warming up), once per step however often
        it is called (a sharded step calls it per shard); True if it ran."""
        if step % self.update_every != 0 or step == self._updated_at:
            return False
        self._updated_at = step
        shared = self.generator if self.generator is not None else generator
        self.update(density_fn, all_cells=step < self.warmup_steps, generator=shared)
        return True

    def ray_steps(self, origins: Tensor, directions: Tensor, offset: Tensor, step: float,
                  near: Tensor | float | None = None,
                  far: Tensor | float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Where each ray (R,) enters and leaves the box within [near, far] (t0, t1) and how many steps of
        ``step``, starting ``offset`` (R,) of a step after t0, it takes there (float, 0 for a miss). Float
        near/far need no host-to-device copy (a captured step's)."""
        t0, t1, hit = ray_aabb(origins, directions, self.aabb)
        if near is not None:
            t0 = torch.maximum(t0, near.to(t0)) if isinstance(near, Tensor) else t0.clamp_min(float(near))
        if far is not None:
            t1 = torch.minimum(t1, far.to(t1)) if isinstance(far, Tensor) else t1.clamp_max(float(far))
        span = torch.where(hit & (t1 > t0), (t1 - t0) / step - offset, torch.zeros_like(t0))
        return t0, t1, torch.ceil(span).clamp_min(0)

    @torch.no_grad()
    def march(
        self,
        origins: Tensor,
        directions: Tensor,
        near: Tensor | float | None = None,
        far: Tensor | float | None = None,
        *,
        step_size: float | None = None,
        stratified: bool = False,
        generator: torch.Generator | None = None,
        max_candidates: int = 1 << 24,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Packed intervals of fixed length along rays (R, 3), inside the box and in occupied cells.

        Steps start where the ray enters the box (or at ``near``), shifted by a random fraction of
        a step per ray when ``stratified`` (training); the last one is cut at the exit (or ``far``).
        Returns ``ray_indices`` (M,) int64, ``t_starts`` and ``t_ends`` (M,), sorted by ray then t;
        M may be 0. Rays are processed in chunks of at most ``max_candidates`` steps, in one
        vectorised pass each.
        """
        device = origins.device
        step = float(step_size or self.step_size)
        n_rays = origins.shape[0]
        if stratified:
            offset = _uniform((n_rays,), generator, device, origins.dtype)
        else:
            offset = torch.zeros(n_rays, device=device, dtype=origins.dtype)
        t0, t1, counts = self.ray_steps(origins, directions, offset, step, near, far)
        counts = counts.long()
        from recon3d.render import march_triton

        if march_triton.available(origins) and n_rays:  # the kernels: no candidate tensors, no chunks
            rays, starts, stops, _, _ = march_triton.march_packed(self, origins, directions, t0, t1, offset, counts,
                                                                  step)
            return rays, starts.to(origins.dtype), stops.to(origins.dtype)
        ends = torch.cumsum(counts, 0)
        total = int(ends[-1]) if n_rays else 0
        empty = torch.empty(0, device=device)
        if total == 0:
            return empty.long(), empty.to(origins.dtype), empty.to(origins.dtype)
        # Split the rays into chunks of at most max_candidates steps (a ray is never split).
        cuts: list[int] = []
        if total > max_candidates:
            marks = torch.arange(max_candidates, total, max_candidates, device=device)
            cuts = torch.searchsorted(ends, marks, right=True).tolist()
        bounds = sorted({0, *cuts, n_rays})
        out = [self._march_chunk(origins, directions, t0, t1, offset, counts, step, a, b)
               for a, b in zip(bounds[:-1], bounds[1:])]  # fmt: skip
        return tuple(torch.cat(parts) for parts in zip(*out))  # type: ignore[return-value]

    def _march_chunk(self, origins: Tensor, directions: Tensor, t0: Tensor, t1: Tensor,
                     offset: Tensor, counts: Tensor, step: float, a: int,
                     b: int) -> tuple[Tensor, Tensor, Tensor]:
        n = counts[a:b]
        total = int(n.sum())
        rays = torch.arange(a, b, device=origins.device)
        ray = torch.repeat_interleave(rays, n, output_size=total)
        first = torch.repeat_interleave(torch.cumsum(n, 0) - n, n, output_size=total)
        k = torch.arange(total, device=origins.device) - first
        t_starts = t0[ray] + (k.to(t0.dtype) + offset[ray]) * step
        t_ends = torch.minimum(t_starts + step, t1[ray])
        mids = 0.5 * (t_starts + t_ends)
        keep = self.is_occupied(origins[ray] + directions[ray] * mids[:, None])
        return ray[keep], t_starts[keep], t_ends[keep]
