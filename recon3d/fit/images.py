"""What the methods that fit surfaces to posed images share: reading the scene, the region to fit
(the masks' visual hull or the scene's box), the field's normalised coordinates, training rays and
their targets on random backgrounds, the free-space term, and the adaptive ray count.

A method subclasses :class:`ImagesMethod` and adds its presets, field and step (recon3d.fit.neus,
recon3d.fit.unisurf).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recon3d.console import info
from recon3d.errors import Recon3dError
from recon3d.fit.method import FitOptions, FitRun, Method
from recon3d.fit.nerf import training_targets
from recon3d.fit.region import fitting_region, has_masks
from recon3d.fit.sdf import ANNEAL_START_LEVELS
from recon3d.io.input_kind import looks_like_scene
from recon3d.io.scene import Scene, read_scene, scene_files
from recon3d.render.rays import RayBatch, RaySampler
from recon3d.render.samplers import OccupancyGrid

#: The box the field is fitted in spans [-FILL, FILL] along its longest side in field coordinates.
FILL = 0.9
#: Random points per step for the free-space term.
FREE_POINTS = 4096


@dataclass
class ImagesOptions(FitOptions):
    """A fit to a scene: the common options, how the scene is read (shrink factor, background of RGBA
    images), random backgrounds in training, and an optional box (world units) to fit in."""

    downscale: int = 1
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    random_background: bool = True
    box: tuple[float, float, float, float, float, float] | None = None
    triangulate: bool = True  # a capture without masks or points: triangulate its points first


@dataclass
class ImageData:
    """The scene's training rays and the region the field covers."""

    scene: Scene
    rays: RaySampler
    to_world: dict  # field coordinates → world: x = scale · u + translation
    bounds: np.ndarray  # (2, 3) the box to fit and mesh, field coordinates
    hull: torch.Tensor | None  # (R, R, R) bool over the scene's box: may hold the object (None: no hull)
    masks: bool  # the images' alpha is a mask (not 1 everywhere)
    plane: np.ndarray | None = None  # (4,) n, c: the region is n·u ≥ c (field coordinates), or None


def normalisation(box: torch.Tensor) -> tuple[dict, np.ndarray]:
    """``to_world`` putting the box's centre at the origin and its longest side at 2·FILL, and the
    box in field coordinates (the bounds to mesh)."""
    lo, hi = box[0].double().numpy(), box[1].double().numpy()
    scale = float((hi - lo).max()) / (2.0 * FILL)
    centre = 0.5 * (lo + hi)
    to_world = {"scale": scale, "translation": centre.tolist()}
    bounds = np.stack([(lo - centre) / scale, (hi - centre) / scale])
    return to_world, bounds


def hull_cells(hull: torch.Tensor | None, scene_box: torch.Tensor, to_world: dict,
               grid: OccupancyGrid) -> torch.Tensor | None:
    """The visual hull resampled on an occupancy grid in field coordinates: (cells,) bool, True where
    the object may be, dilated by one cell (None without a hull)."""
    if hull is None:
        return None
    translation = torch.tensor(to_world["translation"], device=grid.aabb.device)
    centres = grid.cell_centers() * to_world["scale"] + translation
    box = scene_box.to(centres.device)
    resolution = hull.shape[0]
    ijk = ((centres - box[0]) / (box[1] - box[0]) * resolution).floor().long()
    inside_box = ((ijk >= 0) & (ijk < resolution)).all(dim=-1)
    ijk = ijk.clamp(0, resolution - 1)
    allowed = hull.to(centres.device)[ijk[:, 0], ijk[:, 1], ijk[:, 2]] & inside_box
    volume = allowed.reshape(grid.resolution, grid.resolution, grid.resolution)[None, None].float()
    return (F.max_pool3d(volume, 3, stride=1, padding=1)[0, 0] > 0).reshape(-1)


def plane_to_field(plane: np.ndarray | None, to_world: dict) -> np.ndarray | None:
    """A world plane (4,) ``n, c`` (n·x = c) in field coordinates (x = scale · u + translation)."""
    if plane is None:
        return None
    normal, offset = np.asarray(plane[:3], np.float64), float(plane[3])
    translation = np.asarray(to_world["translation"], np.float64)
    return np.concatenate([normal, [(offset - float(normal @ translation)) / float(to_world["scale"])]])


