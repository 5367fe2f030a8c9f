"""The pycolmap steps of structure from motion, on the CPU: SIFT features, matching, incremental mapping,
and triangulation from known poses.

pycolmap (COLMAP's Python bindings, pip wheels) runs COLMAP's own pipeline (Schönberger & Frahm,
"Structure-from-Motion Revisited", CVPR 2016): SIFT extraction into a database, matching with geometric
verification, then incremental mapping (an initial pair, images registered one by one, triangulation,
bundle adjustment). Mapping starts every camera as COLMAP's default SIMPLE_RADIAL (one focal length, one
radial term: the most stable start); a shared camera is then refined as OPENCV (fx, fy, k1, k2, p1, p2) by
one global bundle adjustment, kept when it lowers the mean reprojection error by at least 1 % with
plausible values (a narrow view of a small object leaves focal length and distortion undetermined, and the
solver then wanders off along that direction).

Matching is exhaustive for small sets; for a video (or many photos) it is sequential — each frame against
its 10 successors and those at power-of-two distances (``quadratic_overlap``) — plus loop closure: every
pair of about 25 evenly spread keyframes, so a capture that circles the object back to its start closes
its loop without COLMAP's vocabulary tree (a separate download).

With known poses (:func:`triangulate`), matches are checked against the poses' epipolar geometry instead
of a RANSAC estimate (:func:`verify_with_poses`, as hloc's triangulation does) and COLMAP's point
triangulator keeps the poses and intrinsics fixed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from recon3d.errors import Recon3dError

#: SIFT runs on images shrunk to at most this many pixels on their longest side (COLMAP's default).
SIFT_MAX_SIZE = 3200
#: Sequential matching: each image against this many successors.
SEQUENTIAL_OVERLAP = 10
#: Loop closure of sequential matching: about this many keyframes, all matched with each other.
LOOP_KEYFRAMES = 25
#: Feature extraction runs in this many pieces, so progress can be shown.
EXTRACTION_PIECES = 10

Advance = Callable[[int, int], None]


def load_pycolmap() -> ModuleType:
    """pycolmap, imported after Python's zlib module and Pillow's codecs: pycolmap's extension carries its own
    zlib symbols, and a system zlib first loaded after it crashes the process on first use (SIGABRT in
    deflateEnd, seen with pycolmap 4.2 and Pillow 13)."""
    import zlib  # noqa: F401

    from PIL import Image  # noqa: F401

    try:
        import pycolmap
    except ImportError as exc:
        raise Recon3dError("recon3d poses needs pycolmap (pip install pycolmap)") from exc
    return pycolmap


@contextlib.contextmanager
def colmap_quiet(pycolmap: ModuleType) -> Iterator[None]:
    """Silence COLMAP's own log lines (glog on stderr) while the block runs; recon3d reports instead."""
    logging = pycolmap.logging
    before = logging.minloglevel
    logging.minloglevel = 3
    try:
        yield
    finally:
        logging.minloglevel = before


def _num_threads(threads: int | None) -> int:
    """COLMAP's ``num_threads``: the count asked for, or -1 (every core) for None."""
    return -1 if threads is None else int(threads)


