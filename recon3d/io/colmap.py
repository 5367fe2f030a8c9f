"""COLMAP sparse models (cameras, images, points3D in ``.bin`` and ``.txt``) and the sparse points of a scene.

Formats, as COLMAP documents them (doc/format.rst, "Output Format") and writes them
(src/colmap/scene/reconstruction_io): the binary files are little-endian;

* ``cameras.bin``: uint64 count; per camera int32 camera_id, int32 model_id, uint64 width, uint64 height,
  then the model's float64 parameters (their number follows from the model);
* ``images.bin``: uint64 count; per image uint32 image_id, float64 qw qx qy qz, float64 tx ty tz, uint32
  camera_id, the name as bytes ending in NUL, uint64 number of 2D points, then per point float64 x, y and
  uint64 point3D_id (2^64 - 1: none);
* ``points3D.bin``: uint64 count; per point uint64 point3D_id, float64 x y z, uint8 r g b, float64 error,
  uint64 track length, then per track element uint32 image_id, uint32 point2D_idx.

The text files hold the same values, one camera / point per line and two lines per image (the second
lists the 2D points as ``x y point3D_id`` triples), comments starting with ``#``. COLMAP >= 3.12 also
writes ``rigs`` and ``frames`` files; a model of single cameras needs neither, so they are not read.

Conventions. An image's pose is world-to-camera, ``x_cam = R(q) x_world + t`` with q = (qw, qx, qy, qz),
camera axes as OpenCV's (x right, y down, z forward); pixel coordinates put the top-left pixel's centre at
(0.5, 0.5), as recon3d does. recon3d's scenes hold camera-to-world matrices with OpenGL axes (x right, y
up, z back): ``c2w = [R^T | -R^T t] · diag(1, -1, -1, 1)``, what nerfstudio's ``colmap_to_json`` computes
before it re-orients the world (recon3d keeps COLMAP's world as it is).

Camera models with a pinhole or OpenCV equivalent become recon3d intrinsics ``fx fy cx cy`` and OpenCV
coefficients ``k1 k2 k3 k4 p1 p2`` (nerfstudio's order): SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL,
OPENCV, and FULL_OPENCV when its rational terms k4..k6 are 0. Fisheye and other models are refused, naming
the model.

:class:`SparsePoints` is what a scene knows of its structure-from-motion points: the points, their colours
and errors, and every observation of a point in an image (for depth supervision). ``recon3d poses`` writes
it as ``sparse_points.npz``; a COLMAP project gives it from ``points3D``.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon3d.errors import InputError, one_line
from recon3d.io.atomic import atomic_write_bytes

#: COLMAP's camera models: id -> (name, number of parameters), as in src/colmap/sensor/models.h.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
    12: ("SIMPLE_DIVISION", 4), 13: ("DIVISION", 5), 14: ("SIMPLE_FISHEYE", 3), 15: ("FISHEYE", 4),
    16: ("EUCM", 6), 17: ("EQUIRECTANGULAR", 2),
}  # fmt: skip
MODEL_IDS = {name: (model_id, count) for model_id, (name, count) in CAMERA_MODELS.items()}
#: The models recon3d reads as pinhole cameras with OpenCV distortion.
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
#: uint64 "no 3D point" in images.bin, and -1 in text files and here.
INVALID_ID = -1
#: OpenCV camera axes (x right, y down, z forward) to OpenGL's (x right, y up, z back) and back.
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
#: Keys of ``sparse_points.npz``: name -> (dtype, trailing shape).
SPARSE_ARRAYS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "points": (np.float64, (3,)), "colors": (np.uint8, (3,)), "errors": (np.float32, ()),
    "obs_frame": (np.int32, ()), "obs_point": (np.int32, ()), "obs_uv": (np.float32, (2,)),
    "obs_error": (np.float32, ()),
}  # fmt: skip
#: Percentiles of the points that bound the region of interest (robust to stray points), and the
#: margin added on each side, as a fraction of the box's extent.
ROI_PERCENTILES = (2.0, 98.0)
ROI_MARGIN = 0.1
#: Points nearer the cameras' focus than this fraction of the view's half-width there count as the object.
ROI_FOCUS_RADIUS = 1.0
#: Fewer points than this give no region of interest (the scene reader's default box then applies).
ROI_MIN_POINTS = 8


# ------------------------------------------------------------------------------------------ model


@dataclass
class ColmapCamera:
    """One COLMAP camera: its model's name, the image size and the model's parameters (P,) float64."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class ColmapImage:
    """One registered image: world-to-camera rotation ``qvec`` (4,) = (qw, qx, qy, qz) and translation
    ``tvec`` (3,), its camera, its file name (relative to the images folder), its 2D points ``xys``
    (K, 2) float64 in pixels and the 3D point each one observes, ``point3d_ids`` (K,) int64 (-1: none)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray
    point3d_ids: np.ndarray


@dataclass
class ColmapPoints:
    """The 3D points, as arrays: ``ids`` (P,) int64, ``xyz`` (P, 3) float64, ``rgb`` (P, 3) uint8,
    ``error`` (P,) float64 (COLMAP's mean reprojection error, pixels; -1 when unknown), and the tracks
    flattened: element j observes point ``track_point[j]`` (an index into these arrays) as 2D point
    ``track_idx[j]`` of image ``track_image[j]`` (an image id); (T,) int64 each."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    track_point: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    track_image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    track_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class ColmapModel:
    """A sparse model: cameras and images by id, and the points."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints
    source: Path = Path(".")


# ------------------------------------------------------------------------------------------ reading


def model_files(folder: Path) -> tuple[list[Path], str] | None:
    """The (cameras, images, points3D) files of a model folder and their extension (``.bin`` first,
    as COLMAP does), or None when the folder holds no complete model."""
    for ext in (".bin", ".txt"):
        files = [folder / f"{name}{ext}" for name in ("cameras", "images", "points3D")]
        if all(f.is_file() for f in files):
            return files, ext
    return None


def read_model(folder: str | os.PathLike) -> ColmapModel:
    """Read a COLMAP model folder (``cameras``, ``images``, ``points3D`` as ``.bin`` or ``.txt``); every
    problem is one InputError naming the file. Tracks must name existing images and 2D points."""
    folder = Path(folder)
    found = model_files(folder)
    if found is None:
        raise InputError(f"{folder}: no COLMAP model here (cameras, images and points3D as .bin or .txt)")
    (cameras_file, images_file, points_file), ext = found
    if ext == ".bin":
        cameras = _read_cameras_bin(cameras_file)
        images = _read_images_bin(images_file)
        points = _read_points_bin(points_file)
    else:
        cameras = _read_cameras_txt(cameras_file)
        images = _read_images_txt(images_file)
        points = _read_points_txt(points_file)
    for image in images.values():
        if image.camera_id not in cameras:
            raise InputError(f"{images_file}: image {image.image_id} ({image.name}) names camera {image.camera_id}, "
                             f"which {cameras_file.name} lacks")
    _check_tracks(points_file, points, images)
    return ColmapModel(cameras, images, points, folder)


def _check_tracks(path: Path, points: ColmapPoints, images: dict[int, ColmapImage]) -> None:
    """Every track element must name an image of the model and one of its 2D points."""
    if len(points.track_image) == 0:
        return
    sizes = {image_id: len(image.xys) for image_id, image in images.items()}
    known = np.array([image_id in sizes for image_id in points.track_image.tolist()])
    if not known.all():
        j = int(np.flatnonzero(~known)[0])
        raise InputError(f"{path}: point {int(points.ids[points.track_point[j]])} is seen in image "
                         f"{int(points.track_image[j])}, which the images file lacks")
    limit = np.array([sizes[i] for i in points.track_image.tolist()])
    bad = (points.track_idx < 0) | (points.track_idx >= limit)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: point {int(points.ids[points.track_point[j]])} names 2D point "
                         f"{int(points.track_idx[j])} of image {int(points.track_image[j])}, which has {int(limit[j])}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


class _Binary:
    """A little-endian cursor over a file's bytes; running past the end is one InputError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = _read_bytes(path)
        self.offset = 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise InputError(f"{self.path}: truncated at byte {self.offset} (not a complete COLMAP binary file)")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        size = dtype.itemsize * count
        if self.offset + size > len(self.data):
            raise InputError(f"{self.path}: truncated at byte {self.offset} (not a complete COLMAP binary file)")
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return values

    def count(self, record: int) -> int:
        """A uint64 count of records at least ``record`` bytes each, checked against the bytes left."""
        (n,) = self.take("Q")
        if n * record > len(self.data) - self.offset:
            raise InputError(f"{self.path}: says it holds {n} records, more than its {len(self.data)} bytes can")
        return int(n)

    def name(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise InputError(f"{self.path}: truncated in an image name")
        raw = self.data[self.offset:end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.path}: an image name is not UTF-8 text") from None

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise InputError(f"{self.path}: {len(self.data) - self.offset} bytes left after the last record "
                             "(not a COLMAP binary file of this kind)")


def _model_of(path: Path, model_id: int, camera_id: int) -> tuple[str, int]:
    if model_id not in CAMERA_MODELS:
        raise InputError(f"{path}: camera {camera_id} has unknown camera model id {model_id}")
    return CAMERA_MODELS[model_id]


def _camera(path: Path, camera_id: int, model: str, width: int, height: int, params: np.ndarray) -> ColmapCamera:
    if not (0 < width <= 1 << 20 and 0 < height <= 1 << 20):
        raise InputError(f"{path}: camera {camera_id} has an image size of {width}x{height}")
    if not np.isfinite(params).all():
        raise InputError(f"{path}: camera {camera_id} has NaN or infinite parameters")
    return ColmapCamera(int(camera_id), model, int(width), int(height), np.asarray(params, np.float64).copy())


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    reader = _Binary(path)
    cameras = {}
    for _ in range(reader.count(24)):
        camera_id, model_id, width, height = reader.take("iiQQ")
        name, count = _model_of(path, model_id, camera_id)
        params = reader.array(np.dtype("<f8"), count)
        cameras[camera_id] = _camera(path, camera_id, name, width, height, params)
    reader.finish()
    return cameras


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])


