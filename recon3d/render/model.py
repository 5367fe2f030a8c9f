"""A fitted model ready to render: its field, its occupancy grid and its sampling, restored from a
checkpoint without any training code."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recon3d.errors import InputError
from recon3d.fields import FIELDS, build_field
from recon3d.render.renderer import Sampling
from recon3d.render.samplers import OccupancyGrid

#: Occupancy grid per device: instant-ngp's 128³ cells and ~1024 steps across the box on a GPU; a
#: coarser grid and longer steps on a CPU, where every sample costs.
GRID = {"cuda": {"resolution": 128, "steps_per_diagonal": 1024},
        "cpu": {"resolution": 64, "steps_per_diagonal": 256}}


@dataclass
class Renderer:
    """What renders rays of a checkpoint: the field (σ, rgb), the grid that skips empty space (None for
    hierarchical sampling) and how rays are sampled."""

    field: torch.nn.Module
    grid: OccupancyGrid | None
    sampling: Sampling


def make_grid(config: dict, device: torch.device) -> OccupancyGrid | None:
    """The occupancy grid of a run config with grid sampling (None for hierarchical sampling)."""
    if config["sampling"]["kind"] != "grid":
        return None
    grid = config.get("grid", GRID["cuda"])
    return OccupancyGrid(torch.tensor(config["field"]["aabb"]), int(grid["resolution"]),
                         steps_per_diagonal=int(grid["steps_per_diagonal"])).to(device)


def load_renderer(checkpoint: dict, device: torch.device, source: str = "model") -> Renderer:
    """The renderer of a checkpoint whose field has colours and a sampling config, on ``device``."""
    renderable = [kind for kind, cls in FIELDS.items() if getattr(cls, "renders", False)]
    config = checkpoint["train"].get("config", {})
    if checkpoint["kind"] not in renderable or "sampling" not in config:
        raise InputError(f"{source}: holds a {checkpoint['kind']} field; this command needs {' or '.join(renderable)}")
    field = build_field(checkpoint["kind"], checkpoint["field"])
    field.load_state_dict(checkpoint["state_dict"])
    field = field.to(device).eval()
    grid = make_grid(config, device)
    if grid is not None and "grid" in checkpoint:
        grid.load_state_dict(checkpoint["grid"])
    return Renderer(field, grid, Sampling(**config["sampling"]))