def extract(pycolmap: ModuleType, database: Path, images: Path, names: list[str], shared: bool, camera_model: str,
            camera_params: str = "", advance: Advance | None = None, threads: int | None = None) -> None:
    """SIFT features of ``names`` (in ``images``) into ``database``: one camera for all (``shared``) or one
    per image, of COLMAP model ``camera_model``; ``camera_params`` (COLMAP's comma-separated parameters)
    fixes the intrinsics, else they start from EXIF or 1.2 x the image size."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    if camera_params:
        reader.camera_params = camera_params
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = SIFT_MAX_SIZE
    options.num_threads = _num_threads(threads)
    mode = pycolmap.CameraMode.SINGLE if shared else pycolmap.CameraMode.PER_IMAGE
    step = max(1, math.ceil(len(names) / EXTRACTION_PIECES))
    for start in range(0, len(names), step):
        pycolmap.extract_features(database, images, image_names=names[start:start + step], camera_mode=mode,
                                  reader_options=reader, extraction_options=options, device=pycolmap.Device.cpu)
        if shared and start == 0:  # later pieces join the first piece's camera
            with contextlib.closing(pycolmap.Database.open(database)) as db:
                reader.existing_camera_id = int(db.read_all_cameras()[0].camera_id)
        if advance is not None:
            advance(min(start + step, len(names)), len(names))


def loop_pairs(names: list[str], overlap: int = SEQUENTIAL_OVERLAP,
               keyframes: int = LOOP_KEYFRAMES) -> list[tuple[str, str]]:
    """Pairs of evenly spread keyframes (in name order) farther apart than sequential matching reaches."""
    count = len(names)
    step = max(1, count // keyframes)
    keys = list(range(0, count, step))
    return [(names[a], names[b]) for i, a in enumerate(keys) for b in keys[i + 1:] if b - a > overlap]


def match(pycolmap: ModuleType, database: Path, names: list[str], sequential: bool, work: Path,
          seed: int = 0, verify: bool = True, threads: int | None = None) -> None:
    """Match features: every pair (exhaustive), or sequential in name order with loop closure pairs.
    Geometric verification's RANSAC gets ``seed`` (COLMAP's default draws a new one every run);
    ``verify=False`` stores the raw matches only (for :func:`verify_with_poses`)."""
    device = pycolmap.Device.cpu
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(seed)
    matching = pycolmap.FeatureMatchingOptions()
    matching.skip_geometric_verification = not verify
    matching.num_threads = _num_threads(threads)
    if not sequential:
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=device)
        return
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = SEQUENTIAL_OVERLAP
    pairing.quadratic_overlap = True
    pairing.loop_detection = False
    pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                              verification_options=verification, device=device)
    pairs = loop_pairs(sorted(names))
    if pairs:
        listing = work / "loop_pairs.txt"
        listing.write_text("".join(f"{a} {b}\n" for a, b in pairs), encoding="utf-8")
        imported = pycolmap.ImportedPairingOptions()
        imported.match_list_path = str(listing)
        pycolmap.match_image_pairs(database, matching_options=matching, pairing_options=imported,
                                   verification_options=verification, device=device)


def map_images(pycolmap: ModuleType, database: Path, images: Path, work: Path, seed: int,
               advance: Callable[[], None] | None = None, threads: int | None = None):
    """Incremental mapping; the largest reconstruction (most registered images), or None when none could
    be started. ``advance()`` is called as each image is registered."""
    options = pycolmap.IncrementalPipelineOptions()
    options.min_model_size = 3
    options.num_threads = _num_threads(threads)
    options.random_seed = int(seed)
    options.mapper.random_seed = int(seed)
    options.triangulation.random_seed = int(seed)
    output = work / "models"
    output.mkdir(parents=True, exist_ok=True)
    pycolmap.set_random_seed(int(seed))
    models = pycolmap.incremental_mapping(database, images, output, options=options,
                                          next_image_callback=advance)
    if not models:
        return None
    return max(models.values(), key=lambda model: model.num_reg_images())


#: The OPENCV refinement is kept when it lowers the mean reprojection error to this fraction or less, moves
#: the focal length by at most OPENCV_MAX_FOCAL_CHANGE, and keeps |k1|, |k2| <= 1 and |p1|, |p2| <= 0.1.
OPENCV_MIN_GAIN = 0.99
OPENCV_MAX_FOCAL_CHANGE = 0.15


def refine_opencv(pycolmap: ModuleType, reconstruction, work: Path):
    """(reconstruction, whether its one shared SIMPLE_RADIAL camera became OPENCV): see the module docstring."""
    if len(reconstruction.cameras) != 1:
        return reconstruction, False
    camera_id, camera = next(iter(reconstruction.cameras.items()))
    if camera.model != pycolmap.CameraModelId.SIMPLE_RADIAL:
        return reconstruction, False
    backup = work / "before_opencv"
    backup.mkdir(parents=True, exist_ok=True)
    reconstruction.write(str(backup))
    before = reconstruction.compute_mean_reprojection_error()
    f, cx, cy, k = (float(v) for v in camera.params)
    camera.model = pycolmap.CameraModelId.OPENCV
    camera.params = [f, f, cx, cy, k, 0.0, 0.0, 0.0]
    bundle_adjust(pycolmap, reconstruction)
    after = reconstruction.compute_mean_reprojection_error()
    fx, fy, _, _, k1, k2, p1, p2 = (float(v) for v in reconstruction.cameras[camera_id].params)
    plausible = (max(abs(fx / f - 1.0), abs(fy / f - 1.0)) <= OPENCV_MAX_FOCAL_CHANGE and max(abs(k1), abs(k2)) <= 1.0
                 and max(abs(p1), abs(p2)) <= 0.1)
    if plausible and after <= OPENCV_MIN_GAIN * before:
        return reconstruction, True
    return pycolmap.Reconstruction(str(backup)), False


def bundle_adjust(pycolmap: ModuleType, reconstruction) -> None:
    """One global bundle adjustment of every registered image, points and intrinsics (focal lengths and
    distortion; the principal point stays), the gauge fixed by two cameras as COLMAP's global BA does. The
    adjuster is called directly: pycolmap.bundle_adjustment logs past COLMAP's log level and may normalise
    the reconstruction's frame."""
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in reconstruction.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(options, config, reconstruction).solve()
    reconstruction.update_point_3d_errors()  # the points' stored errors, which the mean error reads


