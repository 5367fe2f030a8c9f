"""Posed-image scenes: Blender / nerf_synthetic and nerfstudio / instant-ngp ``transforms*.json``.

A scene is what a radiance field is fitted to: images, the cameras that took them (camera-to-world
matrices in the OpenGL convention, x right, y up, looking down -z) and their intrinsics, plus a box
and near/far distances to sample in. Everything the user can get wrong (a missing key, a missing
image, a pose that is not a rigid transform, images of different sizes) is one InputError line
naming the file.

Formats
-------
* **Blender** (``transforms_{train,val,test}.json``): ``camera_angle_x``; frames with ``file_path``
  without extension (``.png`` is tried first) relative to the json. Box [-1.5, 1.5]^3, near 2, far 6
  (the nerf_synthetic conventions).
* **nerfstudio / instant-ngp** (one ``transforms.json``): ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``,
  ``h`` (global, or per frame to override) or ``camera_angle_x`` / ``camera_angle_y``; OpenCV
  distortion ``k1 k2 [k3 k4] p1 p2``; ``file_path`` with extension. Frames are sorted by file path
  (as nerfstudio does). Splits: ``{split}_filenames`` lists when the file has them, otherwise
  val = test = every 8th frame (indices 0, 8, 16, ...) and train = all the others; ``"all"`` takes
  every frame. Box: with instant-ngp's ``aabb_scale`` (and its ``scale``/``offset``, defaults 0.33
  and 0.5), the region instant-ngp samples, mapped back to the json's coordinates; otherwise the
  cube centred on the mean camera position that just holds every camera (what nerfstudio's
  default pose normalisation makes [-1, 1]^3). near = 0.05 x the cameras' half-spread, far = from
  the farthest camera to the farthest box corner. Poses stay in the file's own units.

Images are composited onto ``background`` (rgb * a + bg * (1 - a)); greyscale is broadcast to RGB;
8- and 16-bit PNGs are scaled by their own maximum (16-bit colour PNGs are decoded by Pillow at
8-bit precision, 16-bit greyscale at full precision).
"""

from __future__ import annotations

