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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon3d.console import info
from recon3d.errors import Recon3dError
from recon3d.fields.encodings import hashgrid_config
from recon3d.fields.radiance import radiance_preset
from recon3d.fit import losses
from recon3d.fit.depth import DepthRays, depth_rays
from recon3d.fit.loop import StepFn, Trainer
from recon3d.fit.method import FitOptions, FitRun, Method
from recon3d.fit.presets import choose_preset, make_batch, make_settings, pick
from recon3d.fit.rays_per_step import AdaptiveRays
from recon3d.fit.region import background_field, check_box, fitting_box, has_masks
from recon3d.fit.run import fit
from recon3d.io.scene import Scene, colour_on, read_scene, scene_files
from recon3d.render.model import GRID, make_grid
from recon3d.render.rays import RaySampler
from recon3d.render.renderer import Sampling, render_rays
from recon3d.render.samplers import OccupancyGrid

#: Weight of the depth-supervision term (DS-NeRF), on when a scene has sparse points.
DEPTH_WEIGHT = 0.05

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "sampling": {"kind": "grid"},
        "budget": {"cuda": {"steps": 20000, "batch": 4096, "lr": 1e-2, "target_samples": 1 << 18, "depth_rays": 1024,
                            "tf32": True},
                   "cpu": {"steps": 500, "batch": 1024, "lr": 1e-2, "target_samples": 1 << 14, "depth_rays": 128}},
    },
    "paper": {
        "sampling": {"kind": "hierarchical", "coarse": 64, "fine": 128},
        "budget": {"cuda": {"steps": 200000, "batch": 4096, "lr": 5e-4, "target_samples": 0, "depth_rays": 0},
                   "cpu": {"steps": 500, "batch": 256, "lr": 5e-4, "target_samples": 0, "depth_rays": 0}},
    },
}


@dataclass
class NerfOptions(FitOptions):
    """fit-nerf's options: the common ones (batch = rays per step, adapted by the fast preset), how
    the scene is read (image shrink factor, the background RGBA images are composited on) and
    training on random backgrounds."""

    random_background: bool = True
    downscale: int = 1
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    box: tuple[float, float, float, float, float, float] | None = None
    depth: bool = True  # depth supervision from the scene's sparse points, when it has them


def resolve_preset(options: NerfOptions, scene: Scene, device: torch.device) -> dict[str, Any]:
    """The run config for this scene and device: field, sampling, occupancy grid, settings, rays.

    The field covers the scene's box, or ``--box``. A capture without masks fitted with the ``fast``
    preset covers its region of interest instead (recon3d.fit.region) and gets a background field
    over contracted space for everything beyond it, so a hand-held capture needs no hand-tuned box
    and its mesh holds the region only.
    """
    preset = choose_preset(PRESETS, options.preset)
    budget = pick(preset["budget"], device)
    box = check_box(options.box)
    unbounded = options.preset == "fast" and not has_masks(scene)
    if box is None and unbounded:
        box = fitting_box(scene, None)[0].flatten().tolist()
    field = radiance_preset(options.preset, scene.aabb.tolist() if box is None else [box[:3], box[3:]])
    if options.preset == "fast":
        field["position_encoding"] = hashgrid_config(device.type)
    if unbounded:
        field["background"] = background_field(device)
    sampling = Sampling(near=float(scene.near), far=float(scene.far), **preset["sampling"]).to_dict()
    settings = make_settings(budget, options.steps, options.max_seconds, options.lr, options.seed, options.amp)
    config = {"field": field, "sampling": sampling, "grid": pick(GRID, device),
              "settings": settings, "batch": make_batch(budget, options.batch),
              "target_samples": int(budget["target_samples"]), "random_background": bool(options.random_background)}
    if getattr(scene, "sparse", None) is not None and options.depth:  # DS-NeRF: on when there are points
        config.update(depth=DEPTH_WEIGHT, depth_rays=int(budget["depth_rays"]))
    return config


def training_targets(scene: Scene) -> Callable[[torch.Tensor], torch.Tensor]:
    """Stored pixels (B, C) -> what rays are trained against (B, 3 or 4): colour, or premultiplied
    colour + alpha when alpha is known; applied per batch, so the split stays stored compactly."""

    def targets(stored: torch.Tensor) -> torch.Tensor:
        colour, alpha = scene.decode(stored)
        if alpha is None:
            return colour
        alpha = alpha[..., None]
        premultiplied = colour - colour_on(scene.background, colour.device) * (1.0 - alpha)
        return torch.cat([premultiplied, alpha], dim=-1)

    return targets


class NerfStep(AdaptiveRays):
    """The per-step closure: sample rays, render, squared error; keeps the adaptive ray count."""

    def __init__(self, field: torch.nn.Module, grid: OccupancyGrid | None, rays: RaySampler, sampling: Sampling,
                 background: tuple[float, float, float], batch: int, target_samples: int,
                 random_background: bool, depth: DepthRays | None = None, depth_weight: float = 0.0,
                 depth_rays: int = 0) -> None:
        """``depth``: sparse points' observations, fitted with weight ``depth_weight`` on ``depth_rays``
        of them per step (DS-NeRF; grid sampling only)."""
        self.field, self.grid, self.rays, self.sampling = field, grid, rays, sampling
        self.depth = depth if depth_weight > 0 and depth_rays > 0 and sampling.kind == "grid" else None
        self.depth_weight, self.depth_rays = float(depth_weight), int(depth_rays)
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
        mse = losses.color_loss(rendered.result.rgb, target)
        loss = mse
        if rendered.coarse is not None:
            loss = loss + losses.color_loss(rendered.coarse.rgb, target)
        self.samples_seen += rendered.samples
        self.observe_samples(rendered.samples)  # instant-ngp: keep samples per batch constant
        terms = {"loss": loss, "psnr": losses.psnr(mse)}
        if self.depth is not None:
            rays, target_depth, sigma = self.depth.sample(self.depth_rays, gen)
            seen = render_rays(self.field, rays, self.sampling, self.grid, self.background, train=True,
                               generator=gen)
            terms["depth"] = losses.depth_termination_loss(seen.result.weights, seen.t_starts, seen.t_ends,
                                                           seen.ray_indices, target_depth, sigma, len(target_depth))
            terms["loss"] = loss + self.depth_weight * terms["depth"]
            self.samples_seen += seen.samples
        return terms


