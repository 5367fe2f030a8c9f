"""Device choice: ``auto`` takes the GPU where there is one."""

from __future__ import annotations

import torch

from recon3d.errors import Recon3dError

DEVICE_CHOICES = ("auto", "cpu", "cuda")

#: torch's GPU out-of-memory error (a RuntimeError subclass; RuntimeError itself on old torch).
OUT_OF_MEMORY = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
#: out-of-memory retries halve a chunk down to this many points (or rays), then give up.
MIN_CHUNK = 1024


def release_cached_memory(device: torch.device | str) -> None:
    """Give the CUDA caching allocator's free blocks back before a retry with a smaller chunk."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:N]`` to a torch device, with a clear error when CUDA is absent."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Recon3dError(f"--device {name}: no CUDA GPU is available here (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise Recon3dError(f"--device {name}: unknown device (choose auto, cpu or cuda)")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