def _image(path: Path, image_id: int, qvec, tvec, camera_id: int, name: str, xys: np.ndarray,
           ids: np.ndarray) -> ColmapImage:
    qvec, tvec = np.asarray(qvec, np.float64), np.asarray(tvec, np.float64)
    if not (np.isfinite(qvec).all() and np.isfinite(tvec).all()) or np.linalg.norm(qvec) < 1e-12:
        raise InputError(f"{path}: image {image_id} ({name}) has no valid pose (its quaternion or translation "
                         "is zero, NaN or infinite)")
    if not name:
        raise InputError(f"{path}: image {image_id} has an empty name")
    return ColmapImage(int(image_id), qvec, tvec, int(camera_id), name, np.asarray(xys, np.float64),
                       np.asarray(ids, np.int64))


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    reader = _Binary(path)
    images = {}
    for _ in range(reader.count(73)):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = reader.take("I7dI")
        name = reader.name()
        (k,) = reader.take("Q")
        raw = reader.array(_POINT2D, k)
        xys = np.stack([raw["x"], raw["y"]], axis=1)
        ids = np.where(raw["id"] < 0, INVALID_ID, raw["id"])  # uint64 max reads as -1
        images[image_id] = _image(path, image_id, (qw, qx, qy, qz), (tx, ty, tz), camera_id, name, xys, ids)
    reader.finish()
    return images


