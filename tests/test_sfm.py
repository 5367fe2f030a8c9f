"""recon3d poses (recon3d.sfm): frame selection, structure from motion on a scene rendered here with known
cameras (poses recovered up to a similarity), points triangulated from known poses lying on the true
surface, and bad input (no photos, an unreadable video, photos that do not overlap) as one error line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from recon3d.errors import InputError
from recon3d.io.colmap import ColmapCamera, ColmapImage, ColmapModel, ColmapPoints, qvec_to_rotation, world_to_camera
from recon3d.io.scene import read_scene, write_blender_scene
from recon3d.meshscene import Camera, MeshCaster, face_normals, icosphere, look_at, scene_mesh
from recon3d.sfm import PosesOptions, estimate_poses, triangulate_scene
from recon3d.sfm.command import poses_command
from recon3d.sfm.frames import evenly, laplacian_variance, select_frames, video_frames
from recon3d.sfm.orient import upright_model, upright_rotation

N_VIEWS, SIZE, ANGLE_X, DISTANCE, RADIUS = 24, 200, 0.9, 3.2, 1.2


def make_runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told otherwise
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


APP = typer.Typer()


@APP.callback()
def _main() -> None:
    """A test app holding the poses command as the CLI registers it."""


APP.command("poses")(poses_command)
RUNNER = make_runner()


def run(*args: str):
    return RUNNER.invoke(APP, [str(a) for a in args])


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit code 1, nothing on stdout, one ``error:`` line (as tests/test_cli.py checks)."""
    assert result.exit_code == 1, f"exit {result.exit_code}; stderr: {result.stderr!r}; exception: {result.exception!r}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr: {result.stderr!r}"
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# ------------------------------------------------------------------------------------------ a rendered scene


def texture(points: np.ndarray) -> np.ndarray:
    """(N, 3) colours of surface points: 48 random 3D sinusoids (periods 0.13 to 0.8 scene units), a
    pattern without repeats that SIFT finds many distinctive corners in at 200 pixels."""
    rng = np.random.default_rng(0)
    freq = rng.normal(size=(48, 3))
    freq *= (rng.uniform(8, 50, 48) / np.linalg.norm(freq, axis=1))[:, None]
    phase, amp = rng.uniform(0, 2 * np.pi, 48), rng.uniform(0.5, 1.0, (48, 3)) * 0.5 / math.sqrt(48)
    return np.clip(0.5 + np.sin(points @ freq.T + phase) @ amp, 0.02, 0.98)


def ring_poses(n: int = N_VIEWS) -> np.ndarray:
    """(n, 4, 4) OpenGL cameras around the origin, elevations alternating 15 and 25 degrees."""
    poses = []
    for i in range(n):
        azimuth, elevation = 2 * math.pi * i / n, math.radians(15 + 10 * (i % 2))
        eye = DISTANCE * np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                                   math.sin(elevation)])
        poses.append(look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0])))
    return np.stack(poses)