class RadianceFromImages(Method):
    """fit-nerf on posed images: a radiance field rendered by volume rendering, C = Σ Tᵢ αᵢ cᵢ."""

    name = command = "fit-nerf"
    kind = "nerf"
    options = NerfOptions
    records = ("scene", "images", "width", "height", "downscale", "background", "near", "far", "psnr",
               "samples_per_second")
    summary = ("images", "psnr", "samples_per_second")

    def input_files(self, path: Path) -> list[Path]:
        return scene_files(Path(path), "train")

    def default_stem(self, path: Path) -> str:
        return path.stem if path.suffix == ".json" else path.name

    def read(self, path: Path, options: FitOptions, device: torch.device) -> Scene:
        assert isinstance(options, NerfOptions)
        return read_scene(path, "train", downscale=options.downscale, background=tuple(options.background),
                          keep_alpha=True).to(device)

    def check_resume(self, checkpoint: dict, data: Scene, output: Path, path: Path) -> None:
        if checkpoint["train"]["images"] != len(data):
            raise Recon3dError(f"{output}: was fitted to {checkpoint['train']['images']} images, {path} has "
                               f"{len(data)}; resume needs the same scene")

    def configure(self, options: FitOptions, data: Scene, device: torch.device) -> dict[str, Any]:
        assert isinstance(options, NerfOptions)
        return resolve_preset(options, data, device)

    def prepare(self, run: FitRun, data: Scene) -> Scene:
        info(f"{data.source}: {len(data)} {data.split} images {data.width}x{data.height}, "
             f"preset {run.options.preset if run.resume is None else 'resumed'}, "
             f"sampling {run.config['sampling']['kind']}")
        return data

    def placement(self, run: FitRun) -> tuple[dict[str, Any], Any]:
        """The field works in world units (to_world is the identity); the meshing bounds are its box."""
        return {"scale": 1.0, "translation": [0.0, 0.0, 0.0]}, np.asarray(run.field.config["aabb"], dtype=np.float64)

    def make_step(self, run: FitRun) -> StepFn:
        from recon3d.fit.captured import fixed_step_mode
        from recon3d.fit.nerf_captured import CapturedNerfStep

        config, scene, device = run.config, run.data, run.device
        grid = make_grid(config, device)
        batch = config["batch"]
        if run.resume is not None:
            if grid is not None:
                grid.load_state_dict(run.resume["grid"])
            batch = int(run.resume["train"].get("rays_per_step", batch))
        rays = RaySampler(scene.pixels, scene.c2w, scene.fx, scene.fy, scene.cx, scene.cy, scene.distortion,
                          device=device, decode=training_targets(scene))
        sampling, depth = Sampling(**config["sampling"]), depth_rays(scene, device)
        depth_weight = float(config.get("depth", 0.0))
        args = (run.field, grid, rays, sampling, scene.background, batch, config["target_samples"],
                config["random_background"])
        mode = fixed_step_mode(device)
        if mode and sampling.kind == "grid" and config["target_samples"] and run.field.background is None \
                and (depth is None or depth_weight <= 0):
            return CapturedNerfStep(*args, capture=mode == "capture")
        return NerfStep(*args, depth=depth, depth_weight=depth_weight, depth_rays=int(config.get("depth_rays", 0)))

    def train_records(self, run: FitRun) -> dict[str, Any]:
        scene, step, state = run.data, run.step, run.state
        if hasattr(step, "finish"):
            step.finish()
        terms, last = state.terms, (state.history[-1] if state.history else None)
        return {
            "scene": str(scene.source), "images": len(scene), "width": scene.width, "height": scene.height,
            "downscale": scene.downscale, "background": list(scene.background), "near": scene.near,
            "far": scene.far, "rays_per_step": step.n_rays,
            "psnr": float(last[1 + terms.index("psnr")]) if last and "psnr" in terms else None,
            "samples_per_second": step.samples_seen / max(run.seconds, 1e-9),
        }

    def extras(self, run: FitRun) -> dict[str, Any]:
        """The occupancy grid rides along to speed up rendering."""
        grid = run.step.grid
        return {} if grid is None else {"grid": {k: v.detach().cpu() for k, v in grid.state_dict().items()}}


def fit_nerf(scene: Scene, options: NerfOptions, output: str | Path, device: torch.device,
             resume: dict | None = None, show_progress: bool = True,
             on_step: Callable[[Trainer, int], None] | None = None) -> dict[str, Any]:
    """Fit a radiance field to ``scene`` (its train split), write the checkpoint, return a summary.

    ``on_step(trainer, step)`` runs before every step (benchmarks evaluate there, excluding the time
    they spend with ``trainer.exclude``).
    """
    return fit(RadianceFromImages(), scene, options, output, device, str(scene.source), resume, show_progress,
               on_step)