def _read_points_bin(path: Path) -> ColmapPoints:
    reader = _Binary(path)
    n = reader.count(51)
    ids, xyz, rgb, error = np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 3), np.uint8), np.zeros(n)
    tracks, lengths = [], np.zeros(n, np.int64)
    pair = np.dtype([("image", "<u4"), ("idx", "<u4")])
    for i in range(n):
        values = reader.take("Q3d3BdQ")
        ids[i], xyz[i], rgb[i], error[i] = values[0], values[1:4], values[4:7], values[7]
        track = reader.array(pair, values[8])
        tracks.append(track)
        lengths[i] = len(track)
    reader.finish()
    joined = np.concatenate(tracks) if tracks else np.zeros(0, pair)
    return _points(path, ids, xyz, rgb, error, lengths, joined["image"].astype(np.int64),
                   joined["idx"].astype(np.int64))


def _points(path: Path, ids: np.ndarray, xyz: np.ndarray, rgb: np.ndarray, error: np.ndarray, lengths: np.ndarray,
            track_image: np.ndarray, track_idx: np.ndarray) -> ColmapPoints:
    if not np.isfinite(xyz).all():
        raise InputError(f"{path}: a 3D point has NaN or infinite coordinates")
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"{path}: 3D point ids repeat")
    return ColmapPoints(ids=ids, xyz=xyz, rgb=rgb, error=error,
                        track_point=np.repeat(np.arange(len(ids), dtype=np.int64), lengths),
                        track_image=track_image, track_idx=track_idx)


def _text_lines(path: Path) -> list[str]:
    try:
        return _read_bytes(path).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (a COLMAP text model?)") from None


def _numbers(path: Path, number: int, tokens: list[str], kind=float) -> list:
    try:
        return [kind(t) for t in tokens]
    except ValueError:
        raise InputError(f"{path}: line {number}: expected numbers, got {one_line(' '.join(tokens))[:60]!r}") from None


