"""fit-sdf on posed images: a signed distance field rendered with NeuS's weights (Wang et al. 2021).

The field is a hash-grid SDF with geometric (sphere) init and a colour network on (geometry
features, normal, view direction), as in instant-nsr-pl and NeuS2. Each step renders random pixels:
samples are marched through an occupancy grid kept from the SDF itself (cells where one step's NeuS
opacity can exceed a threshold), so only the shell around the surface is evaluated; opacities follow
NeuS with a learnt sharpness. Losses: L1 colour, the eikonal term on every sample (IGR), and with
masked images the mask term (BCE of a ray's opacity against alpha) and free space outside the masks'
visual hull. The hash grid's levels come into use coarse to fine (Neuralangelo, Li et al. 2023).
"""

from __future__ import annotations

from typing import Any

import torch

from recon3d.fields.encodings import HASHGRID
from recon3d.fit import losses
from recon3d.fit.depth import DepthRays, depth_rays
from recon3d.fit.images import (
    ImageData,
    ImagesMethod,
    ImagesOptions,
    draw_targets,
    free_space_points,
    levels_at,
)
from recon3d.fit.loop import StepFn
from recon3d.fit.method import FitOptions, FitRun
from recon3d.fit.nerf import DEPTH_WEIGHT
from recon3d.fit.presets import choose_preset, make_batch, make_settings, pick
from recon3d.fit.rays_per_step import AdaptiveRays
from recon3d.fit.region import background_field, check_box, has_masks
from recon3d.io.scene import Scene
from recon3d.render.neus import SdfRenderer
from recon3d.render.samplers import OccupancyGrid

_GEOMETRY_MLP = {"hidden": 64, "n_layers": 1, "activation": "softplus", "softplus_beta": 100.0,
                 "init": "geometric", "init_radius": 0.5}
_APPEARANCE = {"features": 15, "direction": {"type": "sh", "degree": 4}, "mlp": {"hidden": 64, "n_layers": 2}}

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "field": {"cuda": {"encoding": HASHGRID["cuda"], "mlp": _GEOMETRY_MLP, "appearance": _APPEARANCE,
                           "variance_init": 0.3},
                  "cpu": {"encoding": HASHGRID["cpu"], "mlp": _GEOMETRY_MLP, "appearance": _APPEARANCE,
                          "variance_init": 0.3}},
        # "free": f ≥ 0 outside the masks' visual hull. "anneal": the hash grid's levels come into use
        # over that fraction of the steps; "cos_anneal": NeuS's cosine annealing over that fraction.
        "loss": {"color": 1.0, "eikonal": 0.1, "mask": 0.1, "free": 1.0},
        "anneal": 0.2, "cos_anneal": 0.2,
        "grid": {"cuda": {"resolution": 128, "steps_per_diagonal": 1024},
                 "cpu": {"resolution": 64, "steps_per_diagonal": 256}},
        "budget": {"cuda": {"steps": 3000, "batch": 4096, "lr": 1e-2, "target_samples": 1 << 18, "depth_rays": 1024},
                   "cpu": {"steps": 800, "batch": 1024, "lr": 1e-2, "target_samples": 1 << 14, "depth_rays": 128}},
    },
}


def resolve_preset(options: ImagesOptions, device: torch.device, masks: bool = True,
                   sparse_points: bool = False) -> dict[str, Any]:
    """The run config for this device; images without masks get a background field, scenes with sparse
    points depth supervision (DS-NeRF)."""
    preset = choose_preset(PRESETS, options.preset)
    budget = pick(preset["budget"], device)
    settings = make_settings(budget, options.steps, options.max_seconds, options.lr, options.seed, options.amp)
    field = {**pick(preset["field"], device), "level": 0.0, "inside": "below"}
    if not masks:
        field["background"] = background_field(device)
    depth = {"depth": DEPTH_WEIGHT} if sparse_points else {}
    return {"field": field,
            "loss": {**preset["loss"], **depth}, "depth_rays": int(budget.get("depth_rays", 0)),
            "anneal": preset["anneal"], "cos_anneal": preset["cos_anneal"],
            "grid": pick(preset["grid"], device), "settings": settings, "batch": make_batch(budget, options.batch),
            "target_samples": int(budget["target_samples"]), "random_background": bool(options.random_background),
            "box": check_box(options.box), "sampling": {"kind": "neus"}}


def split_by_region(depth: DepthRays, data: ImageData) -> tuple[DepthRays | None, DepthRays | None]:
    """The sparse points' observations whose point lies in the fitted region (the box, in front of a
    support plane), for DS-NeRF's depth term, and those whose point lies beyond it (a wall behind the
    support plane, the room outside the box): the background's, so their rays must cross the region
    empty, as rays off a mask do (NeuS's mask loss with alpha 0). Either is None when it holds none.
    Without the split, a point behind the region pulls a surface onto the region's edge, where its ray
    leaves (the wall grows back as a slab)."""
    scale = float(data.to_world["scale"])
    translation = torch.as_tensor(data.to_world["translation"], dtype=torch.float32, device=depth.points.device)
    u = (depth.points - translation) / scale
    bounds = torch.as_tensor(data.bounds, dtype=torch.float32, device=u.device)
    inside = ((u >= bounds[0]) & (u <= bounds[1])).all(dim=-1)
    if data.plane is not None:
        plane = torch.as_tensor(data.plane, dtype=torch.float32, device=u.device)
        inside &= u @ plane[:3] >= plane[3]
    if data.masks:  # masked images: every point is the depth term's, as before
        inside = torch.ones_like(inside)
    within, beyond = depth.subset(inside), depth.subset(~inside)
    return (within if len(within) else None), (beyond if len(beyond) else None)


