"""fit-occupancy on posed images: an occupancy field o = sigmoid(logit) rendered two ways.

* ``fast`` — UNISURF (Oechsle et al. 2021): occupancy is the opacity of a ray sample, αᵢ = o(xᵢ),
  and colour C = Σ αᵢ Πⱼ<ᵢ (1 − αⱼ) cᵢ. Samples concentrate in an interval [t_s − Δ, t_s + Δ] around
  the surface t_s found by root finding, plus some in the free space before it; Δ shrinks over
  training from volume rendering towards surface rendering. Loss: L1 colour, normal smoothness at
  the surface, with masks BCE of the ray opacity against alpha, and the samples' occupancy entropy
  (a prior towards empty-or-full, as Neural Volumes' on opacities). Without it the occupancy stays soft
  across the surface and, with densely spaced samples, a ray stops where o is still far below 0.5:
  the o = 0.5 surface the mesh takes lies inside the one the images show.
* ``dvr`` — DVR (Niemeyer et al. 2020): surface rendering. The ray meets the surface at p̂ (coarse
  search + secant); its colour c(p̂) is compared with the pixel, with p̂'s gradient in the
  parameters from implicit differentiation. Rays off the mask push occupancy down at p̂ or a random
  point of the ray (free-space loss); rays on the mask that miss push it up at a random point
  (occupancy loss). Needs masks.

Both start from a sphere (geometric init, o = sigmoid(−10 f) as UNISURF) and share the scene
handling of recon3d.fit.images; the surface is o = 0.5.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from recon3d.errors import Recon3dError
from recon3d.fields.encodings import HASHGRID
from recon3d.fit import losses
from recon3d.fit.images import (
    ImageData,
    ImagesMethod,
    ImagesOptions,
    Targets,
    draw_targets,
    free_space_points,
    levels_at,
)
from recon3d.fit.loop import StepFn
from recon3d.fit.method import FitOptions, FitRun
from recon3d.fit.presets import choose_preset, make_batch, make_settings, pick
from recon3d.fit.region import background_field, check_box, has_masks
from recon3d.io.scene import Scene
from recon3d.render.background import BACKGROUND_SAMPLES, box_exit, render_background
from recon3d.render.compositing import composite_alphas
from recon3d.render.rays import ray_aabb
from recon3d.render.samplers import OccupancyGrid
from recon3d.render.surface import differentiable_hits, find_surface
from recon3d.render.unisurf import interval_samples

_GEOMETRY_MLP = {"hidden": 64, "n_layers": 1, "activation": "softplus", "softplus_beta": 100.0,
                 "init": "geometric", "init_radius": 0.5, "first_scale": -10.0}
_APPEARANCE = {"features": 15, "direction": {"type": "sh", "degree": 4}, "mlp": {"hidden": 64, "n_layers": 2}}
_FIELD = {"cuda": {"encoding": HASHGRID["cuda"], "mlp": _GEOMETRY_MLP, "appearance": _APPEARANCE},
          "cpu": {"encoding": HASHGRID["cpu"], "mlp": _GEOMETRY_MLP, "appearance": _APPEARANCE}}
_GRID = {"cuda": {"resolution": 128, "steps_per_diagonal": 1024},
         "cpu": {"resolution": 64, "steps_per_diagonal": 256}}

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {  # UNISURF
        "render": "unisurf", "field": _FIELD, "grid": _GRID, "anneal": 0.2,
        # The interval around the surface shrinks from delta_max to delta_min (field units) by
        # delta_at of the steps; inside / outside samples per ray; coarse root-finding samples.
        "sampling": {"delta_max": 1.0, "delta_min": 0.05, "delta_at": 0.8, "inside": 48, "outside": 16,
                     "coarse": 64, "secant": 8, "epsilon": 0.01},
        # "binary": the samples' occupancy entropy, weighted up to this as the interval shrinks.
        "loss": {"color": 1.0, "normal": 0.005, "mask": 0.1, "free": 1.0, "binary": 0.1},
        "budget": {"cuda": {"steps": 3000, "batch": 4096, "lr": 1e-2},
                   "cpu": {"steps": 800, "batch": 256, "lr": 1e-2}},
    },
    "dvr": {
        "render": "dvr", "field": _FIELD, "grid": _GRID, "anneal": 0.2,
        "sampling": {"coarse": 128, "secant": 8, "epsilon": 0.01},
        "loss": {"color": 1.0, "normal": 0.05, "occupancy": 1.0, "freespace": 1.0, "free": 1.0},
        "budget": {"cuda": {"steps": 3000, "batch": 8192, "lr": 1e-2},
                   "cpu": {"steps": 800, "batch": 512, "lr": 1e-2}},
    },
}


def resolve_preset(options: ImagesOptions, device: torch.device, masks: bool = True) -> dict[str, Any]:
    """The run config for this device; images without masks get a background field (UNISURF) or
    are refused (DVR needs masks)."""
    preset = choose_preset(PRESETS, options.preset)
    if preset["render"] == "dvr" and not masks:
        raise Recon3dError("--preset dvr needs images with masks (alpha); use the default preset (UNISURF)")
    budget = pick(preset["budget"], device)
    settings = make_settings(budget, options.steps, options.max_seconds, options.lr, options.seed, options.amp)
    field = {**pick(preset["field"], device), "level": 0.0, "inside": "above"}
    if not masks:
        field["background"] = background_field(device)
    return {"field": field,
            "render": preset["render"], "sampling": {"kind": "surface", **preset["sampling"]},
            "loss": dict(preset["loss"]), "anneal": preset["anneal"], "grid": pick(preset["grid"], device),
            "settings": settings, "batch": make_batch(budget, options.batch),
            "random_background": bool(options.random_background), "box": check_box(options.box)}


def field_rays(targets: Targets, to_world: dict, bounds: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Training rays in field coordinates: origins (R, 3), unit directions (R, 3), and where they enter
    and leave the fitting box (R,), with whether they meet it at all (R,)."""
    rays = targets.batch.rays
    device = rays.origins.device
    translation = torch.as_tensor(to_world["translation"], dtype=torch.float32, device=device)
    origins = (rays.origins.float() - translation) / float(to_world["scale"])
    directions = torch.nn.functional.normalize(rays.directions.float(), dim=-1)
    t0, t1, inside = ray_aabb(origins, directions, bounds)
    t0 = t0.clamp_min(0.0)
    return origins, directions, t0, torch.where(inside, t1, t0), inside & (t1 > t0)