def _data(lines: list[str]):
    """(line number, stripped line) of the lines that are neither empty nor comments."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, text


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for number, text in _data(_text_lines(path)):
        tokens = text.split()
        if len(tokens) < 4:
            raise InputError(f"{path}: line {number}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        camera_id, width, height = _numbers(path, number, [tokens[0], tokens[2], tokens[3]], int)
        model = tokens[1].upper()
        if model not in MODEL_IDS:
            raise InputError(f"{path}: line {number}: unknown camera model {tokens[1]!r}")
        params = np.array(_numbers(path, number, tokens[4:]), np.float64)
        if len(params) != MODEL_IDS[model][1]:
            raise InputError(f"{path}: line {number}: {model} has {MODEL_IDS[model][1]} parameters, "
                             f"the line gives {len(params)}")
        cameras[camera_id] = _camera(path, camera_id, model, width, height, params)
    return cameras


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    """Two lines per image, as COLMAP reads them: the pose line (empty and comment lines before it
    skipped), then the 2D points line, which may be empty."""
    lines = _text_lines(path)
    images, i = {}, 0
    while i < len(lines):
        text = lines[i].strip()
        i += 1
        if not text or text.startswith("#"):
            continue
        tokens = text.split(maxsplit=9)
        if len(tokens) < 10:
            raise InputError(f"{path}: line {i}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        image_id, camera_id = _numbers(path, i, [tokens[0], tokens[8]], int)
        pose = _numbers(path, i, tokens[1:8])
        values = _numbers(path, i + 1, lines[i].split() if i < len(lines) else [])
        i += 1
        if len(values) % 3:
            raise InputError(f"{path}: line {i}: expected X Y POINT3D_ID triples")
        table = np.array(values, np.float64).reshape(-1, 3)
        images[image_id] = _image(path, image_id, pose[:4], pose[4:], camera_id, tokens[9].strip(), table[:, :2],
                                  table[:, 2].astype(np.int64))
    return images


def _read_points_txt(path: Path) -> ColmapPoints:
    ids, xyz, rgb, error, lengths, track = [], [], [], [], [], []
    for number, text in _data(_text_lines(path)):
        tokens = text.split()
        if len(tokens) < 8 or (len(tokens) - 8) % 2:
            raise InputError(f"{path}: line {number}: expected POINT3D_ID X Y Z R G B ERROR TRACK[]")
        ids.append(_numbers(path, number, tokens[:1], int)[0])
        xyz.append(_numbers(path, number, tokens[1:4]))
        colour = _numbers(path, number, tokens[4:7], int)
        if not all(0 <= c <= 255 for c in colour):
            raise InputError(f"{path}: line {number}: colours must be 0 to 255")
        rgb.append(colour)
        error.append(_numbers(path, number, tokens[7:8])[0])
        pairs = _numbers(path, number, tokens[8:], int)
        track += pairs
        lengths.append(len(pairs) // 2)
    pairs = np.array(track, np.int64).reshape(-1, 2)
    return _points(path, np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                   np.array(rgb, np.uint8).reshape(-1, 3), np.array(error, np.float64), np.array(lengths, np.int64),
                   pairs[:, 0], pairs[:, 1])


# ------------------------------------------------------------------------------------------ writing


def write_model(model: ColmapModel, folder: str | os.PathLike, binary: bool = True) -> Path:
    """Write ``model`` into ``folder`` (created if needed) as COLMAP's ``.bin`` or ``.txt`` files, each
    atomically; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".bin" if binary else ".txt"
    writers = (_cameras_bin, _images_bin, _points_bin) if binary else (_cameras_txt, _images_txt, _points_txt)
    for name, writer, part in zip(("cameras", "images", "points3D"), writers,
                                  (model.cameras, model.images, model.points)):
        atomic_write_bytes(folder / f"{name}{ext}", writer(part))
    return folder


def _cameras_bin(cameras: dict[int, ColmapCamera]) -> bytes:
    out = [struct.pack("<Q", len(cameras))]
    for camera in cameras.values():
        out.append(struct.pack("<iiQQ", camera.camera_id, MODEL_IDS[camera.model][0], camera.width, camera.height))
        out.append(np.asarray(camera.params, "<f8").tobytes())
    return b"".join(out)


def _images_bin(images: dict[int, ColmapImage]) -> bytes:
    out = [struct.pack("<Q", len(images))]
    for image in images.values():
        out.append(struct.pack("<I7dI", image.image_id, *image.qvec, *image.tvec, image.camera_id))
        out.append(image.name.encode("utf-8") + b"\0")
        table = np.zeros(len(image.xys), _POINT2D)
        table["x"], table["y"], table["id"] = image.xys[:, 0], image.xys[:, 1], image.point3d_ids
        out.append(struct.pack("<Q", len(table)) + table.tobytes())
    return b"".join(out)


def _points_bin(points: ColmapPoints) -> bytes:
    out = [struct.pack("<Q", len(points))]
    pair = np.dtype([("image", "<u4"), ("idx", "<u4")])
    order = np.argsort(points.track_point, kind="stable")
    starts = np.searchsorted(points.track_point[order], np.arange(len(points) + 1))
    for i in range(len(points)):
        elements = order[starts[i]:starts[i + 1]]
        out.append(struct.pack("<Q3d3BdQ", int(points.ids[i]), *points.xyz[i], *points.rgb[i].tolist(),
                               float(points.error[i]), len(elements)))
        track = np.zeros(len(elements), pair)
        track["image"], track["idx"] = points.track_image[elements], points.track_idx[elements]
        out.append(track.tobytes())
    return b"".join(out)


