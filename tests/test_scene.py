"""Scene reading: Blender and nerfstudio formats, splits, downscaling, image kinds, bad input."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from recon3d.errors import InputError, Recon3dError
from recon3d.io.scene import read_scene, write_blender_scene
from recon3d.render.rays import RaySampler, camera_rays, image_rays
from recon3d.synthetic import look_at, orbit_poses, render_spheres, write_spheres_scene

LEGO = Path("/work/shared/data/lego")
SIZE = 16


@pytest.fixture(scope="module")
def spheres(tmp_path_factory) -> Path:
    return write_spheres_scene(tmp_path_factory.mktemp("spheres"), n_train=4, n_val=2, size=SIZE)


def _png(path: Path, array: np.ndarray) -> Path:
    """Write a PNG by hand (any bit depth numpy gives, 1 to 4 channels), so 16-bit colour works."""
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    depth = 16 if array.dtype == np.uint16 else 8
    rows = array.reshape(h, -1).astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def _blender(folder: Path, images: list[np.ndarray], poses=None, split: str = "train",
             angle: float = 0.8) -> Path:  # fmt: skip
    """A Blender scene from arbitrary image arrays (each written by hand as r_i.png)."""
    poses = orbit_poses(len(images)) if poses is None else poses
    frames = []
    for i, image in enumerate(images):
        _png(folder / split / f"r_{i}.png", image)
        pose = poses[i] if not isinstance(poses[i], np.ndarray) else poses[i].tolist()
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose})
    path = folder / f"transforms_{split}.json"
    path.write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return path


def _nerfstudio(folder: Path, n: int = 10, size: tuple[int, int] = (12, 10), **extra) -> Path:
    """A nerfstudio transforms.json with n RGB PNGs under images/ (listed in reverse order)."""
    w, h = size
    rng = np.random.default_rng(0)
    frames = []
    for i, pose in enumerate(orbit_poses(n, radius=3.0)):
        _png(folder / "images" / f"frame_{i:03d}.png", rng.integers(0, 256, (h, w, 3), np.uint8))
        frames.append({"file_path": f"images/frame_{i:03d}.png", "transform_matrix": pose.tolist()})
    meta = {"fl_x": 11.0, "fl_y": 12.0, "cx": 6.5, "cy": 4.5, "w": w, "h": h, "frames": frames[::-1]}
    meta.update(extra)
    path = folder / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_scene(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------ Blender


def test_blender_scene_reads_and_matches_its_renderer(spheres):
    scene = read_scene(spheres)
    assert scene.format == "blender" and scene.split == "train" and len(scene) == 4
    assert scene.images.shape == (4, SIZE, SIZE, 3) and scene.images.dtype == torch.float32
    assert (scene.width, scene.height) == (SIZE, SIZE)
    focal = 0.5 * SIZE / math.tan(0.5 * 0.6911)
    torch.testing.assert_close(scene.fx, torch.full((4,), focal))
    torch.testing.assert_close(scene.cy, torch.full((4,), SIZE / 2.0))
    torch.testing.assert_close(scene.c2w, torch.tensor(orbit_poses(6)[:4], dtype=torch.float32))
    torch.testing.assert_close(scene.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    assert (scene.near, scene.far) == (2.0, 6.0) and scene.distortion is None
    assert scene.camera_angle_x == pytest.approx(0.6911)
    assert [f.name for f in scene.files] == [f"r_{i}.png" for i in range(4)]
    assert scene.widths.tolist() == [SIZE] * 4
    # Rays from the scene's cameras through the analytic renderer reproduce its images.
    for i in range(len(scene)):
        rays = image_rays(scene, i)
        rgba = render_spheres(rays.origins.double().numpy(), rays.directions.double().numpy())
        expected = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
        np.testing.assert_allclose(scene.images[i].numpy(), expected, atol=0.6 / 255)


def test_splits_paths_and_frame_limit(spheres):
    val = read_scene(spheres, split="val")
    assert len(val) == 2 and val.source.name == "transforms_val.json"
    torch.testing.assert_close(val.c2w, torch.tensor(orbit_poses(6)[4:], dtype=torch.float32))
    via_file = read_scene(spheres / "transforms_train.json", split="val")
    assert via_file.source == val.source
    assert len(read_scene(spheres / "transforms_val.json", max_images=1)) == 1
    message = _error(spheres, split="test")
    assert "transforms_test.json" in message and "transforms_train.json" in message


def test_downscale_halves_sizes_and_intrinsics(spheres):
    full = read_scene(spheres)
    half = read_scene(spheres, downscale=2)
    assert half.images.shape == (4, SIZE // 2, SIZE // 2, 3)
    for name in ("fx", "fy", "cx", "cy"):
        torch.testing.assert_close(getattr(half, name), getattr(full, name) / 2)
    blocks = full.images.reshape(4, SIZE // 2, 2, SIZE // 2, 2, 3).mean(dim=(2, 4))
    torch.testing.assert_close(half.images, blocks)
    # The pixel centres of the half-size image see the centres of the 2x2 blocks.
    rays = camera_rays(**half.camera(0))
    block = camera_rays(**full.camera(0), pixels=torch.tensor([[2, 4], [3, 5]]))
    mean = block.directions.mean(0)
    torch.testing.assert_close(rays.directions[2, 1], mean / mean.norm(), atol=1e-3, rtol=0)
    with pytest.raises(Recon3dError):
        read_scene(spheres, downscale=0)
    with pytest.raises(Recon3dError):
        read_scene(spheres, downscale=1.5)


def test_alpha_background_and_keep_alpha(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:2] = (255, 0, 0, 255)  # opaque red on top
    rgba[2:, :3] = (0, 255, 0, 128)  # half-transparent green
    _blender(tmp_path, [rgba])
    white = read_scene(tmp_path, keep_alpha=True)
    black = read_scene(tmp_path, background=(0, 0, 0))
    torch.testing.assert_close(white.images[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(white.images[0, 3, 5], torch.tensor([1.0, 1.0, 1.0]))
    a = 128 / 255
    torch.testing.assert_close(white.images[0, 2, 0], torch.tensor([1 - a, 1.0, 1 - a]))
    torch.testing.assert_close(black.images[0, 2, 0], torch.tensor([0.0, a, 0.0]))
    assert white.alphas is not None and black.alphas is None
    torch.testing.assert_close(white.alphas[0, :, 0], torch.tensor([1.0, 1.0, a, a]))
    with pytest.raises(Recon3dError):
        read_scene(tmp_path, background=(2.0, 0.0, 0.0))


def test_grey_and_16_bit_images(tmp_path):
    grey8 = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    grey16 = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 2731)
    rgb16 = np.stack([grey16, 65535 - grey16, np.full_like(grey16, 32768)], axis=-1)
    grey_alpha = np.stack([grey8, np.full_like(grey8, 255)], axis=-1)
    _blender(tmp_path, [grey8, grey16, rgb16, grey_alpha])
    scene = read_scene(tmp_path)
    torch.testing.assert_close(scene.images[0, ..., 1], torch.tensor(grey8 / 255.0, dtype=torch.float32))
    torch.testing.assert_close(scene.images[1, ..., 2], torch.tensor(grey16 / 65535.0, dtype=torch.float32))
    np.testing.assert_allclose(scene.images[2].numpy(), rgb16 / 65535.0, atol=1 / 255)
    torch.testing.assert_close(scene.images[3], scene.images[0])


def test_write_blender_scene_round_trips_uint8(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    poses = torch.tensor(orbit_poses(2), dtype=torch.float32)
    path = write_blender_scene(tmp_path / "new", images, poses, 0.5, split="test")
    assert path == tmp_path / "new" / "transforms_test.json"
    scene = read_scene(tmp_path / "new", split="test")
    torch.testing.assert_close(scene.images, torch.tensor(images / 255.0, dtype=torch.float32))
    torch.testing.assert_close(scene.c2w, poses)
    assert not list((tmp_path / "new").rglob("*.tmp"))


# --------------------------------------------------------------------------------- nerfstudio


def test_nerfstudio_scene_splits_every_8th(tmp_path):
    json_path = _nerfstudio(tmp_path, n=10)
    train = read_scene(tmp_path)
    val = read_scene(json_path, split="val")
    assert train.format == "nerfstudio" and len(train) == 8 and len(val) == 2
    assert [f.name for f in val.files] == ["frame_000.png", "frame_008.png"]
    assert "frame_001.png" == train.files[0].name
    assert (train.width, train.height) == (12, 10)
    torch.testing.assert_close(train.fx, torch.full((8,), 11.0))
    torch.testing.assert_close(train.fy, torch.full((8,), 12.0))
    torch.testing.assert_close(val.cx, torch.full((2,), 6.5))
    assert train.distortion is None
    poses = orbit_poses(10, radius=3.0)
    torch.testing.assert_close(val.c2w[1], torch.tensor(poses[8], dtype=torch.float32))
    # Box: the cube around the cameras; near/far cover it from every camera.
    positions = torch.tensor(poses[:, :3, 3], dtype=torch.float32)
    assert (positions >= train.aabb[0] - 1e-5).all() and (positions <= train.aabb[1] + 1e-5).all()
    assert 0 < train.near < 0.5 and train.far > 3.0
    assert len(read_scene(tmp_path, split="all")) == 10
    half = read_scene(tmp_path, downscale=2, split="val")
    assert half.images.shape == (2, 5, 6, 3)
    torch.testing.assert_close(half.fy, torch.full((2,), 6.0))


def test_nerfstudio_split_lists_per_frame_intrinsics_and_distortion(tmp_path):
    json_path = _nerfstudio(tmp_path, n=4, k1=-0.1, p2=0.01, camera_model="OPENCV",
                            train_filenames=["images/frame_001.png", "images/frame_003.png"],
                            aabb_scale=2)  # fmt: skip
    meta = json.loads(json_path.read_text())
    meta["frames"][0]["fl_x"] = 20.0  # frames are listed in reverse: this is frame_003
    json_path.write_text(json.dumps(meta))
    scene = read_scene(json_path)
    assert [f.name for f in scene.files] == ["frame_001.png", "frame_003.png"]
    torch.testing.assert_close(scene.fx, torch.tensor([11.0, 20.0]))
    expected = torch.tensor([-0.1, 0, 0, 0, 0, 0.01]).expand(2, 6)
    torch.testing.assert_close(scene.distortion, expected)
    # instant-ngp box: aabb_scale 2 with the default scale 0.33 and offset 0.5.
    torch.testing.assert_close(scene.aabb, torch.tensor([[-1.0 / 0.33] * 3, [1.0 / 0.33] * 3]))
    rays = camera_rays(**scene.camera(1), pixels=torch.tensor([[0, 0]]))
    assert rays.directions.shape == (1, 3) and torch.isfinite(rays.directions).all()
    batch = RaySampler.from_scene(scene.to("cpu")).sample(16, torch.Generator().manual_seed(0))
    i, pixels = batch.image_indices, batch.pixels
    one = camera_rays(**scene.camera(int(i[0])), pixels=pixels[:1])
    torch.testing.assert_close(batch.rays.directions[:1], one.directions)
    assert "'val_filenames'" not in _error(json_path, split="nonsense")


@pytest.mark.parametrize("extra", [{"camera_model": "OPENCV_FISHEYE"}, {"is_fisheye": True},
                                   {"camera_model": "EQUIRECTANGULAR"}])  # fmt: skip
def test_unsupported_camera_models(tmp_path, extra):
    json_path = _nerfstudio(tmp_path, n=3, **extra)
    message = _error(tmp_path)
    assert str(json_path) in message and ("fisheye" in message.lower() or "not supported" in message)


def test_declared_size_must_match_the_images(tmp_path):
    json_path = _nerfstudio(tmp_path, n=3, w=24)
    message = _error(json_path)
    assert str(json_path) in message and "12x10" in message


# ---------------------------------------------------------------------------------- bad input


def test_missing_paths(tmp_path):
    assert str(tmp_path / "nope") in _error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert str(tmp_path / "empty") in _error(tmp_path / "empty")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"camera_angle_x": 0.5}', "'frames'"),
        ('{"camera_angle_x": 0.5, "frames": []}', "no frames"),
        ('{"frames": [{"file_path": "./train/r_0", "transform_matrix": %s}]}', "'camera_angle_x'"),
        ('{"camera_angle_x": 0.5, "frames": [{"file_path": "./train/r_0"}]}', "'transform_matrix'"),
        ('{"camera_angle_x": 0.5, "frames": [{"transform_matrix": %s}]}', "'file_path'"),
        ('{"camera_angle_x": -1, "frames": [{"file_path": "./train/r_0", "transform_matrix": %s}]}',
         "'camera_angle_x' must be a positive number"),
    ],
)
def test_malformed_json(tmp_path, text, expected):
    _png(tmp_path / "train" / "r_0.png", np.zeros((4, 4, 3), np.uint8))
    path = tmp_path / "transforms_train.json"
    path.write_text(text.replace("%s", json.dumps(np.eye(4).tolist())))
    message = _error(tmp_path)
    assert str(path) in message and expected in message


def test_missing_and_unreadable_images(tmp_path):
    json_path = _blender(tmp_path, [np.zeros((4, 4, 3), np.uint8)] * 3)
    (tmp_path / "train" / "r_1.png").unlink()
    message = _error(tmp_path)
    assert str(tmp_path / "train" / "r_1") in message and "not found" in message
    assert str(json_path) in message
    (tmp_path / "train" / "r_1.png").write_bytes(b"this is not a png")
    message = _error(tmp_path)
    assert str(tmp_path / "train" / "r_1.png") in message and "cannot read image" in message


def test_mixed_sizes_name_the_first_offender(tmp_path):
    small, big = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)
    _blender(tmp_path, [small, small, big, big])
    message = _error(tmp_path)
    assert str(tmp_path / "train" / "r_2.png") in message and "6x4" in message


def _scaled() -> np.ndarray:
    return np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.mark.parametrize(
    "pose, expected",
    [
        (_scaled(), "not orthonormal"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
        (np.zeros((4, 4)) + np.diag([0, 0, 0, 1.0]), "not orthonormal"),
        (np.vstack([np.eye(4)[:3], [0.0, 0.0, 1.0, 1.0]]), "bottom row"),
        (np.eye(4) * np.nan, "NaN"),
        (np.eye(3), "must be 4x4"),
        ([[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "4x4 matrix of numbers"),
        ([["a"] * 4] * 4, "4x4 matrix of numbers"),
    ],
)
def test_bad_poses(tmp_path, pose, expected):
    good = look_at((0.0, -4.0, 1.0))
    poses = [good.tolist(), pose.tolist() if isinstance(pose, np.ndarray) else pose]
    json_path = _blender(tmp_path, [np.zeros((4, 4, 3), np.uint8)] * 2, poses=poses)
    message = _error(tmp_path)
    assert str(json_path) in message and "frame 1" in message and expected in message


def test_nearly_rigid_pose_is_accepted(tmp_path):
    pose = look_at((0.0, -4.0, 1.0))
    pose[:3, :3] *= 1.0 + 2e-4  # float noise well inside the 1e-3 tolerance
    _blender(tmp_path, [np.zeros((4, 4, 3), np.uint8)], poses=[pose.tolist()])
    assert len(read_scene(tmp_path)) == 1


# -------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not LEGO.is_dir(), reason="nerf_synthetic lego not available")
def test_lego():
    meta = json.loads((LEGO / "transforms_train.json").read_text())
    assert len(meta["frames"]) == 100
    scene = read_scene(LEGO, max_images=4, keep_alpha=True)
    assert scene.images.shape == (4, 400, 400, 3)
    assert scene.camera_angle_x == pytest.approx(0.6911112070083618)
    torch.testing.assert_close(scene.fx, torch.full((4,), 200.0 / math.tan(0.5 * 0.6911112070083618)))
    # The model sits at the origin: the pixel the origin projects to is opaque in every view.
    for i in range(len(scene)):
        w2c = torch.linalg.inv(scene.c2w[i])
        x, y, z = (w2c @ torch.tensor([0.0, 0.0, 0.0, 1.0]))[:3]
        assert z < 0  # in front of an OpenGL camera
        u = int(scene.fx[i] * x / -z + scene.cx[i])
        v = int(-scene.fy[i] * y / -z + scene.cy[i])
        assert scene.alphas[i, v, u] > 0.5
    assert len(read_scene(LEGO, split="val", max_images=1, downscale=4).images[0]) == 100


def test_single_file_scene_leaves_out_frames_without_images(tmp_path, capsys):
    """Tools that write transforms.json list frames whose photos were later dropped (instant-ngp's fox
    lists 17): those frames are left out with a warning; a scene with none left is still an error."""
    path = _nerfstudio(tmp_path, n=10)
    images = sorted((tmp_path / "images").iterdir())
    complete = read_scene(path, "all")
    for image in images[:3]:
        image.unlink()
    scene = read_scene(path, "all")
    assert len(scene) == len(complete) - 3
    assert "3 of 10 frames name images that do not exist" in capsys.readouterr().err
    for image in images[3:]:
        image.unlink()
    with pytest.raises(InputError, match="not found"):
        read_scene(path, "all")
