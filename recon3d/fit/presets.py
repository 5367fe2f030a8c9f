"""Presets and budgets: per-device tables, the user's overrides, validated training settings."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from recon3d.device import tf32_wanted
from recon3d.errors import Recon3dError
from recon3d.fit.loop import TrainSettings


def pick(table: dict, device: torch.device) -> Any:
    """A preset entry for this device: ``any``, else the device type's, else ``cpu``'s (a copy)."""
    return copy.deepcopy(table.get("any", table.get(device.type, table.get("cpu"))))


def choose_preset(presets: dict[str, Any], name: str) -> Any:
    """The preset called ``name``, or one clear error listing the choices."""
    if name not in presets:
        raise Recon3dError(f"--preset {name}: unknown preset (choose {', '.join(presets)})")
    return presets[name]


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    """One clear error when an option's value is not one of its choices."""
    if value not in choices:
        raise Recon3dError(f"{option} {value}: choose {', '.join(choices)}")


#: Option ranges every fit shares. The seed is torch's (``torch.manual_seed`` takes a signed 64-bit
#: integer); a peak learning rate above MAX_LR is never useful with Adam and overflows float32 far above it;
#: steps and batch sizes beyond 32-bit integers overflow torch's index arguments (and no run needs them).
MAX_SEED = 2**63
MAX_LR = 10.0
MAX_COUNT = 2**31 - 1


def check_steps(steps: Any) -> int:
    """``--steps``: an integer in [1, MAX_COUNT]."""
    return _check_int("--steps", steps, 1, MAX_COUNT)


def check_batch(batch: Any) -> int:
    """``--batch``: an integer in [1, MAX_COUNT] (the memory it needs is the method's to check)."""
    return _check_int("--batch", batch, 1, MAX_COUNT)


def check_seed(seed: Any) -> int:
    """``--seed``: an integer in [0, 2**63)."""
    return _check_int("--seed", seed, 0, MAX_SEED - 1)


def check_lr(lr: Any) -> float:
    """``--lr``: a finite number in (0, MAX_LR]."""
    value = _check_float("--lr", lr)
    if not 0.0 < value <= MAX_LR:
        raise Recon3dError(f"--lr must be positive and at most {MAX_LR:g}, got {value:g}")
    return value


def check_max_seconds(max_seconds: Any) -> float | None:
    """``--max-seconds``: None (no time budget) or a finite number > 0."""
    if max_seconds is None:
        return None
    value = _check_float("--max-seconds", max_seconds)
    if not value > 0.0:
        raise Recon3dError(f"--max-seconds must be positive, got {value:g}")
    return value


def check_fit_options(options: Any) -> None:
    """The scalar options every fit shares (an object with ``steps``, ``max_seconds``, ``batch``, ``lr``,
    ``seed``; None means the preset's): one clear error for the first out of range, before any slow work."""
    if options.steps is not None:
        check_steps(options.steps)
    check_max_seconds(options.max_seconds)
    if options.batch is not None:
        check_batch(options.batch)
    if options.lr is not None:
        check_lr(options.lr)
    check_seed(options.seed)


def _check_int(option: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise Recon3dError(f"{option} must be an integer, got {value!r}")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise Recon3dError(f"{option} must be an integer, got {value!r}")
    number = int(value)
    if number < low:
        raise Recon3dError(f"{option} must be at least {low}, got {number}")
    if number > high:
        raise Recon3dError(f"{option} must be at most {high:,}, got {number:,}")
    return number


def _check_float(option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise Recon3dError(f"{option} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Recon3dError(f"{option} must be a finite number, got {value!r}")
    return number


def make_settings(budget: dict, steps: int | None, max_seconds: float | None, lr: float | None,
                  seed: int, amp: bool) -> TrainSettings:
    """Training settings from a preset budget and the user's overrides, validated."""
    steps = check_steps(steps if steps is not None else budget["steps"])
    max_seconds = check_max_seconds(max_seconds)
    rate = check_lr(lr if lr is not None else budget["lr"])
    return TrainSettings(steps=steps, max_seconds=max_seconds, lr=rate, seed=check_seed(seed), amp=amp,
                         tf32=tf32_wanted(budget.get("tf32", False)), warmup_steps=min(50, max(steps // 10, 1)))


def make_batch(budget: dict, batch: int | None) -> int:
    """The batch size: the user's, else the preset's; at least 1."""
    return check_batch(batch if batch is not None else budget["batch"])


def resumed_settings(stored: dict, steps: int | None, max_seconds: float | None) -> TrainSettings:
    """The stored settings of an interrupted run, with new budgets if the user gave any."""
    overrides: dict[str, Any] = {}
    if steps is not None:
        overrides["steps"] = check_steps(steps)
    if max_seconds is not None:
        overrides["max_seconds"] = check_max_seconds(max_seconds)
    settings = TrainSettings(**{**stored, **overrides})
    settings.betas = tuple(settings.betas)
    return settings


def plain_settings(settings: TrainSettings) -> dict[str, Any]:
    """Settings as plain data for the checkpoint (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()}