def plane_cells(plane: np.ndarray | None, grid: OccupancyGrid) -> torch.Tensor | None:
    """(cells,) bool: the grid's cells that reach the front of ``plane`` (field coordinates; n·u ≥ c),
    None without a plane."""
    if plane is None:
        return None
    normal = torch.as_tensor(plane[:3], dtype=torch.float32, device=grid.aabb.device)
    half_diagonal = 0.5 * float(((grid.aabb[1] - grid.aabb[0]) / grid.resolution).norm())
    return grid.cell_centers() @ normal >= float(plane[3]) - half_diagonal


@dataclass
class Targets:
    """A batch of training rays with what they should render: colours composited on ``background``
    and, where the images have masks, alpha."""

    batch: RayBatch
    rgb: torch.Tensor  # (R, 3)
    background: torch.Tensor  # (3,) or (R, 3)
    alpha: torch.Tensor | None  # (R,)


def draw_targets(data: ImageData, n_rays: int, gen: torch.Generator, random_background: bool,
                 device: torch.device) -> Targets:
    """``n_rays`` random pixels; images with alpha are composited on a random colour per ray (so the
    field cannot paint the background into space), otherwise on the scene's background."""
    batch = data.rays.sample(n_rays, gen)
    target = batch.rgb
    background = torch.tensor(data.scene.background, dtype=torch.float32, device=device)
    alpha = None
    if target.shape[-1] == 4:  # premultiplied colour + alpha
        if random_background:
            background = torch.rand((len(target), 3), device=device, generator=gen)
        alpha = target[:, 3] if data.masks else None
        target = target[:, :3] + background * (1.0 - target[:, 3:])
    return Targets(batch, target, background, alpha)


def free_space_points(grid: OccupancyGrid, gen: torch.Generator, n: int = FREE_POINTS) -> torch.Tensor:
    """(K, 3) random points of the grid's box in cells outside its allowed region (the visual hull):
    the masks say they are empty. Empty without a restriction."""
    bounds = grid.aabb
    u = bounds[0] + torch.rand((n, 3), device=bounds.device, generator=gen) * (bounds[1] - bounds[0])
    if grid.allowed is None:
        return u[:0]
    return u[~grid.allowed[grid.cell_indices(u)]]


def levels_at(progress: float, anneal: float, n_levels: int) -> int:
    """Hash-grid levels in use at this fraction of the budget: coarse to fine over the first ``anneal``
    of it (Neuralangelo), from ANNEAL_START_LEVELS to all; all when ``anneal`` is 0."""
    if anneal <= 0 or progress >= anneal:
        return n_levels
    start = min(ANNEAL_START_LEVELS, n_levels)
    return start + int((n_levels - start + 1) * progress / anneal)