def render(poses: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, H, W, 3) uint8 views of a textured, lit sphere of radius 1.2 on grey (recon3d.meshscene's caster)."""
    mesh = scene_mesh(icosphere(4), RADIUS)
    caster, normals = MeshCaster(mesh), face_normals(mesh.vertices, mesh.faces)
    light = np.array([0.4, -0.5, 0.75]) / np.linalg.norm([0.4, -0.5, 0.75])
    views = []
    for pose in poses:
        origins, directions, t, face = caster.cast(Camera.blender(pose, size, size, ANGLE_X))
        hit = np.isfinite(t)
        rgb = np.full((size * size, 3), 0.5)
        shade = 0.6 + 0.4 * np.clip(normals[face[hit]] @ light, 0.0, 1.0)
        rgb[hit] = texture(origins[hit] + directions[hit] * t[hit, None]) * shade[:, None]
        views.append(np.round(rgb.reshape(size, size, 3) * 255).astype(np.uint8))
    return np.stack(views)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A folder of 24 photos of the sphere (named by view) and their true cameras."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    poses = ring_poses()
    for i, view in enumerate(render(poses)):
        Image.fromarray(view).save(folder / f"view_{i:02d}.png")
    return folder, poses


@pytest.fixture(scope="module")
def posed(rendered, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("posed") / "scene"
    summary = estimate_poses(rendered[0], out, PosesOptions(show_progress=False))
    return out, summary


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |s R source + t - target|² (Umeyama 1991), for (N, 3) point sets."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    cov = (target - mu_t).T @ (source - mu_s) / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / ((source - mu_s) ** 2).sum(1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def rotation_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) angles between rotations (N, 3, 3)."""
    cos = (np.einsum("nij,nij->n", a, b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# ------------------------------------------------------------------------------------------ frames


def test_sharpness_orders_blur():
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 255, (60, 80))
    blurred = sharp.copy()
    for _ in range(3):  # a box blur, three times
        blurred = (blurred + np.roll(blurred, 1, 0) + np.roll(blurred, 1, 1) + np.roll(blurred, (1, 1), (0, 1))) / 4
    assert laplacian_variance(sharp) > 10 * laplacian_variance(blurred) > 0


def test_frame_selection_takes_the_sharpest_of_each_time_slot():
    """A synthetic 'video' of 60 frames at 30 fps, 10 slots of 6 frames: each slot's sharpest frame sits at
    another position; those are chosen, one per slot, in time order."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 255, (48, 64))
    times, scores, sharpest = [], [], []
    for slot in range(10):
        best = int(rng.integers(0, 6))
        sharpest.append(6 * slot + best)
        for k in range(6):
            frame = base.copy()
            for _ in range(1 if k == best else 2 + k % 3):
                frame = (frame + np.roll(frame, 1, 0) + np.roll(frame, 1, 1) + np.roll(frame, (1, 1), (0, 1))) / 4
            times.append((6 * slot + k) / 30.0)
            scores.append(laplacian_variance(frame))
    assert select_frames(np.array(times), np.array(scores), 10) == sharpest
    assert select_frames(np.array(times), np.array(scores), 100) == list(range(60))
    assert select_frames(np.zeros(60), np.array(scores), 10) == sharpest  # no timestamps: slots by position


def test_video_frames_are_decoded_chosen_and_written(tmp_path):
    """A 40-frame video (PyAV, MPEG-4) whose every 4th frame is sharp: 10 frames are written, the sharp ones."""
    import av
    from PIL import Image

    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (64, 96, 3)).astype(np.float64)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=20)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(40):
            frame = base.copy()
            if i % 4 != 2:
                for _ in range(4):
                    frame = (frame + np.roll(frame, 1, 0) + np.roll(frame, 1, 1) + np.roll(frame, (1, 1), (0, 1))) / 4
            video = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            for packet in stream.encode(video):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    names, count, chosen = video_frames(path, 10, tmp_path)
    assert count == 40 and names == [f"frame_{k:05d}.jpg" for k in range(1, 11)]
    assert chosen == [4 * k + 2 for k in range(10)]
    written = [np.asarray(Image.open(tmp_path / name).convert("L"), np.float64) for name in names]
    assert all(image.shape == (64, 96) for image in written)
    sharp = laplacian_variance(np.asarray(Image.fromarray(base.astype(np.uint8)).convert("L"), np.float64))
    assert min(laplacian_variance(image) for image in written) > 0.3 * sharp


# ------------------------------------------------------------------------------------------ poses


def test_poses_are_recovered_up_to_a_similarity(posed, rendered):
    """Every view is posed; after aligning camera centres (Umeyama), rotations within 2 degrees and centres
    within 2 % of the scene's size of the true ones; the sparse points lie on the sphere."""
    out, summary = posed
    _, truth = rendered
    assert summary["registered"] == summary["images"] == N_VIEWS and summary["failed"] == []
    meta = json.loads((out / "transforms.json").read_text())
    frames = {Path(f["file_path"]).name: np.array(f["transform_matrix"]) for f in meta["frames"]}
    estimated = np.stack([frames[f"view_{i:02d}.png"] for i in range(N_VIEWS)])
    scale, rotation, shift = umeyama(estimated[:, :3, 3], truth[:, :3, 3])
    size = np.linalg.norm(truth[:, :3, 3].max(0) - truth[:, :3, 3].min(0))
    centres = scale * estimated[:, :3, 3] @ rotation.T + shift
    assert np.linalg.norm(centres - truth[:, :3, 3], axis=1).max() <= 0.02 * size
    assert rotation_degrees(rotation @ estimated[:, :3, :3], truth[:, :3, :3]).max() <= 2.0
    # the points on the sphere, up to the focal length's error (a sphere seen from one distance leaves
    # focal length and depth nearly interchangeable: a few %)
    sparse = np.load(out / "sparse_points.npz")
    radius = np.linalg.norm(scale * sparse["points"] @ rotation.T + shift, axis=1)
    assert abs(np.median(radius) - RADIUS) < 0.04 * RADIUS
    assert np.percentile(np.abs(radius - np.median(radius)), 90) < 0.02 * RADIUS
    assert (out / "sparse_pc.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0")
    assert meta["ply_file_path"] == "sparse_pc.ply" and meta["sparse_points"] == "sparse_points.npz"


def test_posed_scene_reads_as_a_scene_with_its_points(posed):
    """read_scene takes the folder as it is: the box is the json's "aabb" (around the sphere), the sparse
    observations project back through the scene's own cameras (pixel centres at +0.5, OpenGL c2w)."""
    out, summary = posed
    scene = read_scene(out, "train")
    assert scene.format == "nerfstudio" and len(scene) == N_VIEWS - 3
    assert np.allclose(scene.aabb.numpy(), summary["aabb"], atol=1e-5) and scene.aabb_source == "aabb"
    sparse = scene.sparse
    assert sparse is not None and len(sparse.obs_frame) > 500
    c2w = scene.c2w.double().numpy()[sparse.obs_frame]
    local = np.einsum("nji,nj->ni", c2w[:, :3, :3], sparse.points[sparse.obs_point] - c2w[:, :3, 3])
    x, y = local[:, 0] / -local[:, 2], -local[:, 1] / -local[:, 2]  # OpenGL camera → OpenCV image plane
    k1 = float(json.loads((out / "transforms.json").read_text()).get("k1", 0.0))
    radial = 1 + k1 * (x * x + y * y)
    fx, cx = scene.fx.numpy()[sparse.obs_frame], scene.cx.numpy()[sparse.obs_frame]
    fy, cy = scene.fy.numpy()[sparse.obs_frame], scene.cy.numpy()[sparse.obs_frame]
    uv = np.stack([fx * x * radial + cx, fy * y * radial + cy], axis=1)
    assert np.median(np.linalg.norm(uv - sparse.obs_uv, axis=1)) < 0.5
    # the region of interest holds the sphere: its points, seen from the box, fill most of it
    inside = ((sparse.points >= scene.aabb[0].numpy()) & (sparse.points <= scene.aabb[1].numpy())).all(axis=1)
    assert inside.mean() > 0.9


def test_points_from_known_poses_lie_on_the_surface(rendered, tmp_path):
    """A Blender scene with the true cameras: its triangulated points lie on the sphere (radius 1.2) within
    a fraction of a pixel's footprint, and the written scene copy reads back with them."""
    folder, poses = rendered
    from PIL import Image

    images = np.stack([np.asarray(Image.open(folder / f"view_{i:02d}.png")) for i in range(N_VIEWS)])
    scene = tmp_path / "blender"
    write_blender_scene(scene, images[:16], poses[:16], ANGLE_X, "train")
    write_blender_scene(scene, images[16:], poses[16:], ANGLE_X, "test")
    summary = triangulate_scene(scene, tmp_path / "points.npz", show_progress=False)
    sparse = np.load(tmp_path / "points.npz")
    assert summary["points"] == len(sparse["points"]) > 200
    distance = np.abs(np.linalg.norm(sparse["points"], axis=1) - RADIUS)
    footprint = DISTANCE * 2 * math.tan(ANGLE_X / 2) / SIZE  # one pixel at the sphere, ~0.015
    assert np.median(distance) < 0.3 * footprint and np.percentile(distance, 90) < footprint
    assert set(sparse["obs_frame"].tolist()) <= set(range(16))
    copy = tmp_path / "with_points"
    triangulate_scene(scene, copy, show_progress=False)
    assert json.loads((copy / "transforms_train.json").read_text())["sparse_points"] == "sparse_points.npz"
    train, test = read_scene(copy, "train"), read_scene(copy, "test")
    written = np.load(copy / "sparse_points.npz")  # a second run: not bit-identical (threads)
    assert train.sparse is not None and len(train.sparse.obs_frame) == len(written["obs_frame"])
    assert test.sparse is None and len(test) == N_VIEWS - 16


def test_a_video_orbit_is_posed(tmp_path):
    """48 frames of an orbit encoded as MPEG-4: 32 chosen frames, matched sequentially with loop closure,
    all posed, each within 2 degrees and 2 % of its true camera after a similarity."""
    import av

    n = 48
    truth = []
    for i in range(n):
        azimuth, elevation = 2 * math.pi * i / n, math.radians(20 + 5 * math.sin(4 * math.pi * i / n))
        eye = DISTANCE * np.array([math.cos(elevation) * math.cos(azimuth),
                                   math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        truth.append(look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0])))
    truth = np.stack(truth)
    path = tmp_path / "orbit.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 160, "yuv420p"
        stream.options = {"qscale": "2"}
        for view in render(truth, 160):
            for packet in stream.encode(av.VideoFrame.from_ndarray(view, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    summary = estimate_poses(path, tmp_path / "scene", PosesOptions(frames=32, show_progress=False))
    assert summary["kind"] == "video" and summary["matcher"] == "sequential" and summary["video_frames"] == n
    assert summary["registered"] == summary["images"] == 32 and len(summary["frame_indices"]) == 32
    meta = json.loads((tmp_path / "scene" / "transforms.json").read_text())
    estimated = np.stack([np.array(f["transform_matrix"]) for f in meta["frames"]])  # frame_00001… in time order
    reference = truth[summary["frame_indices"]]
    scale, rotation, shift = umeyama(estimated[:, :3, 3], reference[:, :3, 3])
    size = np.linalg.norm(reference[:, :3, 3].max(0) - reference[:, :3, 3].min(0))
    centres = scale * estimated[:, :3, 3] @ rotation.T + shift
    assert np.linalg.norm(centres - reference[:, :3, 3], axis=1).max() <= 0.02 * size
    assert rotation_degrees(rotation @ estimated[:, :3, :3], reference[:, :3, :3]).max() <= 2.0
    # stood upright: the orbit's up (+z) is the scene's +z, so the alignment only turns about z
    assert math.degrees(math.acos(min(1.0, rotation[2, 2]))) <= 2.0


def test_a_model_is_turned_upright_without_moving_anything():
    """upright_model: the cameras' mean up becomes +z, and every point projects to the same pixel of every
    camera as before (a rotation of the world, nothing else)."""
    rng = np.random.default_rng(3)
    tilt = Rotation.from_rotvec([0.4, -0.9, 0.3]).as_matrix()  # the unknown frame SfM happened to choose
    images, world_to_cam = {}, []
    for i in range(6):
        azimuth = 2 * math.pi * i / 6
        eye = 3.0 * np.array([math.cos(azimuth), math.sin(azimuth), 0.5])
        c2w = look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]))
        c2w[:3, :3], c2w[:3, 3] = tilt @ c2w[:3, :3], tilt @ c2w[:3, 3]
        qvec, tvec = world_to_camera(c2w)
        images[i + 1] = ColmapImage(i + 1, qvec, tvec, 1, f"{i}.png", np.zeros((0, 2)), np.zeros(0, np.int64))
        world_to_cam.append((qvec_to_rotation(qvec), tvec))
    xyz = rng.normal(size=(50, 3))
    points = ColmapPoints(ids=np.arange(50), xyz=xyz, rgb=np.zeros((50, 3), np.uint8), error=np.zeros(50))
    model = ColmapModel({1: ColmapCamera(1, "PINHOLE", 64, 64, np.array([50.0, 50.0, 32.0, 32.0]))}, images, points)
    turned, rotation = upright_model(model)
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(rotation), 1.0)
    assert np.allclose(rotation @ tilt @ [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], atol=1e-6)
    for (r, t), image in zip(world_to_cam, turned.images.values()):
        before = xyz @ r.T + t
        after = turned.points.xyz @ qvec_to_rotation(image.qvec).T + image.tvec
        assert np.allclose(before, after, atol=1e-9)
    assert np.allclose(upright_rotation(np.stack([np.eye(3), np.diag([1.0, -1.0, -1.0])])), np.eye(3))  # cancel


