"""The images structure from motion runs on: a folder's photos, or a video's sharpest frames.

Photos are copied as they are into the scene's ``images/`` folder; one whose EXIF orientation is not
"upright" (phone photos) or that ``--downscale`` shrinks is written upright and shrunk instead, so that
COLMAP (which ignores EXIF orientation) and recon3d's scene reader (which applies it) see the same pixels.
The user's folder is only read.

A video is decoded with PyAV (FFmpeg's libraries in a pip wheel): its duration is cut into N equal time
slots and from each the sharpest frame is kept, sharpness being the variance of the Laplacian of a
downscaled grey frame (Pech-Pacheco et al. 2000; what nerfstudio and instant-ngp's scripts use to drop
blurred frames). The chosen frames are written as JPEG (quality 95), upright (the stream's rotation
applied), named ``frame_00001.jpg``, … in time order.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error

import numpy as np

from recon3d.console import warn
from recon3d.errors import InputError, one_line

#: Photo files structure from motion reads (by extension, any case): what both COLMAP and recon3d decode.
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
#: Files taken as videos (any other file is tried as one too, and refused if FFmpeg cannot read it).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mts", ".m2ts", ".3gp", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".ts")
#: Sharpness is measured on grey frames shrunk to at most this width (fast, and insensitive to sensor noise).
SHARPNESS_WIDTH = 480
#: JPEG quality of written frames and re-encoded photos.
JPEG_QUALITY = 95

Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------------------ photos


@dataclass
class Photo:
    """One input photo: its file, its size as displayed (W, H), its EXIF orientation (1: as stored) and
    what its EXIF says of the camera (make, model, focal length), to tell whether photos share a camera."""

    path: Path
    size: tuple[int, int]
    orientation: int
    camera: tuple


def list_photos(folder: Path) -> list[Path]:
    """The photos directly in ``folder`` (not its subfolders), sorted by name."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS and p.is_file())
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc
    return entries


