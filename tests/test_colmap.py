"""COLMAP models (recon3d.io.colmap): binary and text round trips (also through COLMAP's own reader and
writer, pycolmap), camera conversions against hand values and COLMAP's projection, COLMAP projects and
sparse points read as scenes, an explicit ``aabb``, and bad models as one InputError each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon3d.errors import InputError
from recon3d.io.colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    ColmapPoints,
    SparsePoints,
    camera_intrinsics,
    camera_to_world,
    load_sparse,
    qvec_to_rotation,
    read_model,
    region_of_interest,
    rotation_to_qvec,
    save_sparse,
    world_to_camera,
    write_model,
)
from recon3d.io.scene import read_scene
from recon3d.render.rays import camera_rays

WIDTH, HEIGHT = 32, 24


def _look(centre: np.ndarray, target: np.ndarray, roll: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP (qvec, tvec) of a camera at ``centre`` whose optical axis (OpenCV +z) passes through
    ``target``, turned by ``roll`` about it: built by hand from the OpenCV axes."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    rotation = np.stack([x, y, z])  # rows: camera axes in world coordinates, so x_cam = R (x_world - centre)
    return rotation_to_qvec(rotation), -rotation @ centre


def make_model(seed: int = 0, n_images: int = 12, n_points: int = 40, models=("OPENCV",)) -> ColmapModel:
    """A consistent random model: cameras of ``models``, images on a ring looking at the origin, points
    near it, each seen in 2 to 4 images (their 2D points project there, with a little noise)."""
    rng = np.random.default_rng(seed)
    cameras = {}
    for i, name in enumerate(models, 1):
        params = {"SIMPLE_PINHOLE": [30.0, 16.0, 12.0], "PINHOLE": [30.0, 31.0, 16.0, 12.0],
                  "SIMPLE_RADIAL": [30.0, 16.0, 12.0, 0.01], "RADIAL": [30.0, 16.0, 12.0, 0.01, -0.002],
                  "OPENCV": [30.5, 29.5, 16.2, 11.8, 0.02, -0.01, 0.001, -0.002],
                  "OPENCV_FISHEYE": [30.0, 30.0, 16.0, 12.0, 0.1, 0.0, 0.0, 0.0]}[name]
        cameras[i] = ColmapCamera(i, name, WIDTH, HEIGHT, np.array(params) + rng.normal(0, 1e-3, len(params)))
    images = {}
    for k in range(n_images):
        angle = 2 * math.pi * k / n_images
        centre = np.array([4 * math.cos(angle), 4 * math.sin(angle), 1.0 + 0.2 * (k % 2)])
        qvec, tvec = _look(centre, rng.normal(0, 0.05, 3), roll=rng.normal(0, 0.1))
        image_id = 100 + 3 * k  # ids need not be contiguous
        images[image_id] = ColmapImage(image_id, qvec, tvec, 1 + k % len(models), f"img_{k:03d}.png",
                                       np.zeros((0, 2)), np.zeros(0, np.int64))
    xyz = rng.normal(0, 0.5, (n_points, 3))
    track_point, track_image, track_idx = [], [], []
    order = sorted(images)
    for p in range(n_points):
        for image_id in rng.choice(order, size=rng.integers(2, 5), replace=False):
            image = images[int(image_id)]
            k = camera_intrinsics(cameras[image.camera_id]) if cameras[image.camera_id].model != "OPENCV_FISHEYE" \
                else np.array([30.0, 30.0, 16.0, 12.0, 0, 0, 0, 0, 0, 0])
            local = qvec_to_rotation(image.qvec) @ xyz[p] + image.tvec
            uv = k[:2] * local[:2] / local[2] + k[2:4] + rng.normal(0, 0.3, 2)
            track_point.append(p)
            track_image.append(int(image_id))
            track_idx.append(len(image.xys))
            image.xys = np.vstack([image.xys, uv])
            image.point3d_ids = np.append(image.point3d_ids, 1000 + p)
    for image in images.values():  # and a few 2D points that see nothing
        image.xys = np.vstack([image.xys, rng.uniform(0, WIDTH, (3, 2))])
        image.point3d_ids = np.append(image.point3d_ids, [-1, -1, -1])
    points = ColmapPoints(ids=1000 + np.arange(n_points), xyz=xyz, rgb=rng.integers(0, 256, (n_points, 3), np.uint8),
                          error=rng.uniform(0.1, 1.0, n_points), track_point=np.array(track_point),
                          track_image=np.array(track_image), track_idx=np.array(track_idx))
    return ColmapModel(cameras, images, points)


def assert_same(a: ColmapModel, b: ColmapModel) -> None:
    assert a.cameras.keys() == b.cameras.keys() and a.images.keys() == b.images.keys()
    for i, camera in a.cameras.items():
        other = b.cameras[i]
        assert (camera.model, camera.width, camera.height) == (other.model, other.width, other.height)
        assert np.array_equal(camera.params, other.params)
    for i, image in a.images.items():
        other = b.images[i]
        assert (image.name, image.camera_id) == (other.name, other.camera_id)
        assert np.array_equal(image.qvec, other.qvec) and np.array_equal(image.tvec, other.tvec)
        assert np.array_equal(image.xys, other.xys) and np.array_equal(image.point3d_ids, other.point3d_ids)
    order_a, order_b = np.argsort(a.points.ids), np.argsort(b.points.ids)
    assert np.array_equal(a.points.ids[order_a], b.points.ids[order_b])
    for name in ("xyz", "rgb", "error"):
        assert np.array_equal(getattr(a.points, name)[order_a], getattr(b.points, name)[order_b])

    def tracks(model: ColmapModel) -> set:
        ids = model.points.ids[model.points.track_point]
        return set(zip(ids.tolist(), model.points.track_image.tolist(), model.points.track_idx.tolist()))

    assert tracks(a) == tracks(b)


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_is_exact(tmp_path, binary):
    model = make_model(models=("OPENCV", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_PINHOLE", "OPENCV_FISHEYE"))
    write_model(model, tmp_path, binary=binary)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.{'bin' if binary else 'txt'}" for n in ("cameras", "images", "points3D"))
    assert_same(model, read_model(tmp_path))


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_reads_what_recon3d_writes_and_back(tmp_path, binary):
    """Through COLMAP's own reader and writer (pycolmap): ours → COLMAP → ours is the same model."""
    from recon3d.sfm.colmap_steps import load_pycolmap

    pycolmap = load_pycolmap()
    model = make_model(seed=1, models=("OPENCV", "PINHOLE"))
    write_model(model, tmp_path / "ours", binary=binary)
    reconstruction = pycolmap.Reconstruction(str(tmp_path / "ours"))
    assert reconstruction.num_reg_images() == len(model.images)
    assert reconstruction.num_points3D() == len(model.points)
    image = reconstruction.images[100]
    matrix = image.cam_from_world().matrix() if callable(image.cam_from_world) else image.cam_from_world.matrix()
    assert np.allclose(matrix[:, :3], qvec_to_rotation(model.images[100].qvec), atol=1e-12)
    (tmp_path / "colmap").mkdir()
    if binary:
        reconstruction.write_binary(str(tmp_path / "colmap"))
    else:
        reconstruction.write_text(str(tmp_path / "colmap"))
    back = read_model(tmp_path / "colmap")
    for image_id, image in back.images.items():  # COLMAP may flip a quaternion's sign
        original = model.images[image_id]
        sign = np.sign(np.dot(image.qvec, original.qvec))
        assert np.allclose(image.qvec * sign, original.qvec, atol=1e-15)
        image.qvec = original.qvec
    assert_same(model, back)


