"""Posed-image scenes: Blender / nerf_synthetic, nerfstudio / instant-ngp ``transforms*.json``, COLMAP projects.

A scene is what a radiance field is fitted to: images, the cameras that took them (camera-to-world
matrices in the OpenGL convention, x right, y up, looking down -z) and their intrinsics, plus a box
and near/far distances to sample in. Everything the user can get wrong (a missing key, a missing
image, a pose that is not a rigid transform, images of different sizes, a box no camera sees, a
JSON nested thousands deep, an image too large to decode) is one InputError line naming the file.

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
  the farthest camera to the farthest box corner. Poses stay in the file's own units. An explicit
  ``"aabb": [[xmin, ymin, zmin], [xmax, ymax, zmax]]`` (world units; ``recon3d poses`` writes the region of
  interest there) takes precedence over both.
* **COLMAP project** (a folder with ``sparse/0/`` or ``sparse/`` holding ``cameras``, ``images`` and
  ``points3D`` as ``.bin`` or ``.txt``, beside ``images/``; recon3d.io.colmap): read as a single-file
  scene whose frames are the model's images sorted by name (same splits), poses converted to OpenGL
  camera-to-world, intrinsics and OpenCV distortion from the camera models that have them, and the box
  from the sparse points (the region of interest, recon3d.io.colmap.region_of_interest).

Sparse points (:attr:`Scene.sparse`, for depth supervision): a COLMAP project's ``points3D``, or the
``sparse_points.npz`` that a transforms json names with a top-level ``"sparse_points"`` key (relative to the
json; its ``obs_frame`` indexes the json's ``frames`` list; recon3d.io.colmap.SparsePoints). The Scene
holds the observations of its own images only, renumbered to index them, in its (downscaled) pixels.

Images are composited onto ``background`` (rgb * a + bg * (1 - a)); greyscale is broadcast to RGB;
8- and 16-bit PNGs are scaled by their own maximum (16-bit colour PNGs are decoded by Pillow at
8-bit precision, 16-bit greyscale at full precision); EXIF orientation (phone JPEGs) is applied.

Memory: image sizes are read from the file headers and checked before anything is decoded (at most
:data:`MAX_PIXELS` per image; the split must fit in the memory available, else the error names the
``--downscale`` that fits). 8-bit images at full size are stored as they are, uint8 colour plus uint8
alpha, and turned into float colours per batch (:meth:`Scene.decode`) with exactly the values the
float path gives (``u8 / 255`` in float32, then compositing); other images (16-bit, float, or
downscaled averages) are stored as float32.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from struct import error as struct_error
from typing import Any

import numpy as np
import torch

from recon3d.console import warn
from recon3d.errors import InputError, Recon3dError, one_line
from recon3d.io.atomic import atomic_open, atomic_write_bytes
from recon3d.io.colmap import SparsePoints, find_project, load_sparse, model_files, project_transforms
from recon3d.io.schema import available_memory, gigabytes

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

#: Pixels one image may have (8192 x 8192): decoding is the first thing that costs memory, so larger
#: images are refused from their header (Pillow's own bomb guard starts at 89 M pixels).
MAX_PIXELS = 1 << 26
#: Size of a transforms json (a scene of 100k frames is ~50 MB).
MAX_JSON_BYTES = 64 << 20
#: Digits of an integer the json may spell exactly; longer ones are read as floats (Python refuses
#: to parse integers past 4300 digits, and the poses are floats anyway).
MAX_INT_DIGITS = 18
#: Camera positions, box corners, principal points, focal lengths: magnitudes beyond this are refused
#: (rays are cast in float32, whose squares must stay finite).
MAX_COORDINATE = 1e12
#: Focal lengths below this many pixels are no camera (a 1000-pixel image would span 10^6 radians).
MIN_FOCAL = 1e-3
#: |distortion coefficient| beyond this is no lens (real ones are below ~10).
MAX_DISTORTION = 1e3
#: Bytes per pixel of one worker's decoding: Pillow's buffer and the array it becomes (8-bit, full size),
#: or those plus the float32 copies compositing and block averaging make.
_DECODE_BYTES = {"uint8": 12, "float32": 80}

#: uint8 -> float32 exactly as numpy computes ``u8.astype(float32) / 255.0``; a table, so every device
#: gives those values (a division by a scalar may be a multiplication by its reciprocal on a GPU).
_UNIT = torch.from_numpy(np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0)
_UNIT_ON: dict[torch.device, torch.Tensor] = {}


def unit_floats(stored: torch.Tensor) -> torch.Tensor:
    """uint8 values -> float32 in [0, 1] (``v / 255``), on the tensor's device."""
    table = _UNIT_ON.get(stored.device)
    if table is None:
        table = _UNIT_ON.setdefault(stored.device, _UNIT.to(stored.device))
    return table[stored.long()]