def read_photo(path: Path) -> Photo | None:
    """The photo's header (nothing decoded), or None with a warning when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            exif = im.getexif()
            orientation = int(exif.get(0x0112, 1) or 1)
            details = exif.get_ifd(0x8769)
            camera = (exif.get(0x010F), exif.get(0x0110), _plain(details.get(0x920A)), _plain(details.get(0xA405)))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError, struct_error) as exc:
        warn(f"{path}: cannot read image ({one_line(str(exc))[:100]}); left out")
        return None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Photo(path, (width, height), orientation if 1 <= orientation <= 8 else 1, camera)


def _plain(value) -> float | None:
    """An EXIF rational as a float (so equal focal lengths compare equal), or None."""
    try:
        return None if value is None else round(float(value), 3)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def evenly(count: int, n: int | None) -> list[int]:
    """Indices of at most ``n`` of ``count`` items, evenly spread (all of them when n is None or larger)."""
    if n is None or n >= count:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / max(n - 1, 1))) for i in range(n)})


def write_photos(photos: list[Photo], folder: Path, downscale: int, progress: Progress | None = None) -> list[str]:
    """Copy each photo into ``folder``, or re-encode it (upright, shrunk by ``downscale``, as JPEG for a
    JPEG and PNG otherwise) when its EXIF orientation turns it, ``downscale`` > 1 or it is neither JPEG nor
    PNG; returns the written names (a repeated name gets a suffix)."""
    from PIL import Image, ImageOps

    names, taken = [], set()
    for i, photo in enumerate(photos):
        suffix = photo.path.suffix.lower()
        copy = photo.orientation == 1 and downscale == 1 and suffix in (".jpg", ".jpeg", ".png")
        name = _unique(photo.path.name if copy or suffix in (".jpg", ".jpeg", ".png")
                       else photo.path.stem + ".png", taken)
        target = folder / name
        if copy:
            shutil.copyfile(photo.path, target)
        else:
            try:
                with Image.open(photo.path) as im:
                    upright = ImageOps.exif_transpose(im)
                    upright = upright.convert("RGBA" if "A" in upright.getbands() else "RGB")
                    if downscale > 1:
                        upright = upright.reduce(downscale)
                    _save(upright, target)
            except (OSError, ValueError, SyntaxError, TypeError, struct_error) as exc:
                raise InputError(f"{photo.path}: cannot read image ({one_line(str(exc))[:100]})") from exc
        names.append(name)
        if progress is not None:
            progress(i + 1, len(photos))
    return names


def _unique(name: str, taken: set[str]) -> str:
    stem, suffix, k = Path(name).stem, Path(name).suffix, 1
    candidate = name
    while candidate.lower() in taken:
        k += 1
        candidate = f"{stem}_{k}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _save(image, target: Path) -> None:
    if target.suffix.lower() == ".png":
        image.save(target, format="PNG")
    else:
        image.convert("RGB").save(target, format="JPEG", quality=JPEG_QUALITY)


# ------------------------------------------------------------------------------------------ video


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a (H, W) grey image: high for sharp frames, low for
    blurred ones (motion blur, focus hunting)."""
    g = np.asarray(grey, np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def select_frames(times: np.ndarray, scores: np.ndarray, n: int) -> list[int]:
    """Indices (increasing) of at most ``n`` frames: the span from the first to the last time is cut into
    ``n`` equal slots and each slot gives its highest-scoring frame (the earliest on ties); slots without
    frames give none. With ``n`` >= the number of frames, every frame."""
    times, scores = np.asarray(times, np.float64), np.asarray(scores, np.float64)
    count = len(times)
    if n >= count:
        return list(range(count))
    span = float(times.max() - times.min()) if count else 0.0
    if span > 0:
        slot = np.minimum(((times - times.min()) / span * n).astype(np.int64), n - 1)
    else:  # no timing: slots by position
        slot = (np.arange(count) * n) // count
    chosen = []
    for k in np.unique(slot):
        members = np.flatnonzero(slot == k)
        chosen.append(int(members[np.argmax(scores[members])]))
    return sorted(chosen)


def _open_video(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read video ({_av_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream in this file")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def check_video(path: Path) -> None:
    """Open the video and decode its first frame, so an unreadable file is one error before any work."""
    container, stream = _open_video(path)
    try:
        for _ in _frames(path, container, stream):
            break
        else:
            raise InputError(f"{path}: the video has no frames")
    finally:
        container.close()


def _av_reason(exc: BaseException) -> str:
    return one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:120]


def _frames(path: Path, container, stream):
    """Decoded frames; a decoding error after the first frames ends the video early with a warning."""
    import av

    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except (av.FFmpegError, OSError, ValueError) as exc:
        if count == 0:
            raise InputError(f"{path}: cannot decode video ({_av_reason(exc)})") from None
        warn(f"{path}: decoding stopped after {count} frames ({_av_reason(exc)}); using those")


def estimated_frames(stream) -> int:
    """The stream's frame count, from its header or duration (0 when unknown): for progress only."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and stream.average_rate:
        return int(float(stream.duration * stream.time_base) * float(stream.average_rate))
    return 0


def video_frames(path: Path, n: int, folder: Path,
                 progress: Progress | None = None) -> tuple[list[str], int, list[int]]:
    """Decode ``path``, write its ``n`` best frames (:func:`select_frames` on sharpness) into ``folder``;
    returns their names, the number of frames the video had and the chosen frames' indices in it. Two
    passes: the sharpness of every frame, then the chosen frames at full size (memory: one frame)."""
    container, stream = _open_video(path)
    times, scores = [], []
    try:
        total = estimated_frames(stream)
        for index, frame in enumerate(_frames(path, container, stream)):
            width = min(SHARPNESS_WIDTH, frame.width)
            height = max(1, round(frame.height * width / frame.width))
            grey = frame.reformat(width=width, height=height, format="gray").to_ndarray()
            times.append(frame.time if frame.time is not None else float(index))
            scores.append(laplacian_variance(grey))
            if progress is not None:
                progress(index + 1, max(total, index + 1) * 2)
    finally:
        container.close()
    if not times:
        raise InputError(f"{path}: the video has no frames")
    chosen = select_frames(np.array(times), np.array(scores), n)
    wanted = set(chosen)
    names: list[str] = []
    container, stream = _open_video(path)
    try:
        for index, frame in enumerate(_frames(path, container, stream)):
            if index in wanted:
                name = f"frame_{len(names) + 1:05d}.jpg"
                _save(_upright(frame), folder / name)
                names.append(name)
                if len(names) == len(chosen):
                    break
            if progress is not None:
                progress(len(times) + index + 1, 2 * len(times))
    finally:
        container.close()
    if len(names) < len(chosen):
        raise InputError(f"{path}: the video decoded differently the second time ({len(names)} of {len(chosen)} "
                         "chosen frames found)")
    return names, len(times), chosen


def _upright(frame):
    """The frame as a Pillow RGB image, turned as the stream's display matrix says (phone videos store
    portrait frames sideways): ``rotation`` is counter-clockwise degrees, as np.rot90 turns."""
    from PIL import Image

    rgb = frame.to_ndarray(format="rgb24")
    turns = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=turns))
    return Image.fromarray(rgb)


def is_video(path: Path) -> bool:
    """Whether a file is to be read as a video: any file that is not a photo."""
    return path.is_file() and path.suffix.lower() not in PHOTO_EXTENSIONS