def test_text_model_without_errors_gets_them_from_the_observations(tmp_path):
    model = make_model(seed=2)
    model.points.error[:] = -1.0
    write_model(model, tmp_path, binary=False)
    from recon3d.io.colmap import model_transforms

    _, sparse = model_transforms(read_model(tmp_path), "images/")
    assert (sparse.errors > 0).all() and (sparse.errors < 1.5).all()  # 0.3 px noise per axis


# ------------------------------------------------------------------------------------------ cameras


def test_camera_at_a_known_place_looks_at_a_known_point():
    """A camera at (1, 2, 3) aimed at (4, -1, 0): the converted c2w sits at (1, 2, 3), looks down its -z
    axis at the point, and recon3d's ray through the principal point passes through it."""
    centre, target = np.array([1.0, 2.0, 3.0]), np.array([4.0, -1.0, 0.0])
    qvec, tvec = _look(centre, target, roll=0.3)
    c2w = camera_to_world(qvec, tvec)
    assert np.allclose(c2w[:3, 3], centre)
    assert np.allclose(-c2w[:3, 2], (target - centre) / np.linalg.norm(target - centre))
    assert np.allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3)) and np.linalg.det(c2w[:3, :3]) > 0
    fx, fy, cx, cy = 40.0, 42.0, 16.5, 12.25
    ray = camera_rays(torch.tensor(c2w), fx, fy, cx, cy, pixels=torch.tensor([[cx - 0.5, cy - 0.5]]))
    direction = ray.directions[0].numpy()
    assert np.allclose(direction, (target - centre) / np.linalg.norm(target - centre), atol=1e-12)
    back_q, back_t = world_to_camera(c2w)
    assert np.allclose(back_q, qvec) and np.allclose(back_t, tvec)


