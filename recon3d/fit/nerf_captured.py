"""fit-nerf's step with fixed shapes, replayed as a CUDA graph (recon3d.fit.captured).

The same loss as :class:`recon3d.fit.nerf.NerfStep` on occupancy-grid sampling, with the samples in a
fixed-size buffer (:func:`recon3d.render.fixed_march.march_fixed`, instant-ngp's layout): rays whose
samples overflow it are left out of the loss, the ray count is rounded to a few sizes (one graph each)
and adapted from the sample count of the step before, read back without stalling the GPU. The random
draws (pixels, marching offsets, backgrounds) are made into fixed buffers before each replay from the
run's generator. The first steps, while the occupancy grid is still warming up, run eagerly.
"""

from __future__ import annotations

import math

import torch

from recon3d.console import info
from recon3d.fit import losses
from recon3d.fit.captured import CapturedUpdates, eager_update
from recon3d.fit.nerf import NerfStep
from recon3d.fit.rays_per_step import adapt_rays
from recon3d.render import composite_triton
from recon3d.render.compositing import composite_packed
from recon3d.render.fixed_march import march_fixed, steps_per_ray

#: Eager steps before the first capture: the grid's first updates change the samples per ray most.
EAGER_STEPS = 64
#: Sample slots per target sample: room for a batch's random excess over the target.
CAPACITY_MARGIN = 1.1
#: Ray counts are rounded to powers of 2^(1/RAY_SIZES_PER_OCTAVE), multiples of 64, one graph each.
RAY_SIZES_PER_OCTAVE = 8


def rounded_rays(n_rays: int) -> int:
    """The ray count a graph is captured for: ``n_rays`` rounded to one of a few sizes."""
    octave = round(math.log2(max(n_rays, 1)) * RAY_SIZES_PER_OCTAVE) / RAY_SIZES_PER_OCTAVE
    return max(64, int(round(2.0**octave / 64)) * 64)


class CapturedNerfStep(NerfStep):
    """:class:`NerfStep` that runs its whole update (``update``) with fixed shapes, captured on CUDA.

    ``capture=False`` runs the fixed-shape step eagerly (the same numbers on any device: what tests use).
    """

    def __init__(self, *args, capture: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capture = capture
        self.capacity = int(math.ceil(self.target_samples * CAPACITY_MARGIN / 4096)) * 4096
        self.step_size = float(self.sampling.step_size or self.grid.step_size)  # host numbers, read once
        self.limit = steps_per_ray(self.grid, self.step_size)
        self.captured: CapturedUpdates | None = None
        self.inputs: dict[int, dict[str, torch.Tensor]] = {}
        self._pending: list[tuple[torch.Tensor, torch.cuda.Event | None, int]] = []

    def update(self, step: int, generator: torch.Generator,
               optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One training step: forward, backward and ``optimizer.step()``."""
        if step < EAGER_STEPS:
            return eager_update(optimizer, lambda: self(step, generator))
        if self.grid is not None:
            self.grid.maybe_update(step, self.field.density, generator=generator)
        n_rays = rounded_rays(self.n_rays)
        inputs = self._draw(n_rays, generator)
        if self.capture:
            if self.captured is None:
                self.captured = CapturedUpdates(optimizer)
            terms = dict(self.captured.run(n_rays, lambda: self.fixed_forward(inputs)))
        else:
            terms = eager_update(optimizer, lambda: self.fixed_forward(inputs))
        self._observe(terms.pop("wanted"), terms.pop("samples"), n_rays)
        return terms

    def _draw(self, n_rays: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """This step's random numbers, written into the fixed inputs of the ``n_rays`` graph."""
        if n_rays not in self.inputs:
            self.inputs[n_rays] = {"pixels": torch.zeros(n_rays, dtype=torch.int64, device=self.device),
                                   "offsets": torch.zeros(n_rays, device=self.device),
                                   "backgrounds": torch.zeros(n_rays, 3, device=self.device)}
        inputs = self.inputs[n_rays]
        inputs["pixels"].random_(0, len(self.rays), generator=generator)
        inputs["offsets"].uniform_(generator=generator)
        if self.random_background:
            inputs["backgrounds"].uniform_(generator=generator)
        else:
            inputs["backgrounds"].copy_(self.background.expand(n_rays, 3))
        return inputs

    def fixed_forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss of one batch with fixed shapes; also ``samples`` (slots used) and ``wanted`` (the
        samples the rays had), as int64 scalars. Reads only ``inputs``, the field and the grid."""
        batch = self.rays.batch_of(inputs["pixels"])
        target, background = batch.rgb, self.background
        if target.shape[-1] == 4:  # premultiplied colour + alpha: composite onto this step's background
            background = inputs["backgrounds"]
            target = target[:, :3] + background * (1.0 - target[:, 3:])
        origins, directions = batch.rays.origins, batch.rays.directions
        n_rays = origins.shape[0]
        marched = march_fixed(self.grid, origins, directions, inputs["offsets"], self.capacity,
                              self.sampling.near, self.sampling.far, self.step_size, self.limit)
        padded_origins = torch.cat([origins, torch.zeros_like(origins[:1])])  # ray R: the padding slots'
        padded_directions = torch.cat([directions, directions[:1]])
        rays = marched.ray_indices
        mids = 0.5 * (marched.t_starts + marched.t_ends)
        positions = padded_origins[rays] + padded_directions[rays] * mids[:, None]
        sigmas, rgbs = self.field(positions, padded_directions[rays])
        if composite_triton.available(sigmas):
            colour, opacity = composite_triton.composite_ranges(*marched.slot_ranges(), sigmas, rgbs,
                                                                marched.t_starts, marched.t_ends)
        else:
            result = composite_packed(rays, sigmas, rgbs, marched.t_starts, marched.t_ends, n_rays + 1, None)
            colour, opacity = result.rgb[:n_rays], result.opacity[:n_rays]
        rgb = colour + background * (1.0 - opacity[:, None])
        fits = marched.fits.to(rgb.dtype)
        mse = (((rgb - target) ** 2).mean(dim=-1) * fits).sum() / fits.sum().clamp_min(1.0)
        return {"loss": mse, "psnr": losses.psnr(mse), "samples": marched.samples.clamp_max(self.capacity),
                "wanted": marched.samples}

    def _observe(self, wanted: torch.Tensor, samples: torch.Tensor, n_rays: int) -> None:
        """Adapt the ray count from the step before this one, whose counts have arrived by now: the host
        waits for the GPU one step behind, never for the step it just queued."""
        counts = torch.stack([wanted, samples])
        if counts.is_cuda:
            host = torch.empty(2, dtype=counts.dtype, pin_memory=True)
            host.copy_(counts, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((host, event, n_rays))
        else:
            self._pending.append((counts, None, n_rays))
        if len(self._pending) > 1:
            self._settle(1)

    def _settle(self, keep: int = 0) -> None:
        """Read back all but the last ``keep`` pending counts."""
        while len(self._pending) > keep:
            host, event, n_rays = self._pending.pop(0)
            if event is not None:
                event.synchronize()
            wanted, samples = (int(v) for v in host.tolist())
            self.samples_seen += samples
            self.n_rays = adapt_rays(n_rays, wanted, self.target_samples)

    def finish(self) -> None:
        """Count the last step's samples (called once training ends) and say what was captured."""
        self._settle(0)
        if self.captured is not None and self.captured.captures:
            info(f"CUDA graphs: {self.captured.captures} captured (rays per step "
                 f"{', '.join(map(str, sorted(self.inputs)))}), {self.capacity} sample slots")
