"""``recon3d poses``: a folder of photos or a video → a posed scene, and points for a scene with known poses.

:func:`estimate_poses` runs structure from motion on the CPU (recon3d.sfm.colmap_steps) and writes a
scene folder that every scene command reads as it is:

    SCENE/transforms.json      nerfstudio-style cameras (recon3d.sfm.transforms), with "aabb" and "sparse_points"
    SCENE/images/              the photos (copied) or the video's chosen frames
    SCENE/sparse_pc.ply        the sparse points with colours
    SCENE/sparse_points.npz    the points, their errors and every observation (depth supervision)
    SCENE/colmap/sparse/0/     the COLMAP model itself (binary)

The folder is built as a hidden temporary sibling and renamed into place at the end, so a failed or
interrupted run leaves nothing half-written; the input is only read. Images that could not be posed are
left out of the scene with a warning (and listed in the summary); too few posed images is an error that
says what to change in the capture.

:func:`triangulate_scene` keeps a scene's given poses and intrinsics and triangulates points from its
images, writing the same ``sparse_points.npz``: SIFT features and matches, each match checked against the
epipolar geometry of the known poses instead of a RANSAC estimate (as hloc's triangulation does: wide
baselines with few correct matches keep them), and COLMAP's point triangulator with poses and intrinsics
held fixed, two-view tracks included (with few views most points are seen twice). Its points are for depth
supervision (DS-NeRF's setting: points triangulated from the training views' known poses).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon3d.console import info, progress_bar, stage, warn
from recon3d.errors import InputError, Recon3dError, one_line
from recon3d.io.atomic import output_lock
from recon3d.io.colmap import (
    CV_TO_GL,
    SparsePoints,
    load_sparse,
    model_transforms,
    read_model,
    save_sparse,
    sparse_from_model,
)
from recon3d.sfm import colmap_steps as steps
from recon3d.sfm.frames import (
    PHOTO_EXTENSIONS,
    check_video,
    evenly,
    is_video,
    list_photos,
    read_photo,
    video_frames,
    write_photos,
)
from recon3d.sfm.orient import upright_model
from recon3d.sfm.transforms import (
    PLY_NAME,
    SPARSE_NAME,
    TRANSFORMS,
    absolute_paths,
    mean_error,
    ply_bytes,
    read_json,
    write_transforms,
)
from recon3d.threads import check_threads

MATCHERS = ("auto", "exhaustive", "sequential")
CAMERAS = ("auto", "shared", "per-image")
#: Frames taken from a video when --frames is not given.
DEFAULT_VIDEO_FRAMES = 120
#: ``--matcher auto`` matches every pair of up to this many photos; more photos, or a video, sequentially.
EXHAUSTIVE_LIMIT = 100
#: Fewer posed images than max(MIN_REGISTERED, MIN_REGISTERED_FRACTION x the images) is an error.
MIN_REGISTERED = 3
MIN_REGISTERED_FRACTION = 0.25
#: COLMAP maps with its default camera model, one focal length and one radial term; a camera shared by
#: all images (a video, one phone) is then refined as OPENCV when that fits better (colmap_steps).
MAPPING_MODEL = "SIMPLE_RADIAL"
ADVICE = ("take more overlapping views (each part of the object in 3 or more images from nearby viewpoints), "
          "more of them (--frames for a video), sharp and well lit, of a textured subject")


@dataclass
class PosesOptions:
    """Settings of :func:`estimate_poses` (the ``recon3d poses`` options).

    frames: a video's frames to take (default 120); for photos at most this many, evenly spread by name
    (default: all). matcher: ``auto`` (exhaustive up to 100 images, else sequential), ``exhaustive`` or
    ``sequential`` (name order, with loop closure). camera: ``auto`` (a video, or photos of one size and
    one EXIF camera and focal length: ``shared``), ``shared`` or ``per-image``. downscale: shrink photos or
    frames by this integer before SfM (the scene holds the shrunk images). seed: COLMAP's random seed.
    threads: COLMAP's CPU threads (None: every core, COLMAP's default).
    """

    frames: int | None = None
    matcher: str = "auto"
    camera: str = "auto"
    downscale: int = 1
    seed: int = 0
    show_progress: bool = True
    threads: int | None = None


def check_options(options: PosesOptions) -> PosesOptions:
    """One clear error per bad option, named as the user typed it."""
    if options.threads is not None:
        check_threads(options.threads)
    if options.frames is not None and not (isinstance(options.frames, int) and options.frames >= MIN_REGISTERED):
        raise Recon3dError(f"--frames must be an integer of at least {MIN_REGISTERED}, got {options.frames!r}")
    if options.matcher not in MATCHERS:
        raise Recon3dError(f"--matcher must be one of {', '.join(MATCHERS)}, got {options.matcher!r}")
    if options.camera not in CAMERAS:
        raise Recon3dError(f"--camera must be one of {', '.join(CAMERAS)}, got {options.camera!r}")
    if not (isinstance(options.downscale, int) and 1 <= options.downscale <= 64):
        raise Recon3dError(f"--downscale must be an integer from 1 to 64, got {options.downscale!r}")
    if not (isinstance(options.seed, int) and 0 <= options.seed < 2**31):
        raise Recon3dError(f"--seed must be in [0, 2^31), got {options.seed!r}")
    return options


# ------------------------------------------------------------------------------------------ progress


class _Progress:
    """Progress on stderr (recon3d.console): a bar per counted step on a terminal, a spinner for the
    others; plain log lines elsewhere."""

    def __init__(self, show: bool) -> None:
        self.show = show

    @contextlib.contextmanager
    def step(self, label: str, total: int) -> Iterator[Callable[[int, int], None]]:
        if total > 0:
            with progress_bar(label, total, disable=not self.show) as advance:
                yield advance
        else:
            with stage(label, enabled=self.show):
                yield lambda done, of: None


# ------------------------------------------------------------------------------------------ output folder


def _check_paths(source: Path, output: Path) -> None:
    """The input must exist; the output must be a new (or empty) folder outside the input folder."""
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    if output.exists() and not output.is_dir():
        raise Recon3dError(f"{output}: exists and is not a folder; -o names the scene folder to create")
    if output.is_dir() and any(output.iterdir()):
        raise Recon3dError(f"{output}: folder exists and is not empty; choose a new folder for the scene "
                           "(recon3d poses never overwrites)")
    real_out, real_in = output.resolve(), source.resolve()
    if real_out == real_in or (source.is_dir() and real_in in real_out.parents):
        raise Recon3dError(f"{output}: inside the input folder {source}; write the scene elsewhere (recon3d poses "
                           "never changes its input)")
    if not output.parent.resolve().is_dir():
        raise Recon3dError(f"{output}: its folder {output.parent} does not exist")
    if not os.access(output.parent.resolve(), os.W_OK | os.X_OK):
        raise Recon3dError(f"{output}: its folder {output.parent} is not writable")


@contextlib.contextmanager
def _building(output: Path) -> Iterator[Path]:
    """A temporary sibling folder to build the scene in, renamed onto ``output`` when the block succeeds and
    removed whatever happens otherwise; the output's lock is held throughout."""
    parent = output.resolve().parent
    with output_lock(output):
        work = parent / f".{output.name}.{secrets.token_hex(4)}.tmp"
        work.mkdir()  # not mkdtemp: the scene gets the usual permissions (umask), not 0o700
        try:
            yield work
            if output.is_dir():
                output.rmdir()  # empty (checked before): replaced by the finished scene
            os.replace(work, output)
        finally:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------ poses