def _cameras_txt(cameras: dict[int, ColmapCamera]) -> bytes:
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    lines += [" ".join([str(c.camera_id), c.model, str(c.width), str(c.height), *map(repr, map(float, c.params))])
              for c in cameras.values()]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _images_txt(images: dict[int, ColmapImage]) -> bytes:
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(images)}"]
    for image in images.values():
        pose = " ".join(repr(float(v)) for v in (*image.qvec, *image.tvec))
        lines.append(f"{image.image_id} {pose} {image.camera_id} {image.name}")
        lines.append(" ".join(f"{float(x)!r} {float(y)!r} {int(i)}" for (x, y), i in zip(image.xys, image.point3d_ids)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _points_txt(points: ColmapPoints) -> bytes:
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(points)}"]
    order = np.argsort(points.track_point, kind="stable")
    starts = np.searchsorted(points.track_point[order], np.arange(len(points) + 1))
    for i in range(len(points)):
        elements = order[starts[i]:starts[i + 1]]
        track = " ".join(f"{int(a)} {int(b)}" for a, b in zip(points.track_image[elements], points.track_idx[elements]))
        xyz = " ".join(repr(float(v)) for v in points.xyz[i])
        rgb = " ".join(str(int(v)) for v in points.rgb[i])
        lines.append(f"{int(points.ids[i])} {xyz} {rgb} {float(points.error[i])!r} {track}".rstrip())
    return ("\n".join(lines) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ cameras


def qvec_to_rotation(qvec: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of the quaternion (qw, qx, qy, qz) (normalised first, as COLMAP does)."""
    w, x, y, z = np.asarray(qvec, np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def rotation_to_qvec(rotation: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (qw, qx, qy, qz), qw >= 0, of a (3, 3) rotation (the eigenvector method)."""
    r = np.asarray(rotation, np.float64)
    k = np.array([
        [r[0, 0] - r[1, 1] - r[2, 2], r[1, 0] + r[0, 1], r[2, 0] + r[0, 2], r[2, 1] - r[1, 2]],
        [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], r[2, 1] + r[1, 2], r[0, 2] - r[2, 0]],
        [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], r[1, 0] - r[0, 1]],
        [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], r[0, 0] + r[1, 1] + r[2, 2]],
    ]) / 3.0  # fmt: skip
    values, vectors = np.linalg.eigh(k)
    x, y, z, w = vectors[:, np.argmax(values)]
    q = np.array([w, x, y, z])
    return q if q[0] >= 0 else -q


