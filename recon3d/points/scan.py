"""Preparing a raw scan for a surface fit, in named stages: check, collapse duplicates, normalise, leave
out isolated points, smooth noise, choose or estimate normals. Numpy in, numpy out, in field coordinates.

Each stage is a plain function; :func:`clean_scan` runs them in order and shares one neighbour
query between the isolation test and the normals when no point leaves or moves. A deadline (from
``--max-seconds``) is checked between stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from recon3d.console import info, warn
from recon3d.errors import InputError, Recon3dError
from recon3d.memory import check_memory
from recon3d.points.denoise import NOISE_THRESHOLD, REUSE_NEIGHBOUR_IDS, noise_ratio, smooth_until_quiet
from recon3d.points.duplicates import first_occurrences
from recon3d.points.normalize import fit_normalization, to_field
from recon3d.points.normals import NEIGHBOURS, neighbourhood, orient_normals, pca_normals, sign_disagreement
from recon3d.points.outliers import ISOLATION_FACTOR, ISOLATION_NEIGHBOURS, isolated_points
from recon3d.types import PointCloud

#: Fewest points a surface is fitted to.
MIN_POINTS = 16
NORMAL_MODES = ("auto", "estimate", "ignore")
DENOISE_MODES = ("auto", "on", "off")
OUTLIER_MODES = ("drop", "keep")
NORMAL_ORIGINS = {"file": "from the file", "estimated": "estimated (PCA, MST-oriented)", "none": "none"}
#: File normals whose signs disagree between neighbours on one plane more often than this are
#: replaced by estimated ones (see recon3d.points.normals.sign_disagreement).
SIGN_DISAGREEMENT = 0.1
#: Neighbours of the local fit each point of a noisy scan is smoothed onto (recon3d.points.denoise).
SMOOTH_NEIGHBOURS = 64
#: The smoothing passes: the first always, each next one only while the noise ratio is still at least
#: SMOOTH_REPEAT_ABOVE. Quadrics after the first plane: they follow curvature instead of pulling the
#: points to the inside of curves.
SMOOTH_PASSES = ("plane", "quadric", "quadric")
SMOOTH_REPEAT_ABOVE = 0.1
#: Rough peak bytes per scan point of the preparation (neighbour queries, normals, smoothing).
PREPARE_POINT_BYTES = 2048

Query = tuple[np.ndarray, np.ndarray]  # (distances (N, k), neighbour ids (N, k)), self first


@dataclass
class CleanScan:
    """A scan ready for fitting, in field coordinates (see recon3d.points.normalize)."""

    points: np.ndarray  # (N, 3) float32
    normals: np.ndarray | None  # (N, 3) float32 unit, oriented; None without normals
    origin: str  # where the normals come from: "file" | "estimated" | "none"
    spacing: np.ndarray  # (N,) distance to the NEIGHBOURS-th neighbour
    to_world: dict  # field coordinates → the input's units
    noise_ratio: float = 0.0  # see recon3d.points.denoise
    denoised: bool = False
    smoothing_passes: int = 0
    outliers_dropped: int = 0
    duplicates_dropped: int = 0


def check_size(cloud: PointCloud, source: str) -> None:
    """Stage 1: enough points to fit a surface to."""
    if len(cloud) < MIN_POINTS:
        raise InputError(f"{source}: only {len(cloud)} points; at least {MIN_POINTS} are needed to fit a surface")


def check_preparation_memory(cloud: PointCloud, source: str) -> None:
    """The memory to prepare the (distinct) points: neighbour queries, normals, smoothing."""
    check_memory(len(cloud) * PREPARE_POINT_BYTES, f"{source}: preparing {len(cloud):,} points",
                 "thin the scan first (e.g. voxel downsampling)")


def drop_duplicates(cloud: PointCloud, source: str) -> tuple[PointCloud, int]:
    """Stage 2: collapse points at the same coordinates as an earlier point (the first one's normal is
    kept), with a warning: neighbour queries degenerate on them (recon3d.points.duplicates)."""
    keep = first_occurrences(cloud.points)
    if keep is None:
        return cloud, 0
    dropped = len(cloud) - len(keep)
    if len(keep) == 1:
        raise InputError(f"{source}: all {len(cloud):,} points are identical; nothing to reconstruct")
    cloud = PointCloud(cloud.points[keep], None if cloud.normals is None else cloud.normals[keep])
    warn(f"{source}: collapsed {dropped:,} duplicate point{'s' if dropped > 1 else ''} (at the same coordinates as an "
         "earlier point, such as a scanner's invalid returns at the origin); the first of each is kept")
    if len(cloud) < MIN_POINTS:
        raise InputError(f"{source}: only {len(cloud)} distinct points; at least {MIN_POINTS} are needed to fit a "
                         "surface")
    return cloud, dropped


def check_deadline(deadline: float | None, source: str, stage: str) -> None:
    """One clear error when preparation has run past ``deadline`` (a time.monotonic() value)."""
    if deadline is not None and time.monotonic() > deadline:
        raise Recon3dError(f"{source}: preparing the input did not finish within --max-seconds (still {stage}); "
                           "nothing was trained: raise --max-seconds or thin the input")


def normalise(cloud: PointCloud, source: str) -> tuple[dict, np.ndarray]:
    """Stage 2: (to_world, the points in field coordinates as float32)."""
    to_world = fit_normalization(cloud.points, source)
    return to_world, to_field(cloud.points, to_world).astype(np.float32)


def drop_isolated(cloud: PointCloud, distances: np.ndarray, source: str) -> tuple[PointCloud, int]:
    """Stage 3: leave out the isolated points (recon3d.points.outliers), with a warning."""
    stray = isolated_points(cloud.points, distances=distances)
    dropped = int(stray.sum())
    if not dropped:
        return cloud, 0
    keep = ~stray
    cloud = PointCloud(cloud.points[keep], None if cloud.normals is None else cloud.normals[keep])
    warn(f"{source}: left out {dropped:,} isolated point{'s' if dropped > 1 else ''} (their "
         f"{ISOLATION_NEIGHBOURS}th neighbour "
         f"more than {ISOLATION_FACTOR:g}× the scan's median distance away; --outliers keep keeps them)")
    if len(cloud) < MIN_POINTS:
        raise InputError(f"{source}: only {len(cloud)} points are not isolated; at least {MIN_POINTS} are "
                         "needed to fit a surface (--outliers keep uses them all)")
    return cloud, dropped


def warn_if_collapsed(points: np.ndarray, source: str, query: Query | None) -> None:
    """Most points at one position in the field's float32 coordinates: a few points far from the rest
    (kept, or too many to count as isolated) set the scale and shrink the object below float32's resolution."""
    if query is not None:
        collapsed = not float(np.median(query[0][:, -1])) > 0
    else:
        keep = first_occurrences(points)
        collapsed = keep is not None and len(keep) < 0.5 * len(points)
    if collapsed:
        warn(f"{source}: most points coincide in the field's coordinates: a few points far from the rest set the "
             "scale and the object shrinks to nothing; leave the far points out (--outliers drop) or crop the scan")


