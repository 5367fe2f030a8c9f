"""Device choice (``auto`` takes the GPU where there is one), and chunked work that survives GPU
out-of-memory by retrying with smaller chunks (:func:`map_in_chunks`)."""

from __future__ import annotations

from typing import Callable, TypeVar

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


T = TypeVar("T")


def map_in_chunks(fn: Callable[[int, int], T], n: int, chunk: int, device: torch.device | str,
                  min_chunk: int = MIN_CHUNK) -> tuple[list[T], int]:
    """``fn(start, stop)`` over ``[0, n)`` in consecutive pieces of at most ``chunk`` items.

    On GPU out-of-memory (:data:`OUT_OF_MEMORY`) the cached memory is released, the chunk is halved
    (not below ``min_chunk``) and the failed piece is retried, so the work continues where it stopped;
    a failure at ``min_chunk`` or below is raised. Returns (the results of the pieces, in order; the
    chunk that was last used), so a caller can keep the smaller chunk for its next calls. A piece whose
    call failed is done again in smaller pieces, so ``fn`` should return or write its range only.
    """
    chunk = max(1, int(chunk))
    results: list[T] = []
    start = 0
    while start < n:
        stop = min(start + chunk, n)
        try:
            result = fn(start, stop)
        except OUT_OF_MEMORY:
            if chunk <= min_chunk:
                raise
            out_of_memory = True
        else:
            out_of_memory = False
        if out_of_memory:  # outside the except block: the traceback's frames (and tensors) are released
            release_cached_memory(device)
            chunk = max(min_chunk, chunk // 2)
            continue
        results.append(result)
        start = stop
    return results, chunk


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
