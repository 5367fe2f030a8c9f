"""Geometry and image metrics for judging reconstructions against references.

Distances are computed between surface samples with KD-trees (``workers=-1``), so 200k x 200k
samples take a few seconds on two cores. Open3D is optional: only the inside test uses it, lazily,
and a pure numpy ray-parity test takes over where it is missing (the GPU machine has none).
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from recon3d._open3d import import_open3d
from recon3d.errors import InputError, Recon3dError
from recon3d.memory import check_memory
from recon3d.mesh.inside import RayParity
from recon3d.mesh.weld import weld_vertices
from recon3d.points.duplicates import first_occurrences
from recon3d.types import PointCloud, TriMesh

Shape = TriMesh | PointCloud
InsideBackend = Literal["auto", "open3d", "numpy"]

#: F-score thresholds as fractions of the reference bounding-box diagonal, keyed by their label.
_FSCORE_THRESHOLDS = {"0.5%": 0.005, "1%": 0.01}
#: Rough peak bytes per surface sample of :func:`evaluate` (both shapes' samples, their trees and
#: distances, the volume IoU's points).
SAMPLE_BYTES = 512
#: ``evaluate``'s sample counts: fewer than the minimum makes the sampling floor dominate; the maximum
#: bounds memory (a few GB of samples and KD-trees). Seeds: numpy's and torch's 64-bit range, less the
#: offsets evaluate adds for the reference and the volume samples.
MIN_SAMPLES, MAX_SAMPLES = 1000, 50_000_000
MAX_SEED = 2**63 - 2


# --------------------------------------------------------------------------------------------
# Mesh utilities
# --------------------------------------------------------------------------------------------


def face_normals(mesh: TriMesh) -> np.ndarray:
    """Unit normals (F, 3) of the faces, following their winding; zero for degenerate faces."""
    cross = _face_cross(mesh)
    norm = np.linalg.norm(cross, axis=1, keepdims=True)
    return np.divide(cross, norm, out=np.zeros_like(cross), where=norm > 0)


def _face_cross(mesh: TriMesh) -> np.ndarray:
    """Edge cross products (F, 3): length twice the face area, direction the face normal."""
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    return np.cross(b - a, c - a)


def sample_surface(mesh: TriMesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted uniform surface samples (float64) and their face normals (float32).

    Uniform in area so that metrics weigh every part of the surface alike, whatever the
    tessellation; deterministic for a seed so that reported numbers are reproducible.
    """
    areas = 0.5 * np.linalg.norm(_face_cross(mesh), axis=1)
    total = float(areas.sum()) if areas.size else 0.0
    if not total > 0:
        raise InputError("cannot sample the surface of a mesh with no area")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(areas)
    face = np.minimum(np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right"),
                      len(areas) - 1)
    r1, r2 = rng.random((2, n, 1))
    s = np.sqrt(r1)
    a, b, c = (mesh.vertices[mesh.faces[face, k]] for k in range(3))
    points = (1.0 - s) * a + s * (1.0 - r2) * b + s * r2 * c
    return points, face_normals(mesh)[face].astype(np.float32)


def mesh_is_watertight(mesh: TriMesh) -> bool:
    """True when the mesh is closed and consistently oriented, so inside and volume are defined.

    Vertices at the same position count as one (OBJ files split them along texture seams).

    Every directed edge must appear exactly once and its reverse must appear too: then each
    undirected edge is shared by exactly two faces that traverse it in opposite directions.
    """
    faces = np.asarray(mesh.faces)
    n_vertices = mesh.n_vertices
    if faces.ndim != 2 or faces.shape[0] == 0 or faces.shape[1] != 3:
        return False
    faces = faces.astype(np.int64)
    if faces.min() < 0 or faces.max() >= n_vertices:
        return False
    # Vertices split at texture seams are one vertex for the surface: weld by position.
    faces = weld_vertices(np.asarray(mesh.vertices))[1][faces]
    if _has_repeated_corner(faces):
        return False
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    keys = np.sort(start * n_vertices + end)
    if np.any(keys[1:] == keys[:-1]):
        return False
    reverse = end * n_vertices + start
    found = np.searchsorted(keys, reverse).clip(max=len(keys) - 1)
    return bool(np.all(keys[found] == reverse))


def _has_repeated_corner(faces: np.ndarray) -> bool:
    """Whether any face uses the same vertex twice (a degenerate, edge-like face)."""
    a, b, c = faces.T
    return bool(np.any((a == b) | (b == c) | (c == a)))


