"""fit-nerf: a radiance field from posed images (Mildenhall et al. 2020; instant-ngp's fast variant).

Each step draws random pixels of the training images, renders their rays (render/renderer.py) and
minimises the squared colour error. Presets:

* ``fast`` (default): multiresolution hash grid + tiny MLPs, spherical-harmonics view directions,
  an occupancy grid (updated every 16 steps) that skips empty space, and a ray count adapted each
  step so a batch holds about ``target_samples`` samples (instant-ngp's 2^18 on a GPU).
* ``paper``: positional encoding (L = 10 / 4), 8×256 ReLU MLP with a skip, 64 stratified coarse +
  128 importance fine samples per ray, both passes in the loss.

Images with alpha are trained on a random background per ray (the target re-composited onto it),
so the field cannot paint the background colour into space; renders use the scene's background.
The checkpoint's ``level`` is a density threshold (σ per world unit) for extract-mesh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon3d.console import info
from recon3d.errors import Recon3dError
from recon3d.fields import build_field
from recon3d.fields.radiance import DEFAULT_DENSITY_LEVEL, radiance_preset
from recon3d.fit.common import (FitOptions, checkpoint_dict, make_batch, make_settings, pick, plain_settings,
                                run_config, save_fit, summarize)
from recon3d.fit.loop import Trainer, TrainState
from recon3d.io.scene import Scene
from recon3d.render.rays import RaySampler
from recon3d.render.renderer import Sampling, render_rays
from recon3d.render.samplers import OccupancyGrid

#: Occupancy grid per device: instant-ngp's 128³ cells and ~1024 steps across the box on a GPU; a
#: coarser grid and longer steps on a CPU, where every sample costs.
GRID = {"cuda": {"resolution": 128, "steps_per_diagonal": 1024},
        "cpu": {"resolution": 64, "steps_per_diagonal": 256}}
#: Samples per batch the fast preset aims at, and the bounds on its ray count.
MIN_RAYS, MAX_RAYS = 256, 1 << 16

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "sampling": {"kind": "grid"},
        "budget": {"cuda": {"steps": 20000, "batch": 4096, "lr": 1e-2, "target_samples": 1 << 18},
                   "cpu": {"steps": 500, "batch": 1024, "lr": 1e-2, "target_samples": 1 << 14}},
    },
    "paper": {
        "sampling": {"kind": "hierarchical", "coarse": 64, "fine": 128},
        "budget": {"cuda": {"steps": 200000, "batch": 4096, "lr": 5e-4, "target_samples": 0},
                   "cpu": {"steps": 500, "batch": 256, "lr": 5e-4, "target_samples": 0}},
    },
}
#: A smaller hash table and fewer levels on a CPU, where every level costs time.
_CPU_HASHGRID = {"n_levels": 12, "log2_table_size": 17, "max_resolution": 1024}


@dataclass
class NerfOptions(FitOptions):
    """fit-nerf's options: the common ones (batch = rays per step, adapted by the fast preset) and
    training on random backgrounds."""

    random_background: bool = True


def resolve_preset(options: NerfOptions, scene: Scene, device: torch.device) -> dict[str, Any]:
    """The concrete field config, sampling and settings for this scene and device."""
    if options.preset not in PRESETS:
        raise Recon3dError(f"--preset {options.preset}: unknown preset (choose {', '.join(PRESETS)})")
    preset = PRESETS[options.preset]
    budget = pick(preset["budget"], device)
    field = radiance_preset(options.preset, scene.aabb.tolist())
    if options.preset == "fast" and device.type != "cuda":
        field["position_encoding"].update(_CPU_HASHGRID)
    sampling = Sampling(near=float(scene.near), far=float(scene.far), **preset["sampling"]).to_dict()
    settings = make_settings(budget, options.steps, options.max_seconds, options.lr, options.seed, options.amp)
    return {"field": field, "sampling": sampling, "grid": pick(GRID, device),
            "settings": settings, "batch": make_batch(budget, options.batch),
            "target_samples": int(budget["target_samples"]), "random_background": bool(options.random_background)}


def training_images(scene: Scene) -> torch.Tensor:
    """(N, H, W, 3 or 4) what rays are trained against: premultiplied colour + alpha when known."""
    if scene.alphas is None:
        return scene.images
    alpha = scene.alphas[..., None]
    background = torch.tensor(scene.background, dtype=scene.images.dtype, device=scene.images.device)
    premultiplied = scene.images - background * (1.0 - alpha)
    return torch.cat([premultiplied, alpha], dim=-1)


class NerfStep:
    """The per-step closure: sample rays, render, squared error; keeps the adaptive ray count."""

    def __init__(self, field: torch.nn.Module, grid: OccupancyGrid | None, rays: RaySampler, sampling: Sampling,
                 background: tuple[float, float, float], batch: int, target_samples: int,
                 random_background: bool) -> None:
        self.field, self.grid, self.rays, self.sampling = field, grid, rays, sampling
        self.device = rays.device
        self.background = torch.tensor(background, dtype=torch.float32, device=self.device)
        self.n_rays = int(batch)
        self.target_samples = int(target_samples)
        self.random_background = random_background
        self.samples_seen = 0

    def __call__(self, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        if self.grid is not None:
            self.grid.maybe_update(step, self.field.density, generator=gen)
        batch = self.rays.sample(self.n_rays, gen)
        target = batch.rgb
        background = self.background
        if target.shape[-1] == 4:  # premultiplied colour + alpha: composite onto this step's background
            if self.random_background:
                background = torch.rand((len(target), 3), device=self.device, generator=gen)
            target = target[:, :3] + background * (1.0 - target[:, 3:])
        rendered = render_rays(self.field, batch.rays, self.sampling, self.grid, background, train=True,
                               generator=gen)
        mse = torch.mean((rendered.result.rgb - target) ** 2)
        loss = mse
        if rendered.coarse is not None:
            loss = loss + torch.mean((rendered.coarse.rgb - target) ** 2)
        self.samples_seen += rendered.samples
        if self.target_samples and rendered.samples > 0:  # instant-ngp: keep samples per batch constant
            scaled = self.n_rays * self.target_samples / rendered.samples
            self.n_rays = int(min(max(0.5 * self.n_rays + 0.5 * scaled, MIN_RAYS), MAX_RAYS))
        psnr = -10.0 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": loss, "psnr": psnr}


def fit_nerf(scene: Scene, options: NerfOptions, output: str | Path, device: torch.device,
             resume: dict | None = None, show_progress: bool = True,
             on_step: Callable[[Trainer, int], None] | None = None) -> dict[str, Any]:
    """Fit a radiance field to ``scene`` (its train split), write the checkpoint, return a summary.

    ``on_step(trainer, step)`` runs before every step (benchmarks evaluate there, excluding the time
    they spend with ``trainer.exclude``).
    """
    config = run_config(options, device, resume, lambda opts, dev: resolve_preset(opts, scene, dev))
    torch.manual_seed(config["settings"].seed)
    field = build_field("nerf", config["field"]).to(device)
    sampling = Sampling(**config["sampling"])
    grid = make_grid(config, device)
    batch = config["batch"]
    if resume is not None:
        field.load_state_dict(resume["state_dict"])
        if grid is not None:
            grid.load_state_dict(resume["grid"])
        batch = int(resume["train"].get("rays_per_step", batch))
    rays = RaySampler(training_images(scene), scene.c2w, scene.fx, scene.fy, scene.cx, scene.cy,
                      scene.distortion, device=device)
    step = NerfStep(field, grid, rays, sampling, scene.background, batch, config["target_samples"],
                    config["random_background"])
    trainer = Trainer(field, step, config["settings"], device, label="fit-nerf", show_progress=show_progress,
                      on_step=None if on_step is None else (lambda i: on_step(trainer, i)))
    if resume is not None:
        trainer.load_resume_state(resume["resume"])
    info(f"{scene.source}: {len(scene)} {scene.split} images {scene.width}x{scene.height}, "
         f"preset {options.preset if resume is None else 'resumed'}, sampling {sampling.kind}")
    start = time.perf_counter()
    state = trainer.run()
    wall = time.perf_counter() - start - trainer.excluded_seconds
    checkpoint = build_checkpoint(field, grid, config, state, scene, step, device)
    checkpoint["train"]["samples_per_second"] = step.samples_seen / max(wall, 1e-9)
    save_fit(output, checkpoint, trainer, state)
    return summarize(checkpoint, output, extra=("images", "psnr", "samples_per_second"))


def build_checkpoint(field: torch.nn.Module, grid: OccupancyGrid | None, config: dict, state: TrainState,
                     scene: Scene, step: NerfStep, device: torch.device) -> dict[str, Any]:
    """The plain-data checkpoint: the field works in world units (to_world is the identity); the
    meshing bounds are the scene's box; the occupancy grid rides along to speed up rendering."""
    terms, last = state.terms, (state.history[-1] if state.history else None)
    train = {
        "method": "fit-nerf",
        "config": {**{k: v for k, v in config.items() if k != "settings"},
                   "settings": plain_settings(config["settings"])},
        "scene": str(scene.source), "images": len(scene), "width": scene.width, "height": scene.height,
        "downscale": scene.downscale, "background": list(scene.background), "near": scene.near, "far": scene.far,
        "rays_per_step": step.n_rays,
        "psnr": float(last[1 + terms.index("psnr")]) if last and "psnr" in terms else None,
    }
    checkpoint = checkpoint_dict("nerf", field, float(field.config.get("level", DEFAULT_DENSITY_LEVEL)), "above",
                                 {"scale": 1.0, "translation": [0.0, 0.0, 0.0]},
                                 np.asarray(field.config["aabb"], dtype=np.float64), state, device, train)
    if grid is not None:
        checkpoint["grid"] = {k: v.detach().cpu() for k, v in grid.state_dict().items()}
    return checkpoint


def load_nerf(checkpoint: dict, device: torch.device) -> tuple[torch.nn.Module, OccupancyGrid | None, Sampling]:
    """The field, its occupancy grid (if any) and sampling of a nerf checkpoint, ready to render."""
    field = build_field("nerf", checkpoint["field"])
    field.load_state_dict(checkpoint["state_dict"])
    field = field.to(device).eval()
    config = checkpoint["train"]["config"]
    sampling = Sampling(**config["sampling"])
    grid = make_grid(config, device)
    if grid is not None and "grid" in checkpoint:
        grid.load_state_dict(checkpoint["grid"])
    return field, grid, sampling


def make_grid(config: dict, device: torch.device) -> OccupancyGrid | None:
    """The occupancy grid of a grid-sampling config (None for hierarchical sampling)."""
    if config["sampling"]["kind"] != "grid":
        return None
    grid = config.get("grid", GRID["cuda"])
    return OccupancyGrid(torch.tensor(config["field"]["aabb"]), int(grid["resolution"]),
                         steps_per_diagonal=int(grid["steps_per_diagonal"])).to(device)
