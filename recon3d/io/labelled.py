"""Labelled points in the Occupancy Networks ``points.npz`` format.

Keys: ``points`` (N, 3) (float16 in ONet's release), ``occupancies`` (N,) booleans, either plain or
packed with ``np.packbits`` (then ceil(N / 8) uint8 bytes), and optionally ``loc`` (3,) and ``scale``
(scalar), which map the stored points back to the original mesh's units: x = points · scale + loc.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon3d.errors import InputError, one_line
from recon3d.io.atomic import atomic_open
from recon3d.io.pointcloud import check_npz, require_file

_KEYS = ("points", "occupancies", "loc", "scale")


@dataclass
class LabelledPoints:
    """Points in the input's units with inside (True) / outside (False) labels."""

    points: np.ndarray  # (N, 3) float64
    occupancies: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return int(self.points.shape[0])


def read_labelled_points(path: str | os.PathLike) -> LabelledPoints:
    """Read ONet's points.npz; packed or plain occupancies; loc/scale applied."""
    path = require_file(path)
    check_npz(path, _KEYS)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if key in _KEYS}
            files = list(archive.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({one_line(str(exc))[:160]})") from exc
    if "points" not in arrays:
        raise InputError(f"{path}: no 'points' array (keys: {', '.join(sorted(files)) or 'none'})")
    if "occupancies" not in arrays:
        raise InputError(f"{path}: no 'occupancies' array; a point cloud without labels needs fit-sdf")
    points = _numbers(path, arrays["points"], "points")
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise InputError(f"{path}: 'points' must be a non-empty (N, 3) array, got shape {points.shape}")
    occupancies = _occupancies(path, np.asarray(arrays["occupancies"]), len(points))
    scale_values = _numbers(path, arrays.get("scale", np.ones(1)), "scale").reshape(-1)
    loc = _numbers(path, arrays.get("loc", np.zeros(3)), "loc").reshape(-1)
    scale = float(scale_values[0]) if scale_values.size else float("nan")
    if loc.shape != (3,) or not np.isfinite(loc).all() or not (np.isfinite(scale) and scale > 0):
        raise InputError(f"{path}: 'loc' must be 3 finite numbers and 'scale' a positive number")
    with np.errstate(over="ignore", invalid="ignore"):
        points = points * scale + loc
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        points, occupancies = points[finite], occupancies[finite]
        if len(points) == 0:
            raise InputError(f"{path}: no point has finite coordinates")
    if not occupancies.any():
        raise InputError(f"{path}: no point is labelled inside; there is no shape to fit")
    if occupancies.all():
        raise InputError(f"{path}: every point is labelled inside; there is no boundary to fit")
    return LabelledPoints(points, occupancies)


def _numbers(path: Path, array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as float64, or one InputError when it does not hold real numbers (complex, strings)."""
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: '{name}' holds {array.dtype} values, not real numbers")
    return array.astype(np.float64)


def _occupancies(path: Path, raw: np.ndarray, n: int) -> np.ndarray:
    if raw.dtype.kind not in "biuf":
        raise InputError(f"{path}: 'occupancies' holds {raw.dtype} values, not 0/1 or booleans")
    raw = raw.reshape(-1)
    if raw.size == n:
        if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
            raise InputError(f"{path}: 'occupancies' must be 0/1 or booleans")
        return raw.astype(bool)
    if raw.dtype == np.uint8 and raw.size == (n + 7) // 8:
        return np.unpackbits(raw)[:n].astype(bool)
    raise InputError(f"{path}: 'occupancies' has {raw.size} entries for {n} points "
                     f"(expected {n}, or {(n + 7) // 8} packed bytes)")


def write_labelled_points(path: str | os.PathLike, points: np.ndarray, occupancies: np.ndarray,
                          packed: bool = True, loc: np.ndarray | None = None, scale: float | None = None) -> None:
    """Write ONet's format (float16 points as in the release); ``points`` are the stored coordinates."""
    arrays = {"points": np.asarray(points, dtype=np.float16)}
    occ = np.asarray(occupancies, dtype=bool).reshape(-1)
    arrays["occupancies"] = np.packbits(occ) if packed else occ
    if loc is not None:
        arrays["loc"] = np.asarray(loc, dtype=np.float32)
    if scale is not None:
        arrays["scale"] = np.float32(scale)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)
