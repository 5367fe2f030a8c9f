"""Presets and budgets: per-device tables, the user's overrides, validated training settings."""

from __future__ import annotations

import copy
from typing import Any

import torch

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


def make_settings(budget: dict, steps: int | None, max_seconds: float | None, lr: float | None,
                  seed: int, amp: bool) -> TrainSettings:
    """Training settings from a preset budget and the user's overrides, validated."""
    steps = int(steps if steps is not None else budget["steps"])
    if steps < 1:
        raise Recon3dError("--steps must be at least 1")
    if max_seconds is not None and max_seconds <= 0:
        raise Recon3dError("--max-seconds must be positive")
    rate = float(lr if lr is not None else budget["lr"])
    if not rate > 0:
        raise Recon3dError("--lr must be positive")
    return TrainSettings(steps=steps, max_seconds=max_seconds, lr=rate, seed=seed, amp=amp,
                         warmup_steps=min(50, max(steps // 10, 1)))


def make_batch(budget: dict, batch: int | None) -> int:
    """The batch size: the user's, else the preset's; at least 1."""
    value = int(batch if batch is not None else budget["batch"])
    if value < 1:
        raise Recon3dError("--batch must be at least 1")
    return value


def resumed_settings(stored: dict, steps: int | None, max_seconds: float | None) -> TrainSettings:
    """The stored settings of an interrupted run, with new budgets if the user gave any."""
    overrides: dict[str, Any] = {}
    if steps is not None:
        overrides["steps"] = steps
    if max_seconds is not None:
        overrides["max_seconds"] = max_seconds
    settings = TrainSettings(**{**stored, **overrides})
    settings.betas = tuple(settings.betas)
    return settings


def plain_settings(settings: TrainSettings) -> dict[str, Any]:
    """Settings as plain data for the checkpoint (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()}