def mesh_volume(mesh: TriMesh) -> float:
    """Signed enclosed volume by the divergence theorem; positive for outward-facing normals."""
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def bbox_diagonal(points: np.ndarray) -> float:
    """Length of the axis-aligned bounding-box diagonal: the scale that metrics are divided by."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        raise InputError("cannot measure the bounding box of an empty point set")
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


# --------------------------------------------------------------------------------------------
# Inside test
# --------------------------------------------------------------------------------------------


def inside_mesh(mesh: TriMesh, points: np.ndarray, backend: InsideBackend = "auto") -> np.ndarray:
    """Boolean mask of the ``points`` inside a closed mesh.

    ``auto`` uses Open3D's raycasting when it is importable and the numpy ray-parity test
    otherwise; ``open3d`` and ``numpy`` force one (``open3d`` raises if it is unusable).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if backend == "numpy" or len(points) == 0 or mesh.n_faces == 0:
        return _inside_numpy(mesh, points)
    try:
        o3d = import_open3d()
    except Recon3dError:
        if backend == "open3d":
            raise
        return _inside_numpy(mesh, points)
    return _inside_open3d(o3d, mesh, points)


def _inside_open3d(o3d: ModuleType, mesh: TriMesh, points: np.ndarray) -> np.ndarray:
    """Open3D occupancy with three rays per point (majority vote guards against edge hits).

    Coordinates are centred before the float32 cast so that far-from-origin data keeps precision.
    """
    center = 0.5 * (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(mesh.vertices - center, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
    )
    query = o3d.core.Tensor(np.ascontiguousarray(points - center, dtype=np.float32))
    return scene.compute_occupancy(query, nsamples=3).numpy().astype(bool)


def _inside_numpy(mesh: TriMesh, points: np.ndarray) -> np.ndarray:
    """Exact ray parity (recon3d.mesh.inside) on the CPU: needs no Open3D."""
    return RayParity(mesh, "cpu")(points).numpy()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def volume_iou(a: TriMesh, b: TriMesh, n: int = 200_000, seed: int = 0) -> float:
    """Monte-Carlo volumetric IoU of two closed meshes over the union of their bounding boxes."""
    lo = np.minimum(a.vertices.min(axis=0), b.vertices.min(axis=0))
    hi = np.maximum(a.vertices.max(axis=0), b.vertices.max(axis=0))
    points = lo + np.random.default_rng(seed).random((n, 3)) * (hi - lo)
    in_a, in_b = inside_mesh(a, points), inside_mesh(b, points)
    union = np.count_nonzero(in_a | in_b)
    return float(np.count_nonzero(in_a & in_b) / union) if union else 0.0


def evaluate(
    pred: Shape, ref: Shape, n_samples: int = 200_000, seed: int = 0
) -> dict[str, float | bool | int | None]:
    """Compare a prediction with a reference; distances are relative to the reference diagonal.

    Meshes are sampled uniformly (``n_samples`` each; pred with ``seed``, ref with ``seed + 1``,
    so that identical inputs still show the sampling floor); point clouds are used as they are,
    randomly thinned to ``n_samples`` when larger. Values are plain Python scalars (JSON-ready).
    ``n_samples`` must lie in [MIN_SAMPLES, MAX_SAMPLES] and ``seed`` in [0, MAX_SEED) (one clear error).
    """
    check_eval_options(n_samples, seed)
    check_memory(float(n_samples) * SAMPLE_BYTES, f"eval with --samples {n_samples}", "use a smaller --samples")
    diagonal = bbox_diagonal(_extent_points(ref))
    if not diagonal > 0:
        raise InputError("the reference is degenerate: its bounding box has zero diagonal")
    pred_points, pred_normals = _samples(pred, n_samples, seed)
    ref_points, ref_normals = _samples(ref, n_samples, seed + 1)
    to_ref, nearest_ref = _nearest(pred_points, ref_points)
    to_pred, nearest_pred = _nearest(ref_points, pred_points)
    result: dict[str, float | bool | int | None] = {"diagonal": diagonal}
    result.update(_distance_metrics(to_ref, to_pred, diagonal))
    for label, fraction in _FSCORE_THRESHOLDS.items():
        result.update(_fscore(to_ref, to_pred, fraction * diagonal, label))
    result["normal_consistency"] = _normal_consistency(
        pred_normals, ref_normals, nearest_ref, nearest_pred
    )
    result.update(_mesh_metrics(pred, ref, n_samples, seed + 2))
    return result


def check_eval_options(n_samples: object, seed: object) -> None:
    """One clear Recon3dError, naming the eval option, for a sample count or seed out of range."""
    for option, value, low, high in (("--samples", n_samples, MIN_SAMPLES, MAX_SAMPLES),
                                     ("--seed", seed, 0, MAX_SEED - 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise Recon3dError(f"{option} must be an integer, got {value!r}")
        if not low <= int(value) <= high:
            raise Recon3dError(f"{option} must be between {low:,} and {high:,}, got {int(value):,}")


def _extent_points(shape: Shape) -> np.ndarray:
    """The coordinates that define a shape's bounding box: mesh vertices or cloud points."""
    return shape.vertices if isinstance(shape, TriMesh) else shape.points


def _samples(shape: Shape, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (and normals, when known) standing for a shape in the distance metrics."""
    if isinstance(shape, TriMesh):
        return sample_surface(shape, n, seed)
    if len(shape) == 0:
        raise InputError("cannot evaluate an empty point cloud")
    if len(shape) <= n:
        return shape.points, shape.normals
    keep = np.random.default_rng(seed).choice(len(shape), n, replace=False)
    return shape.points[keep], None if shape.normals is None else shape.normals[keep]


def _nearest(query: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query point to its nearest target point, and that point's index.

    Repeated target points are left out of the tree (a k-d tree degenerates on many copies of one point);
    the distances are the same and the index is the first copy's."""
    distinct = first_occurrences(target)
    if distinct is None:
        distance, index = cKDTree(target).query(query, k=1, workers=-1)
        return distance, index
    distance, index = cKDTree(target[distinct]).query(query, k=1, workers=-1)
    return distance, distinct[index]


def _distance_metrics(to_ref: np.ndarray, to_pred: np.ndarray, diagonal: float) -> dict[str, float]:
    """Chamfer, accuracy/completeness and Hausdorff, relative and (where useful) absolute."""
    accuracy, completeness = float(to_ref.mean()), float(to_pred.mean())
    chamfer_abs = 0.5 * (accuracy + completeness)
    chamfer_l2 = 0.5 * (float(np.mean(to_ref**2)) + float(np.mean(to_pred**2)))
    hausdorff_abs = max(float(to_ref.max()), float(to_pred.max()))
    return {
        "chamfer_l1": chamfer_abs / diagonal,
        "chamfer_l2": chamfer_l2 / diagonal**2,
        "accuracy": accuracy / diagonal,
        "completeness": completeness / diagonal,
        "hausdorff": hausdorff_abs / diagonal,
        "chamfer_l1_abs": chamfer_abs,
        "hausdorff_abs": hausdorff_abs,
    }


def _fscore(to_ref: np.ndarray, to_pred: np.ndarray, tau: float, label: str) -> dict[str, float]:
    """Precision, recall and their harmonic mean at distance threshold ``tau``."""
    precision = float(np.mean(to_ref <= tau))
    recall = float(np.mean(to_pred <= tau))
    total = precision + recall
    fscore = 2.0 * precision * recall / total if total > 0 else 0.0
    return {f"fscore@{label}": fscore, f"precision@{label}": precision, f"recall@{label}": recall}


def _normal_consistency(
    pred_normals: np.ndarray | None,
    ref_normals: np.ndarray | None,
    nearest_ref: np.ndarray,
    nearest_pred: np.ndarray,
) -> float | None:
    """Mean |cos| between each sample's normal and its nearest neighbour's, both directions.

    The absolute value ignores orientation, which point-cloud normals often lack.
    """
    if pred_normals is None or ref_normals is None:
        return None
    pred_unit, ref_unit = _unit(pred_normals), _unit(ref_normals)
    forward = np.abs(np.einsum("ij,ij->i", pred_unit, ref_unit[nearest_ref]))
    backward = np.abs(np.einsum("ij,ij->i", ref_unit, pred_unit[nearest_pred]))
    return 0.5 * (float(forward.mean()) + float(backward.mean()))


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)


def _mesh_metrics(
    pred: Shape, ref: Shape, n: int, seed: int
) -> dict[str, float | bool | int | None]:
    """Watertightness, volumetric IoU (closed meshes only) and the prediction's size."""
    pred_closed = mesh_is_watertight(pred) if isinstance(pred, TriMesh) else None
    ref_closed = mesh_is_watertight(ref) if isinstance(ref, TriMesh) else None
    iou = volume_iou(pred, ref, n, seed) if pred_closed and ref_closed else None
    is_mesh = isinstance(pred, TriMesh)
    return {
        "watertight": pred_closed,
        "ref_watertight": ref_closed,
        "volume_iou": iou,
        "n_pred_vertices": pred.n_vertices if is_mesh else None,
        "n_pred_faces": pred.n_faces if is_mesh else None,
    }


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    x, y = _image_pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(max_val**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of images in [0, 1] (Wang et al. 2004).

    Gaussian window (sigma 1.5, 11 taps), K1 = 0.01, K2 = 0.03, population covariances, averaged
    over pixels away from the border and over channels: the same number as scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=1)``.
    """
    x, y = _image_pair(a, b)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    sigma, truncate = 1.5, 3.5
    pad = int(truncate * sigma + 0.5)
    if min(x.shape[:2]) < 2 * pad + 1:
        raise InputError(f"SSIM needs images of at least {2 * pad + 1}x{2 * pad + 1} pixels")

    def blur(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, sigma=(sigma, sigma, 0), truncate=truncate, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[pad:-pad, pad:-pad].mean())


def _image_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays, after checking that their shapes match."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise InputError(f"images differ in shape: {x.shape} vs {y.shape}")
    return x, y