def estimate_poses(source: str | os.PathLike, output: str | os.PathLike,
                   options: PosesOptions | None = None) -> dict[str, Any]:
    """Pose a folder of photos or a video by structure from motion and write the scene folder ``output``
    (see the module docstring); returns the summary (scene, images, registered, failed, camera, points…)."""
    options = check_options(options or PosesOptions())
    source, output = Path(source), Path(output)
    _check_paths(source, output)
    video = is_video(source)
    if not video and not source.is_dir():
        raise InputError(f"{source}: give a folder of photos or a video file")
    if not video and any((source / name).is_file() for name in (TRANSFORMS, "transforms_train.json")):
        raise InputError(f"{source}: already a posed scene; use --known-poses to triangulate points for it")
    pycolmap = steps.load_pycolmap()
    progress = _Progress(options.show_progress)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with _building(output) as work:
        images = work / "images"
        images.mkdir()
        clock = time.perf_counter()
        if video:
            check_video(source)
            count = options.frames or DEFAULT_VIDEO_FRAMES
            with progress.step(f"choosing {count} sharp frames of {source.name}", 0) as advance:
                names, total_frames, chosen = video_frames(source, count, images, advance)
            shared, kind = options.camera != "per-image", "video"
            skipped: list[str] = []
        else:
            names, shared, skipped = _photos(source, images, options, progress)
            total_frames, kind, chosen = len(names), "photos", []
        seconds["images"] = time.perf_counter() - clock
        if len(names) < MIN_REGISTERED:
            raise InputError(f"{source}: {len(names)} usable image(s); structure from motion needs at least "
                             f"{MIN_REGISTERED} (more is better: 20 to 200)")
        sequential = options.matcher == "sequential" or (options.matcher == "auto" and
                                                         (video or len(names) > EXHAUSTIVE_LIMIT))
        colmap = work / "colmap"
        colmap.mkdir()
        database = colmap / "database.db"
        with steps.colmap_quiet(pycolmap):
            clock = time.perf_counter()
            with progress.step(f"features of {len(names)} images", len(names)) as advance:
                steps.extract(pycolmap, database, images, names, shared, MAPPING_MODEL, advance=advance,
                              threads=options.threads)
            seconds["features"] = time.perf_counter() - clock
            clock = time.perf_counter()
            with progress.step(f"matching ({'sequential' if sequential else 'exhaustive'})", 0):
                steps.match(pycolmap, database, names, sequential, colmap, options.seed,
                            threads=options.threads)
            seconds["matching"] = time.perf_counter() - clock
            clock = time.perf_counter()
            with progress.step("mapping", len(names)) as advance:
                registered = [0]

                def next_image() -> None:
                    registered[0] += 1
                    advance(min(registered[0], len(names)), len(names))

                reconstruction = steps.map_images(pycolmap, database, images, colmap, options.seed, next_image,
                                                  threads=options.threads)
                if reconstruction is not None:  # the initial pair registers without a callback
                    advance(reconstruction.num_reg_images(), len(names))
            posed = steps.registered_names(reconstruction) if reconstruction is not None else []
            need = max(MIN_REGISTERED, math.ceil(MIN_REGISTERED_FRACTION * len(names)))
            if len(posed) < need:
                found = ("no two images share enough matched features to start" if not posed
                         else f"only {len(posed)} of {len(names)} images could be posed (at least {need} needed)")
                raise InputError(f"{source}: {found}; {ADVICE}")
            with progress.step("refining the camera", 0):
                reconstruction, opencv = steps.refine_opencv(pycolmap, reconstruction, colmap)
            seconds["mapping"] = time.perf_counter() - clock
        failed = sorted(set(names) - set(posed))
        if failed:
            warn(f"{len(failed)} of {len(names)} images could not be posed and are left out of the scene "
                 f"(first: {failed[0]})")
        for name in failed:
            (images / name).unlink(missing_ok=True)
        model_dir = colmap / "sparse" / "0"
        model_dir.mkdir(parents=True)
        reconstruction.write(str(model_dir))
        rotation = upright_model(read_model(model_dir))[1]  # the new frame is arbitrary: stand it upright
        reconstruction.transform(pycolmap.Sim3d(np.hstack([rotation, np.zeros((3, 1))])))
        reconstruction.write(str(model_dir))
        shutil.rmtree(colmap / "models", ignore_errors=True)
        shutil.rmtree(colmap / "before_opencv", ignore_errors=True)
        database.unlink(missing_ok=True)
        (colmap / "loop_pairs.txt").unlink(missing_ok=True)
        model = read_model(model_dir)
        kept = set(posed)
        model.images = {i: image for i, image in model.images.items() if image.name in kept}
        meta, sparse = model_transforms(model, "images/")
        write_transforms(work, meta, sparse)
        sizes = {(frame.get("w", meta.get("w")), frame.get("h", meta.get("h"))) for frame in meta["frames"]}
    seconds["total"] = time.perf_counter() - started
    if len(sizes) > 1:
        warn(f"{output}: the images have {len(sizes)} different sizes; recon3d's fit commands need one size: "
             "resize the photos to one size and run poses again")
    return {
        "scene": str(output), "input": str(source), "kind": kind, "images": len(names), "registered": len(posed),
        "failed": failed, "skipped": skipped, "video_frames": total_frames if video else None,
        "frame_indices": chosen if video else None,
        "camera": "shared" if shared else "per-image", "camera_model": "OPENCV" if opencv else MAPPING_MODEL,
        "matcher": "sequential" if sequential else "exhaustive", "points": len(sparse),
        "observations": int(len(sparse.obs_frame)), "mean_reprojection_error": mean_error(sparse),
        "aabb": meta.get("aabb"), "seconds": seconds,
    }  # fmt: skip


