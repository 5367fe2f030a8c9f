"""Depth supervision from sparse structure-from-motion points (DS-NeRF, Deng et al. 2022).

Every observation of a sparse point in a training image is a ray (through the observed pixel) and a
depth: the distance from that camera to the point. Its uncertainty grows with the point's
reprojection error, turned into distance at that depth (σ = max(error, 0.5 px) · depth / focal). The
loss asks the ray's termination distribution (its compositing weights) to put its mass near that
depth (recon3d.fit.losses.depth_termination_loss). A scene carries such points when
``recon3d poses`` made it (``sparse_points.npz``) or it is a COLMAP project (``Scene.sparse``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from recon3d.render.rays import Rays, camera_rays

#: Smallest reprojection error assumed for a point, pixels (sub-pixel errors are not that precise).
MIN_ERROR_PX = 0.5


@dataclass
class DepthRays:
    """The training split's observations of sparse points, on the training device."""

    image: torch.Tensor  # (O,) int64 index of the image
    uv: torch.Tensor  # (O, 2) pixel coordinates, the top-left pixel's centre at (0.5, 0.5)
    depth: torch.Tensor  # (O,) distance from the camera centre to the point, scene units
    sigma: torch.Tensor  # (O,) its uncertainty, scene units
    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    distortion: torch.Tensor | None
    points: torch.Tensor | None = None  # (O, 3) the observed points, scene units

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def subset(self, keep: torch.Tensor) -> DepthRays:
        """The observations where ``keep`` (O,) is True (the cameras stay)."""
        return dataclasses.replace(self, image=self.image[keep], uv=self.uv[keep], depth=self.depth[keep],
                                   sigma=self.sigma[keep], points=None if self.points is None else self.points[keep])

    def sample(self, n: int, generator: torch.Generator) -> tuple[Rays, torch.Tensor, torch.Tensor]:
        """``n`` random observations: their rays (n,), target depths (n,) and uncertainties (n,)."""
        pick = torch.randint(0, len(self), (int(n),), device=generator.device, generator=generator)
        pick = pick.to(self.image.device)
        i = self.image[pick]
        rays = camera_rays(self.c2w[i], self.fx[i], self.fy[i], self.cx[i], self.cy[i],
                           distortion=None if self.distortion is None else self.distortion[i],
                           pixels=self.uv[pick] - 0.5)  # camera_rays adds the half pixel back
        return rays, self.depth[pick], self.sigma[pick]


def depth_rays(scene, device: torch.device) -> DepthRays | None:
    """The depth observations of a scene's images, or None when it has no sparse points."""
    sparse = getattr(scene, "sparse", None)
    if sparse is None or len(getattr(sparse, "obs_frame", ())) == 0:
        return None
    frame = torch.as_tensor(sparse.obs_frame, dtype=torch.int64, device=device)
    point = torch.as_tensor(sparse.obs_point, dtype=torch.int64, device=device)
    points = torch.as_tensor(sparse.points, dtype=torch.float32, device=device)
    c2w = scene.c2w.to(device=device, dtype=torch.float32)
    fx = scene.fx.to(device)
    depth = (points[point] - c2w[frame, :3, 3]).norm(dim=-1)
    error = torch.as_tensor(sparse.obs_error, dtype=torch.float32, device=device).clamp_min(MIN_ERROR_PX)
    keep = depth > 0
    return DepthRays(image=frame[keep], uv=torch.as_tensor(sparse.obs_uv, dtype=torch.float32, device=device)[keep],
                     depth=depth[keep], sigma=(error * depth / fx[frame])[keep], c2w=c2w, fx=fx,
                     fy=scene.fy.to(device), cx=scene.cx.to(device), cy=scene.cy.to(device),
                     distortion=None if scene.distortion is None else scene.distortion.to(device),
                     points=points[point][keep])
