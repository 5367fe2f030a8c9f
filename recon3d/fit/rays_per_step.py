"""How many rays a training step draws: about a fixed number of samples per batch (instant-ngp), the
same on every rank when a step is sharded across data-parallel ranks."""

from __future__ import annotations

from typing import Callable

#: Bounds of the adaptive ray count.
MIN_RAYS, MAX_RAYS = 256, 1 << 16


def adapt_rays(n_rays: int, samples: int, target_samples: int) -> int:
    """The next batch's ray count, so a batch holds about ``target_samples`` samples (instant-ngp)."""
    if not target_samples or samples <= 0:
        return n_rays
    scaled = n_rays * target_samples / samples
    return int(min(max(0.5 * n_rays + 0.5 * scaled, MIN_RAYS), MAX_RAYS))


class AdaptiveRays:
    """For step functions whose ray count follows the samples per batch (``n_rays``, ``target_samples``).

    Unsharded, the count changes after every call (:func:`adapt_rays`). When the training loop shards a
    step (data-parallel ranks, recon3d.fit.loop) it sets ``sharded``: the samples are summed over the
    step's calls and the count changes once, in ``end_step``, from the mean over every shard, so all
    ranks keep the same count.
    """

    n_rays: int
    target_samples: int
    sharded: bool = False
    _pending_samples: int = 0

    def observe_samples(self, samples: int) -> None:
        if self.sharded:
            self._pending_samples += int(samples)
        else:
            self.n_rays = adapt_rays(self.n_rays, samples, self.target_samples)

    def end_step(self, mean: Callable[[float], float]) -> None:
        """Called by the loop once per sharded step; ``mean(x)``: x's mean over every shard."""
        self.n_rays = adapt_rays(self.n_rays, mean(self._pending_samples), self.target_samples)
        self._pending_samples = 0
