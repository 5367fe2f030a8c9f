"""The visual hull of a scene's masks: the space that every camera sees as object (Laurentini 1994).

A surface fitted to masked images lies inside it, so it bounds the region to fit (a tighter box,
more resolution) and marks the space that must be empty. Each lattice point is projected into every
view it falls in; a view that sees it on background carves it away. Masks are dilated by the
projected size of a lattice cell, so a thin part between lattice points is never carved.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from recon3d.render.rays import distort


@torch.no_grad()
def visual_hull(c2w: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
                alphas: torch.Tensor, box: torch.Tensor, resolution: int = 64,
                distortion: torch.Tensor | None = None, threshold: float = 0.5,
                min_views: float = 0.5) -> torch.Tensor:
    """(R, R, R) bool, indexed [x, y, z] over the cell centres of ``box`` (2, 3): True where no view
    sees background and at least ``min_views`` of the views see the point at all (space outside most
    frusta is not the object of an object-centric capture). Cameras: (N, 4, 4) camera-to-world
    (OpenGL) and (N,) intrinsics of (N, H, W) ``alphas`` (float in [0, 1] or uint8); ``distortion``
    (N, 6) OpenCV coefficients or None."""
    device = c2w.device
    box = box.to(device=device, dtype=torch.float32)
    cell = (box[1] - box[0]) / resolution
    axes = [box[0, i] + (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) * cell[i]
            for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    inside = torch.ones(len(grid), dtype=torch.bool, device=device)
    seen = torch.zeros(len(grid), dtype=torch.int32, device=device)
    half_diagonal = 0.5 * float(cell.norm())
    n, height, width = alphas.shape
    for view in range(n):
        mask = alphas[view].float()
        if alphas.dtype == torch.uint8:
            mask = mask / 255.0
        rotation, centre = c2w[view, :3, :3].float(), c2w[view, :3, 3].float()
        local = (grid - centre) @ rotation  # camera frame: x right, y up, looking down -z
        depth = -local[:, 2]
        front = depth > 1e-6
        x = local[:, 0] / depth.clamp_min(1e-6)
        y = -local[:, 1] / depth.clamp_min(1e-6)  # image y points down
        if distortion is not None:
            x, y = distort(x, y, distortion[view].float())
        u = (cx[view] + fx[view] * x).floor().long()
        v = (cy[view] + fy[view] * y).floor().long()
        in_image = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        nearest = float(depth[front].min()) if bool(front.any()) else 1.0
        radius = int(math.ceil(float(max(fx[view], fy[view])) * half_diagonal / max(nearest, 1e-6)))
        dilated = _dilate(mask > threshold, radius)
        hit = torch.zeros_like(in_image)
        hit[in_image] = dilated[v[in_image], u[in_image]]
        inside &= hit | ~in_image
        seen += in_image.int()
    return (inside & (seen >= max(1, math.ceil(min_views * n)))).reshape(resolution, resolution, resolution)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A boolean (H, W) mask grown by ``radius`` pixels (square neighbourhood)."""
    if radius <= 0:
        return mask
    grown = ndimage.maximum_filter(mask.cpu().numpy().astype(np.uint8), size=2 * radius + 1)
    return torch.from_numpy(grown.astype(bool)).to(mask.device)


def hull_box(hull: torch.Tensor, box: torch.Tensor, margin_cells: float = 1.0) -> torch.Tensor:
    """(2, 3) CPU float32: the bounding box of the hull's cells inside ``box``, grown by ``margin_cells``
    cells and clipped to ``box``; ``box`` itself when the hull is empty."""
    hull, box = hull.cpu(), box.cpu().to(torch.float32)
    if not bool(hull.any()):
        return box.clone()
    cell = (box[1] - box[0]) / hull.shape[0]
    filled = hull.nonzero().to(torch.float32)
    lo = box[0] + (filled.min(dim=0).values - margin_cells) * cell
    hi = box[0] + (filled.max(dim=0).values + 1.0 + margin_cells) * cell
    return torch.stack([torch.maximum(lo, box[0]), torch.minimum(hi, box[1])])