class ImagesMethod(Method):
    """A method fitting a surface to a scene: reading, region, rays, records and the occupancy grid
    are shared; subclasses set name, kind, presets and make the step."""

    options = ImagesOptions
    records = ("scene", "images", "width", "height", "downscale", "background", "psnr", "samples_per_second",
               "box_world", "masks")
    summary = ("images", "psnr", "samples_per_second")
    #: Whether the method's rendering ends the region at a support plane (recon3d.fit.region.support_plane).
    support_plane = False

    def accepts(self, path: Path) -> bool:
        return looks_like_scene(path)

    def input_files(self, path: Path) -> list[Path]:
        return scene_files(Path(path), "train")

    def default_stem(self, path: Path) -> str:
        return path.stem if path.suffix.lower() == ".json" else path.name

    def read(self, path: Path, options: FitOptions, device: torch.device) -> Scene:
        """The train split. A capture without masks and without sparse points gets points triangulated
        from its images and poses (pycolmap, CPU) when the method ends its region at a support plane and
        no ``--box`` is given: the region then holds what the cameras look at, not the wall behind it."""
        assert isinstance(options, ImagesOptions)
        scene = read_scene(path, "train", downscale=options.downscale, background=tuple(options.background),
                           keep_alpha=True)
        if self.support_plane and options.triangulate and options.box is None and scene.sparse is None \
                and not has_masks(scene):
            from recon3d.sfm.poses import triangulated_points

            info(f"{scene.source}: no masks and no sparse points: triangulating points of the {len(scene)} "
                 "images from their poses (pycolmap, CPU; --no-triangulate skips this)")
            scene.sparse = triangulated_points(path, scene, seed=options.seed, threads=torch.get_num_threads())
        return scene.to(device)

    def check_resume(self, checkpoint: dict, data: Scene, output: Path, path: Path) -> None:
        if checkpoint["train"].get("images") != len(data):
            raise Recon3dError(f"{output}: was fitted to {checkpoint['train'].get('images')} images, {path} has "
                               f"{len(data)}; resume needs the same scene")

    def prepare(self, run: FitRun, data: Scene) -> ImageData:
        region = fitting_region(data, run.config.get("box"))
        box, hull = region.box, region.hull
        if run.resume is not None:  # the resumed field lives in the interrupted run's coordinates
            to_world, bounds = run.resume["to_world"], np.asarray(run.resume["bounds"], dtype=np.float64)
        else:
            to_world, bounds = normalisation(box)
        rays = RaySampler(data.pixels, data.c2w, data.fx, data.fy, data.cx, data.cy, data.distortion,
                          device=run.device, decode=training_targets(data))
        masks = has_masks(data)
        if not self.support_plane:
            region.plane = None
        plane = plane_to_field(region.plane, to_world)
        support = "" if region.plane is None else f", ends at the support plane {np.round(region.plane, 3).tolist()}"
        info(f"{data.source}: {len(data)} {data.split} images {data.width}x{data.height}, "
             f"masks: {'alpha (visual hull)' if masks and hull is not None else 'alpha' if masks else 'none'}, "
             f"fitting box {np.round(box.numpy(), 3).tolist()}{support}")
        if self.support_plane and not masks and run.config.get("box") is None and data.sparse is None:
            info(f"{data.source}: no sparse points, so the region is a cube round the cameras' focus; with points "
                 "(triangulated by default, or `recon3d poses SCENE --known-poses -o DIR`) it is tighter and ends at "
                 "a wall or table the object rests on")
        run.config["box_world"] = box.tolist()
        run.config["region_plane"] = None if plane is None else plane.tolist()
        return ImageData(data, rays, to_world, bounds, hull, masks, plane)

    def field_config(self, run: FitRun) -> dict[str, Any]:
        return copy.deepcopy(run.config["field"])

    def make_grid(self, run: FitRun) -> OccupancyGrid:
        """The occupancy grid over the fitting box (field coordinates), restricted to the visual hull,
        with an interrupted run's state when resuming."""
        data: ImageData = run.data
        config = run.config["grid"]
        grid = OccupancyGrid(torch.as_tensor(data.bounds, dtype=torch.float32), int(config["resolution"]),
                             steps_per_diagonal=int(config["steps_per_diagonal"])).to(run.device)
        if run.resume is not None:
            grid.load_state_dict(run.resume["grid"])
        allowed = hull_cells(data.hull, data.scene.aabb.detach().float(), data.to_world, grid)
        front = plane_cells(data.plane, grid)
        if front is not None:  # behind the support plane is the background's: outside, never marched
            allowed = front if allowed is None else allowed & front
        if allowed is not None:
            grid.restrict(allowed)
        return grid

    def placement(self, run: FitRun) -> tuple[dict[str, Any], Any]:
        return run.data.to_world, run.data.bounds

    def finish(self, run: FitRun) -> None:
        encoding = run.field.encoding
        if hasattr(encoding, "set_active_levels"):  # a budget may stop a coarse-to-fine schedule early
            encoding.set_active_levels(encoding.n_levels)

    def train_records(self, run: FitRun) -> dict[str, Any]:
        data, step, state = run.data, run.step, run.state
        terms, last = state.terms, (state.history[-1] if state.history else None)
        scene = data.scene
        return {
            "scene": str(scene.source), "images": len(scene), "width": scene.width, "height": scene.height,
            "downscale": scene.downscale, "background": list(scene.background),
            "masks": data.masks, "box_world": run.config.get("box_world"),
            "rays_per_step": step.n_rays, "near": scene.near, "far": scene.far,
            "psnr": float(last[1 + terms.index("psnr")]) if last and "psnr" in terms else None,
            "samples_per_second": step.samples_seen / max(run.seconds, 1e-9),
        }

    def extras(self, run: FitRun) -> dict[str, Any]:
        """The occupancy grid rides along: render and resume march through it."""
        return {"grid": {k: v.detach().cpu() for k, v in run.step.grid.state_dict().items()}}