def registered_names(reconstruction) -> list[str]:
    """Names of the images the reconstruction has poses for."""
    return sorted(reconstruction.images[i].name for i in reconstruction.reg_image_ids())


#: Known poses: a match is kept when its Sampson distance to the epipolar geometry of the given poses is
#: within this many pixels (COLMAP's RANSAC threshold), and a pair when it keeps this many matches (RANSAC,
#: which must find the geometry from the matches, wants 15 and a high inlier ratio).
EPIPOLAR_MAX_ERROR = 4.0
MIN_POSE_INLIERS = 8


class _KnownViews:
    """Per image of a database: keypoints as normalised rays through the known cameras (distortion undone),
    world-to-camera (R, t) from the known poses, and focal length."""

    def __init__(self, pycolmap: ModuleType, db, names: list[str], c2w_cv: np.ndarray, params: list[list[float]],
                 camera_model: str) -> None:
        index = {name: i for i, name in enumerate(names)}
        sizes = {int(camera.camera_id): (camera.width, camera.height) for camera in db.read_all_cameras()}
        self.rays, self.poses, self.focal = {}, {}, {}
        for row in db.read_all_images():
            i, image_id = index[row.name], int(row.image_id)
            width, height = sizes[row.camera_id]
            camera = pycolmap.Camera(model=camera_model, width=width, height=height, params=params[i])
            keypoints = np.asarray(db.read_keypoints(image_id)[:, :2], np.float64)
            normalised = camera.cam_from_img(keypoints) if len(keypoints) else np.zeros((0, 2))
            self.rays[image_id] = np.hstack([normalised, np.ones((len(normalised), 1))])
            rotation = c2w_cv[i, :3, :3].T
            self.poses[image_id] = (rotation, -rotation @ c2w_cv[i, :3, 3])
            self.focal[image_id] = 0.5 * (params[i][0] + params[i][1])

    def essential(self, id1: int, id2: int) -> np.ndarray:
        """E with x2^T E x1 = 0 for normalised rays x1 of image id1 and x2 of image id2."""
        (r1, t1), (r2, t2) = self.poses[id1], self.poses[id2]
        rotation = r2 @ r1.T
        t = t2 - rotation @ t1
        return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ rotation

    def limit(self, id1: int, id2: int) -> float:
        """The largest Sampson distance kept, in normalised units squared."""
        return (EPIPOLAR_MAX_ERROR / (0.5 * (self.focal[id1] + self.focal[id2]))) ** 2