# ------------------------------------------------------------------------------------------ bad input


def test_no_photos_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    result = run("poses", tmp_path / "empty", "-o", tmp_path / "scene")
    assert_one_error_line(result, "no photos in this folder")
    assert not (tmp_path / "scene").exists()


def test_unreadable_video_is_one_error_line(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but not really a video" * 10)
    result = run("poses", tmp_path / "clip.mp4", "-o", tmp_path / "scene")
    assert_one_error_line(result, "clip.mp4: cannot read video")
    assert not (tmp_path / "scene").exists() and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_photos_that_do_not_overlap_are_one_error_line(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    (tmp_path / "noise").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "noise" / f"{i}.png")
    result = run("poses", tmp_path / "noise", "-o", tmp_path / "scene", "-q")
    assert_one_error_line(result, "noise: ", "overlapping views")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise"]  # nothing half-written, no temporaries


def test_outputs_that_would_touch_the_input_are_refused(rendered, tmp_path):
    folder, _ = rendered
    assert_one_error_line(run("poses", folder, "-o", folder / "scene"), "inside the input folder")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert_one_error_line(run("poses", folder, "-o", tmp_path / "full"), "not empty")
    assert_one_error_line(run("poses", folder, "-o", tmp_path / "x", "--matcher", "fast"), "--matcher")
    assert_one_error_line(run("poses", folder, "-o", tmp_path / "x", "--threads", "0"), "--threads")
    assert_one_error_line(run("poses", folder, "-o", tmp_path / "x", "--known-poses", "--threads", "0"), "--threads")


def test_poses_command_prints_the_scene_folder(rendered, tmp_path):
    folder, _ = rendered
    result = run("poses", folder, "-o", tmp_path / "scene", "--json", "-q", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["scene"] == str(tmp_path / "scene") and summary["images"] == N_VIEWS
    assert summary["registered"] == N_VIEWS and (tmp_path / "scene" / "transforms.json").is_file()


def test_photos_are_thinned_evenly():
    assert evenly(10, None) == list(range(10)) and evenly(10, 20) == list(range(10))
    assert evenly(10, 4) == [0, 3, 6, 9] and evenly(100, 3) == [0, 50, 99]


def test_known_poses_options_are_checked(rendered, tmp_path):
    folder, _ = rendered
    assert_one_error_line(run("poses", folder, "-o", tmp_path / "x", "--known-poses", "--frames", "5"),
                          "--known-poses keeps the scene's images")
    assert_one_error_line(run("poses", folder, "-o", tmp_path / "y", "--known-poses"), "transforms")


def test_a_scene_given_as_photos_is_pointed_to_known_poses(tmp_path):
    (tmp_path / "transforms.json").write_text("{}")
    with pytest.raises(InputError, match="--known-poses"):
        estimate_poses(tmp_path, tmp_path.parent / f"{tmp_path.name}_out")


def test_fit_sdf_triangulates_a_capture_without_masks_or_points(rendered, tmp_path):
    """fit-sdf on a scene (RGB, poses, no points) reads it with points triangulated from its images, in
    its own images and downscaled pixels: each observation lies within two pixels of its point's
    projection. --no-triangulate and --box skip it, and so does a scene with masks."""
    import torch

    from recon3d.fit.images import ImagesOptions
    from recon3d.fit.neus import SdfFromImages

    folder, poses = rendered
    from PIL import Image

    images = np.stack([np.asarray(Image.open(folder / f"view_{i:02d}.png")) for i in range(N_VIEWS)])
    scene = tmp_path / "blender"
    write_blender_scene(scene, images[:12], poses[:12], ANGLE_X, "train")
    method, cpu = SdfFromImages(), torch.device("cpu")
    read = method.read(scene, ImagesOptions(downscale=2), cpu)
    sparse = read.sparse
    assert sparse is not None and len(sparse.points) > 100 and read.width == SIZE // 2
    frame = sparse.obs_frame
    assert frame.min() >= 0 and frame.max() < len(read)
    c2w = read.c2w.double().numpy()[frame]
    local = np.einsum("nji,nj->ni", c2w[:, :3, :3], sparse.points[sparse.obs_point] - c2w[:, :3, 3])
    u = read.cx.numpy()[frame] + read.fx.numpy()[frame] * local[:, 0] / -local[:, 2]
    v = read.cy.numpy()[frame] - read.fy.numpy()[frame] * local[:, 1] / -local[:, 2]
    error = np.hypot(u - sparse.obs_uv[:, 0], v - sparse.obs_uv[:, 1])
    assert np.median(error) < 0.5 and np.percentile(error, 99) < 2.0, np.percentile(error, [50, 99])
    assert method.read(scene, ImagesOptions(downscale=2, triangulate=False), cpu).sparse is None
    assert method.read(scene, ImagesOptions(downscale=2, box=(-1.5,) * 3 + (1.5,) * 3), cpu).sparse is None
    masked = tmp_path / "masked"
    alpha = np.full(images.shape[:3] + (1,), 255, np.uint8)
    alpha[:, :10] = 0  # a band of transparent rows: the images have masks
    write_blender_scene(masked, np.concatenate([images, alpha], axis=-1)[:12], poses[:12], ANGLE_X, "train")
    assert method.read(masked, ImagesOptions(downscale=2), cpu).sparse is None