import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon3d.errors import InputError, Recon3dError, one_line
from recon3d.io.atomic import atomic_open, atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".webp", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
#: nerfstudio / instant-ngp single-file scenes hold out every ``HOLDOUT_EVERY``-th frame for val/test.
HOLDOUT_EVERY = 8
#: Distortion coefficients are stored in this order (nerfstudio's): radial k1..k4, tangential p1, p2.
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
BLENDER_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
BLENDER_NEAR, BLENDER_FAR = 2.0, 6.0
_PERSPECTIVE_MODELS = {"OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "PERSPECTIVE"}
_SPLIT_FILE = re.compile(r"^transforms_(.+)\.json$")


@dataclass
class Scene:
    """Posed images of one split, ready to cast rays from.

    images:     (N, H, W, 3) float32 in [0, 1], composited onto ``background``.
    c2w:        (N, 4, 4) float32 camera-to-world, OpenGL convention (x right, y up, looking -z).
    fx, fy, cx, cy: (N,) float32 intrinsics in pixels of the (downscaled) images; pixel (u, v)
                covers [u, u+1) x [v, v+1), so its centre is u + 0.5.
    width, height: the image size shared by all N images.
    distortion: (N, 6) float32 OpenCV coefficients ``k1 k2 k3 k4 p1 p2``, or None when all are 0.
    aabb:       (2, 3) float32 box to sample in (min corner, max corner).
    near, far:  default distances along the (unit-length) rays.
    alphas:     (N, H, W) float32 alpha when read with ``keep_alpha=True`` (else None), e.g. for
                training with random backgrounds.
    """

    images: torch.Tensor
    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int
    distortion: torch.Tensor | None
    aabb: torch.Tensor
    near: float
    far: float
    files: list[Path]
    split: str
    source: Path
    format: str
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    camera_angle_x: float | None = None
    alphas: torch.Tensor | None = None
    downscale: int = 1

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def widths(self) -> torch.Tensor:
        """(N,) int64 image widths (all equal), for code that wants per-image tensors."""
        return torch.full((len(self),), self.width, dtype=torch.int64, device=self.fx.device)

    @property
    def heights(self) -> torch.Tensor:
        """(N,) int64 image heights (all equal)."""
        return torch.full((len(self),), self.height, dtype=torch.int64, device=self.fx.device)

    def camera(self, index: int) -> dict[str, Any]:
        """Keyword arguments of :func:`recon3d.render.rays.camera_rays` for image ``index``."""
        return {
            "c2w": self.c2w[index], "fx": self.fx[index], "fy": self.fy[index],
            "cx": self.cx[index], "cy": self.cy[index], "width": self.width,
            "height": self.height,
            "distortion": None if self.distortion is None else self.distortion[index],
        }  # fmt: skip

    def to(self, device: torch.device | str) -> Scene:
        """A copy with every tensor on ``device``."""
        moved = {
            name: getattr(self, name).to(device)
            for name in ("images", "c2w", "fx", "fy", "cx", "cy", "aabb")
        }
        if self.distortion is not None:
            moved["distortion"] = self.distortion.to(device)
        if self.alphas is not None:
            moved["alphas"] = self.alphas.to(device)
        return replace(self, **moved)


# ------------------------------------------------------------------------------------ reading


def read_scene(
    path: str | os.PathLike,
    split: str = "train",
    downscale: int = 1,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    max_images: int | None = None,
    keep_alpha: bool = False,
    workers: int | None = None,
) -> Scene:
    """Read one split of a scene from a folder or a ``transforms*.json``.

    A folder holding ``transforms_{split}.json`` is a Blender scene; one holding ``transforms.json``
    a nerfstudio / instant-ngp scene. A ``transforms_<name>.json`` given directly selects its
    folder (``split`` still picks the file); any other json is read as a single-file scene.
    ``downscale`` k >= 1 averages k x k pixel blocks (the right/bottom remainder is cropped) and
    divides the intrinsics by k. ``max_images`` keeps the first frames of the split only.
    """
    downscale = _check_downscale(downscale)
    bg = _check_background(background)
    if max_images is not None and int(max_images) < 1:
        raise Recon3dError(f"max_images must be at least 1, got {max_images}")
    json_path, blender = _locate(Path(path), split)
    meta = _load_json(json_path)
    frames = _frames(json_path, meta)
    if blender:
        chosen = list(enumerate(frames))
    else:
        chosen = _split_frames(json_path, meta, frames, split)
    if max_images is not None:
        chosen = chosen[: int(max_images)]
    _check_cameras(json_path, meta, chosen)
    poses = np.stack([_pose(json_path, i, frame) for i, frame in chosen])
    files = [_image_file(json_path, i, frame) for i, frame in chosen]
    bg_array = np.asarray(bg, dtype=np.float32)

    def load(file: Path) -> tuple[tuple[int, int], np.ndarray, np.ndarray | None]:
        """Decode, composite and downscale in the worker, so only small copies are kept."""
        rgb, alpha = _read_image(file)
        size = rgb.shape[:2]
        if alpha is not None:
            rgb = rgb * alpha[..., None] + bg_array * (1.0 - alpha[..., None])
            alpha = _block_mean(alpha, downscale) if keep_alpha else None
        return size, _block_mean(rgb, downscale), alpha

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(load, files))
    height, width = _common_size(json_path, files, [size for size, _, _ in decoded])
    if height < downscale or width < downscale:
        raise InputError(f"{files[0]}: image is {width}x{height}, too small to downscale by {downscale}")
    intrinsics = np.array(
        [_intrinsics(json_path, meta, i, frame, width, height) for i, frame in chosen],
        dtype=np.float64,
    )  # (N, 4 + 6): fx fy cx cy k1 k2 k3 k4 p1 p2
    images = np.empty((len(chosen), height // downscale, width // downscale, 3), np.float32)
    alphas = np.ones(images.shape[:3], np.float32) if keep_alpha else None
    for n, (_, rgb, alpha) in enumerate(decoded):
        images[n] = rgb
        if alphas is not None and alpha is not None:
            alphas[n] = alpha
    del decoded

    intrinsics[:, :4] /= downscale
    dist = intrinsics[:, 4:]
    c2w = torch.from_numpy(poses.astype(np.float32))
    if blender:
        aabb, near, far = np.array(BLENDER_AABB), BLENDER_NEAR, BLENDER_FAR
    else:
        aabb, near, far = _nerfstudio_bounds(json_path, meta, poses)
    angle = meta.get("camera_angle_x")
    return Scene(
        images=torch.from_numpy(images),
        c2w=c2w,
        fx=torch.from_numpy(intrinsics[:, 0].astype(np.float32)),
        fy=torch.from_numpy(intrinsics[:, 1].astype(np.float32)),
        cx=torch.from_numpy(intrinsics[:, 2].astype(np.float32)),
        cy=torch.from_numpy(intrinsics[:, 3].astype(np.float32)),
        width=width // downscale,
        height=height // downscale,
        distortion=torch.from_numpy(dist.astype(np.float32)) if np.any(dist != 0) else None,
        aabb=torch.tensor(aabb, dtype=torch.float32),
        near=float(near),
        far=float(far),
        files=files,
        split=split,
        source=json_path,
        format="blender" if blender else "nerfstudio",
        background=bg,
        camera_angle_x=float(angle) if _is_number(angle) else None,
        alphas=None if alphas is None else torch.from_numpy(alphas),
        downscale=downscale,
    )


def _check_downscale(downscale: int) -> int:
    try:
        ok = not isinstance(downscale, bool) and float(downscale).is_integer() and downscale >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise Recon3dError(f"downscale must be an integer >= 1, got {downscale!r}")
    return int(downscale)


def _check_background(background) -> tuple[float, float, float]:
    try:
        bg = tuple(float(v) for v in background)
    except (TypeError, ValueError):
        bg = ()
    if len(bg) != 3 or not all(0.0 <= v <= 1.0 for v in bg):
        raise Recon3dError(f"background must be three numbers in [0, 1], got {background!r}")
    return bg  # type: ignore[return-value]


def _locate(path: Path, split: str) -> tuple[Path, bool]:
    """The json to read and whether it is a Blender (one file per split) scene."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if _SPLIT_FILE.match(path.name) is None:
            return path, False
        folder = path.parent
    else:
        folder = path
    split_file = folder / f"transforms_{split}.json"
    if split_file.is_file():
        return split_file, True
    single = folder / "transforms.json"
    if path.is_dir() and single.is_file():
        return single, False
    found = sorted(p.name for p in folder.glob("transforms_*.json"))
    if found:
        raise InputError(
            f"{split_file}: no such file: this scene has no '{split}' split "
            f"(found {', '.join(found)})"
        )
    raise InputError(f"{folder}: no transforms_{split}.json or transforms.json in this folder")


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    return meta


def _frames(path: Path, meta: dict) -> list[dict]:
    if "frames" not in meta:
        raise InputError(f"{path}: missing key 'frames'")
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise InputError(f"{path}: 'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise InputError(f"{path}: no frames ('frames' is empty)")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise InputError(f"{path}: frame {i} is not a JSON object")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise InputError(f"{path}: frame {i}: missing key '{key}'")
        if not isinstance(frame["file_path"], str) or not frame["file_path"]:
            raise InputError(f"{path}: frame {i}: 'file_path' must be a non-empty string")
    return frames


def _split_frames(path: Path, meta: dict, frames: list[dict], split: str) -> list[tuple[int, dict]]:
    """Frames of ``split`` in a single-file scene, as (index in the file, frame), sorted by path."""
    order = sorted(range(len(frames)), key=lambda i: frames[i]["file_path"])
    ordered = [(i, frames[i]) for i in order]
    key = f"{split}_filenames"
    if split == "all":
        return ordered
    if key in meta:
        names = meta[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: '{key}' must be a list of file names")
        wanted = {os.path.normpath(n) for n in names}
        chosen = [(i, f) for i, f in ordered if os.path.normpath(f["file_path"]) in wanted]
        if len(chosen) < len(wanted):
            have = {os.path.normpath(f["file_path"]) for f in frames}
            missing = sorted(wanted - have)
            raise InputError(f"{path}: '{key}' names {missing[0]!r}, which no frame has")
    elif split in SPLITS:
        held_out = split != "train"
        chosen = [pair for k, pair in enumerate(ordered) if (k % HOLDOUT_EVERY == 0) == held_out]
    else:
        raise InputError(
            f"{path}: no '{key}' list for split '{split}' (single-file scenes know train, val, "
            "test and all)"
        )
    if not chosen:
        raise InputError(
            f"{path}: no frames in split '{split}' ({len(frames)} frames; val and test take every "
            f"{HOLDOUT_EVERY}th, train the rest)"
        )
    return chosen


def _lookup(meta: dict, frame: dict, key: str):
    """A per-frame value overriding the file's global one (nerfstudio), or None."""
    return frame[key] if key in frame else meta.get(key)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(path: Path, index: int, frame: dict, meta: dict, key: str, default=None,
            positive: bool = False) -> float | None:
    value = _lookup(meta, frame, key)
    if value is None:
        return default
    if not _is_number(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        where = f"frame {index}: " if key in frame else ""
        raise InputError(f"{path}: {where}'{key}' must be {kind}, got {value!r}")
    return float(value)


def _check_cameras(path: Path, meta: dict, chosen: list[tuple[int, dict]]) -> None:
    """Fail before decoding images: a focal length must be given, and only perspective (pinhole,
    optionally OpenCV-distorted) cameras are supported."""
    for i, frame in chosen:
        if _lookup(meta, frame, "fl_x") is None and _lookup(meta, frame, "camera_angle_x") is None:
            raise InputError(f"{path}: frame {i}: missing key 'camera_angle_x' (or 'fl_x')")
        model = _lookup(meta, frame, "camera_model")
        if model is not None and str(model).upper() not in _PERSPECTIVE_MODELS:
            raise InputError(
                f"{path}: camera_model {model!r} is not supported (only perspective cameras: "
                "PINHOLE, SIMPLE_PINHOLE, OPENCV)"
            )
        if _lookup(meta, frame, "is_fisheye"):
            raise InputError(f"{path}: fisheye cameras (is_fisheye) are not supported")


def _intrinsics(path: Path, meta: dict, index: int, frame: dict, width: int,
                height: int) -> list[float]:
    """fx fy cx cy k1 k2 k3 k4 p1 p2 of one frame, checked against its image size."""
    w = _number(path, index, frame, meta, "w", positive=True)
    h = _number(path, index, frame, meta, "h", positive=True)
    if (w is not None and int(w) != width) or (h is not None and int(h) != height):
        raise InputError(
            f"{path}: frame {index}: the file says w={w and int(w)} h={h and int(h)} but the "
            f"image is {width}x{height}"
        )
    fx = _number(path, index, frame, meta, "fl_x", positive=True)
    if fx is None:
        angle = _number(path, index, frame, meta, "camera_angle_x", positive=True)
        if angle is None:
            raise InputError(f"{path}: missing key 'camera_angle_x' (or 'fl_x')")
        fx = 0.5 * width / math.tan(0.5 * angle)
    fy = _number(path, index, frame, meta, "fl_y", positive=True)
    if fy is None:
        angle_y = _number(path, index, frame, meta, "camera_angle_y", positive=True)
        fy = fx if angle_y is None else 0.5 * height / math.tan(0.5 * angle_y)
    cx = _number(path, index, frame, meta, "cx", default=width / 2.0)
    cy = _number(path, index, frame, meta, "cy", default=height / 2.0)
    dist = [_number(path, index, frame, meta, k, default=0.0) for k in DISTORTION_KEYS]
    return [fx, fy, cx, cy, *dist]  # type: ignore[list-item]


def _pose(path: Path, index: int, frame: dict) -> np.ndarray:
    """The frame's camera-to-world matrix, checked to be a finite 4x4 rigid transform."""
    where = f"{path}: frame {index} ({frame['file_path']}): transform_matrix"
    try:
        m = np.array(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where} is not a 4x4 matrix of numbers") from None
    if m.shape != (4, 4):
        raise InputError(f"{where} must be 4x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(f"{where} has NaN or infinite entries")
    if np.abs(m[3] - (0.0, 0.0, 0.0, 1.0)).max() > 1e-6:
        raise InputError(f"{where}: bottom row is {m[3].tolist()}, not [0, 0, 0, 1]")
    rot = m[:3, :3]
    error = np.abs(rot.T @ rot - np.eye(3)).max()
    if error > 1e-3:
        raise InputError(
            f"{where} is not a rigid transform: its rotation part is not orthonormal "
            f"(max |R^T R - I| = {error:.3g}; scaled or non-invertible)"
        )
    if np.linalg.det(rot) < 0:
        raise InputError(f"{where} is a reflection (det = -1), not a rotation")
    return m


def _image_file(path: Path, index: int, frame: dict) -> Path:
    """The image a frame names: ``file_path`` as is, or with an image extension added."""
    name = frame["file_path"]
    base = Path(name) if os.path.isabs(name) else path.parent / name
    has_ext = base.suffix in IMAGE_EXTENSIONS
    candidates = [base] if has_ext else []
    candidates += [base.with_name(base.name + ext) for ext in (".png",)]
    if not has_ext:
        candidates.append(base)
    candidates += [base.with_name(base.name + ext) for ext in IMAGE_EXTENSIONS[1:]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = "" if has_ext else f" (also tried {', '.join(IMAGE_EXTENSIONS)} extensions)"
    raise InputError(f"{base}: image not found{tried}; named by frame {index} of {path}")


def _read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) float32 RGB in [0, 1] and (H, W) float32 alpha or None."""
    from PIL import Image, UnidentifiedImageError  # Pillow: a dependency of scikit-image

    try:
        with Image.open(path) as im:
            im.load()
            array = _pil_to_float(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise InputError(f"{path}: cannot read image ({reason[:160]})") from exc
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2), None
    if channels == 2:
        return np.repeat(array[..., :1], 3, axis=2), array[..., 1]
    if channels == 3:
        return array, None
    if channels == 4:
        return array[..., :3], array[..., 3]
    raise InputError(f"{path}: image has {channels} channels (expected 1 to 4)")


def _pil_to_float(im) -> np.ndarray:
    """A Pillow image as (H, W, C) float32 in [0, 1], scaled by its own bit depth."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
        im = im.convert("RGB")
    array = np.asarray(im)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"unexpected image array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind in "ui":  # 16-bit greyscale ("I;16") or 32-bit "I" holding 16-bit data
        top = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(array.dtype).max)
        return (array.astype(np.float64) / top).clip(0.0, 1.0).astype(np.float32)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    return np.nan_to_num(array.astype(np.float32)).clip(0.0, 1.0)


def _common_size(path: Path, files: list[Path], sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """(H, W) shared by every image; the first image of another size is an error."""
    height, width = sizes[0]
    for file, size in zip(files, sizes):
        if size != (height, width):
            raise InputError(
                f"{file}: image is {size[1]}x{size[0]} but {files[0].name} is "
                f"{width}x{height} (all images of a split must have the same size; {path})"
            )
    return height, width


def _block_mean(array: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks (area averaging); rows/columns past a multiple of k are dropped."""
    if k == 1:
        return array
    h, w = array.shape[0] // k, array.shape[1] // k
    cropped = array[: h * k, : w * k]
    return cropped.reshape(h, k, w, k, *array.shape[2:]).mean(axis=(1, 3), dtype=np.float64)


def _nerfstudio_bounds(path: Path, meta: dict, poses: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Box, near and far of a single-file scene (see the module docstring)."""
    positions = poses[:, :3, 3]
    centre = positions.mean(axis=0)
    spread = float(np.abs(positions - centre).max()) if len(positions) > 1 else 0.0
    spread = spread if spread > 1e-9 else 1.0
    scale_ngp = meta.get("aabb_scale")
    if scale_ngp is not None:
        if not _is_number(scale_ngp) or scale_ngp <= 0:
            raise InputError(f"{path}: 'aabb_scale' must be a positive number, got {scale_ngp!r}")
        scale = meta.get("scale", 0.33)
        offset = meta.get("offset", [0.5, 0.5, 0.5])
        if not _is_number(scale) or scale <= 0:
            raise InputError(f"{path}: 'scale' must be a positive number, got {scale!r}")
        if not (isinstance(offset, list) and len(offset) == 3 and all(map(_is_number, offset))):
            raise InputError(f"{path}: 'offset' must be a list of 3 numbers, got {offset!r}")
        # instant-ngp maps json (x, y, z) to its (y, z, x) axes: ngp = json * scale + offset; its
        # box is 0.5 +- aabb_scale / 2 on every ngp axis.
        ngp_axis = (2, 0, 1)  # json axis j is ngp axis ngp_axis[j]
        off = np.array([offset[ngp_axis[j]] for j in range(3)], dtype=np.float64)
        lo = (0.5 - 0.5 * scale_ngp - off) / scale
        hi = (0.5 + 0.5 * scale_ngp - off) / scale
        aabb = np.stack([lo, hi])
    else:
        aabb = np.stack([centre - spread, centre + spread])
    corners = np.array([[aabb[i, 0], aabb[j, 1], aabb[k, 2]]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # fmt: skip
    far = float(np.linalg.norm(positions[:, None] - corners[None], axis=-1).max())
    return aabb, 0.05 * spread, far


# ------------------------------------------------------------------------------------ writing


def write_blender_scene(
    folder: str | os.PathLike,
    images,
    c2w,
    camera_angle_x: float,
    split: str = "train",
) -> Path:
    """Write one split of a Blender-format scene; returns the ``transforms_{split}.json`` path.

    ``images``: (N, H, W, 3 or 4) floats in [0, 1] or uint8 (numpy or torch), saved as 8-bit PNGs
    ``{split}/r_{i}.png``; ``c2w``: (N, 4, 4) OpenGL camera-to-world. Every file is written
    atomically; ``folder`` is created if needed.
    """
    from PIL import Image

    images = _as_numpy(images)
    poses = _as_numpy(c2w).astype(np.float64)
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"images must be (N, H, W, 3|4), got shape {images.shape}")
    if poses.shape != (len(images), 4, 4):
        raise ValueError(f"c2w must be ({len(images)}, 4, 4), got shape {poses.shape}")
    if images.dtype != np.uint8:
        images = np.round(np.clip(images.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    folder = Path(folder)
    (folder / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (image, pose) in enumerate(zip(images, poses)):
        with atomic_open(folder / split / f"r_{i}.png", "wb") as handle:
            Image.fromarray(np.ascontiguousarray(image)).save(handle, format="PNG")
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
    meta = {"camera_angle_x": float(camera_angle_x), "frames": frames}
    json_path = folder / f"transforms_{split}.json"
    atomic_write_bytes(json_path, json.dumps(meta, indent=2).encode("utf-8"))
    return json_path


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)
