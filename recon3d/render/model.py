"""A fitted model ready to render, restored from a checkpoint without any training code.

The checkpoint's ``train.config.sampling.kind`` says how its field is drawn: ``grid`` or
``hierarchical`` (a radiance field, volume rendering: :class:`Renderer`), ``neus`` (a signed distance
field fitted to images: recon3d.render.neus.SdfRenderer) or ``surface`` (an occupancy field fitted to
images: recon3d.render.surface.SurfaceRenderer). Every renderer has ``field`` and
``render(rays, background) -> Composite``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from recon3d.errors import InputError, one_line
from recon3d.fields import FIELDS, load_field
from recon3d.io.schema import Invalid, box, choice, integer, mapping, real, tensor_like
from recon3d.render import renderer as volume
from recon3d.render.renderer import Sampling
from recon3d.render.samplers import OccupancyGrid

#: Occupancy grid per device: instant-ngp's 128³ cells and ~1024 steps across the box on a GPU; a
#: coarser grid and longer steps on a CPU, where every sample costs.
GRID = {"cuda": {"resolution": 128, "steps_per_diagonal": 1024},
        "cpu": {"resolution": 64, "steps_per_diagonal": 256}}
#: Field kinds a checkpoint fitted to images can hold: radiance fields, and signed-distance and
#: occupancy fields with a colour network.
RENDERABLE = tuple(FIELDS)
#: The sampling kinds of surfaces fitted to images, and the field kind each needs.
SURFACE_SAMPLING = {"neus": "sdf", "surface": "occupancy"}
#: Bounds on what a checkpoint's render config may ask for: grid cells per axis (512³ cells hold
#: 134 M densities), marching steps across the box, samples per ray, distances.
MAX_GRID, MAX_STEPS, MAX_SAMPLES, MAX_DISTANCE = 512, 1 << 16, 4096, 1e12


@dataclass
class Renderer:
    """What renders rays of a checkpoint: the field (σ, rgb), the grid that skips empty space (None for
    hierarchical sampling) and how rays are sampled."""

    field: torch.nn.Module
    grid: OccupancyGrid | None
    sampling: Sampling

    def render(self, rays, background: torch.Tensor):
        """(R,) rays → their :class:`recon3d.render.compositing.Composite`."""
        return volume.render_rays(self.field, rays, self.sampling, self.grid, background).result


def make_grid(config: dict, device: torch.device) -> OccupancyGrid | None:
    """The occupancy grid of a run config with grid sampling (None for hierarchical sampling)."""
    if config["sampling"]["kind"] != "grid":
        return None
    grid = config.get("grid", GRID["cuda"])
    return OccupancyGrid(torch.tensor(config["field"]["aabb"]), int(grid["resolution"]),
                         steps_per_diagonal=int(grid["steps_per_diagonal"])).to(device)


def check_render_config(checkpoint: dict, source: str = "model") -> None:
    """Refuse, with one line naming the key, a render config (``train.config``: sampling, grid, box)
    or a saved occupancy grid that rendering could not use or that would need unbounded work."""
    config = checkpoint["train"].get("config", {})
    if not isinstance(config, dict) or "sampling" not in config:
        raise InputError(f"{source}: train.config.sampling: missing; this checkpoint cannot be rendered")
    try:
        sampling = mapping("train.config.sampling", config["sampling"])
        known = [f.name for f in dataclasses.fields(Sampling)]  # all written by Sampling.to_dict
        unknown = [k for k in sampling if k not in known]
        if unknown:
            raise Invalid(f"train.config.sampling.{unknown[0][:40]}", f"unexpected key (known: {', '.join(known)})")
        missing = [k for k in known if k not in sampling]
        if missing:
            raise Invalid("train.config.sampling", f"lacks {missing[0]!r}")
        kind = choice("train.config.sampling.kind", sampling["kind"], ("grid", "hierarchical"), "sampling")
        near = real("train.config.sampling.near", sampling["near"], 0.0, MAX_DISTANCE)
        real("train.config.sampling.far", sampling["far"], 0.0, MAX_DISTANCE, above=near)
        for name in ("coarse", "fine"):
            integer(f"train.config.sampling.{name}", sampling[name], 1, MAX_SAMPLES)
        lo, hi = box("train.config.field.aabb", mapping("train.config.field", config.get("field")).get("aabb"))
        if sampling.get("step_size") is not None:
            diagonal = math.dist(lo, hi)
            real("train.config.sampling.step_size", sampling["step_size"], diagonal / MAX_STEPS, MAX_DISTANCE)
        if kind == "grid":
            _check_grid(config, checkpoint.get("grid"), "grid" in checkpoint)
    except Invalid as exc:
        raise InputError(one_line(f"{source}: {exc.key}: {exc.problem}")) from None


def _check_grid(config: dict, state, saved: bool) -> None:
    grid = mapping("train.config.grid", config.get("grid", GRID["cuda"]))
    resolution = integer("train.config.grid.resolution", grid.get("resolution"), 1, MAX_GRID)
    integer("train.config.grid.steps_per_diagonal", grid.get("steps_per_diagonal"), 1, MAX_STEPS)
    if not saved:
        return
    cells = resolution**3
    expected = {"aabb": ((2, 3), torch.float32), "density": ((cells,), torch.float32),
                "occupied": ((cells,), torch.bool)}  # fmt: skip
    state = mapping("grid", state)
    extra = [k for k in state if k not in expected]
    if extra or len(state) != len(expected):
        raise Invalid("grid", f"must hold exactly {', '.join(expected)}")
    for name, (shape, dtype) in expected.items():
        tensor_like(f"grid.{name}", state[name], shape, dtype)
    box("grid.aabb", state["aabb"])


def load_renderer(checkpoint: dict, device: torch.device, source: str = "model") -> Renderer:
    """The renderer of a checkpoint whose field has colours and a sampling config, on ``device``.

    ``checkpoint`` comes from :func:`recon3d.io.checkpoint.load_checkpoint` (schema-checked); its
    render config is checked here before anything is built."""
    config = checkpoint["train"].get("config")
    sampling = config.get("sampling") if isinstance(config, dict) else None
    kind = sampling.get("kind") if isinstance(sampling, dict) else None
    if kind in SURFACE_SAMPLING:
        return _surface_renderer(checkpoint, kind, device, source)
    if checkpoint["kind"] != "nerf":
        raise InputError(f"{source}: holds a {checkpoint['kind']} field fitted to 3D input, without colours; this "
                         "command needs nerf, or an sdf / occupancy field fitted to images")
    check_render_config(checkpoint, source)
    config = checkpoint["train"]["config"]
    field = load_field(checkpoint, device)
    grid = make_grid(config, device)
    if grid is not None and "grid" in checkpoint:
        grid.load_state_dict(checkpoint["grid"])
    return Renderer(field, grid, Sampling(**config["sampling"]))


def _surface_renderer(checkpoint: dict, kind: str, device: torch.device, source: str):
    """The renderer of a surface fitted to images: NeuS marching through its saved occupancy grid, or
    surface rendering of an occupancy field."""
    from recon3d.render.neus import SdfRenderer
    from recon3d.render.surface import SurfaceRenderer

    if checkpoint["kind"] != SURFACE_SAMPLING[kind] or "appearance" not in checkpoint["field"]:
        raise InputError(f"{source}: train.config.sampling.kind {kind!r} does not fit a {checkpoint['kind']} field "
                         "without colours")
    field = load_field(checkpoint, device)
    bounds = torch.as_tensor(checkpoint["bounds"], dtype=torch.float32)
    if kind == "surface":
        config = checkpoint["train"]["config"]
        sampling = config.get("sampling")
        if config.get("render") == "unisurf" and isinstance(sampling, dict) and _unisurf_sampling(sampling):
            from recon3d.render.unisurf import UnisurfRenderer

            return UnisurfRenderer(field, checkpoint["to_world"], bounds, sampling)
        return SurfaceRenderer(field, checkpoint["to_world"], bounds)
    try:
        grid_config = mapping("train.config.grid", checkpoint["train"]["config"].get("grid"))
        resolution = integer("train.config.grid.resolution", grid_config.get("resolution"), 1, MAX_GRID)
        steps = integer("train.config.grid.steps_per_diagonal", grid_config.get("steps_per_diagonal"), 1, MAX_STEPS)
        state = mapping("grid", checkpoint.get("grid"))
        cells = resolution**3
        tensor_like("grid.density", state.get("density"), (cells,), torch.float32)
        tensor_like("grid.occupied", state.get("occupied"), (cells,), torch.bool)
        tensor_like("grid.aabb", state.get("aabb"), (2, 3), torch.float32)
    except Invalid as exc:
        raise InputError(one_line(f"{source}: {exc.key}: {exc.problem}")) from None
    grid = OccupancyGrid(bounds, resolution, steps_per_diagonal=steps)
    grid.load_state_dict(state)
    grid = grid.to(device)
    return SdfRenderer(field, grid, checkpoint["to_world"], grid.step_size, _region_plane(checkpoint, source))


def _unisurf_sampling(sampling: dict) -> bool:
    """Whether a checkpoint's UNISURF sampling settings are usable (small positive counts, a finite Δ);
    a checkpoint without them is drawn by surface rendering."""
    counts = [sampling.get(key) for key in ("coarse", "secant", "inside", "outside")]
    delta = sampling.get("delta_min")
    return (all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1024 for n in counts)
            and isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0)


def _region_plane(checkpoint: dict, source: str) -> list[float] | None:
    """The support plane the fit's region ends at (field coordinates), or None."""
    plane = checkpoint["train"]["config"].get("region_plane")
    if plane is None:
        return None
    if not (isinstance(plane, list) and len(plane) == 4 and all(isinstance(v, (int, float)) for v in plane)
            and all(math.isfinite(v) for v in plane)):
        raise InputError(f"{source}: train.config.region_plane must be four finite numbers")
    return [float(v) for v in plane]