def _photos(source: Path, images: Path, options: PosesOptions,
            progress: _Progress) -> tuple[list[str], bool, list[str]]:
    """The folder's photos written into ``images``: (names, whether they share a camera, files left out)."""
    files = list_photos(source)
    if not files:
        raise InputError(f"{source}: no photos in this folder (looked for {', '.join(PHOTO_EXTENSIONS)} files, "
                         "not in subfolders)")
    photos = [read_photo(path) for path in files]
    skipped = [str(path.name) for path, photo in zip(files, photos) if photo is None]
    usable = [photo for photo in photos if photo is not None]
    keep = evenly(len(usable), options.frames)
    if len(keep) < len(usable):
        info(f"poses: {len(keep)} of {len(usable)} photos, evenly spread (--frames {options.frames})")
    usable = [usable[i] for i in keep]
    if options.camera == "auto":
        shared = len({(p.size, p.camera) for p in usable}) == 1
    else:
        shared = options.camera == "shared"
    if shared and len({p.size for p in usable}) > 1:
        raise InputError(f"{source}: --camera shared needs photos of one size; these have "
                         f"{len({p.size for p in usable})} sizes")
    smallest = min(min(p.size) for p in usable) if usable else 0
    if usable and smallest // options.downscale < 16:
        raise Recon3dError(f"--downscale {options.downscale} leaves images smaller than 16 pixels")
    with progress.step(f"copying {len(usable)} photos", len(usable)) as advance:
        names = write_photos(usable, images, options.downscale, advance)
    return names, shared, skipped


