"""What every fit-* method shares around the training loop: presets per device, budgets, the
checkpoint dictionary and the --json summary. A method only adds its sampler, loss and level."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recon3d import __version__
from recon3d.errors import Recon3dError
from recon3d.fit.loop import Trainer, TrainSettings, TrainState, hold_signals
from recon3d.io.checkpoint import VERSION, save_checkpoint

#: The default multiresolution hash grid per device: 16 levels up to 2048 cells on a GPU; a smaller
#: table and 12 levels up to 1024 on a CPU, where every level costs time.
HASHGRID = {
    "cuda": {"type": "hashgrid", "n_levels": 16, "n_features": 2, "log2_table_size": 19,
             "base_resolution": 16, "max_resolution": 2048},
    "cpu": {"type": "hashgrid", "n_levels": 12, "n_features": 2, "log2_table_size": 17,
            "base_resolution": 16, "max_resolution": 1024},
}


@dataclass
class FitOptions:
    """What the user asked any fit-* for; None means the preset's default for the device."""

    preset: str = "fast"
    steps: int | None = None
    max_seconds: float | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int = 0
    amp: bool = False


def pick(table: dict, device: torch.device) -> Any:
    """A preset entry for this device: ``any``, else the device type's, else ``cpu``'s (a copy)."""
    return copy.deepcopy(table.get("any", table.get(device.type, table.get("cpu"))))


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
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()}


def checkpoint_dict(kind: str, field: torch.nn.Module, level: float, inside: str, to_world: dict,
                    bounds: np.ndarray, state: TrainState, device: torch.device,
                    train: dict[str, Any]) -> dict[str, Any]:
    """The plain-data checkpoint (see recon3d.io.checkpoint); ``train`` adds method-specific records."""
    return {
        "format": "recon3d",
        "version": VERSION,
        "kind": kind,
        "level": float(level),
        "inside": inside,
        "field": field.config,
        "state_dict": {k: v.detach().cpu() for k, v in field.state_dict().items()},
        "to_world": to_world,
        "bounds": np.asarray(bounds, dtype=np.float64).tolist(),
        "train": {
            **train,
            "steps": state.step,
            "seconds": state.seconds,
            "stopped_by": state.stopped_by,
            "complete": not state.interrupted,
            "history_terms": state.terms,
            "history": state.history,
            "device": str(device),
            "versions": {"recon3d": __version__, "torch": str(torch.__version__)},
        },
    }


def summarize(checkpoint: dict, output: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The --json summary of a fit: checkpoint path, budget used, how it ended, last loss."""
    train = checkpoint["train"]
    summary = {
        "checkpoint": str(output), "kind": checkpoint["kind"], "steps": train["steps"],
        "seconds": round(train["seconds"], 3), "stopped_by": train["stopped_by"],
        "complete": train["complete"], "loss": train["history"][-1][1] if train["history"] else None,
    }
    summary.update({key: train[key] for key in extra if key in train})
    summary["device"] = train["device"]
    return summary


def save_fit(output: Any, checkpoint: dict, trainer: Trainer, state: TrainState) -> None:
    """Write a fit's checkpoint, resumable when training was interrupted.

    SIGINT/SIGTERM arriving during the write are held until it is done (a second one gives up at once,
    and the atomic write keeps the old file), so a late signal never throws the finished work away.
    """
    if state.interrupted:
        checkpoint["resume"] = trainer.resume_state()
    with hold_signals():
        save_checkpoint(output, checkpoint)


def run_config(options: FitOptions, device: torch.device, resume: dict | None, resolve: Any) -> dict[str, Any]:
    """The run's config: an interrupted run's own (with any new budgets) when resuming, else
    ``resolve(options, device)`` (the method's preset for this device)."""
    if resume is None:
        return resolve(options, device)
    config = resume["train"]["config"]
    config["settings"] = resumed_settings(config["settings"], options.steps, options.max_seconds)
    return config
