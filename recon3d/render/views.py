"""Rendering a fitted model: a scene's held-out views with PSNR / SSIM, or an orbit path.

Images are written atomically as 8-bit PNGs (an orbit optionally as one GIF). Metrics compare the
render with the scene's own image composited on the same background, so they follow the benchmark
convention (white background for nerf_synthetic). With an output folder every view also gets a
side-by-side picture, ground truth | prediction | depth | normals (:func:`side_by_side`): normals from
the field's gradient where the model has one (surfaces fitted to images), from the depth map for
radiance fields. Rays go in chunks that fit a memory budget (recon3d.render.renderer.rays_per_chunk).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recon3d.console import Progress
from recon3d.device import resolve_device
from recon3d.errors import Recon3dError, one_line
from recon3d.fields.gradient import autograd_gradient
from recon3d.io.atomic import atomic_write_bytes
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.scene import read_scene
from recon3d.metrics import psnr, ssim
from recon3d.render.model import RENDERABLE, Renderer, load_renderer
from recon3d.render.rays import image_rays
from recon3d.render.renderer import rays_per_chunk, render_image

#: Below this opacity a pixel shows the background in the depth and normal panels.
PANEL_OPACITY = 0.5
#: Panel labels are drawn when a panel is at least this wide, in pixels.
LABEL_WIDTH = 96
#: The depth panel's colour map (viridis at five stops), near = dark.
_DEPTH_COLOURS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]) / 255.0


@dataclass
class RenderOptions:
    """What to render: a split's views (PSNR / SSIM, PNGs into ``output`` if given), or ``orbit``
    frames circling the scene (PNGs, or one GIF with ``gif``), into ``output``. ``limit``: the first
    N views only; ``downscale``: image shrink factor (None: the training run's)."""

    split: str = "test"
    output: Path | None = None
    orbit: int = 0
    gif: bool = False
    limit: int | None = None
    downscale: int | None = None
    #: With ``output``: also write each view's ground truth | prediction | depth | normals picture.
    side_by_side: bool = True
    #: Rays rendered at once (None: as many as fit in the memory budget, recon3d.render.renderer).
    chunk: int | None = None

    def validate(self) -> None:
        """One clear Recon3dError for the first inconsistent option."""
        if self.orbit < 0 or (self.gif and self.orbit == 0):
            raise Recon3dError("--orbit N needs N >= 1 (and --gif needs --orbit)")
        if self.chunk is not None and self.chunk < 1:
            raise Recon3dError(f"--chunk must be at least 1, got {self.chunk}")
        if self.orbit and self.output is None:
            raise Recon3dError("--orbit needs -o FOLDER for its frames")
        if self.limit is not None and self.limit < 1:
            raise Recon3dError("--limit must be at least 1")
        if self.output is not None:
            if self.output.exists() and not self.output.is_dir():
                raise Recon3dError(f"{self.output}: exists and is not a folder")
            if not self.output.parent.is_dir():
                raise Recon3dError(f"{self.output}: parent folder {self.output.parent} does not exist")


def render_model(model: Path, scene: Path, options: RenderOptions, device: str = "auto",
                 show_progress: bool = True) -> dict:
    """Render a checkpoint's views of ``scene`` (see :class:`RenderOptions`) with a progress bar;
    return :func:`render_split`'s or :func:`render_orbit`'s result."""
    options.validate()
    checkpoint = load_checkpoint(model, kinds=RENDERABLE)
    torch_device = resolve_device(device)
    renderer = load_renderer(checkpoint, torch_device, str(model))
    train = checkpoint["train"]
    factor = int(options.downscale if options.downscale is not None else train.get("downscale", 1))
    background = tuple(train.get("background", (1.0, 1.0, 1.0)))
    views = read_scene(scene, "train" if options.orbit else options.split, downscale=factor, background=background,
                       max_images=options.limit).to(torch_device)
    if options.output is not None:
        make_output_folder(options.output)
    count = options.orbit or len(views)
    with Progress("render", count, "views", enabled=show_progress) as progress:
        def advance(done: float, total: float) -> None:
            progress.update(done, total)

        if options.orbit:
            return render_orbit(renderer, views, options.orbit, options.output, options.gif, advance,
                                chunk=options.chunk)
        return render_split(renderer, views, options.output, advance, side_by_side=options.side_by_side,
                            chunk=options.chunk)


def make_output_folder(folder: Path) -> None:
    """Create the folder renders go to (its parent must exist) and check that files can be made in it,
    before any rendering: one Recon3dError line otherwise."""
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise Recon3dError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from exc
    if not folder.is_dir():
        raise Recon3dError(f"{folder}: exists and is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Recon3dError(f"{folder}: the output folder is not writable")


class ImageWriter:
    """Writes a render's images into ``folder`` atomically, checks each one landed whole (its size on
    disk), and keeps count: a failed write (a full disk, an I/O error) is one Recon3dError line saying
    how many of the ``total`` images were written before it."""

    def __init__(self, folder: Path, total: int) -> None:
        self.folder, self.total, self.written = folder, total, []

    def write(self, name: str, data: bytes, count: bool = True) -> str:
        """Write ``name``; ``count=False`` for a picture that goes with an image already counted (its side by
        side), which the message of a failed write does not count."""
        path = self.folder / name
        try:
            atomic_write_bytes(path, data)
            size = path.stat().st_size
            if size != len(data):
                path.unlink(missing_ok=True)
                raise Recon3dError(f"{path}: write failed ({size} of {len(data)} bytes on disk)")
        except (Recon3dError, OSError) as exc:
            reason = str(exc) if isinstance(exc, Recon3dError) else f"{path}: write failed ({exc.strerror or exc})"
            done = len(self.written)
            message = (f"{reason}; {done} of {self.total} image{'s' if self.total > 1 else ''} "
                       f"{'was' if done == 1 else 'were'} written to {self.folder} before it")
            raise Recon3dError(one_line(message)) from exc
        if count:
            self.written.append(str(path))
        return str(path)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames: list[np.ndarray], fps: float = 15.0) -> bytes:
    from PIL import Image

    images = [Image.fromarray(frame if frame.dtype == np.uint8 else to_uint8(frame)) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    return buffer.getvalue()


def _render_view(renderer: Renderer, scene, index: int, chunk: int | None, done: int, total: int,
                 progress: Callable[[float, int], None] | None) -> dict[str, np.ndarray]:
    """One view, in chunks of rays that fit the memory budget, reporting fractions of views."""
    device = next(renderer.field.parameters()).device
    if chunk is None:
        chunk = rays_per_chunk(renderer, image_rays(scene, index, device=device).flatten(), device)
    report = None if progress is None else (lambda rays, of: progress(done + rays / max(of, 1), total))
    return render_image(renderer, scene, index, chunk=chunk, progress=report)


def render_split(renderer: Renderer, scene, out_dir: Path | None,
                 progress: Callable[[float, int], None] | None = None, side_by_side: bool = True,
                 chunk: int | None = None) -> dict:
    """Render every view of ``scene``; PSNR/SSIM against its images; PNGs into ``out_dir`` if given, each
    with its side-by-side picture (``side_by_side``); ``chunk`` rays at once (None: what fits in memory)."""
    views = []
    writer = ImageWriter(out_dir, len(scene)) if out_dir is not None else None
    start = time.perf_counter()
    for index in range(len(scene)):
        rendered = _render_view(renderer, scene, index, chunk, index, len(scene), progress)
        target = scene.image(index).cpu().numpy()
        name = Path(scene.files[index]).stem
        entry = {"view": name, "psnr": psnr(rendered["rgb"], target), "ssim": ssim(rendered["rgb"], target)}
        if writer is not None:
            entry["image"] = writer.write(f"{scene.split}_{index:03d}_{name}.png", png_bytes(rendered["rgb"]))
            if side_by_side:
                normals = normal_map(renderer, scene, index, rendered["depth"], rendered["opacity"])
                picture = side_by_side_picture(target, rendered, normals, scene.background)
                entry["side_by_side"] = writer.write(f"{scene.split}_{index:03d}_{name}_compare.png",
                                                     png_bytes(picture), count=False)
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


# ------------------------------------------------------------------------------------ side by side


@torch.no_grad()
def normal_map(renderer: Renderer, scene, index: int, depth: np.ndarray, opacity: np.ndarray,
               chunk: int = 1 << 15) -> np.ndarray:
    """(H, W, 3) unit world-space normals of what view ``index`` sees (zero where it sees nothing).

    A model whose field has an outward gradient (signed distance and occupancy fields) gives the
    gradient at the rendered depth; a radiance field's normals come from the depth map (cross product
    of its neighbours' differences, facing the camera)."""
    device = next(renderer.field.parameters()).device
    rays = image_rays(scene, index, device="cpu")
    origins, directions = rays.origins.numpy().astype(np.float64), rays.directions.numpy().astype(np.float64)
    directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True).clip(1e-12)
    points = origins + directions * depth[..., None]
    hit = opacity > PANEL_OPACITY
    normals = np.zeros_like(points)
    field = renderer.field
    if hasattr(field, "outward") and hasattr(renderer, "scale") and hit.any():
        translation = np.asarray(renderer.translation.cpu(), dtype=np.float64)
        inside = torch.as_tensor((points[hit] - translation) / renderer.scale, dtype=torch.float32, device=device)
        parts = []
        for start in range(0, len(inside), chunk):
            piece = inside[start:start + chunk]
            grad = autograd_gradient(field, piece)[1]
            parts.append(torch.zeros(len(piece), 3) if grad is None else field.outward(grad).float().cpu())
        normals[hit] = torch.cat(parts).double().numpy()
        return normals
    return _depth_normals(points, directions, hit)


def _depth_normals(points: np.ndarray, directions: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Normals of a depth map: the cross product of the back-projected points' differences along rows and
    columns (one-sided at the borders), turned to face the camera; zero off the hit pixels."""
    if points.shape[0] < 2 or points.shape[1] < 2:
        return np.zeros_like(points)
    du = np.gradient(points, axis=1)
    dv = np.gradient(points, axis=0)
    normals = np.cross(dv, du)
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = np.where(length > 0, normals / np.clip(length, 1e-12, None), 0.0)
    facing = (normals * directions).sum(-1, keepdims=True) > 0
    normals = np.where(facing, -normals, normals)
    return np.where(hit[..., None], normals, 0.0)


def depth_picture(depth: np.ndarray, opacity: np.ndarray, background: tuple) -> np.ndarray:
    """(H, W, 3) colours of a depth map (near dark, far bright, between the 2nd and 98th percentile of the
    hit pixels), the background where nothing is hit."""
    hit = opacity > PANEL_OPACITY
    picture = np.broadcast_to(np.asarray(background, dtype=np.float64), depth.shape + (3,)).copy()
    if not hit.any():
        return picture
    low, high = np.percentile(depth[hit], [2.0, 98.0])
    t = np.clip((depth - low) / max(high - low, 1e-12), 0.0, 1.0) * (len(_DEPTH_COLOURS) - 1)
    lower = np.floor(t).astype(int).clip(0, len(_DEPTH_COLOURS) - 2)
    frac = (t - lower)[..., None]
    colours = _DEPTH_COLOURS[lower] * (1.0 - frac) + _DEPTH_COLOURS[lower + 1] * frac
    picture[hit] = colours[hit]
    return picture


def normals_picture(normals: np.ndarray, opacity: np.ndarray, background: tuple) -> np.ndarray:
    """(H, W, 3) world normals as colours, (n + 1) / 2; the background where nothing is hit."""
    hit = (opacity > PANEL_OPACITY) & normals.any(axis=-1)
    picture = np.broadcast_to(np.asarray(background, dtype=np.float64), normals.shape).copy()
    picture[hit] = 0.5 * (normals[hit] + 1.0)
    return picture


def side_by_side_picture(target: np.ndarray, rendered: dict[str, np.ndarray], normals: np.ndarray,
                         background: tuple) -> np.ndarray:
    """(H + label band, 4W, 3) floats: ground truth | prediction | depth | normals."""
    panels = [np.asarray(target, dtype=np.float64)[..., :3], rendered["rgb"].astype(np.float64),
              depth_picture(rendered["depth"], rendered["opacity"], background),
              normals_picture(normals, rendered["opacity"], background)]
    return label_panels(panels, ["ground truth", "prediction", "depth", "normals"])


def label_panels(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels (H, W, 3) in [0, 1] side by side, each with its label in a white band above it when the
    panels are wide enough for text."""
    row = np.concatenate([np.clip(p, 0.0, 1.0) for p in panels], axis=1)
    height, width = panels[0].shape[:2]
    if width < LABEL_WIDTH:
        return row
    from PIL import Image, ImageDraw

    band = 16
    canvas = Image.new("RGB", (row.shape[1], height + band), (255, 255, 255))
    canvas.paste(Image.fromarray(to_uint8(row)), (0, band))
    draw = ImageDraw.Draw(canvas)
    for k, label in enumerate(labels):
        draw.text((k * width + 4, 2), label, fill=(40, 40, 40))
    return np.asarray(canvas, dtype=np.float64) / 255.0


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
    helper = torch.tensor([1.0, 0.0, 0.0] if up[0].abs() < 0.9 else [0.0, 1.0, 0.0], dtype=torch.float64)
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


def render_orbit(renderer: Renderer, scene, n: int, out_dir: Path, gif: bool,
                 progress: Callable[[float, int], None] | None = None, chunk: int | None = None) -> dict:
    """``n`` frames around the scene (intrinsics of its first camera) as PNGs, or one GIF."""
    aabb = scene.aabb.float()
    poses = orbit_cameras(scene.c2w.cpu(), 0.5 * (aabb[0] + aabb[1]).cpu(), n)
    first = slice(0, 1)
    orbit = replace(scene, c2w=poses, pixels=scene.pixels[first].expand(n, -1, -1, -1),
                    fx=scene.fx[first].expand(n), fy=scene.fy[first].expand(n), cx=scene.cx[first].expand(n),
                    cy=scene.cy[first].expand(n), files=[Path(f"orbit_{k:03d}") for k in range(n)],
                    distortion=None, keep_alpha=False)
    frames = []
    writer = ImageWriter(out_dir, 1 if gif else n)
    for k in range(n):
        frame = _render_view(renderer, orbit, k, chunk, k, n, progress)["rgb"]
        if gif:
            frames.append(to_uint8(frame))  # a quarter of the float frame: long orbits stay in memory
        else:
            writer.write(f"orbit_{k:03d}.png", png_bytes(frame))
        if progress is not None:
            progress(k + 1, n)
    if gif:
        writer.write("orbit.gif", gif_bytes(frames))
    return {"frames": n, "files": writer.written}