class OccupancyStep:
    """What UNISURF and DVR steps share: rays, the coarse-to-fine schedule, free space, counters."""

    def __init__(self, field: torch.nn.Module, data: ImageData, grid: OccupancyGrid, config: dict) -> None:
        self.field, self.data, self.grid = field, data, grid
        self.sampling, self.weights = config["sampling"], config["loss"]
        self.anneal = float(config["anneal"])
        self.random_background = bool(config["random_background"])
        self.n_rays = int(config["batch"])
        self.device = grid.aabb.device
        self.bounds = grid.aabb
        self.samples_seen = 0
        self.levels = field.encoding if hasattr(field.encoding, "set_active_levels") else None
        self.progress = 0.0  # the fraction of the budget used, set by the training loop

    def finish_terms(self, terms: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every step reports the same terms (0 where one did not apply), the training loop logs rows."""
        zero = torch.zeros((), device=self.device)
        for name in (*self.weights, "psnr"):
            terms.setdefault(name, zero)
        terms["loss"] = loss
        return terms

    def begin(self, step: int, gen: torch.Generator) -> Targets:
        if self.levels is not None and self.anneal > 0:
            self.levels.set_active_levels(levels_at(self.progress, self.anneal, self.levels.n_levels))
        return draw_targets(self.data, self.n_rays, gen, self.random_background, self.device)

    def surface(self, origins: torch.Tensor, directions: torch.Tensor, t0: torch.Tensor,
                t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, hit) of the first crossing of o = 0.5 along each ray (no gradient)."""
        return find_surface(self.field, origins, directions, t0, t1, inside="above",
                            coarse=int(self.sampling["coarse"]), secant=int(self.sampling["secant"]))

    def smoothness(self, points: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """‖n(x) − n(x + ε u)‖ at surface points x (H, 3), u random (UNISURF, DVR)."""
        jitter = torch.randn(points.shape, device=self.device, generator=gen) * float(self.sampling["epsilon"])
        both = torch.cat([points, points + jitter])
        _, _, grad = self.field.geometry(both)
        normals = self.field.outward(grad)
        return losses.normal_smoothness(normals[: len(points)], normals[len(points):])

    def free_space(self, gen: torch.Generator) -> torch.Tensor | None:
        """BCE toward "empty" at random points of the box outside the masks' visual hull."""
        if self.grid.allowed is None or self.weights.get("free", 0.0) <= 0:
            return None
        points = free_space_points(self.grid, gen)
        if not len(points):
            return None
        logits = self.field(points)
        return losses.occupancy_loss(logits, torch.zeros_like(logits))


class UnisurfStep(OccupancyStep):
    """UNISURF: occupancies as opacities at samples in a shrinking interval around the surface."""

    def delta(self) -> float:
        """The half-width of the interval around the surface now: it decays exponentially with the
        fraction of the budget used, reaching ``delta_min`` at ``delta_at`` of it."""
        s = self.sampling
        rate = math.log(s["delta_max"] / s["delta_min"]) / max(s["delta_at"], 1e-9)
        return max(s["delta_max"] * math.exp(-rate * self.progress), s["delta_min"])

    def stratified(self, n_rays: int, n: int, gen: torch.Generator) -> torch.Tensor:
        """(R, n) stratified fractions in [0, 1): one uniform draw in each of n equal bins."""
        jitter = torch.rand((n_rays, n), device=self.device, generator=gen)
        return (torch.arange(n, device=self.device) + jitter) / n

    def __call__(self, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        targets = self.begin(step, gen)
        origins, directions, t0, t1, valid = field_rays(targets, self.data.to_world, self.bounds)
        t_surface, hit = self.surface(origins, directions, t0, t1)
        n_in, n_out = int(self.sampling["inside"]), int(self.sampling["outside"])
        inside, outside = self.stratified(len(t0), n_in, gen), self.stratified(len(t0), n_out, gen)
        t, t_starts, t_ends = interval_samples(t0, t1, t_surface, hit, self.delta(), inside, outside)
        t, t_starts, t_ends = t[valid], t_starts[valid], t_ends[valid]  # (K, S) on rays meeting the box
        points = origins[valid, None, :] + directions[valid, None, :] * t[..., None]
        logits, features, grad = self.field.geometry(points.reshape(-1, 3))
        dirs = directions[valid, None, :].expand_as(points).reshape(-1, 3)
        rgbs = self.field.appearance(features, self.field.outward(grad), dirs).reshape(*t.shape, 3)
        background = targets.background.expand(len(t0), 3)  # (R, 3), a view: one colour or one per ray
        if self.field.background is not None:  # no masks: a radiance field beyond the box
            background = render_background(self.field.background, origins, directions,
                                           box_exit(origins, directions, self.bounds), BACKGROUND_SAMPLES,
                                           background, train=True, generator=gen)
        result = composite_alphas(torch.sigmoid(logits).reshape(t.shape), rgbs, t_starts, t_ends, background[valid])
        rendered = background.clone()  # rays that miss the box render the background
        rendered[valid] = result.rgb
        opacity = torch.zeros(len(t0), device=self.device)
        opacity[valid] = result.opacity
        rgb = targets.rgb
        terms = {"color": losses.color_l1(rendered, rgb)}
        loss = self.weights["color"] * terms["color"]
        binary = self.weights.get("binary", 0.0) * min(1.0, self.progress / max(self.sampling["delta_at"], 1e-9))
        if binary > 0:
            terms["binary"] = losses.binary_entropy(logits)
            loss = loss + binary * terms["binary"]
        surface_hits = hit & valid
        if self.weights.get("normal", 0.0) > 0 and bool(surface_hits.any()):
            x = origins[surface_hits] + directions[surface_hits] * t_surface[surface_hits, None]
            terms["normal"] = self.smoothness(x, gen)
            loss = loss + self.weights["normal"] * terms["normal"]
        if targets.alpha is not None and self.weights.get("mask", 0.0) > 0:
            terms["mask"] = losses.mask_loss(opacity, targets.alpha)
            loss = loss + self.weights["mask"] * terms["mask"]
        free = self.free_space(gen)
        if free is not None:
            terms["free"] = free
            loss = loss + self.weights["free"] * free
        with torch.no_grad():
            terms["psnr"] = losses.psnr(torch.mean((rendered - rgb) ** 2))
        self.samples_seen += int(t.numel())
        return self.finish_terms(terms, loss)


class DvrStep(OccupancyStep):
    """DVR: surface rendering with implicit differentiation, free-space and occupancy losses on masks."""

    def __call__(self, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        targets = self.begin(step, gen)
        if targets.alpha is None:
            raise Recon3dError("--preset dvr needs images with alpha (masks)")
        origins, directions, t0, t1, valid = field_rays(targets, self.data.to_world, self.bounds)
        t_surface, hit = self.surface(origins, directions, t0, t1)
        on_mask = targets.alpha > 0.5
        terms: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=self.device)
        shade = hit & valid & on_mask
        if bool(shade.any()):
            def value_and_grad(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                values, _, grad = self.field.geometry(points)
                return values, grad

            points = differentiable_hits(value_and_grad, origins[shade], directions[shade], t_surface[shade])
            _, features, grad = self.field.geometry(points)
            rgb = self.field.appearance(features, self.field.outward(grad), directions[shade])
            terms["color"] = losses.color_l1(rgb, targets.rgb[shade])
            loss = loss + self.weights["color"] * terms["color"]
            if self.weights.get("normal", 0.0) > 0:
                terms["normal"] = self.smoothness(points.detach(), gen)
                loss = loss + self.weights["normal"] * terms["normal"]
            with torch.no_grad():
                terms["psnr"] = losses.psnr(torch.mean((rgb - targets.rgb[shade]) ** 2))
        random_t = t0 + (t1 - t0) * torch.rand(t0.shape, device=self.device, generator=gen)
        miss = valid & on_mask & ~hit  # should hit: occupancy up at a random point of the ray
        if bool(miss.any()):
            logits = self.field(origins[miss] + directions[miss] * random_t[miss, None])
            terms["occupancy"] = losses.occupancy_loss(logits, torch.ones_like(logits))
            loss = loss + self.weights["occupancy"] * terms["occupancy"]
        off = valid & ~on_mask  # should miss: occupancy down where it hits, else at a random point
        if bool(off.any()):
            t = torch.where(hit, t_surface, random_t)[off]
            logits = self.field(origins[off] + directions[off] * t[:, None])
            terms["freespace"] = losses.occupancy_loss(logits, torch.zeros_like(logits))
            loss = loss + self.weights["freespace"] * terms["freespace"]
        free = self.free_space(gen)
        if free is not None:
            terms["free"] = free
            loss = loss + self.weights["free"] * free
        self.samples_seen += int(valid.sum()) * int(self.sampling["coarse"])
        return self.finish_terms(terms, loss)


class OccupancyFromImages(ImagesMethod):
    """fit-occupancy on posed images (a scene): UNISURF (``fast``) or DVR (``dvr``)."""

    name = "fit-occupancy-images"
    command = "fit-occupancy"
    kind = "occupancy"

    def configure(self, options: FitOptions, data: Scene, device: torch.device) -> dict[str, Any]:
        assert isinstance(options, ImagesOptions)
        return resolve_preset(options, device, masks=has_masks(data))

    def make_step(self, run: FitRun) -> StepFn:
        grid = self.make_grid(run)
        step = UnisurfStep if run.config["render"] == "unisurf" else DvrStep
        return step(run.field, run.data, grid, run.config)