# ------------------------------------------------------------------------------------------ known poses


def triangulate_scene(scene: str | os.PathLike, output: str | os.PathLike, split: str = "train",
                      matcher: str = "auto", show_progress: bool = True, seed: int = 0,
                      threads: int | None = None) -> dict[str, Any]:
    """Sparse points of a scene whose poses are known (a Blender or nerfstudio scene, or a COLMAP project):
    SIFT features and matches of its ``split``'s images, then COLMAP's triangulation with the given poses
    and intrinsics held fixed. Writes ``sparse_points.npz`` with ``obs_frame`` indexing the split json's
    ``frames`` list:

    * ``output`` ending in ``.npz``: that file alone; name it in the json with a top-level
      ``"sparse_points": "<file name relative to the json>"`` (for a Blender scene in
      ``transforms_<split>.json``);
    * otherwise a new scene folder: copies of the scene's json files with absolute image paths, the split's
      json naming the new ``sparse_points.npz`` (and ``sparse_pc.ply``), which read_scene then reads.
    """
    from recon3d.io.scene import read_scene

    if matcher not in MATCHERS:
        raise Recon3dError(f"--matcher must be one of {', '.join(MATCHERS)}, got {matcher!r}")
    scene, output = Path(scene), Path(output)
    to_file = output.suffix.lower() == ".npz"
    if to_file:
        if output.exists() and not output.is_file():
            raise Recon3dError(f"{output}: exists and is not a file")
        if not output.parent.resolve().is_dir():
            raise Recon3dError(f"{output}: its folder {output.parent} does not exist")
    else:
        _check_paths(scene, output)
    loaded = read_scene(scene, split)
    if loaded.format == "colmap":
        raise InputError(f"{scene}: a COLMAP project already has its points (points3D)")
    names = [f"{i:05d}.png" for i in range(len(loaded))]
    intrinsics = np.stack([loaded.fx.numpy(), loaded.fy.numpy(), loaded.cx.numpy(), loaded.cy.numpy()], 1)
    distortion = np.zeros((len(loaded), 6)) if loaded.distortion is None else loaded.distortion.double().numpy()
    if np.any(distortion[:, 3] != 0):
        raise InputError(f"{loaded.source}: distortion k4 has no COLMAP camera model; cannot triangulate")
    camera_model = "PINHOLE" if not np.any(distortion) else "FULL_OPENCV" if np.any(distortion[:, 2]) else "OPENCV"
    params = [_colmap_params(camera_model, k.astype(np.float64), d) for k, d in zip(intrinsics, distortion)]
    shared = all(p == params[0] for p in params)
    c2w_cv = loaded.c2w.double().numpy() @ CV_TO_GL
    pycolmap = steps.load_pycolmap()
    progress = _Progress(show_progress)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".recon3d-triangulate.", dir=output.resolve().parent) as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        with progress.step(f"writing {len(names)} images", len(names)) as advance:
            _write_scene_images(loaded, work / "images", names, advance)
        database = work / "database.db"
        sequential = matcher == "sequential" or (matcher == "auto" and len(names) > EXHAUSTIVE_LIMIT)
        with steps.colmap_quiet(pycolmap):
            pycolmap.set_random_seed(int(seed))
            with progress.step(f"features of {len(names)} images", len(names)) as advance:
                steps.extract(pycolmap, database, work / "images", names, shared, camera_model,
                              camera_params=",".join(repr(v) for v in params[0]) if shared else "", advance=advance,
                              threads=threads)
            with progress.step(f"matching ({'sequential' if sequential else 'exhaustive'})", 0):
                steps.match(pycolmap, database, names, sequential, work, seed, verify=False,
                            threads=threads)
                steps.verify_with_poses(pycolmap, database, names, c2w_cv, params, camera_model)
            with progress.step("triangulating", 0):
                reconstruction = steps.triangulate(pycolmap, database, work / "images", work, names, c2w_cv, params,
                                                   camera_model, threads=threads)
        model_dir = work / "model"
        model_dir.mkdir()
        reconstruction.write(str(model_dir))
        model = read_model(model_dir)
        by_name = {image.name: image_id for image_id, image in model.images.items()}
        ids = [by_name[name] for name in names]
        k10 = np.concatenate([intrinsics.astype(np.float64), distortion[:, [0, 1, 2, 3, 4, 5]]], axis=1)
        sparse = sparse_from_model(model, ids, k10)
        frame_index = np.asarray(loaded.frame_index if loaded.frame_index is not None else range(len(names)))
        n_frames = len(read_json(loaded.source).get("frames", []))
        sparse = SparsePoints(sparse.points, sparse.colors, sparse.errors,
                              frame_index[sparse.obs_frame].astype(np.int32), sparse.obs_point, sparse.obs_uv,
                              sparse.obs_error)
        if len(sparse) == 0:
            raise InputError(f"{scene}: no point could be triangulated from the {split} images; {ADVICE}")
        if to_file:
            with output_lock(output):
                save_sparse(output, sparse)
        else:
            with _building(output) as building:
                _write_scene_copy(loaded.source, loaded.format == "blender", building, sparse)
    return {"scene": str(output), "input": str(scene), "split": split, "images": len(names), "points": len(sparse),
            "observations": int(len(sparse.obs_frame)), "frames": n_frames,
            "mean_reprojection_error": mean_error(sparse), "seconds": time.perf_counter() - started}