_COLOURS_ON: dict[tuple[tuple[float, ...], torch.device], torch.Tensor] = {}


def colour_on(colour: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A constant colour as a float32 tensor on ``device``, made once: code replayed as a CUDA graph may
    not copy from the host (recon3d.fit.captured)."""
    key = (tuple(float(c) for c in colour), torch.device(device))
    if key not in _COLOURS_ON:
        _COLOURS_ON[key] = torch.tensor(key[0], dtype=torch.float32, device=device)
    return _COLOURS_ON[key]


@dataclass
class Scene:
    """Posed images of one split, ready to cast rays from.

    pixels:     (N, H, W, C) the images as stored (see the module docstring): uint8 colour, with
                alpha as a 4th channel when an image has one (not yet composited), or float32 colour
                composited onto ``background``, with alpha as a 4th channel when ``keep_alpha``.
                :meth:`decode` turns any slice of it into float colours; :attr:`images`,
                :meth:`image` and :attr:`alphas` are float views for code that wants them.
    c2w:        (N, 4, 4) float32 camera-to-world, OpenGL convention (x right, y up, looking -z).
    fx, fy, cx, cy: (N,) float32 intrinsics in pixels of the (downscaled) images; pixel (u, v)
                covers [u, u+1) x [v, v+1), so its centre is u + 0.5.
    width, height: the image size shared by all N images.
    distortion: (N, 6) float32 OpenCV coefficients ``k1 k2 k3 k4 p1 p2``, or None when all are 0.
    aabb:       (2, 3) float32 box to sample in (min corner, max corner).
    near, far:  default distances along the (unit-length) rays.
    keep_alpha: whether alpha is handed out (read with ``keep_alpha=True``, e.g. for training with
                random backgrounds); 1 where an image has none.
    sparse:     structure-from-motion points and their observations in these images (obs_frame indexes
                them, obs_uv in their downscaled pixels), or None when the scene has none.
    frame_index: (N,) for each image, its index in the json's ``frames`` list (a COLMAP project: in the
                model's images sorted by name), or None.
    aabb_source: where ``aabb`` comes from: ``"blender"`` (the fixed nerf_synthetic box), ``"aabb"`` (an
                explicit region of interest in the json, e.g. from ``recon3d poses``), ``"points"`` (a COLMAP
                project's region of interest, from its sparse points), ``"aabb_scale"`` (instant-ngp's
                box) or ``"cameras"`` (the cube around the cameras).
    """

    pixels: torch.Tensor
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
    keep_alpha: bool = False
    downscale: int = 1
    sparse: SparsePoints | None = None
    frame_index: list[int] | None = None
    aabb_source: str = "cameras"

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def decode(self, stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(..., C) stored pixels -> (..., 3) float32 colour on the background, and (...) float32
        alpha when ``keep_alpha`` (else None). Works on any slice: a batch of pixels or whole images."""
        if stored.dtype == torch.uint8:
            values = unit_floats(stored)
            colour = values[..., :3]
            alpha = values[..., 3] if values.shape[-1] == 4 else None
            if alpha is not None:  # the float path's compositing, operation for operation
                a = alpha[..., None]
                colour = colour * a + colour_on(self.background, stored.device) * (1.0 - a)
        else:
            colour = stored[..., :3]
            alpha = stored[..., 3] if stored.shape[-1] == 4 else None
        if not self.keep_alpha:
            return colour, None
        return colour, alpha if alpha is not None else torch.ones_like(colour[..., 0])

    def image(self, index: int) -> torch.Tensor:
        """(H, W, 3) float32 colours of image ``index``, composited onto the background."""
        return self.decode(self.pixels[index])[0]

    @property
    def images(self) -> torch.Tensor:
        """(N, H, W, 3) float32 colours of every image: a float copy of the whole split (12 bytes per
        pixel); code that walks a large split should use :meth:`image` or :meth:`decode`."""
        return self.decode(self.pixels)[0]

    def stored_alphas(self) -> torch.Tensor | None:
        """(N, H, W) view of the stored alpha channel (uint8 0–255, or float in [0, 1]) when ``keep_alpha``
        and the images have one, else None: no copy, for code that walks a whole split."""
        if not self.keep_alpha or self.pixels.shape[-1] != 4:
            return None
        return self.pixels[..., 3]

    @property
    def alphas(self) -> torch.Tensor | None:
        """(N, H, W) float32 alpha of every image when ``keep_alpha`` (1 where none), else None."""
        return self.decode(self.pixels)[1]

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
            for name in ("pixels", "c2w", "fx", "fy", "cx", "cy", "aabb")
        }
        if self.distortion is not None:
            moved["distortion"] = self.distortion.to(device)
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
    Everything is checked (json, cameras, image headers, box, memory) before any image is decoded.
    """
    downscale = _check_downscale(downscale)
    bg = _check_background(background)
    if max_images is not None:
        try:
            max_images = int(max_images)
        except (TypeError, ValueError, OverflowError):
            max_images = 0
        if max_images < 1:
            raise Recon3dError(f"max_images must be at least 1, got {max_images}")
    project = _colmap_project(Path(path), split)
    if project is not None:  # json_path: the model folder, which messages name
        meta, colmap_sparse, json_path = project
        blender = False
    else:
        json_path, blender = _locate(Path(path), split)
        meta, colmap_sparse = _load_json(json_path), None
    frames = _frames(json_path, meta)
    if blender:
        chosen = list(enumerate(frames))
    else:
        chosen = _split_frames(json_path, meta, frames, split)
    if not blender:
        chosen = _frames_with_images(json_path, chosen)
    if max_images is not None:
        chosen = chosen[:max_images]
    _check_cameras(json_path, meta, chosen)
    poses = np.stack([_pose(json_path, i, frame) for i, frame in chosen])
    files = [_image_file(json_path, i, frame) for i, frame in chosen]
    headers = [_image_header(file) for file in files]
    height, width = _common_size(json_path, files, [header.size for header in headers])
    if height < downscale or width < downscale:
        raise InputError(f"{files[0]}: image is {width}x{height}, too small to downscale by {downscale}")
    intrinsics = np.array(
        [_intrinsics(json_path, meta, i, frame, width, height) for i, frame in chosen],
        dtype=np.float64,
    )  # (N, 4 + 6): fx fy cx cy k1 k2 k3 k4 p1 p2
    _check_rays(json_path, chosen, poses, intrinsics, width, height)
    if blender:
        aabb, near, far = np.array(BLENDER_AABB), BLENDER_NEAR, BLENDER_FAR
    else:
        aabb, near, far = _nerfstudio_bounds(json_path, meta, poses)
    _check_box_in_view(json_path, meta, poses, intrinsics, aabb, width, height, blender)
    layout = _Layout.of(headers, downscale, keep_alpha)
    workers = _check_memory(json_path, split, len(files), width, height, downscale, layout,
                            workers or min(8, os.cpu_count() or 1))
    pixels = _decode_all(files, headers, layout, (height, width), downscale, np.asarray(bg, dtype=np.float32),
                         workers)

    sparse = _scene_sparse(json_path, meta, len(frames), chosen, colmap_sparse)
    if sparse is not None:
        sparse = sparse.downscaled(downscale, width // downscale, height // downscale)
    intrinsics[:, :4] /= downscale
    dist = intrinsics[:, 4:]
    angle = meta.get("camera_angle_x")
    return Scene(
        pixels=pixels,
        c2w=torch.from_numpy(poses.astype(np.float32)),
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
        format="blender" if blender else "colmap" if project is not None else "nerfstudio",
        background=bg,
        camera_angle_x=float(angle) if _is_number(angle) else None,
        keep_alpha=bool(keep_alpha),
        downscale=downscale,
        sparse=sparse,
        frame_index=[i for i, _ in chosen],
        aabb_source=("blender" if blender else "points" if project is not None and meta.get("aabb") is not None
                     else "aabb" if meta.get("aabb") is not None
                     else "aabb_scale" if meta.get("aabb_scale") is not None else "cameras"),
    )


def _check_downscale(downscale: int) -> int:
    try:
        ok = not isinstance(downscale, bool) and float(downscale).is_integer() and downscale >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise Recon3dError(f"--downscale must be an integer >= 1, got {downscale!r}")
    return int(downscale)


def _check_background(background) -> tuple[float, float, float]:
    try:
        bg = tuple(float(v) for v in background)
    except (TypeError, ValueError, OverflowError):
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
    raise InputError(f"{folder}: no transforms_{split}.json or transforms.json in this folder (nor a COLMAP "
                     "project: sparse/0 with images/)")


def is_scene_folder(path: Path) -> bool:
    """Whether ``path`` is a folder the scene reader takes as one scene: it holds a ``transforms.json`` or a
    ``transforms_<split>.json`` (:func:`_locate`), or is a COLMAP project (recon3d.io.colmap.find_project).
    Any other folder is a folder of inputs."""
    path = Path(path)
    try:
        if not path.is_dir():
            return False
        if (path / "transforms.json").is_file() or any(p.is_file() and _SPLIT_FILE.match(p.name)
                                                        for p in path.glob("transforms_*.json")):
            return True
        return find_project(path) is not None
    except OSError:
        return False


def is_scene_json(path: Path) -> bool:
    """Whether ``path`` is a scene's transforms json by its name (``transforms.json``, ``transforms_<split>.json``),
    as a pattern of many inputs may match it."""
    name = Path(path).name
    return Path(path).is_file() and (name.lower() == "transforms.json" or _SPLIT_FILE.match(name.lower()) is not None)


def distinct_scenes(inputs: list[Path]) -> list[Path]:
    """Many inputs with one entry per scene: the transforms jsons of a scene whose folder is an input too,
    and all but the first json of a folder (a Blender scene's ``transforms_train.json`` beside its val and test
    files), are left out; the reader fits the train split from any of them."""
    folders = {p.resolve() for p in inputs if p.is_dir()}
    seen: set[Path] = set()
    kept = []
    for path in inputs:
        if is_scene_json(path):
            parent = path.resolve().parent
            if parent in folders or parent in seen:
                continue
            seen.add(parent)
        kept.append(path)
    return kept


def _colmap_project(path: Path, split: str) -> tuple[dict, SparsePoints, Path] | None:
    """A folder without transforms json that holds a COLMAP project: its transforms dict, sparse points and
    model folder (recon3d.io.colmap.project_transforms); None for anything else."""
    if not path.is_dir() or (path / f"transforms_{split}.json").is_file() or (path / "transforms.json").is_file():
        return None
    if find_project(path) is None:
        return None
    return project_transforms(path)


def _scene_sparse(path: Path, meta: dict, n_frames: int, chosen: list[tuple[int, dict]],
                  colmap_sparse: SparsePoints | None) -> SparsePoints | None:
    """The sparse points of the chosen frames, renumbered to the Scene's images: a COLMAP project's, or
    the npz a json's ``"sparse_points"`` names; None when there are none."""
    sparse = colmap_sparse
    if sparse is None and meta.get("sparse_points") is not None:
        name = meta["sparse_points"]
        if not isinstance(name, str) or not name or "\0" in name:
            raise InputError(f"{path}: 'sparse_points' must be the name of an .npz file, got {_short(name)}")
        file = Path(name) if os.path.isabs(name) else path.parent / name
        sparse = load_sparse(file, n_frames, where=f"'sparse_points' of {path}")
    if sparse is None:
        return None
    position = np.full(n_frames, -1, dtype=np.int64)
    position[[i for i, _ in chosen]] = np.arange(len(chosen))
    return sparse.remap_frames(position)