def warn_if_flat(points: np.ndarray, source: str) -> None:
    """A scan without extent along one axis gives a thin shell, not a solid."""
    if float(np.ptp(points, axis=0).min()) < 1e-6:
        warn(f"{source}: the points are flat (zero extent along one axis); the surface will be a thin shell")


def will_smooth(denoise: str, ratio: float) -> bool:
    """Whether stage 4 smooths a scan of this noise ratio under ``denoise`` (on, off, auto)."""
    return denoise == "on" or (denoise == "auto" and ratio >= NOISE_THRESHOLD)


def smooth_if_noisy(points: np.ndarray, denoise: str, device: torch.device,
                    source: str, ratio: float | None = None,
                    neighbours: np.ndarray | None = None) -> tuple[np.ndarray, float, list[float]]:
    """Stage 4: (points, noise ratio, the ratio after each smoothing pass run; empty when not smoothed).

    ``denoise``: ``on``, ``off``, or ``auto`` (when the noise ratio reaches NOISE_THRESHOLD). ``ratio``:
    these points' noise ratio when already measured; ``neighbours``: their SMOOTH_NEIGHBOURS nearest when
    already queried."""
    ratio = noise_ratio(points, device=device) if ratio is None else ratio
    if not will_smooth(denoise, ratio):
        return points, ratio, []
    points, after = smooth_until_quiet(points, SMOOTH_NEIGHBOURS, SMOOTH_PASSES, SMOOTH_REPEAT_ABOVE, device,
                                       neighbours=neighbours)
    passes = ", ".join(SMOOTH_PASSES[:len(after)])
    info(f"{source}: noise {ratio:.2f} of the point spacing: points smoothed onto the local fits of their "
         f"{SMOOTH_NEIGHBOURS} neighbours ({passes}; {after[-1]:.2f} after; --denoise off keeps them)")
    return points, ratio, after


