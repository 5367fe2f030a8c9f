"""The region of interest of a scene: where a field fitted to its images lives.

``--box`` when given; else, when the images carry masks (alpha), the box of their visual hull; else
the scene's own region of interest when it states one (an ``"aabb"`` key, as ``recon3d poses`` writes
from its sparse points); else, when the cameras look at one point (object-centric captures), a cube
around it; else the scene's box.
Captures without masks also get a background radiance field for everything beyond the region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
#: Support plane (RANSAC): random tries, inlier distance as a fraction of the points' extent (the diagonal
#: of their box), the least share of the points on the plane, and of the cameras in front of it.
PLANE_TRIES = 500
PLANE_TOLERANCE = 0.01
PLANE_SHARE = 0.2
PLANE_CAMERAS = 0.95


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


@dataclass
class Region:
    """Where a field is fitted: a world box (2, 3), the masks' visual hull over the scene's box (R, R, R)
    or None, and the support plane (4,) ``n, c`` (the region is n·x ≥ c) or None."""

    box: torch.Tensor
    hull: torch.Tensor | None = None
    plane: np.ndarray | None = None


def support_plane(points: np.ndarray, cameras: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """(4,) ``n, c``: the plane n·x = c (‖n‖ = 1) that most of ``points`` (P, 3) lie on, found by RANSAC
    (Fischler and Bolles 1981, as point-cloud tools find a ground plane), with the camera centres
    ``cameras`` (N, 3) on its positive side; None unless PLANE_SHARE of the points lie within
    PLANE_TOLERANCE of the points' extent of it and PLANE_CAMERAS of the cameras are in front of it.

    Such a plane is what the object rests on (a wall, a table, the floor): cameras see only its front, so
    everything behind it is unobserved, and a field fitted through it grows the support into a slab.
    """
    points = np.asarray(points, np.float64)
    if len(points) < 3:
        return None
    lo, hi = np.percentile(points, (2.0, 98.0), axis=0)
    tolerance = PLANE_TOLERANCE * float(np.linalg.norm(hi - lo))
    rng = np.random.default_rng(seed)
    best, best_count = None, 0
    for _ in range(PLANE_TRIES):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        normal = np.cross(b - a, c - a)
        length = float(np.linalg.norm(normal))
        if length <= 1e-12:
            continue
        normal /= length
        count = int((np.abs((points - a) @ normal) <= tolerance).sum())
        if count > best_count:
            best, best_count = (normal, float(normal @ a)), count
    if best is None or best_count < PLANE_SHARE * len(points):
        return None
    normal, offset = best
    inliers = points[np.abs(points @ normal - offset) <= tolerance]  # refit by least squares
    centre = inliers.mean(axis=0)
    normal = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
    heights = np.asarray(cameras, np.float64) @ normal - float(normal @ centre)
    if np.median(heights) < 0:
        normal, heights = -normal, -heights
    if np.mean(heights > tolerance) < PLANE_CAMERAS:
        return None
    return np.concatenate([normal, [float(normal @ centre) + tolerance]])


def sparse_region(scene: Scene) -> Region | None:
    """The region from the scene's sparse points, None with too few: the points the cameras look at
    (recon3d.io.colmap.object_points), without those on or behind their support plane when there is one
    (:func:`support_plane`); their box (recon3d.io.colmap.points_box) clipped to the scene's box.
    A box the scene states (``aabb``, as ``recon3d poses`` writes it before the support is known) bounds
    the region; ``--box`` replaces it."""
    from recon3d.io.colmap import ROI_MIN_POINTS, object_points, points_box

    if scene.sparse is None or len(scene.sparse.points) < ROI_MIN_POINTS:
        return None
    c2w = scene.c2w.detach().double().cpu().numpy()
    intrinsics = torch.stack([scene.fx, scene.fy, scene.cx, scene.cy], dim=1).detach().double().cpu().numpy()
    chosen = object_points(scene.sparse.points, c2w, intrinsics)
    plane = support_plane(chosen, c2w[:, :3, 3])
    if plane is not None:
        front = chosen[chosen @ plane[:3] > plane[3]]
        if len(front) < ROI_MIN_POINTS:
            return None
        chosen = front
    aabb = scene.aabb.detach().double().cpu().numpy()
    stated = getattr(scene, "aabb_source", "") in ("aabb", "points")
    box = points_box(chosen)
    box = np.stack([np.maximum(box[0], aabb[0]), np.minimum(box[1], aabb[1])])
    if not bool((box[1] > box[0]).all()):
        if not stated:
            return None
        box = aabb
    return Region(torch.as_tensor(box, dtype=torch.float32), None, plane)


def fitting_region(scene: Scene, box: list[float] | None) -> Region:
    """The region to fit in: as :func:`fitting_box`, but captures without masks that have sparse points
    take :func:`sparse_region` (a box round the points the cameras look at, ending at their support plane)."""
    if box is None and not has_masks(scene):
        region = sparse_region(scene)
        if region is not None:
            return region
    return Region(*fitting_box(scene, box))


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
