"""Memory on the CPU or GPU, rough estimates of what work needs, and one clear refusal up front.

The estimates are deliberately simple (within a factor of about two of peaks measured on a CPU):
they exist to refuse requests that cannot fit (``--resolution 4096`` on a laptop,
``--batch 1e9``, a small file that declares gigabytes) before minutes of work end in an allocator
error, with a message naming the options that reduce the need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recon3d.errors import Recon3dError

#: Bytes per float32 activation.
_FLOAT = 4
#: Multiples of an MLP's activations that autograd holds: one backward pass (training, field gradients)
#: and a backward through a gradient (fit-sdf's eikonal term differentiates ∇ₓf again).
_BACKWARD = 1.5
_GRADIENT = 2.2
_DOUBLE_BACKWARD = 5.0
#: A field evaluation without autograd holds about this many of its widest activations at once.
_EVAL_WIDTHS = 3
#: Hash-grid bytes per point and level, plus per feature: without autograd / with it.
_HASH_EVAL = (160, 20)
_HASH_AUTOGRAD = (280, 30)
#: When a config cannot be read: a generous per-point figure.
_UNKNOWN_FIELD = 64 * 1024
MODES = ("eval", "gradient", "train", "train2")


def _cgroup_available() -> int | None:
    """What the memory cgroup (v2, else v1) still allows this process, or None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 1 << 60:
            return None
        return max(0, int(limit_text) - usage)
    return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device: Any = "cpu") -> int | None:
    """Memory this process can still take on ``device`` (a torch device or its name), in bytes.

    CPU: the kernel's MemAvailable, capped by a container's memory cgroup. CUDA: the GPU's free memory
    plus what torch's caching allocator holds unused. None when it cannot be told (nothing is refused).
    """
    name = str(device)
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        gpu = torch.device(name)
        free, _ = torch.cuda.mem_get_info(gpu)
        return int(free + torch.cuda.memory_reserved(gpu) - torch.cuda.memory_allocated(gpu))
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(values) if values else None


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human figure: 512 B, 3.2 MB, 4.6 GB, 3.2 TB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_memory(need: float, what: str, remedy: str, device: Any = "cpu") -> None:
    """Raise one Recon3dError when ``need`` bytes exceed what ``device`` has available.

    ``what`` says what needs it (``"extraction at --resolution 4096"``); ``remedy`` names the options
    that reduce it (``"use a smaller --resolution"``).
    """
    available = available_bytes(device)
    if available is None or need <= available:
        return
    where = "" if str(device).startswith("cpu") else f" on {device}"
    raise Recon3dError(f"{what} needs about {format_bytes(need)} of memory, more than the {format_bytes(available)} "
                       f"available{where}; {remedy}")


# ------------------------------------------------------------------------------ field estimates


def _encoding_bytes(config: dict, autograd: bool) -> tuple[float, int]:
    """(temporary bytes per point, output width) of an encoding config."""
    kind = config.get("type", "none")
    in_dim = int(config.get("in_dim", 3))
    if kind == "hashgrid":
        levels, features = int(config.get("n_levels", 16)), int(config.get("n_features", 2))
        per_level, per_feature = _HASH_AUTOGRAD if autograd else _HASH_EVAL
        return levels * (per_level + per_feature * features), levels * features
    if kind == "frequency":
        width = in_dim * 2 * int(config.get("n_frequencies", 6)) + (in_dim if config.get("include_input", True) else 0)
    elif kind == "fourier":
        width = 2 * int(config.get("n_features", 128)) + (in_dim if config.get("include_input", True) else 0)
    elif kind == "sh":
        width = int(config.get("degree", 4)) ** 2
    else:
        return 0.0, in_dim
    return float((4 if autograd else 3) * width * _FLOAT), width


def _mlp_widths(in_dim: int, mlp: dict, out_dim: int) -> list[int]:
    hidden, layers = int(mlp.get("hidden", 64)), int(mlp.get("n_layers", 2))
    return [in_dim, *([hidden] * layers), out_dim]


def field_point_bytes(config: dict, mode: str = "eval") -> float:
    """Rough peak bytes per point of one field evaluation, from a field's config (see module).

    ``mode``: ``eval`` (no autograd: extraction), ``gradient`` (∇ₓf: field normals, refinement),
    ``train`` (one backward: occupancy), ``train2`` (a backward through ∇ₓf: fit-sdf's eikonal term).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        autograd = mode != "eval"
        if "position_encoding" in config:  # a radiance field: density trunk (the colour net is per vertex)
            encoding, mlp = config["position_encoding"], config["density_mlp"]
            out_dim = 1 + int(config.get("geo_features", 16))
        else:
            encoding, mlp = config.get("encoding") or {"type": "none"}, config["mlp"]
            out_dim = 1 + int((config.get("appearance") or {}).get("features", 0))
        encoding_bytes, width = _encoding_bytes(encoding, autograd)
        in_dim = width + (3 if encoding.get("type") == "hashgrid" else 0)
        widths = _mlp_widths(in_dim, mlp, out_dim)
    except (KeyError, TypeError, ValueError, AttributeError):
        return float(_UNKNOWN_FIELD)
    if mode == "eval":
        return encoding_bytes + _EVAL_WIDTHS * max(widths) * _FLOAT
    factor = {"gradient": _GRADIENT, "train": _BACKWARD, "train2": _DOUBLE_BACKWARD}[mode]
    return encoding_bytes + factor * sum(widths) * _FLOAT