def triangulated_points(path: str | os.PathLike, scene, seed: int = 0, show_progress: bool = True,
                        threads: int | None = None):
    """Sparse points of ``scene`` (a Scene read from ``path`` without any; its poses known) by
    :func:`triangulate_scene` of its split in a temporary folder, in its images and (downscaled) pixels:
    a SparsePoints, or None with a warning when they cannot be had (no pycolmap, nothing triangulated)."""
    try:
        with tempfile.TemporaryDirectory(prefix="recon3d-points.") as tmp:
            file = Path(tmp) / SPARSE_NAME
            summary = triangulate_scene(path, file, split=scene.split, show_progress=show_progress, seed=seed,
                                        threads=threads)
            sparse = load_sparse(file, int(summary["frames"]))
    except Recon3dError as exc:
        warn(f"{path}: no sparse points ({one_line(str(exc))})")
        return None
    frames = scene.frame_index if scene.frame_index is not None else range(len(scene))
    position = np.full(int(summary["frames"]), -1, dtype=np.int64)
    position[list(frames)] = np.arange(len(scene))
    return sparse.remap_frames(position).downscaled(scene.downscale, scene.width, scene.height)


def _colmap_params(model: str, k: np.ndarray, d: np.ndarray) -> list[float]:
    """COLMAP parameters of a camera ``fx fy cx cy`` with OpenCV ``k1 k2 k3 k4 p1 p2`` (k4 = 0)."""
    if model == "PINHOLE":
        return [float(v) for v in k]
    if model == "OPENCV":
        return [float(v) for v in (*k, d[0], d[1], d[4], d[5])]
    return [float(v) for v in (*k, d[0], d[1], d[4], d[5], d[2], 0.0, 0.0, 0.0)]


def _write_scene_images(scene, folder: Path, names: list[str], advance: Callable[[int, int], None]) -> None:
    """The scene's images as it decodes them (composited on its background), as 8-bit PNGs."""
    from PIL import Image

    for i, name in enumerate(names):
        rgb = scene.image(i).clamp(0, 1).mul(255).round().byte().numpy()
        Image.fromarray(rgb).save(folder / name, format="PNG")
        advance(i + 1, len(names))


def _write_scene_copy(json_path: Path, blender: bool, folder: Path, sparse: SparsePoints) -> None:
    """Copies of the scene's json files (all splits of a Blender scene) with absolute paths; the split's
    json names the new sparse points."""
    import json

    from recon3d.io.atomic import atomic_write_bytes

    sources = sorted(json_path.parent.glob("transforms_*.json")) if blender else [json_path]
    atomic_write_bytes(folder / PLY_NAME, ply_bytes(sparse.points, sparse.colors))
    save_sparse(folder / SPARSE_NAME, sparse)
    for source in sources:
        meta = absolute_paths(read_json(source), source.parent)
        if source == json_path:
            meta.update(sparse_points=SPARSE_NAME, ply_file_path=PLY_NAME)
        atomic_write_bytes(folder / source.name, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
