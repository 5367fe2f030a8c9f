"""The region of interest of a scene: where a field fitted to its images lives.

``--box`` when given; else, when the images carry masks (alpha), the box of their visual hull; else
the scene's own region of interest when it states one (an ``"aabb"`` key, as ``recon3d poses`` writes
from its sparse points); else, when the cameras look at one point (object-centric captures), a cube
around it; else the scene's box.
Captures without masks also get a background radiance field for everything beyond the region.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from recon3d.errors import InputError, Recon3dError
from recon3d.io.scene import Scene
from recon3d.render.hull import hull_box, visual_hull

#: Visual-hull lattice points per side (over the scene's box).
HULL_RESOLUTION = 96
#: Half side of the region around the cameras' focus, as a fraction of the view's half-width there.
FOCUS_SIZE = 0.6


def background_field(device: torch.device) -> dict[str, Any]:
    """The radiance field that explains what lies beyond the fitting box in captures without masks:
    instant-ngp's small network on a coarser hash grid, over contracted space (recon3d.render.background)."""
    from recon3d.fields.radiance import radiance_preset

    config = radiance_preset("fast", [[-2.0] * 3, [2.0] * 3])
    levels = {"n_levels": 12, "log2_table_size": 17 if device.type == "cuda" else 15, "max_resolution": 512}
    config["position_encoding"].update(levels)
    return config


def has_masks(scene: Scene) -> bool:
    """Whether the images carry masks: alpha that is not 1 everywhere (read image by image from the stored
    channel: a float copy of a large split would take 49 bytes a pixel)."""
    alphas = scene.stored_alphas()
    if alphas is None:
        return False
    opaque = 255 if alphas.dtype == torch.uint8 else 1.0
    return any(bool((alphas[i] < opaque).any()) for i in range(alphas.shape[0]))


def check_box(box: tuple[float, ...] | list[float] | None) -> list[float] | None:
    """``--box`` as six floats (xmin, ymin, zmin, xmax, ymax, zmax), or one clear error."""
    if box is None:
        return None
    values = [float(v) for v in box]
    if not (len(values) == 6 and all(np.isfinite(values)) and all(values[i + 3] > values[i] for i in range(3))):
        raise Recon3dError("--box needs six finite numbers xmin,ymin,zmin,xmax,ymax,zmax with max > min")
    return values


def focus_box(scene: Scene) -> torch.Tensor | None:
    """(2, 3) a cube around the point the cameras look at, or None when they do not look at one point.

    The point is the least-squares nearest point to every camera's optical axis; the cube's half side
    is FOCUS_SIZE of the view's half-width at the median camera distance, so an object that fills
    the middle of the frames fits. Clipped to the scene's box. For object-centric captures without
    masks (the region of interest; ``--box`` overrides it).
    """
    c2w = scene.c2w.detach().double().cpu()
    centres, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    forward = forward / forward.norm(dim=-1, keepdim=True)
    projector = torch.eye(3, dtype=torch.float64) - forward[:, :, None] * forward[:, None, :]
    matrix, vector = projector.sum(dim=0), (projector @ centres[:, :, None]).sum(dim=0)[:, 0]
    if float(torch.linalg.cond(matrix)) > 1e6:
        return None
    focus = torch.linalg.solve(matrix, vector)
    offsets = focus - centres
    distance = offsets.norm(dim=-1)
    facing = ((offsets / distance[:, None].clamp_min(1e-12)) * forward).sum(dim=-1)
    if float((facing > math.cos(math.radians(30.0))).double().mean()) < 0.8:  # most cameras must look at it
        return None
    half_view = float(torch.minimum(scene.cx / scene.fx, scene.cy / scene.fy).min().cpu())
    half = FOCUS_SIZE * float(distance.median()) * half_view
    aabb = scene.aabb.detach().double().cpu()
    lo, hi = torch.maximum(focus - half, aabb[0]), torch.minimum(focus + half, aabb[1])
    if not bool((hi > lo).all()):
        return None
    return torch.stack([lo, hi]).float()


def fitting_box(scene: Scene, box: list[float] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The world box to fit in (2, 3) and, with masks, the visual hull over the scene's box (R, R, R):
    ``--box``; else the masks' visual hull; else the box the scene states (``aabb``); else the
    cameras' focus (:func:`focus_box`); else the scene's box."""
    if box is not None:
        return torch.tensor([box[:3], box[3:]], dtype=torch.float32), None
    if not has_masks(scene) and getattr(scene, "aabb_source", "") in ("aabb", "points"):
        return scene.aabb.detach().float().cpu(), None
    if not has_masks(scene):
        focus = focus_box(scene)
        return (scene.aabb.detach().float().cpu() if focus is None else focus), None
    hull = visual_hull(scene.c2w, scene.fx, scene.fy, scene.cx, scene.cy, scene.stored_alphas(), scene.aabb,
                       HULL_RESOLUTION, scene.distortion)
    if not bool(hull.any()):
        raise InputError(f"{scene.source}: the masks (alpha) leave nothing that every camera sees as object")
    return hull_box(hull, scene.aabb, margin_cells=2.0), hull