def test_axis_aligned_camera_by_hand():
    """Identity rotation, t = (0, 0, 5): the camera sits at (0, 0, -5) with OpenCV axes = world axes, so in
    OpenGL axes its x is world x, its y is world -y, its back (z) is world -z."""
    c2w = camera_to_world(np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 5.0]))
    expected = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, -5], [0, 0, 0, 1]], dtype=float)
    assert np.array_equal(c2w, expected)


def test_pixels_and_distortion_agree_with_colmap():
    """COLMAP's projection (pycolmap, OPENCV with distortion) of a point to pixel (u, v), then recon3d's ray
    through that pixel (distortion undone): the ray passes through the point. Pixel centres and OpenCV
    coefficients mean the same in both."""
    from recon3d.sfm.colmap_steps import load_pycolmap

    pycolmap = load_pycolmap()
    params = [300.0, 310.0, 160.3, 119.7, -0.08, 0.03, 0.002, -0.001]
    camera = pycolmap.Camera(model="OPENCV", width=320, height=240, params=params)
    k = camera_intrinsics(ColmapCamera(1, "OPENCV", 320, 240, np.array(params)))
    assert np.allclose(k, [300, 310, 160.3, 119.7, -0.08, 0.03, 0, 0, 0.002, -0.001])
    qvec, tvec = _look(np.array([0.5, -3.0, 1.0]), np.zeros(3), roll=-0.2)
    c2w = camera_to_world(qvec, tvec)
    rng = np.random.default_rng(0)
    for point in rng.normal(0, 0.6, (5, 3)):
        local = qvec_to_rotation(qvec) @ point + tvec
        u, v = camera.img_from_cam(local[None])[0]
        ray = camera_rays(torch.tensor(c2w), *map(float, k[:4]), distortion=torch.tensor(k[4:]),
                          pixels=torch.tensor([[u - 0.5, v - 0.5]]))
        to_point = (point - c2w[:3, 3]) / np.linalg.norm(point - c2w[:3, 3])
        assert np.degrees(np.arccos(min(1.0, float(ray.directions[0].numpy() @ to_point)))) < 1e-3


@pytest.mark.parametrize("name, params, expected", [
    ("SIMPLE_PINHOLE", [50, 10, 8], [50, 50, 10, 8, 0, 0, 0, 0, 0, 0]),
    ("PINHOLE", [50, 51, 10, 8], [50, 51, 10, 8, 0, 0, 0, 0, 0, 0]),
    ("SIMPLE_RADIAL", [50, 10, 8, 0.1], [50, 50, 10, 8, 0.1, 0, 0, 0, 0, 0]),
    ("RADIAL", [50, 10, 8, 0.1, -0.05], [50, 50, 10, 8, 0.1, -0.05, 0, 0, 0, 0]),
    ("OPENCV", [50, 51, 10, 8, 0.1, -0.05, 0.01, 0.02], [50, 51, 10, 8, 0.1, -0.05, 0, 0, 0.01, 0.02]),
    ("FULL_OPENCV", [50, 51, 10, 8, 0.1, -0.05, 0.01, 0.02, 0.003, 0, 0, 0],
     [50, 51, 10, 8, 0.1, -0.05, 0.003, 0, 0.01, 0.02]),
])  # fmt: skip
def test_camera_models_map_to_opencv(name, params, expected):
    k = camera_intrinsics(ColmapCamera(1, name, 20, 16, np.array(params, float)))
    assert np.array_equal(k, np.array(expected, float))


@pytest.mark.parametrize("name, params", [
    ("OPENCV_FISHEYE", [50, 50, 10, 8, 0.1, 0, 0, 0]),
    ("FOV", [50, 50, 10, 8, 0.9]),
    ("FULL_OPENCV", [50, 51, 10, 8, 0.1, -0.05, 0.01, 0.02, 0.003, 0.2, 0, 0]),
])  # fmt: skip
def test_other_camera_models_are_refused_by_name(name, params):
    with pytest.raises(InputError, match=name):
        camera_intrinsics(ColmapCamera(7, name, 20, 16, np.array(params, float)), "cameras.bin")


# ------------------------------------------------------------------------------------------ projects


def write_project(folder: Path, model: ColmapModel, binary: bool = True, layout: str = "sparse/0") -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    for image in model.images.values():
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 128, np.uint8)).save(folder / "images" / image.name)
    write_model(model, folder / layout, binary=binary)
    return folder