def _load_json(path: Path) -> dict:
    """The json's top-level object; refuses files too large, nested too deep or with integers too long
    for Python to parse, in one line each."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(f"{path}: {gigabytes(size)}, larger than a transforms json may be "
                             f"({gigabytes(MAX_JSON_BYTES)})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        meta = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from exc
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to be a scene") from None
    except (ValueError, MemoryError) as exc:
        raise InputError(f"{path}: not a readable JSON scene ({one_line(str(exc))[:80]})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    return meta


def _parse_int(digits: str) -> int | float:
    """A json integer: exact up to MAX_INT_DIGITS digits, else a float (inf past the float range)."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else float(digits)


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
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _number(path: Path, index: int, frame: dict, meta: dict, key: str, default=None,
            positive: bool = False, limit: float = MAX_COORDINATE) -> float | None:
    value = _lookup(meta, frame, key)
    if value is None:
        return default
    if not _is_number(value) or (positive and value <= 0) or abs(value) > limit:
        kind = "a positive number" if positive else "a finite number"
        where = f"frame {index}: " if key in frame else ""
        raise InputError(f"{path}: {where}'{key}' must be {kind} of at most {limit:g}, got {_short(value)}")
    return float(value)


def _short(value) -> str:
    """A value in a few characters (a huge integer's repr is thousands of digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        angle = _angle(path, index, frame, meta, "camera_angle_x")
        if angle is None:
            raise InputError(f"{path}: missing key 'camera_angle_x' (or 'fl_x')")
        fx = _focal(path, index, frame, 0.5 * width / math.tan(0.5 * angle), "camera_angle_x")
    else:
        _focal(path, index, frame, fx, "fl_x")
    fy = _number(path, index, frame, meta, "fl_y", positive=True)
    if fy is None:
        angle_y = _angle(path, index, frame, meta, "camera_angle_y")
        fy = fx if angle_y is None else _focal(path, index, frame, 0.5 * height / math.tan(0.5 * angle_y),
                                               "camera_angle_y")
    else:
        _focal(path, index, frame, fy, "fl_y")
    cx = _number(path, index, frame, meta, "cx", default=width / 2.0)
    cy = _number(path, index, frame, meta, "cy", default=height / 2.0)
    dist = [_number(path, index, frame, meta, k, default=0.0, limit=MAX_DISTORTION) for k in DISTORTION_KEYS]
    return [fx, fy, cx, cy, *dist]  # type: ignore[list-item]


def _focal(path: Path, index: int, frame: dict, focal: float, key: str) -> float:
    """A focal length in pixels that float32 rays can use: at least MIN_FOCAL (a smaller one sends
    every ray to infinity), at most MAX_COORDINATE."""
    if not MIN_FOCAL <= focal <= MAX_COORDINATE:
        where = f"frame {index}: " if key in frame else ""
        raise InputError(f"{path}: {where}'{key}' gives a focal length of {focal:.3g} pixels (must be between "
                         f"{MIN_FOCAL:g} and {MAX_COORDINATE:g})")
    return focal


def _angle(path: Path, index: int, frame: dict, meta: dict, key: str) -> float | None:
    """A field of view in radians: strictly between 0 and pi (a wider one has no pinhole focal length)."""
    angle = _number(path, index, frame, meta, key, positive=True)
    if angle is not None and not angle < math.pi - 1e-6:
        where = f"frame {index}: " if key in frame else ""
        raise InputError(f"{path}: {where}'{key}' must be an angle in radians between 0 and pi, got {angle:g}")
    return angle


def _pose(path: Path, index: int, frame: dict) -> np.ndarray:
    """The frame's camera-to-world matrix, checked to be a finite 4x4 rigid transform."""
    where = f"{path}: frame {index} ({_short(frame['file_path'])[1:-1]}): transform_matrix"
    matrix = frame["transform_matrix"]
    if not isinstance(matrix, list) or not all(isinstance(row, list) for row in matrix):
        raise InputError(f"{where} is not a 4x4 matrix of numbers")
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where} is not a 4x4 matrix of numbers") from None
    if m.shape != (4, 4):
        raise InputError(f"{where} must be 4x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(f"{where} has NaN or infinite entries")
    if np.abs(m[:3, 3]).max() > MAX_COORDINATE:
        raise InputError(f"{where}: camera position beyond {MAX_COORDINATE:g} (rays are cast in float32)")
    if np.abs(m[3] - (0.0, 0.0, 0.0, 1.0)).max() > 1e-6:
        raise InputError(f"{where}: bottom row is {m[3].tolist()}, not [0, 0, 0, 1]")
    rot = m[:3, :3]
    largest = float(np.abs(rot).max())
    error = np.abs(rot.T @ rot - np.eye(3)).max() if largest <= 2.0 else largest * largest
    if error > 1e-3:
        raise InputError(
            f"{where} is not a rigid transform: its rotation part is not orthonormal "
            f"(max |R^T R - I| = {error:.3g}; scaled or non-invertible)"
        )
    if np.linalg.det(rot) < 0:
        raise InputError(f"{where} is a reflection (det = -1), not a rotation")
    return m


def _frames_with_images(path: Path, chosen: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """The frames of a single-file scene whose images exist. Tools that write transforms.json list
    frames whose photos were later dropped (instant-ngp's fox lists 17 such); they are left out with
    a warning. None left is an error."""
    present, missing = [], []
    for index, frame in chosen:
        try:
            _image_file(path, index, frame)
        except InputError as exc:
            if "image not found" not in str(exc):
                raise
            missing.append(exc)
        else:
            present.append((index, frame))
    if missing and not present:
        raise missing[0]
    if missing:
        warn(f"{path}: {len(missing)} of {len(chosen)} frames name images that do not exist; left out "
             f"(first: {str(missing[0]).split(':')[0]})")
    return present


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


@dataclass
class _Header:
    """What an image's header says: (H, W) as displayed (after EXIF rotation), whether it decodes to
    8-bit values and whether it has alpha, and its EXIF orientation (1: as stored)."""

    size: tuple[int, int]
    eight_bit: bool
    alpha: bool
    orientation: int


def _image_header(path: Path) -> _Header:
    """Read an image's header only (Pillow decodes lazily) and refuse one too large to decode."""
    from PIL import Image, UnidentifiedImageError  # Pillow: a dependency of scikit-image

    try:
        with warnings.catch_warnings():  # Pillow warns of bombs at open; the size is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                mode, info = im.mode, im.info
                orientation = _orientation(im)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large to decode ({one_line(str(exc))[:120]}); at most "
                         f"{MAX_PIXELS:,} pixels per image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError, struct_error) as exc:
        reason = one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise InputError(f"{path}: cannot read image ({reason[:160]})") from exc
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: shown as height x width
        width, height = height, width
    if width * height > MAX_PIXELS:
        raise InputError(f"{path}: image is {width}x{height} ({width * height / 1e6:.0f} M pixels), more than "
                         f"recon3d decodes ({MAX_PIXELS / 1e6:.0f} M pixels per image); shrink the image files "
                         "(--downscale acts after decoding)")
    eight_bit = mode not in ("I", "F") and not mode.startswith("I;16")
    alpha = mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in info)
    return _Header((height, width), eight_bit, alpha, orientation)


def _orientation(im) -> int:
    """The EXIF orientation (1 to 8) from what opening the file already read: Pillow's ``getexif()``
    decodes a whole PNG to look for a trailing eXIf chunk, which a size check must not do."""
    from PIL import Image

    raw = im.info.get("exif")
    if raw:
        exif = Image.Exif()
        exif.load(raw)
        value = exif.get(0x0112, 1)
    else:
        value = getattr(im, "tag_v2", {}).get(0x0112, 1)  # TIFF keeps it among its own tags
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


@dataclass
class _Layout:
    """How a split is stored: uint8 (8-bit images at full size, colour + alpha as decoded) or float32
    (composited colour, + alpha when kept), with ``channels`` 3 or 4."""

    dtype: torch.dtype
    channels: int

    @classmethod
    def of(cls, headers: list[_Header], downscale: int, keep_alpha: bool) -> _Layout:
        if downscale == 1 and all(h.eight_bit for h in headers):
            return cls(torch.uint8, 4 if any(h.alpha for h in headers) else 3)
        return cls(torch.float32, 4 if keep_alpha else 3)

    def bytes(self, n: int, height: int, width: int, downscale: int) -> int:
        item = 1 if self.dtype == torch.uint8 else 4
        return n * (height // downscale) * (width // downscale) * self.channels * item


def _check_memory(path: Path, split: str, n: int, width: int, height: int, downscale: int, layout: _Layout,
                  workers: int) -> int:
    """How many images to decode at once so the split fits in the memory available; refuses a split
    that does not fit even one at a time, naming the --downscale that would."""
    free = available_memory()
    workers = max(1, min(workers, n))
    if free is None:
        return workers
    stored = layout.bytes(n, height, width, downscale)
    per_worker = height * width * _DECODE_BYTES["uint8" if layout.dtype == torch.uint8 else "float32"]
    if stored + per_worker <= free:
        return max(1, min(workers, (free - stored) // per_worker))
    need = stored + per_worker
    fits = [k for k in range(downscale + 1, 65)
            if _Layout(torch.float32, layout.channels).bytes(n, height, width, k) + height * width * 80 <= free
            and height >= k and width >= k]
    remedy = f"use --downscale {fits[0]} or fewer images" if fits else "use fewer or smaller images"
    raise InputError(f"{path}: the {split} split's {n} images of {width}x{height} need about {gigabytes(need)} of "
                     f"memory, {gigabytes(free)} is available; {remedy}")


def _decode_all(files: list[Path], headers: list[_Header], layout: _Layout, size: tuple[int, int],
                downscale: int, background: np.ndarray, workers: int) -> torch.Tensor:
    """(N, H // k, W // k, C) pixels of ``layout``, decoded ``workers`` images at a time straight into
    their slot (no second copy of the split)."""
    height, width = size
    pixels = torch.empty((len(files), height // downscale, width // downscale, layout.channels), dtype=layout.dtype)
    target = pixels.numpy()

    def load(n: int) -> None:
        array = _decode(files[n], headers[n], size)
        channels = array.shape[2]
        if channels not in (1, 2, 3, 4):
            raise InputError(f"{files[n]}: image has {channels} channels (expected 1 to 4)")
        colour = array[..., :1].repeat(3, axis=2) if channels <= 2 else array[..., :3]
        alpha = array[..., -1] if channels in (2, 4) else None
        if layout.dtype == torch.uint8 and (array.dtype != np.uint8 or (alpha is not None and layout.channels == 3)):
            raise InputError(f"{files[n]}: decoded as another kind of image than its header said")
        if layout.dtype == torch.uint8:
            target[n, ..., :3] = colour
            if layout.channels == 4:
                target[n, ..., 3] = 255 if alpha is None else alpha
            return
        rgb, a = _unit_float(colour), None if alpha is None else _unit_float(alpha)
        if a is not None:
            rgb = rgb * a[..., None] + background * (1.0 - a[..., None])
        target[n, ..., :3] = _block_mean(rgb, downscale)
        if layout.channels == 4:
            target[n, ..., 3] = 1.0 if a is None else _block_mean(a, downscale)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(load, range(len(files))))
    return pixels


def _decode(path: Path, header: _Header, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) values of an image as Pillow decodes it (uint8 for 8-bit modes), EXIF-rotated upright."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if header.orientation != 1:
                im = ImageOps.exif_transpose(im)
            else:
                im.load()
            array = _pil_array(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError, struct_error) as exc:
        reason = one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise InputError(f"{path}: cannot read image ({reason[:160]})") from exc
    if array.shape[:2] != size:
        raise InputError(f"{path}: image decoded as {array.shape[1]}x{array.shape[0]}, its header said "
                         f"{size[1]}x{size[0]}")
    return array


def _pil_array(im) -> np.ndarray:
    """A Pillow image as an (H, W, C) array in its own bit depth (uint8 for 8-bit modes)."""
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
    return array


def _unit_float(array: np.ndarray) -> np.ndarray:
    """Values scaled to float32 in [0, 1] by their own bit depth."""
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
    if meta.get("aabb") is not None:
        aabb = _explicit_box(path, meta["aabb"])
    elif scale_ngp is not None:
        if not _is_number(scale_ngp) or scale_ngp <= 0:
            raise InputError(f"{path}: 'aabb_scale' must be a positive number, got {_short(scale_ngp)}")
        scale = meta.get("scale", 0.33)
        offset = meta.get("offset", [0.5, 0.5, 0.5])
        if not _is_number(scale) or scale <= 0:
            raise InputError(f"{path}: 'scale' must be a positive number, got {_short(scale)}")
        if not (isinstance(offset, list) and len(offset) == 3 and all(map(_is_number, offset))):
            raise InputError(f"{path}: 'offset' must be a list of 3 finite numbers, got {_short(offset)}")
        # instant-ngp maps json (x, y, z) to its (y, z, x) axes: ngp = json * scale + offset; its
        # box is 0.5 +- aabb_scale / 2 on every ngp axis.
        ngp_axis = (2, 0, 1)  # json axis j is ngp axis ngp_axis[j]
        off = np.array([offset[ngp_axis[j]] for j in range(3)], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            lo = (0.5 - 0.5 * float(scale_ngp) - off) / float(scale)
            hi = (0.5 + 0.5 * float(scale_ngp) - off) / float(scale)
        aabb = np.stack([lo, hi])
        _check_box(path, aabb, f"'aabb_scale' {scale_ngp:g} with 'scale' {scale:g} and 'offset'")
    else:
        aabb = np.stack([centre - spread, centre + spread])
    corners = np.array([[aabb[i, 0], aabb[j, 1], aabb[k, 2]]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # fmt: skip
    far = float(np.linalg.norm(positions[:, None] - corners[None], axis=-1).max())
    return aabb, 0.05 * spread, far


def _explicit_box(path: Path, value) -> np.ndarray:
    """A json's ``"aabb": [[xmin, ymin, zmin], [xmax, ymax, zmax]]`` (world units), checked."""
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(row, list) and len(row) == 3 and all(map(_is_number, row)) for row in value))
    if not ok:
        raise InputError(f"{path}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] (finite numbers), got "
                         f"{_short(value)}")
    aabb = np.array(value, dtype=np.float64)
    if not (aabb[1] > aabb[0]).all():
        raise InputError(f"{path}: 'aabb' must have each max above its min, got {aabb.tolist()}")
    _check_box(path, aabb, "its 'aabb'")
    return aabb


def _check_box(path: Path, aabb: np.ndarray, source: str) -> None:
    """The scene box must be finite, within MAX_COORDINATE and not empty once in float32 (the rays'
    precision)."""
    if not np.isfinite(aabb).all() or np.abs(aabb).max() > MAX_COORDINATE:
        raise InputError(f"{path}: {source} give a scene box beyond {MAX_COORDINATE:g} (or infinite)")
    lo, hi = aabb.astype(np.float32)
    extent = hi.astype(np.float64) - lo
    if not (extent > 1e-6 * np.maximum(1.0, np.abs(aabb).max(axis=0))).all():
        raise InputError(f"{path}: {source} give an empty scene box ({lo.tolist()} to {hi.tolist()})")


def _check_rays(path: Path, chosen: list[tuple[int, dict]], poses: np.ndarray, intrinsics: np.ndarray,
                width: int, height: int) -> None:
    """Cast the rays of each image's corners and centre as training will (float32, distortion undone):
    intrinsics that each pass their own checks can still combine into infinite rays (a strong
    distortion far outside the image's field of view)."""
    from recon3d.render.rays import camera_rays

    pixels = torch.tensor([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1],
                           [width // 2, height // 2]]).expand(len(poses), 5, 2)  # fmt: skip
    k = torch.from_numpy(intrinsics.astype(np.float32))[:, None]  # (N, 1, 10)
    distortion = k[..., 4:] if bool((k[..., 4:] != 0).any()) else None
    rays = camera_rays(torch.from_numpy(poses.astype(np.float32))[:, None], k[..., 0], k[..., 1], k[..., 2],
                       k[..., 3], distortion=distortion, pixels=pixels)
    bad = ~torch.isfinite(rays.directions).all(dim=-1).all(dim=-1)
    if bool(bad.any()):
        index = chosen[int(bad.nonzero()[0, 0])][0]
        raise InputError(f"{path}: frame {index}: its intrinsics (focal length, principal point, distortion) "
                         "give rays that are not finite")


def _check_box_in_view(path: Path, meta: dict, poses: np.ndarray, intrinsics: np.ndarray, aabb: np.ndarray,
                       width: int, height: int, blender: bool) -> None:
    """Refuse a scene box that no camera sees: for every camera, all 8 corners lie outside one plane
    of its view pyramid (widened to three times the image on each axis, for lens distortion)."""
    corners = np.array([[aabb[i, 0], aabb[j, 1], aabb[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    local = np.einsum("nkj,nji->nki", corners[None] - poses[:, None, :3, 3], poses[:, :3, :3])  # R^T (p - t)
    x, y, depth = local[..., 0], -local[..., 1], -local[..., 2]  # OpenCV image axes, depth along the view
    fx, fy, cx, cy = (intrinsics[:, k, None] for k in range(4))
    outside = [depth <= 0,
               fx * x + (cx + width) * depth < 0, fx * x + (cx - 2 * width) * depth > 0,
               fy * y + (cy + height) * depth < 0, fy * y + (cy - 2 * height) * depth > 0]
    hidden = np.any([plane.all(axis=1) for plane in outside], axis=0)  # (N,) box wholly outside
    if hidden.all():
        if blender:
            source = f"the Blender box {BLENDER_AABB[0][0]:g} to {BLENDER_AABB[1][0]:g} on every axis"
        elif meta.get("aabb") is not None:
            source = "its 'aabb'"
        elif meta.get("aabb_scale") is not None:
            source = "its 'aabb_scale', 'scale' and 'offset'"
        else:
            source = "the box around the cameras"
        lo, hi = (np.array2string(c, precision=3) for c in aabb)
        raise InputError(f"{path}: no camera looks at the scene box {lo} to {hi} ({source}); check the "
                         "poses' orientation" + (" and those keys" if {"aabb", "aabb_scale"} & set(meta) else ""))


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


def scene_files(scene: Path, split: str) -> list[Path]:
    """The existing files a scene's split is read from: its json, the images its frames name (with
    the extensions the scene reader tries) and its sparse points; a COLMAP project's model and images.
    Cheap and best effort, for output checks only: no image is decoded and anything odd (unreadable, not
    JSON, not a regular file) is left to the scene reader."""
    found: list[Path] = []
    with contextlib.suppress(OSError, ValueError, RecursionError):
        jsons = [scene / f"transforms_{split}.json", scene / "transforms.json"] if scene.is_dir() else [scene]
        for path in jsons:
            if not path.is_file() or path.stat().st_size > 64 * 2**20:
                continue
            found.append(path)
            meta = json.loads(path.read_text(encoding="utf-8"))
            frames = meta.get("frames") if isinstance(meta, dict) else None
            for frame in frames if isinstance(frames, list) else []:
                name = frame.get("file_path") if isinstance(frame, dict) else None
                if not isinstance(name, str) or not name or "\0" in name:
                    continue
                base = Path(name) if os.path.isabs(name) else path.parent / name
                candidates = [base] + [base.with_name(base.name + ext) for ext in IMAGE_EXTENSIONS]
                found += [c for c in candidates if c.name and c.is_file()]
            sparse = meta.get("sparse_points") if isinstance(meta, dict) else None
            if isinstance(sparse, str) and sparse and "\0" not in sparse:
                file = Path(sparse) if os.path.isabs(sparse) else path.parent / sparse
                found += [file] if file.is_file() else []
        project = find_project(scene) if scene.is_dir() and not found else None
        if project is not None:  # a COLMAP project: its model's files and every file in images/
            found += model_files(project[0])[0]  # type: ignore[index]
            found += [p for p in sorted(project[1].rglob("*")) if p.is_file()]
    return found