def normal_origin(cloud: PointCloud, mode: str) -> str:
    """Where the normals will come from: the file's (``auto``), estimated, or none (``ignore``)."""
    if mode == "ignore":
        return "none"
    return "file" if cloud.normals is not None and mode == "auto" else "estimated"


def choose_normals(cloud: PointCloud, points: np.ndarray, origin: str, device: torch.device, source: str,
                   query: Query | None) -> tuple[np.ndarray | None, str, np.ndarray]:
    """Stage 5: (oriented normals or None, their origin, each point's spacing).

    File normals whose signs disagree between neighbours (a double-sided soup, a writer that lost the
    signs) are replaced by estimated ones: PCA planes oriented over a spanning tree (Hoppe et al. 1992).
    ``query``: the NEIGHBOURS-nearest query of these points when already made.
    """
    # PCA only when the normals are estimated; otherwise the neighbour query is for the spacing alone.
    unoriented, spacing, neighbours = neighbourhood(points, pca=origin == "estimated", device=device, query=query)
    normals = None
    if origin == "file":
        normals = cloud.normals.astype(np.float32)
        disagreement = sign_disagreement(points, normals, neighbours, device=device)
        if disagreement > SIGN_DISAGREEMENT:
            warn(f"{source}: the file's normals point to opposite sides between neighbours on one plane "
                 f"({disagreement:.0%} of them); estimating normals instead")
            origin, normals = "estimated", None
            unoriented = pca_normals(points, neighbours, device)
    if origin == "estimated":
        normals = orient_normals(points, unoriented, neighbours, device=device)
    return normals, origin, spacing


def clean_scan(cloud: PointCloud, normals_mode: str, device: torch.device, source: str,
               denoise: str = "auto", outliers: str = "drop", deadline: float | None = None) -> CleanScan:
    """Every stage in order: the scan without duplicate points, normalised without its isolated points,
    smoothed if it is noisy, with the normals it has or estimated ones. ``deadline``: a time.monotonic()
    value past which the next stage is not started (one clear error instead)."""
    check_size(cloud, source)
    cloud, duplicates = drop_duplicates(cloud, source)
    check_preparation_memory(cloud, source)
    to_world, points = normalise(cloud, source)
    check_deadline(deadline, source, "looking for isolated points")
    # One tree and one k-nearest query serve the noise measure, the isolation test and, unless points
    # leave, the smoothing (a noisy scan is queried with its neighbour count at once) or else the normals.
    tree = cKDTree(points)
    ratio: float | None = noise_ratio(points, tree=tree, device=device)
    k = max(NEIGHBOURS, ISOLATION_NEIGHBOURS)
    wide = k
    if will_smooth(denoise, ratio) and len(points) * SMOOTH_NEIGHBOURS <= REUSE_NEIGHBOUR_IDS:
        wide = max(k, SMOOTH_NEIGHBOURS)
    distances, ids = tree.query(points, k=min(wide, len(points)), workers=-1)
    del tree
    query: Query | None = (distances[:, :k], ids[:, :k]) if wide > k else (distances, ids)
    smooth_ids = ids if wide > k else None
    del distances, ids
    dropped = 0
    if outliers == "drop":
        cloud, dropped = drop_isolated(cloud, query[0], source)
        if dropped:
            to_world, points = normalise(cloud, source)
            query = ratio = smooth_ids = None
    warn_if_collapsed(points, source, query)
    if smooth_ids is not None:
        query = None  # the points move: the normals need their own query
    warn_if_flat(points, source)
    check_deadline(deadline, source, "measuring the noise")
    start = time.perf_counter()
    points, ratio, after = smooth_if_noisy(points, denoise, device, source, ratio, smooth_ids)
    del smooth_ids
    smoothed = bool(after)
    if query is not None and not smoothed:
        query = (np.ascontiguousarray(query[0][:, :NEIGHBOURS]), np.ascontiguousarray(query[1][:, :NEIGHBOURS]))
    check_deadline(deadline, source, "choosing normals")
    normals, origin, spacing = choose_normals(cloud, points, normal_origin(cloud, normals_mode), device, source,
                                              None if smoothed else query)
    info(f"{source}: {len(points):,} points, normals: {NORMAL_ORIGINS[origin]} ({time.perf_counter() - start:.1f} s)")
    return CleanScan(points=points, normals=normals, origin=origin, spacing=spacing, to_world=to_world,
                     noise_ratio=ratio, denoised=smoothed, smoothing_passes=len(after), outliers_dropped=dropped,
                     duplicates_dropped=duplicates)