def _sampson(x1: np.ndarray, x2: np.ndarray, essential: np.ndarray) -> np.ndarray:
    """(N,) squared Sampson distances of ray pairs (N, 3) to the epipolar geometry E."""
    ex1, etx2 = x1 @ essential.T, x2 @ essential
    residual = np.einsum("ni,ni->n", x2, ex1)
    return residual**2 / (ex1[:, 0] ** 2 + ex1[:, 1] ** 2 + etx2[:, 0] ** 2 + etx2[:, 1] ** 2 + 1e-300)


def _write_pair(pycolmap: ModuleType, db, id1: int, id2: int, matches: np.ndarray, essential: np.ndarray) -> None:
    """The pair's verified matches as a calibrated two-view geometry (what the triangulator reads)."""
    geometry = pycolmap.TwoViewGeometry()
    geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
    geometry.E = essential
    geometry.inlier_matches = np.ascontiguousarray(matches, dtype=np.uint32)
    db.write_two_view_geometry(id1, id2, geometry)


def verify_with_poses(pycolmap: ModuleType, database: Path, names: list[str], c2w_cv: np.ndarray,
                      params: list[list[float]], camera_model: str) -> int:
    """Geometric verification by the known poses instead of RANSAC (as hloc's triangulation does): each raw
    match is kept when it fits the pair's essential matrix (keypoints undistorted by the known cameras).
    Writes the pairs' kept matches as calibrated two-view geometries; returns how many pairs kept some."""
    kept = 0
    with contextlib.closing(pycolmap.Database.open(database)) as db:
        views = _KnownViews(pycolmap, db, names, c2w_cv, params, camera_model)
        pair_ids, all_matches = db.read_all_matches()
        for pair_id, matches in zip(pair_ids, all_matches):
            id1, id2 = (int(v) for v in pycolmap.pair_id_to_image_pair(pair_id))
            essential = views.essential(id1, id2)
            inliers = matches[_sampson(views.rays[id1][matches[:, 0]], views.rays[id2][matches[:, 1]], essential)
                              <= views.limit(id1, id2)] if len(matches) else matches
            if len(inliers) >= MIN_POSE_INLIERS:
                _write_pair(pycolmap, db, id1, id2, inliers, essential)
                kept += 1
    return kept


def triangulate(pycolmap: ModuleType, database: Path, images: Path, work: Path, names: list[str],
                c2w_cv: np.ndarray, params: list[list[float]], camera_model: str, threads: int | None = None):
    """Points triangulated from known poses: a reconstruction holding every image of the database with its
    given camera-to-world ``c2w_cv`` (N, 4, 4) (OpenCV axes, in the order of ``names``) and intrinsics
    (``params``: the COLMAP ``camera_model`` parameters of each image), then COLMAP's point triangulator
    (poses and intrinsics held fixed; bundle adjustment moves only the points)."""
    index = {name: i for i, name in enumerate(names)}
    reconstruction = pycolmap.Reconstruction()
    with contextlib.closing(pycolmap.Database.open(database)) as db:
        rows = db.read_all_images()
        keypoints = {row.image_id: db.read_keypoints(row.image_id) for row in rows}
        cameras = {int(camera.camera_id): camera for camera in db.read_all_cameras()}
    added = set()
    for row in rows:
        i = index[row.name]
        if row.camera_id not in added:
            camera = cameras[row.camera_id]
            camera.params = np.asarray(params[i], np.float64)
            reconstruction.add_camera_with_trivial_rig(camera)
            added.add(row.camera_id)
        rotation = c2w_cv[i, :3, :3].T
        pose = pycolmap.Rigid3d(np.hstack([rotation, -(rotation @ c2w_cv[i, :3, 3])[:, None]]))
        image = pycolmap.Image(name=row.name, keypoints=np.asarray(keypoints[row.image_id][:, :2], np.float64),
                               camera_id=row.camera_id, image_id=row.image_id)
        reconstruction.add_image_with_trivial_frame(image, pose)
    output = work / "triangulated"
    output.mkdir(parents=True, exist_ok=True)
    options = pycolmap.IncrementalPipelineOptions()
    options.triangulation.ignore_two_view_tracks = False  # with few views most points are seen twice
    options.num_threads = _num_threads(threads)
    return pycolmap.triangulate_points(reconstruction, database, images, output, options=options)
