"""Cameras to rays: pinhole (optionally OpenCV-distorted) cameras, random training batches, boxes.

Conventions (the nerf_synthetic / nerfstudio ones): camera-to-world matrices in OpenGL convention
(x right, y up, looking down -z); pixel (u, v) is column u, row v counted from the top-left, and its
centre is at (u + 0.5, v + 0.5), so the camera-frame direction of a pixel is
((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1) before distortion is undone. Ray directions are
unit length, so distances t along a ray are Euclidean. Every tensor follows the device of its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor


@dataclass
class Rays:
    """A batch of rays of any shape ``(...)``.

    origins:    (..., 3) world-space ray origins (the camera centre).
    directions: (..., 3) unit world-space directions.
    viewdirs:   (..., 3) directions to condition colour on (the same unit vectors by default).
    """

    origins: Tensor
    directions: Tensor
    viewdirs: Tensor | None = None

    def __post_init__(self) -> None:
        if self.viewdirs is None:
            self.viewdirs = self.directions

    @property
    def shape(self) -> torch.Size:
        return self.origins.shape[:-1]

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    def __getitem__(self, index) -> Rays:
        return Rays(self.origins[index], self.directions[index], self.viewdirs[index])

    def reshape(self, *shape: int) -> Rays:
        return Rays(*(t.reshape(*shape, 3) for t in (self.origins, self.directions, self.viewdirs)))

    def flatten(self) -> Rays:
        """(R,) rays, R the product of the batch shape."""
        return self.reshape(-1)

    def to(self, device: torch.device | str) -> Rays:
        return Rays(*(t.to(device) for t in (self.origins, self.directions, self.viewdirs)))


# ------------------------------------------------------------------------------ distortion


def distort(x: Tensor, y: Tensor, coeffs: Tensor) -> tuple[Tensor, Tensor]:
    """OpenCV radial-tangential distortion of normalised image coordinates (x right, y down).

    ``coeffs`` (..., 6) = ``k1 k2 k3 k4 p1 p2`` (nerfstudio's order): radial factor
    1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8, tangential p1, p2 as in OpenCV.
    """
    k1, k2, k3, k4, p1, p2 = coeffs.unbind(-1)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def undistort(xd: Tensor, yd: Tensor, coeffs: Tensor, iterations: int = 10) -> tuple[Tensor, Tensor]:
    """Invert :func:`distort` by Newton's method (starting from the distorted point).

    The model has no closed-form inverse; a few Newton steps with the analytic Jacobian converge
    to float precision for the distortions real lenses have.
    """
    k1, k2, k3, k4, p1, p2 = coeffs.unbind(-1)
    x, y = xd, yd
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        d_radial = k1 + r2 * (2.0 * k2 + r2 * (3.0 * k3 + r2 * 4.0 * k4))  # d radial / d r^2
        fx = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
        a = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x  # d fx / dx
        b = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y  # d fx / dy (= d fy / dx)
        d = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x  # d fy / dy
        det = a * d - b * b
        ok = det.abs() > 1e-12
        det = torch.where(ok, det, torch.ones_like(det))
        x = x - torch.where(ok, (fx * d - fy * b) / det, torch.zeros_like(det))
        y = y - torch.where(ok, (fy * a - fx * b) / det, torch.zeros_like(det))
    return x, y


# ------------------------------------------------------------------------------ camera rays


def camera_rays(
    c2w: Tensor,
    fx: Tensor | float,
    fy: Tensor | float,
    cx: Tensor | float,
    cy: Tensor | float,
    width: int | None = None,
    height: int | None = None,
    distortion: Tensor | None = None,
    pixels: Tensor | None = None,
) -> Rays:
    """Rays through pixel centres.

    Without ``pixels``: every pixel of one camera; ``c2w`` (4, 4) (or (3, 4)), scalar intrinsics,
    ``width`` and ``height`` required; rays of shape (height, width), row-major like the image.
    With ``pixels`` (..., 2) integer (u, v) = (column, row): ``c2w`` (..., 4, 4) and intrinsics
    (...) broadcast against the pixels (one camera for all, or one per pixel); rays of shape (...).
    ``distortion`` (6,) or (..., 6): OpenCV ``k1 k2 k3 k4 p1 p2``, undone per pixel.
    """
    device = c2w.device
    dtype = c2w.dtype if c2w.is_floating_point() else torch.float32
    c2w = c2w.to(dtype)
    if pixels is None:
        if c2w.dim() != 2 or width is None or height is None:
            raise ValueError("camera_rays without pixels needs one (4, 4) c2w, width and height")
        v, u = torch.meshgrid(
            torch.arange(int(height), device=device, dtype=dtype),
            torch.arange(int(width), device=device, dtype=dtype),
            indexing="ij",
        )
    else:
        pixels = pixels.to(device=device, dtype=dtype)
        u, v = pixels[..., 0], pixels[..., 1]

    def param(value) -> Tensor:
        return torch.as_tensor(value, device=device, dtype=dtype)

    x = (u + 0.5 - param(cx)) / param(fx)
    y = (v + 0.5 - param(cy)) / param(fy)
    if distortion is not None:
        x, y = undistort(x, y, param(distortion))
    local = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)  # OpenCV (y down) -> OpenGL
    rotation = c2w[..., :3, :3]
    if pixels is None:
        directions = local @ rotation.transpose(-1, -2)
    else:
        directions = (rotation @ local.unsqueeze(-1)).squeeze(-1)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[..., :3, 3]
    origins = origins.expand_as(directions) if pixels is None else origins.expand(directions.shape)
    return Rays(origins, directions)


def image_rays(scene, index: int, device: torch.device | str | None = None) -> Rays:
    """All rays of image ``index`` of a :class:`recon3d.io.scene.Scene`, shape (H, W)."""
    rays = camera_rays(**scene.camera(index))
    return rays if device is None else rays.to(device)


# ----------------------------------------------------------------------------- ray batches


@dataclass
class RayBatch:
    """Random training rays and what they should render.

    rays: (B,) rays; rgb: (B, 3) target colours; image_indices: (B,) int64;
    pixels: (B, 2) int64 (u, v) = (column, row).
    """

    rays: Rays
    rgb: Tensor
    image_indices: Tensor
    pixels: Tensor


class RaySampler:
    """Uniformly random pixels across all images of a split, as rays plus target colours.

    The images stay where they are put (``device``), so on a GPU a batch costs no host transfer. They
    may be stored compactly (uint8, as :class:`recon3d.io.scene.Scene` keeps 8-bit images): only the
    drawn pixels are turned into floats, by ``decode`` ((B, C) stored -> (B, K) float targets; by
    default uint8 / 255, floats as they are). Batches depend only on the ``torch.Generator`` given to
    :meth:`sample`, which makes training deterministic for a seed (on the same device type: CPU and
    CUDA generators differ).
    """

    def __init__(
        self,
        images: Tensor,
        c2w: Tensor,
        fx: Tensor,
        fy: Tensor,
        cx: Tensor,
        cy: Tensor,
        distortion: Tensor | None = None,
        device: torch.device | str | None = None,
        decode: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        device = torch.device(device) if device is not None else images.device
        self.images = images.to(device)  # (N, H, W, C) as stored
        self.decode = decode if decode is not None else _as_float
        self.c2w = c2w.to(device=device, dtype=torch.float32)
        self.fx, self.fy, self.cx, self.cy = (t.to(device) for t in (fx, fy, cx, cy))
        self.distortion = None if distortion is None else distortion.to(device)
        self.device = device
        self.n_images, self.height, self.width = (int(s) for s in self.images.shape[:3])

    @classmethod
    def from_scene(cls, scene, device: torch.device | str | None = None) -> RaySampler:
        """A sampler over every pixel of a :class:`recon3d.io.scene.Scene`, with its colours as targets."""
        return cls(scene.pixels, scene.c2w, scene.fx, scene.fy, scene.cx, scene.cy, scene.distortion,
                   device=device, decode=lambda stored: scene.decode(stored)[0])  # fmt: skip

    def __len__(self) -> int:
        """The number of pixels (rays) to draw from."""
        return self.n_images * self.height * self.width

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> RayBatch:
        """``batch_size`` pixels drawn uniformly with replacement over all images."""
        source = generator.device if generator is not None else self.device
        flat = torch.randint(0, len(self), (int(batch_size),), generator=generator, device=source)
        return self.batch_of(flat.to(self.device))

    def batch_of(self, flat: Tensor) -> RayBatch:
        """Rays and colours of pixels given by flat indices (B,) in [0, len(self)): image-major, then row, column."""
        per_image = self.height * self.width
        image, rest = flat // per_image, flat % per_image
        v, u = rest // self.width, rest % self.width
        return self.batch(image, torch.stack([u, v], dim=-1))

    def batch(self, image_indices: Tensor, pixels: Tensor) -> RayBatch:
        """Rays and colours of given (image, pixel) pairs; ``pixels`` (B, 2) = (u, v)."""
        image_indices = image_indices.to(self.device)
        pixels = pixels.to(self.device)
        u, v = pixels[:, 0], pixels[:, 1]
        i = image_indices
        rays = camera_rays(
            self.c2w[i], self.fx[i], self.fy[i], self.cx[i], self.cy[i],
            distortion=None if self.distortion is None else self.distortion[i],
            pixels=pixels,
        )  # fmt: skip
        return RayBatch(rays, self.decode(self.images[i, v, u]), image_indices, pixels)


def _as_float(stored: Tensor) -> Tensor:
    """Stored pixel values as float32 targets: uint8 / 255, floats unchanged."""
    if stored.dtype == torch.uint8:
        from recon3d.io.scene import unit_floats

        return unit_floats(stored)
    return stored


# ------------------------------------------------------------------------------------ boxes


def ray_aabb(origins: Tensor, directions: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where rays enter and leave an axis-aligned box (slab method).

    ``aabb`` (2, 3) = (min corner, max corner). Returns ``t_near`` (...,) clamped to >= 0 (a ray
    starting inside enters at 0), ``t_far`` (...,) and ``hit`` (...,) bool, true where the ray
    crosses the box in front of its origin (t_far > t_near). For missed rays t_near/t_far are
    meaningless.
    """
    aabb = aabb.to(device=origins.device, dtype=origins.dtype)
    tiny = 1e-12
    safe = torch.where(directions.abs() < tiny, torch.full_like(directions, tiny), directions)
    inverse = 1.0 / safe
    t0 = (aabb[0] - origins) * inverse
    t1 = (aabb[1] - origins) * inverse
    t_min = torch.minimum(t0, t1).amax(dim=-1)
    t_max = torch.maximum(t0, t1).amin(dim=-1)
    t_near = t_min.clamp_min(0.0)
    return t_near, t_max, t_max > t_near
