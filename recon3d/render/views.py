"""Rendering a fitted radiance field: a scene's held-out views with PSNR / SSIM, or an orbit path.

Images are written atomically as 8-bit PNGs (an orbit optionally as one GIF). Metrics compare the
render with the scene's own image composited on the same background, so they follow the benchmark
convention (white background for nerf_synthetic).
"""

from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recon3d.io.atomic import atomic_write_bytes
from recon3d.metrics import psnr, ssim
from recon3d.render.renderer import Sampling, render_image
from recon3d.render.samplers import OccupancyGrid


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames: list[np.ndarray], fps: float = 15.0) -> bytes:
    from PIL import Image

    images = [Image.fromarray(to_uint8(frame)) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    return buffer.getvalue()


def render_split(field: torch.nn.Module, grid: OccupancyGrid | None, sampling: Sampling, scene,
                 out_dir: Path | None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Render every view of ``scene``; PSNR/SSIM against its images; PNGs into ``out_dir`` if given."""
    views = []
    start = time.perf_counter()
    for index in range(len(scene)):
        rendered = render_image(field, scene, index, sampling, grid)
        target = scene.images[index].cpu().numpy()
        name = Path(scene.files[index]).stem
        entry = {"view": name, "psnr": psnr(rendered["rgb"], target), "ssim": ssim(rendered["rgb"], target)}
        if out_dir is not None:
            path = out_dir / f"{scene.split}_{index:03d}_{name}.png"
            atomic_write_bytes(path, png_bytes(rendered["rgb"]))
            entry["image"] = str(path)
        views.append(entry)
        if progress is not None:
            progress(index + 1, len(scene))
    seconds = time.perf_counter() - start
    return {
        "split": scene.split, "views": views,
        "psnr": float(np.mean([v["psnr"] for v in views])) if views else None,
        "ssim": float(np.mean([v["ssim"] for v in views])) if views else None,
        "seconds": seconds, "seconds_per_view": seconds / max(len(views), 1),
    }


def orbit_cameras(c2w: torch.Tensor, center: torch.Tensor, n: int) -> torch.Tensor:
    """(n, 4, 4) cameras circling ``center`` at the training cameras' median distance and mean
    elevation, about their mean up axis, looking at the centre (OpenGL convention)."""
    positions = c2w[:, :3, 3].double()
    up = c2w[:, :3, 1].double().mean(dim=0)
    up = up / up.norm().clamp_min(1e-12)
    offsets = positions - center.double()
    radius = offsets.norm(dim=1).median()
    height = (offsets @ up).mean()
    height = height.clamp(-0.95 * radius, 0.95 * radius)
    ring = (radius**2 - height**2).sqrt()
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) if up[0].abs() < 0.9 else torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    a = torch.linalg.cross(up, helper)
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    cameras = []
    for k in range(n):
        angle = 2.0 * np.pi * k / n
        eye = center.double() + up * height + ring * (np.cos(angle) * a + np.sin(angle) * b)
        z = eye - center.double()
        z = z / z.norm()
        x = torch.linalg.cross(up, z)
        x = x / x.norm()
        pose = torch.eye(4, dtype=torch.float64)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, torch.linalg.cross(z, x), z, eye
        cameras.append(pose)
    return torch.stack(cameras).float()


def render_orbit(field: torch.nn.Module, grid: OccupancyGrid | None, sampling: Sampling, scene, n: int,
                 out_dir: Path, gif: bool, progress: Callable[[int, int], None] | None = None) -> dict:
    """``n`` frames around the scene (intrinsics of its first camera) as PNGs, or one GIF."""
    aabb = scene.aabb.float()
    poses = orbit_cameras(scene.c2w.cpu(), 0.5 * (aabb[0] + aabb[1]).cpu(), n)
    first = slice(0, 1)
    orbit = replace(scene, c2w=poses, images=scene.images[first].expand(n, -1, -1, -1),
                    fx=scene.fx[first].expand(n), fy=scene.fy[first].expand(n), cx=scene.cx[first].expand(n),
                    cy=scene.cy[first].expand(n), files=[Path(f"orbit_{k:03d}") for k in range(n)],
                    distortion=None, alphas=None)
    frames, written = [], []
    for k in range(n):
        frame = render_image(field, orbit, k, sampling, grid)["rgb"]
        if gif:
            frames.append(frame)
        else:
            path = out_dir / f"orbit_{k:03d}.png"
            atomic_write_bytes(path, png_bytes(frame))
            written.append(str(path))
        if progress is not None:
            progress(k + 1, n)
    if gif:
        path = out_dir / "orbit.gif"
        atomic_write_bytes(path, gif_bytes(frames))
        written.append(str(path))
    return {"frames": n, "files": written}
