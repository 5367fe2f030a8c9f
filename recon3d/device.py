"""Device choice (``auto`` takes the GPU where there is one), CPU threads (:func:`default_threads`,
:func:`use_threads`), and chunked work that survives GPU out-of-memory by retrying with smaller chunks
(:func:`map_in_chunks`)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch

from recon3d.errors import Recon3dError
from recon3d.threads import MAX_THREADS, check_threads

DEVICE_CHOICES = ("auto", "cpu", "cuda")

#: torch's GPU out-of-memory error (a RuntimeError subclass; RuntimeError itself on old torch).
OUT_OF_MEMORY = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
#: out-of-memory retries halve a chunk down to this many points (or rays), then give up.
MIN_CHUNK = 1024


#: ``RECON3D_TF32``: unset, each fit's preset decides; ``0`` keeps float32 matmuls in every fit; ``1`` lets every
#: CUDA fit use TF32 (for benchmarks).
TF32_ENV = "RECON3D_TF32"


def tf32_wanted(preset_default: bool) -> bool:
    """Whether a fit multiplies its float32 matrices in TF32 on a GPU: the preset's choice unless
    :data:`TF32_ENV` overrides it."""
    value = os.environ.get(TF32_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise Recon3dError(f"{TF32_ENV} must be 0 or 1, got {value!r}")
    return bool(preset_default)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool, device: torch.device | str) -> Iterator[None]:
    """float32 matrix products on tensor cores in TF32 (10-bit mantissa, float32 range) inside the block,
    on a CUDA device; restores the process's previous setting after it. A CPU run is unchanged."""
    if not enabled or torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def triton_interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET=1``, set by the kernel tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_can_run(x: torch.Tensor) -> bool:
    """Whether a Triton kernel can take ``x``: a CUDA tensor, or any tensor under Triton's CPU interpreter.
    Callers check this before importing their kernel module, so a CPU run never imports Triton."""
    return x.is_cuda or triton_interpreting()


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


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:N]`` (or a torch.device) to a torch device, with a clear error when CUDA is absent."""
    if isinstance(name, torch.device):
        name = str(name)
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


@functools.cache
def start_kernel_key() -> None:
    """Once per process, unless the torch encoding is asked for: compute Triton's cache key on a thread. A
    process's first Triton launch hashes Triton's own files for it (0.4 s on an H100 machine, most of it
    the 500 MB compiler library), which then overlaps whatever the process does before that launch (a fit's
    preparation). The thread imports Triton itself: started after torch's import (recon3d.launch, a fit),
    never beside it. Its Python parts compete with the main thread's, so only work that will launch the
    kernels starts it."""
    from recon3d.fields.encodings import KERNEL_ENV  # here: that module imports this one

    if os.environ.get(KERNEL_ENV, "triton") == "torch":
        return
    threading.Thread(target=_kernel_key, daemon=True, name="triton-key").start()


def _kernel_key() -> None:
    try:
        from triton.runtime.cache import triton_key
    except ImportError:  # the CPU build of torch ships no Triton; a Triton that keeps the key elsewhere
        return
    triton_key()


_WARMUPS: list[threading.Thread] = []


def start_blas_warmup(ordinal: int) -> threading.Thread:
    """Start cuBLAS on GPU ``ordinal`` on a daemon thread, once torch is in. A process's first matrix product
    on a GPU creates cuBLAS's handle and loads its kernels (about 0.1 s on an H100 machine); done here, it
    overlaps the command's own preparation (parsing, reading the checkpoint or the data) instead of delaying
    the first evaluation. Does nothing where there is no such GPU."""
    thread = threading.Thread(target=_blas_warmup, args=(ordinal,), daemon=True, name="blas-warmup")
    thread.start()
    _WARMUPS.append(thread)
    return thread


def join_warmups() -> None:
    """Wait for the GPU warm-up threads (:func:`start_blas_warmup`): CUDA graph capture must not run beside
    another thread's GPU work."""
    while _WARMUPS:
        _WARMUPS.pop().join()


def _blas_warmup(ordinal: int) -> None:
    try:
        if not torch.cuda.is_available() or ordinal >= torch.cuda.device_count():
            return
        device = torch.device("cuda", ordinal)
        x = torch.zeros(2**14, 32, device=device)
        for width in (64, 64, 16):  # the shapes of a small field's layers
            x = torch.nn.functional.linear(x, torch.zeros(width, x.shape[1], device=device))
        torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 - a warm-up only: the command reports its own GPU errors
        return


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ threads


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, Slurm, cgroup cpusets), capped by a
    container's CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cpu_quota()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _cpu_quota() -> int | None:
    """CPUs a cgroup quota allows (rounded up), or None without a quota."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            if period_file is None:
                quota, period = Path(quota_file).read_text().split()[:2]
            else:
                quota, period = Path(quota_file).read_text().strip(), Path(period_file).read_text().strip()
            if quota in ("max", "-1"):
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError):
            continue
    return None


def physical_cores() -> int | None:
    """Physical cores of the machine (hyper-threads counted once), from /sys; None when unknown."""
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:
            continue
    return len(cores) or None


def default_threads() -> int:
    """The CPU threads recon3d uses unless told: ``OMP_NUM_THREADS`` when set, else the CPUs this process may
    use (:func:`usable_cpus`), not more than the physical cores (a second thread per core only adds contention
    to torch's kernels)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return min(int(env), MAX_THREADS)
    count = usable_cpus()
    cores = physical_cores()
    return max(1, min(count, cores) if cores else count)


@contextlib.contextmanager
def use_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` CPU threads for torch (None: :func:`default_threads`); the previous
    count comes back afterwards. Yields the count used."""
    count = default_threads() if threads is None else check_threads(threads)
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