@pytest.mark.parametrize("binary, layout", [(True, "sparse/0"), (False, "sparse")])
def test_colmap_project_is_a_scene(tmp_path, binary, layout):
    model = make_model(seed=3, n_images=12, models=("OPENCV",))
    project = write_project(tmp_path / "project", model, binary, layout)
    train, test = read_scene(project, "train"), read_scene(project, "test")
    assert train.format == "colmap" and (len(train), len(test)) == (10, 2)  # every 8th frame held out
    assert train.aabb_source == "points"
    by_name = {image.name: image for image in model.images.values()}
    for scene in (train, test):
        for i, file in enumerate(scene.files):
            image = by_name[file.name]
            assert np.allclose(scene.c2w[i].double().numpy(), camera_to_world(image.qvec, image.tvec), atol=1e-6)
        k = model.cameras[1].params
        assert np.allclose(scene.fx.numpy(), k[0]) and np.allclose(scene.cy.numpy(), k[3], atol=1e-5)
        assert np.allclose(scene.distortion[0].numpy(), [k[4], k[5], 0, 0, k[6], k[7]], atol=1e-7)
    assert [f.name for f in test.files] == ["img_000.png", "img_008.png"]
    # sparse points: every observation of a test image, renumbered to the test split's images
    sparse = test.sparse
    assert sparse is not None and len(sparse) == len(model.points)
    seen = model.points.track_image
    expected = int(np.isin(seen, [by_name["img_000.png"].image_id, by_name["img_008.png"].image_id]).sum())
    assert len(sparse.obs_frame) == expected and set(sparse.obs_frame.tolist()) <= {0, 1}
    first = by_name["img_000.png"]
    mine = sparse.obs_frame == 0
    assert np.allclose(np.sort(sparse.obs_uv[mine], axis=0),
                       np.sort(first.xys[first.point3d_ids >= 0].astype(np.float32), axis=0))
    # the box: the points' robust box, inside which they (mostly) lie
    inside = ((model.points.xyz >= test.aabb[0].numpy()) & (model.points.xyz <= test.aabb[1].numpy())).all(axis=1)
    assert inside.mean() > 0.85
    half = read_scene(project, "test", downscale=2)
    assert np.allclose(half.sparse.obs_uv[half.sparse.obs_frame == 0], sparse.obs_uv[mine] / 2, atol=1e-6)


def test_scene_files_of_a_colmap_project(tmp_path):
    """The files an output must not overwrite: the model's and every image."""
    from recon3d.io.scene import scene_files

    model = make_model(seed=6, n_images=4)
    project = write_project(tmp_path / "p", model)
    names = sorted(p.name for p in scene_files(project, "train"))
    assert names == sorted(["cameras.bin", "images.bin", "points3D.bin", *(i.name for i in model.images.values())])


def test_colmap_project_with_a_fisheye_camera_is_one_error(tmp_path):
    project = write_project(tmp_path / "p", make_model(seed=4, models=("OPENCV_FISHEYE",)))
    with pytest.raises(InputError, match="OPENCV_FISHEYE"):
        read_scene(project)


def test_truncated_and_inconsistent_models_are_one_error(tmp_path):
    model = make_model(seed=5)
    folder = write_model(model, tmp_path / "m")
    data = (folder / "points3D.bin").read_bytes()
    (folder / "points3D.bin").write_bytes(data[:-5])
    with pytest.raises(InputError, match="points3D.bin: truncated"):
        read_model(folder)
    (folder / "points3D.bin").write_bytes(data)
    (folder / "cameras.bin").write_bytes((folder / "cameras.bin").read_bytes()[:8] + b"\xff" * 8)
    with pytest.raises(InputError, match="cameras.bin"):
        read_model(folder)
    model.points.track_image[0] = 999
    write_model(model, tmp_path / "t", binary=False)
    with pytest.raises(InputError, match="999"):
        read_model(tmp_path / "t")


# ------------------------------------------------------------------------------------------ transforms json