class NeusStep(AdaptiveRays):
    """The per-step closure: rays → NeuS render → colour, eikonal, mask and free-space losses."""

    def __init__(self, field: torch.nn.Module, data: ImageData, grid: OccupancyGrid, config: dict,
                 n_rays: int) -> None:
        self.field, self.data, self.grid = field, data, grid
        self.weights = config["loss"]
        self.anneal, self.cos_anneal = float(config["anneal"]), float(config["cos_anneal"])
        self.target_samples = int(config["target_samples"])
        self.random_background = bool(config["random_background"])
        self.renderer = SdfRenderer(field, grid, data.to_world, grid.step_size, data.plane)
        self.device = grid.aabb.device
        self.n_rays = int(n_rays)
        self.samples_seen = 0
        self.levels = field.encoding if hasattr(field.encoding, "set_active_levels") else None
        self.progress = 0.0  # the fraction of the budget used, set by the training loop
        depth = depth_rays(data.scene, self.device) if self.weights.get("depth", 0.0) > 0 else None
        self.depth, self.beyond = split_by_region(depth, data) if depth is not None else (None, None)
        self.depth_rays = int(config.get("depth_rays", 0))

    def __call__(self, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        if self.levels is not None and self.anneal > 0:
            self.levels.set_active_levels(levels_at(self.progress, self.anneal, self.levels.n_levels))
        self.grid.maybe_update(step, self.renderer.density, generator=gen)
        targets = draw_targets(self.data, self.n_rays, gen, self.random_background, self.device)
        cos_anneal = min(1.0, self.progress / max(self.cos_anneal, 1e-9))
        rendered = self.renderer.render_rays(targets.batch.rays, targets.background, train=True, generator=gen,
                                             cos_anneal=cos_anneal)
        result = rendered.result
        terms = {"color": losses.color_l1(result.rgb, targets.rgb)}
        loss = self.weights["color"] * terms["color"]
        if rendered.samples:
            terms["eikonal"] = losses.eikonal_loss(rendered.grad)
            loss = loss + self.weights["eikonal"] * terms["eikonal"]
        if targets.alpha is not None and self.weights.get("mask", 0.0) > 0:
            terms["mask"] = losses.mask_loss(result.opacity, targets.alpha)
            loss = loss + self.weights["mask"] * terms["mask"]
        if self.grid.allowed is not None and self.weights.get("free", 0.0) > 0:
            free = free_space_points(self.grid, gen)
            if len(free):
                terms["free"] = losses.outside_loss(self.field(free))
                loss = loss + self.weights["free"] * terms["free"]
        if self.depth is not None:  # DS-NeRF on the scene's sparse points in the region
            rays, target_depth, sigma = self.depth.sample(self.depth_rays, gen)
            seen = self.renderer.render_rays(rays, targets.background.new_zeros(3), train=True, generator=gen,
                                             cos_anneal=cos_anneal)
            terms["depth"] = losses.depth_termination_loss(seen.result.weights, seen.t_starts, seen.t_ends,
                                                           seen.ray_indices, target_depth, sigma, len(target_depth))
            loss = loss + self.weights["depth"] * terms["depth"]
        if self.beyond is not None:  # points beyond the region: the background's, the foreground clear
            rays, _, _ = self.beyond.sample(self.depth_rays, gen)
            seen = self.renderer.render_rays(rays, targets.background.new_zeros(3), train=True, generator=gen,
                                             cos_anneal=cos_anneal)
            terms["clear"] = losses.mask_loss(seen.result.opacity, torch.zeros_like(seen.result.opacity))
            loss = loss + self.weights["depth"] * terms["clear"]
        with torch.no_grad():
            terms["psnr"] = losses.psnr(torch.mean((result.rgb - targets.rgb) ** 2))
        self.samples_seen += rendered.samples
        self.observe_samples(rendered.samples)
        zero = torch.zeros((), device=self.device)
        for name in [*self.weights, *(["clear"] if "depth" in self.weights else [])]:
            terms.setdefault(name, zero)  # the same terms every step (0 where one did not apply)
        terms["loss"] = loss
        return terms


class SdfFromImages(ImagesMethod):
    """fit-sdf on posed images (a scene): NeuS."""

    name = "fit-sdf-images"
    command = "fit-sdf"
    kind = "sdf"
    support_plane = True

    def configure(self, options: FitOptions, data: Scene, device: torch.device) -> dict[str, Any]:
        assert isinstance(options, ImagesOptions)
        return resolve_preset(options, device, masks=has_masks(data),
                              sparse_points=getattr(data, "sparse", None) is not None)

    def make_step(self, run: FitRun) -> StepFn:
        n_rays = run.config["batch"]
        if run.resume is not None:
            n_rays = int(run.resume["train"].get("rays_per_step", n_rays))
        return NeusStep(run.field, run.data, self.make_grid(run), run.config, n_rays)

    def train_records(self, run: FitRun) -> dict[str, Any]:
        return {**super().train_records(run), "step_size": run.step.renderer.step_size,
                "sharpness": float(run.field.inv_s().detach())}
