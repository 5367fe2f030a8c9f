"""The map between the input's units and the field's normalised cube.

The data's bounding box is centred at the origin and scaled so its longest side spans
[-FILL, FILL] inside the field's domain [-1, 1]^3; the margin leaves room for the closed surface
and for samples around it. ``to_world`` (x_world = scale · x_field + translation) goes into every
checkpoint, so meshes come back in the input's own units and placement.
"""

from __future__ import annotations

import numpy as np

from recon3d.errors import InputError

FILL = 0.8
#: Coordinates beyond float32's range cannot be fitted: fields, samples and meshes pass through float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The smallest extent that is still a shape: above float32's smallest normal number, and above this
#: fraction of the largest coordinate (below it the points differ only in their last float64 digits).
MIN_EXTENT = float(np.finfo(np.float32).tiny)
MIN_RELATIVE_EXTENT = 1e-12


def fit_normalization(points: np.ndarray, source: str = "input") -> dict:
    """``to_world`` for a point set: {"scale": s, "translation": [tx, ty, tz]}.

    Raises InputError for non-finite coordinates, coordinates beyond float32's range, and an extent too
    small to tell the points apart."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InputError(f"{source}: some coordinates are NaN or infinite")
    largest = float(max(np.abs(lo).max(), np.abs(hi).max()))
    if largest > FLOAT32_MAX:
        raise InputError(f"{source}: coordinates up to {largest:.3g} are beyond float32's range (±{FLOAT32_MAX:.3g}), "
                         "which fields and meshes use; rescale the input")
    half = float((hi - lo).max()) / 2.0
    if not np.isfinite(half) or half <= 0.0:
        raise InputError(f"{source}: all points are identical; nothing to reconstruct")
    if 2 * half < MIN_EXTENT or 2 * half < MIN_RELATIVE_EXTENT * largest:
        raise InputError(f"{source}: the points span only {2 * half:.3g} at coordinates up to {largest:.3g}, too "
                         "little to tell them apart; rescale the input or subtract an offset")
    return {"scale": half / FILL, "translation": ((lo + hi) / 2.0).tolist()}


def to_field(points: np.ndarray, to_world: dict) -> np.ndarray:
    """Input units → field coordinates."""
    return (points - np.asarray(to_world["translation"])) / to_world["scale"]


def to_input_units(points: np.ndarray, to_world: dict) -> np.ndarray:
    """Field coordinates → the input's units."""
    return points * to_world["scale"] + np.asarray(to_world["translation"])


def data_bounds(points_field: np.ndarray, margin: float = 0.025) -> np.ndarray:
    """The box to mesh: the data's box in field coordinates, grown by ``margin`` of its largest side."""
    lo, hi = points_field.min(axis=0), points_field.max(axis=0)
    pad = margin * float((hi - lo).max())
    return np.stack([np.maximum(lo - pad, -1.0), np.minimum(hi + pad, 1.0)]).astype(np.float64)