def _nerfstudio(folder: Path, n: int = 9) -> list[dict]:
    """A nerfstudio scene whose frames are listed out of name order (the reader sorts them)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    frames = []
    for k in reversed(range(n)):
        angle = 2 * math.pi * k / n
        qvec, tvec = _look(np.array([3 * math.cos(angle), 3 * math.sin(angle), 0.5]), np.zeros(3))
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 90, np.uint8)).save(folder / "images" / f"f{k}.png")
        frames.append({"file_path": f"images/f{k}.png", "transform_matrix": camera_to_world(qvec, tvec).tolist()})
    return frames


def test_transforms_json_with_aabb_and_sparse_points(tmp_path):
    frames = _nerfstudio(tmp_path)
    observations = [(j, p) for j in range(len(frames)) for p in range(4)]
    sparse = SparsePoints(points=np.arange(12.0).reshape(4, 3) / 10, colors=np.zeros((4, 3), np.uint8),
                          errors=np.full(4, 0.5, np.float32),
                          obs_frame=np.array([j for j, _ in observations], np.int32),
                          obs_point=np.array([p for _, p in observations], np.int32),
                          obs_uv=np.array([[j + 0.5, p + 0.5] for j, p in observations], np.float32),
                          obs_error=np.full(len(observations), 0.25, np.float32))
    save_sparse(tmp_path / "pts.npz", sparse)
    meta = {"fl_x": 30.0, "fl_y": 30.0, "cx": 16.0, "cy": 12.0, "w": WIDTH, "h": HEIGHT, "frames": frames,
            "aabb": [[-0.5, -0.4, -0.3], [0.5, 0.4, 0.3]], "sparse_points": "pts.npz"}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = read_scene(tmp_path, "train")
    assert np.allclose(scene.aabb.numpy(), meta["aabb"]) and scene.aabb_source == "aabb"
    # frames in the file: f8 … f0; sorted: f0 … f8; train drops sorted positions 0 and 8 (f0, f8)
    assert [f.name for f in scene.files] == [f"f{k}.png" for k in range(1, 8)]
    assert scene.frame_index == [8 - k for k in range(1, 8)]
    assert set(scene.sparse.obs_frame.tolist()) == set(range(7))
    for i, file_index in enumerate(scene.frame_index):  # observation uv encodes its file index
        assert np.allclose(scene.sparse.obs_uv[scene.sparse.obs_frame == i][:, 0], file_index + 0.5)
    assert len(scene.sparse.obs_frame) == 7 * 4


@pytest.mark.parametrize("value, fragment", [
    ([[0, 0, 0], [1, 1]], "'aabb' must be"),
    ([[0, 0, 0], [1, -1, 1]], "max above its min"),
    ([[0, 0, 0], [1e300, 1, 1]], "beyond"),
    ("box", "'aabb' must be"),
])  # fmt: skip
def test_bad_aabb_is_one_error(tmp_path, value, fragment):
    frames = _nerfstudio(tmp_path)
    (tmp_path / "transforms.json").write_text(json.dumps({"fl_x": 30.0, "frames": frames, "aabb": value}))
    with pytest.raises(InputError, match=fragment):
        read_scene(tmp_path)


def test_bad_sparse_points_are_one_error(tmp_path):
    frames = _nerfstudio(tmp_path, n=4)
    meta = {"fl_x": 30.0, "frames": frames, "sparse_points": "missing.npz"}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="missing.npz: sparse points file not found"):
        read_scene(tmp_path)
    bad = SparsePoints(np.zeros((2, 3)), np.zeros((2, 3), np.uint8), np.zeros(2, np.float32),
                       np.array([0, 9], np.int32), np.array([0, 1], np.int32), np.zeros((2, 2), np.float32),
                       np.zeros(2, np.float32))
    save_sparse(tmp_path / "missing.npz", bad)
    with pytest.raises(InputError, match="'obs_frame' must index 0 to 3"):
        read_scene(tmp_path)
    np.savez(tmp_path / "missing.npz", points=np.zeros((2, 3)))
    with pytest.raises(InputError, match="missing array 'colors'"):
        load_sparse(tmp_path / "missing.npz", 4)


def test_region_of_interest_ignores_the_room_around_an_object():
    """Cameras circling an object at the origin in a room of far points: the box holds the object."""
    rng = np.random.default_rng(0)
    obj = rng.uniform(-0.5, 0.5, (500, 3))
    room = rng.uniform(-10, 10, (500, 3))
    room = room[np.abs(room).max(axis=1) > 6]
    poses = []
    for k in range(16):
        qvec, tvec = _look(np.array([3 * math.cos(k), 3 * math.sin(k), 1.0]), np.zeros(3))
        poses.append(camera_to_world(qvec, tvec))
    intrinsics = np.tile([100.0, 100.0, 64.0, 48.0], (16, 1))
    box = region_of_interest(np.vstack([obj, room]), np.stack(poses), intrinsics)
    assert (box[0] > -0.65).all() and (box[1] < 0.65).all() and (box[0] < -0.4).all() and (box[1] > 0.4).all()
    forward = [np.array([[1, 0, 0, x], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]) for x in range(5)]
    everything = region_of_interest(np.vstack([obj, room]), np.stack(forward), intrinsics[:5])
    assert (everything[1] - everything[0] > 15).all()  # no shared focus: the robust box of all points