def camera_to_world(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world of a COLMAP pose (world-to-camera, OpenCV axes)."""
    rotation = qvec_to_rotation(qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T
    c2w[:3, 3] = -rotation.T @ np.asarray(tvec, np.float64)
    return c2w @ CV_TO_GL


def world_to_camera(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(qvec (4,), tvec (3,)): the COLMAP pose of an OpenGL camera-to-world (4, 4) matrix."""
    cv = np.asarray(c2w, np.float64) @ CV_TO_GL
    rotation = cv[:3, :3].T
    return rotation_to_qvec(rotation), -rotation @ cv[:3, 3]


def camera_intrinsics(camera: ColmapCamera, source: Path | str = "") -> np.ndarray:
    """(10,) ``fx fy cx cy k1 k2 k3 k4 p1 p2`` of a camera whose model has a pinhole or OpenCV equivalent;
    other models are one InputError naming the model."""
    p = camera.params
    k = np.zeros(10)
    if camera.model == "SIMPLE_PINHOLE":
        k[:4] = p[0], p[0], p[1], p[2]
    elif camera.model == "PINHOLE":
        k[:4] = p[:4]
    elif camera.model == "SIMPLE_RADIAL":
        k[:5] = p[0], p[0], p[1], p[2], p[3]
    elif camera.model == "RADIAL":
        k[:6] = p[0], p[0], p[1], p[2], p[3], p[4]
    elif camera.model == "OPENCV" or (camera.model == "FULL_OPENCV" and not np.any(p[9:12])):
        k[:6], k[8:10] = p[:6], p[6:8]
        if camera.model == "FULL_OPENCV":
            k[6] = p[8]  # k3: the r^6 term
    else:
        why = " with rational terms k4..k6 (only k1..k3 are read)" if camera.model == "FULL_OPENCV" else ""
        raise InputError(f"{source}: camera {camera.camera_id} uses COLMAP's {camera.model} model{why}, which has "
                         f"no pinhole or OpenCV equivalent (supported: {', '.join(SUPPORTED_MODELS)}); undistort the "
                         "images first (colmap image_undistorter) and use the undistorted model")
    if not (k[0] > 0 and k[1] > 0):
        raise InputError(f"{source}: camera {camera.camera_id} has a focal length of {min(k[0], k[1]):g} pixels")
    return k


def project(points_cam: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(N, 2) pixel coordinates of points (N, 3) in OpenCV camera axes through cameras (N, 10)
    ``fx fy cx cy k1 k2 k3 k4 p1 p2`` (OpenCV's distortion, as recon3d.render.rays undoes it); points at or
    behind the camera give NaN."""
    z = points_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = np.where(z > 0, points_cam[:, 0] / z, np.nan), np.where(z > 0, points_cam[:, 1] / z, np.nan)
    fx, fy, cx, cy, k1, k2, k3, k4, p1, p2 = intrinsics.T
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([fx * xd + cx, fy * yd + cy], axis=1)


# ------------------------------------------------------------------------------------------ sparse points


@dataclass
class SparsePoints:
    """Structure-from-motion points of a scene and where its images see them.

    points (P, 3) float64 in the scene's coordinates; colors (P, 3) uint8; errors (P,) float32 mean
    reprojection error, pixels. Observations: obs_frame (O,) int32 the image (in a file: an index into the
    json's ``frames`` list; in a :class:`recon3d.io.scene.Scene`: an index into its own images), obs_point
    (O,) int32 the point, obs_uv (O, 2) float32 the pixel coordinates where the image sees it (the top-left
    pixel's centre at (0.5, 0.5); in a Scene, in its downscaled pixels), obs_error (O,) float32 the
    reprojection error of that observation, same pixels.
    """

    points: np.ndarray
    colors: np.ndarray
    errors: np.ndarray
    obs_frame: np.ndarray
    obs_point: np.ndarray
    obs_uv: np.ndarray
    obs_error: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name), dtype) for name, (dtype, _) in SPARSE_ARRAYS.items()}

    def remap_frames(self, position: np.ndarray) -> SparsePoints:
        """The observations of the frames that ``position`` (F,) int maps to a new index (>= 0), renumbered;
        the others (-1) are dropped. Points are kept as they are."""
        position = np.asarray(position, np.int64)
        new = position[self.obs_frame]
        keep = new >= 0
        return SparsePoints(self.points, self.colors, self.errors, new[keep].astype(np.int32),
                            self.obs_point[keep], self.obs_uv[keep], self.obs_error[keep])

    def downscaled(self, factor: int, width: int, height: int) -> SparsePoints:
        """Observations in the pixels of images shrunk by ``factor`` (k x k blocks, remainder cropped) to
        ``width`` x ``height``: coordinates and errors divided by k; those in the cropped remainder dropped."""
        if factor == 1:
            return self
        uv = self.obs_uv / np.float32(factor)
        keep = (uv[:, 0] < width) & (uv[:, 1] < height)
        return SparsePoints(self.points, self.colors, self.errors, self.obs_frame[keep], self.obs_point[keep],
                            uv[keep], (self.obs_error / np.float32(factor))[keep])


def save_sparse(path: str | os.PathLike, sparse: SparsePoints) -> None:
    """Write ``sparse`` as an uncompressed ``.npz`` (the arrays of :data:`SPARSE_ARRAYS`), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **sparse.arrays())
    atomic_write_bytes(path, buffer.getvalue())


def load_sparse(path: str | os.PathLike, n_frames: int, where: str = "") -> SparsePoints:
    """Read a ``sparse_points.npz`` whose obs_frame indexes ``n_frames`` frames; every problem is one
    InputError naming the file (``where``: who names it, for the message)."""
    path = Path(path)
    named = f" (named by {where})" if where else ""
    if not path.is_file():
        raise InputError(f"{path}: sparse points file not found{named}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in SPARSE_ARRAYS if key not in npz.files]
            if missing:
                raise InputError(f"{path}: missing array '{missing[0]}' (a sparse_points.npz holds "
                                 f"{', '.join(SPARSE_ARRAYS)}){named}")
            raw = {key: npz[key] for key in SPARSE_ARRAYS}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable .npz ({one_line(str(exc))[:100]}){named}") from exc
    arrays = {}
    for key, (dtype, tail) in SPARSE_ARRAYS.items():
        value = raw[key]
        if value.dtype.kind not in "biuf" or value.shape[1:] != tail:
            shape = "(N" + "".join(f", {t}" for t in tail) + ")"
            raise InputError(f"{path}: '{key}' must be a numeric array of shape {shape}, got {value.dtype} "
                             f"{value.shape}{named}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InputError(f"{path}: '{key}' has NaN or infinite values{named}")
        arrays[key] = value.astype(dtype)
    points, observations = len(arrays["points"]), len(arrays["obs_frame"])
    for key in ("colors", "errors"):
        if len(arrays[key]) != points:
            raise InputError(f"{path}: '{key}' has {len(arrays[key])} rows, 'points' {points}{named}")
    for key in ("obs_point", "obs_uv", "obs_error"):
        if len(arrays[key]) != observations:
            raise InputError(f"{path}: '{key}' has {len(arrays[key])} rows, 'obs_frame' {observations}{named}")
    for key, limit in (("obs_frame", n_frames), ("obs_point", points)):
        values = raw[key]
        if len(values) and (values.min() < 0 or values.max() >= limit):
            raise InputError(f"{path}: '{key}' must index 0 to {limit - 1}, found {values.min()} to "
                             f"{values.max()}{named}")
    return SparsePoints(**arrays)


def sparse_from_model(model: ColmapModel, image_ids: list[int], intrinsics: np.ndarray) -> SparsePoints:
    """The model's points and their observations in the images ``image_ids`` (obs_frame: the position in
    that list), with each observation's reprojection error through the cameras (F, 10) ``intrinsics``."""
    points = model.points
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    frame = np.array([position.get(i, -1) for i in points.track_image.tolist()], np.int64)
    keep = frame >= 0
    frame, point, idx = frame[keep], points.track_point[keep], points.track_idx[keep]
    image_of = [model.images[i] for i in image_ids]
    offsets = np.cumsum([0] + [len(image.xys) for image in image_of])
    table = np.concatenate([image.xys for image in image_of]) if image_of else np.zeros((0, 2))
    uv = table[offsets[frame] + idx] if len(frame) else np.zeros((0, 2))
    rotations = np.stack([qvec_to_rotation(image.qvec) for image in image_of]) if image_of else np.zeros((0, 3, 3))
    translations = np.stack([image.tvec for image in image_of]) if image_of else np.zeros((0, 3))
    local = np.einsum("nij,nj->ni", rotations[frame], points.xyz[point]) + translations[frame]
    residual = np.linalg.norm(project(local, intrinsics[frame]) - uv, axis=1)
    residual = np.where(np.isfinite(residual), residual, np.float32(1e6))
    errors = points.error.astype(np.float64).copy()
    unknown = errors < 0
    if unknown.any() and len(point):  # text models may say -1: the mean of the observations' errors
        sums = np.bincount(point, residual, minlength=len(points))
        counts = np.bincount(point, minlength=len(points))
        errors[unknown] = np.divide(sums, counts, out=np.zeros(len(points)), where=counts > 0)[unknown]
    return SparsePoints(points=points.xyz.astype(np.float64), colors=points.rgb.astype(np.uint8),
                        errors=errors.astype(np.float32), obs_frame=frame.astype(np.int32),
                        obs_point=point.astype(np.int32), obs_uv=uv.astype(np.float32),
                        obs_error=residual.astype(np.float32))


# ------------------------------------------------------------------------------------------ scenes


def model_transforms(model: ColmapModel, image_prefix: str) -> tuple[dict[str, Any], SparsePoints]:
    """A COLMAP model as a nerfstudio-style transforms dict and its sparse points.

    Frames are the model's images sorted by name, ``file_path`` = ``image_prefix`` + name, with OpenGL
    camera-to-world ``transform_matrix``; intrinsics ``fl_x fl_y cx cy w h`` and the non-zero OpenCV
    coefficients are global keys when every image shares them (nerfstudio's layout), else per frame.
    ``aabb``: :func:`region_of_interest`, when the points give one. obs_frame indexes the frames.
    """
    source = model.source
    ordered = sorted(model.images.values(), key=lambda image: image.name)
    if not ordered:
        raise InputError(f"{source}: the COLMAP model has no registered images")
    intrinsics = np.stack([camera_intrinsics(model.cameras[image.camera_id], source) for image in ordered])
    frames, cameras = [], []
    for image, k in zip(ordered, intrinsics):
        camera = model.cameras[image.camera_id]
        entry: dict[str, Any] = {"fl_x": float(k[0]), "fl_y": float(k[1]), "cx": float(k[2]), "cy": float(k[3]),
                                 "w": camera.width, "h": camera.height}
        entry.update({key: float(v) for key, v in zip(("k1", "k2", "k3", "k4", "p1", "p2"), k[4:]) if v != 0.0})
        entry["camera_model"] = "OPENCV" if np.any(k[4:]) else "PINHOLE"
        cameras.append(entry)
        c2w = camera_to_world(image.qvec, image.tvec)
        frames.append({"file_path": f"{image_prefix}{image.name}", "transform_matrix": c2w.tolist(),
                       "colmap_im_id": image.image_id})
    meta: dict[str, Any] = {}
    if all(entry == cameras[0] for entry in cameras):
        meta.update(cameras[0])
    else:
        for frame, entry in zip(frames, cameras):
            frame.update(entry)
    meta["frames"] = frames
    sparse = sparse_from_model(model, [image.image_id for image in ordered], intrinsics)
    poses = np.stack([np.array(frame["transform_matrix"]) for frame in frames])
    box = region_of_interest(sparse.points, poses, intrinsics)
    if box is not None:
        meta["aabb"] = box.tolist()
    return meta, sparse


def focus_point(c2w: np.ndarray) -> np.ndarray | None:
    """(3,) the least-squares nearest point to every camera's optical axis when most cameras (80 %) look at
    it within 30 degrees, else None (cameras that do not share a focus: a walk-through, a forward capture).
    The same test as recon3d.fit.region.focus_box."""
    centres, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=1, keepdims=True)
    projector = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]
    matrix, vector = projector.sum(axis=0), np.einsum("nij,nj->i", projector, centres)
    if len(c2w) < 2 or np.linalg.cond(matrix) > 1e6:
        return None
    focus = np.linalg.solve(matrix, vector)
    offsets = focus - centres
    distance = np.linalg.norm(offsets, axis=1)
    facing = np.einsum("ni,ni->n", offsets / np.maximum(distance, 1e-12)[:, None], forward)
    if np.mean(facing > math.cos(math.radians(30.0))) < 0.8:
        return None
    return focus


def region_of_interest(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> np.ndarray | None:
    """(2, 3) the box of what a capture is about, from its sparse points (P, 3) and cameras (c2w (N, 4, 4),
    intrinsics (N, >= 4) ``fx fy cx cy``), or None with too few points.

    Object-centric captures (the cameras share a focus, :func:`focus_point`): the points within the view's
    half-width of the focus (at the median camera distance) are the object; otherwise every point. The box
    spans their ROI_PERCENTILES on each axis (stray points do not stretch it), widened by ROI_MARGIN of its
    extent on each side.
    """
    points = np.asarray(points, np.float64)
    if len(points) < ROI_MIN_POINTS:
        return None
    return points_box(object_points(points, c2w, intrinsics))


def object_points(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """The points (P, 3) an object-centric capture is about: those within the view's half-width of the
    cameras' focus (at the median camera distance), when at least ROI_MIN_POINTS are; otherwise all."""
    points, c2w = np.asarray(points, np.float64), np.asarray(c2w, np.float64)
    focus = focus_point(c2w)
    if focus is None:
        return points
    distance = float(np.median(np.linalg.norm(c2w[:, :3, 3] - focus, axis=1)))
    half_view = float(np.min(np.minimum(intrinsics[:, 2] / intrinsics[:, 0], intrinsics[:, 3] / intrinsics[:, 1])))
    near = np.linalg.norm(points - focus, axis=1) <= ROI_FOCUS_RADIUS * distance * half_view
    return points[near] if near.sum() >= ROI_MIN_POINTS else points


def points_box(points: np.ndarray) -> np.ndarray:
    """(2, 3) the ROI_PERCENTILES of points (P, 3) on each axis, widened by ROI_MARGIN of the extent."""
    lo, hi = np.percentile(points, ROI_PERCENTILES, axis=0)
    extent = np.maximum(hi - lo, 1e-6 * max(1.0, float(np.abs(points).max())))
    margin = ROI_MARGIN * extent
    return np.stack([lo - margin, hi + margin])


def find_project(folder: Path) -> tuple[Path, Path] | None:
    """(model folder, images folder) of a COLMAP project: ``sparse/0``, ``sparse`` or nerfstudio's
    ``colmap/sparse/0`` with a complete model, beside an ``images`` folder; None when ``folder`` is none."""
    images = folder / "images"
    if not images.is_dir():
        return None
    for model in (folder / "sparse" / "0", folder / "sparse", folder / "colmap" / "sparse" / "0"):
        if model.is_dir() and model_files(model) is not None:
            return model, images
    return None


def project_transforms(folder: Path) -> tuple[dict[str, Any], SparsePoints, Path]:
    """A COLMAP project as a transforms dict with absolute image paths, its sparse points (obs_frame
    indexing the dict's frames) and the model folder (which messages name)."""
    found = find_project(folder)
    if found is None:
        raise InputError(f"{folder}: not a COLMAP project (sparse/0 or sparse with cameras, images and points3D, "
                         "beside images/)")
    model_dir, images = found
    model = read_model(model_dir)
    prefix = str(images.resolve()) + os.sep
    meta, sparse = model_transforms(model, prefix)
    return meta, sparse, model_dir
