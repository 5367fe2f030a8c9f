"""Scenes as an attacker writes them, images as phones and bombs make them, and render's writes: every
problem one InputError / error line, nothing decoded before its size is known, images kept as uint8
with the float path's exact values, and a render whose images cannot be written fails saying how many
were written."""

from __future__ import annotations

import errno
import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recon3d.cli import app
from recon3d.errors import InputError, Recon3dError
from recon3d.fit.nerf import training_targets
from recon3d.io import scene as scene_module
from recon3d.io.scene import read_scene, write_blender_scene
from recon3d.render import views
from recon3d.render.rays import RaySampler
from recon3d.synthetic import look_at, orbit_poses, write_spheres_scene

# ------------------------------------------------------------------------------------ helpers


def _nerfstudio(folder: Path, n: int = 4, size: tuple[int, int] = (8, 6), **extra) -> Path:
    """A nerfstudio transforms.json of ``n`` random RGB PNGs around the origin."""
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, pose in enumerate(orbit_poses(n, radius=3.0)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(folder / "images" / f"f{i}.png")
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": pose.tolist()})
    meta = {"fl_x": 8.0, "fl_y": 8.0, "cx": w / 2, "cy": h / 2, "w": w, "h": h, "frames": frames}
    meta.update(extra)
    path = folder / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


def _edit(path: Path, text_or_edit) -> Path:
    if callable(text_or_edit):
        meta = json.loads(path.read_text())
        text_or_edit(meta)
        path.write_text(json.dumps(meta))
    else:
        path.write_text(text_or_edit)
    return path


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_scene(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` 8-bit RGB pixels and holds almost nothing: a
    decompression bomb's header, made in microseconds."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


# ---------------------------------------------------------------------------------------- json


def test_deeply_nested_json_is_one_line(tmp_path):
    path = _nerfstudio(tmp_path)
    _edit(path, '{"frames": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested too deeply" in _error(tmp_path)


def test_huge_integers_are_read_as_numbers_and_refused_by_key(tmp_path):
    path = _nerfstudio(tmp_path)
    text = path.read_text().replace('"fl_x": 8.0', '"fl_x": ' + "9" * 5000)
    _edit(path, text)
    message = _error(tmp_path)
    assert "'fl_x'" in message and "9999999" not in message


def test_integer_too_large_for_float_in_a_pose(tmp_path):
    path = _nerfstudio(tmp_path)
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"][0][3] = "HUGE"
    _edit(path, json.dumps(meta).replace('"HUGE"', "1" * 400))
    assert "transform_matrix" in _error(tmp_path, split="all")


@pytest.mark.parametrize("value, fragment", [(1e300, "beyond"), (float("nan"), "NaN"), (float("inf"), "NaN")])
def test_pose_numbers_out_of_range(tmp_path, value, fragment):
    path = _nerfstudio(tmp_path)
    _edit(path, lambda m: m["frames"][2]["transform_matrix"][1].__setitem__(3, value))
    message = _error(tmp_path, split="all")
    assert "frame 2" in message and fragment in message


def test_json_larger_than_the_limit(tmp_path, monkeypatch):
    _nerfstudio(tmp_path)
    monkeypatch.setattr(scene_module, "MAX_JSON_BYTES", 100)
    assert "larger than a transforms json" in _error(tmp_path)


@pytest.mark.parametrize("extra, fragment", [
    ({"aabb_scale": 1e-300}, "empty scene box"),
    ({"aabb_scale": 2, "scale": 1e300}, "empty scene box"),
    ({"aabb_scale": 2, "scale": 1e-300}, "beyond"),
    ({"aabb_scale": 2, "offset": [0.5, -1e6, 0.5]}, "no camera looks at"),  # a box high above the cameras
    ({"aabb_scale": float("nan")}, "'aabb_scale' must be a positive number"),
    ({"aabb_scale": 2, "scale": "big"}, "'scale' must be a positive number"),
    ({"aabb_scale": 2, "offset": [0.5, float("inf"), 0.5]}, "'offset'"),
    ({"camera_angle_x": 4.0, "fl_x": None}, "'camera_angle_x' must be an angle"),
    ({"k1": 1e9}, "'k1'"),
    ({"cx": 1e30}, "'cx'"),
])
def test_box_and_camera_numbers(tmp_path, extra, fragment):
    path = _nerfstudio(tmp_path)
    _edit(path, lambda m: m.update(extra) or [m.pop(k) for k in [k for k, v in extra.items() if v is None]])
    message = _error(tmp_path)
    assert fragment in message and str(path) in message, message


def test_cameras_looking_away_from_the_blender_box(tmp_path):
    write_spheres_scene(tmp_path, n_train=2, n_val=1, size=8)
    away = [look_at((0.0, -4.0, 1.0), target=(0.0, -8.0, 1.0)).tolist()] * 2
    _edit(tmp_path / "transforms_train.json",
          lambda m: [f.update(transform_matrix=p) for f, p in zip(m["frames"], away)])
    assert "no camera looks at" in _error(tmp_path)


# -------------------------------------------------------------------------------------- images


def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    path = _nerfstudio(tmp_path)
    _png_header_only(tmp_path / "images" / "f1.png", 12000, 12000)
    decoded = []
    monkeypatch.setattr(scene_module, "_decode", lambda *a: decoded.append(a) or pytest.fail("decoded"))
    message = _error(path)
    assert "12000x12000" in message and "f1.png" in message and not decoded


def test_pillow_bomb_error_is_an_input_error(tmp_path):
    path = _nerfstudio(tmp_path)
    _png_header_only(tmp_path / "images" / "f1.png", 20000, 20000)  # past Pillow's own limit
    assert "too large to decode" in _error(path)


def test_real_1_bit_bomb_png(tmp_path):
    """A real 12000 x 12000 1-bit PNG of a few KB."""
    from PIL import Image

    _nerfstudio(tmp_path)
    Image.new("1", (12000, 12000)).save(tmp_path / "images" / "f1.png")
    assert (tmp_path / "images" / "f1.png").stat().st_size < 100_000
    assert "144 M pixels" in _error(tmp_path)


def test_split_too_large_for_memory_names_downscale(tmp_path, monkeypatch):
    _nerfstudio(tmp_path, n=48, size=(64, 48))  # 42 train images: 387 kB as uint8, 4 x 4 smaller as floats
    monkeypatch.setattr(scene_module, "available_memory", lambda: 400_000)
    message = _error(tmp_path)
    assert "--downscale" in message and "memory" in message


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    """A phone JPEG stored sideways with EXIF orientation 6: read as the upright 16 x 32 image."""
    from PIL import Image

    upright = np.zeros((32, 16, 3), np.uint8)
    upright[:16] = (255, 0, 0)  # top half red
    upright[16:] = (0, 0, 255)  # bottom half blue
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # sideways, 32 x 16
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    (tmp_path / "images").mkdir()
    stored.save(tmp_path / "images" / "f0.jpg", quality=95, exif=exif)
    pose = orbit_poses(1, radius=3.0)[0].tolist()
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"fl_x": 20.0, "w": 16, "h": 32, "frames": [{"file_path": "images/f0.jpg", "transform_matrix": pose}]}))
    scene = read_scene(tmp_path, split="all")
    assert (scene.width, scene.height) == (16, 32)
    image = scene.image(0)
    assert image[2, 8, 0] > 0.9 and image[2, 8, 2] < 0.1  # red on top
    assert image[29, 8, 2] > 0.9 and image[29, 8, 0] < 0.1  # blue below


def test_images_are_stored_as_uint8_with_the_float_values(tmp_path):
    folder = write_spheres_scene(tmp_path, n_train=3, n_val=1, size=16)  # RGBA PNGs
    scene = read_scene(folder, keep_alpha=True)
    assert scene.pixels.dtype == torch.uint8 and scene.pixels.shape == (3, 16, 16, 4)
    # The float values the float32 path computed: u8 / 255, composited onto the background.
    from PIL import Image

    rgba = np.asarray(Image.open(scene.files[1])).astype(np.float32) / 255.0
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    expected = rgb * alpha[..., None] + np.ones(3, np.float32) * (1.0 - alpha[..., None])
    assert torch.equal(scene.image(1), torch.from_numpy(expected))
    assert torch.equal(scene.alphas[1], torch.from_numpy(alpha))
    # Downscaled splits are averages: kept as float32.
    assert read_scene(folder, downscale=2).pixels.dtype == torch.float32


def test_rays_and_training_targets_match_the_float_images(tmp_path):
    folder = write_spheres_scene(tmp_path, n_train=3, n_val=1, size=16)
    scene = read_scene(folder, keep_alpha=True)
    generator = torch.Generator().manual_seed(3)
    stored = RaySampler.from_scene(scene).sample(256, generator)
    floats = RaySampler(scene.images, scene.c2w, scene.fx, scene.fy, scene.cx, scene.cy).sample(
        256, torch.Generator().manual_seed(3))
    assert torch.equal(stored.rgb, floats.rgb) and torch.equal(stored.rays.directions, floats.rays.directions)
    # fit-nerf's targets: premultiplied colour + alpha, as the whole-split float path made them.
    alpha = scene.alphas[..., None]
    whole = torch.cat([scene.images - torch.ones(3) * (1.0 - alpha), alpha], dim=-1)
    i, (u, v) = stored.image_indices, stored.pixels.T
    assert torch.equal(training_targets(scene)(scene.pixels[i, v, u]), whole[i, v, u])


def test_sixteen_bit_splits_are_float(tmp_path):
    grey16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000)
    from PIL import Image

    (tmp_path / "train").mkdir()
    Image.fromarray(grey16).save(tmp_path / "train" / "r_0.png")
    frame = {"file_path": "./train/r_0", "transform_matrix": look_at((0, -4, 1)).tolist()}
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": [frame]}))
    scene = read_scene(tmp_path)
    assert scene.pixels.dtype == torch.float32
    torch.testing.assert_close(scene.image(0)[..., 0], torch.tensor(grey16 / 65535.0, dtype=torch.float32))


# -------------------------------------------------------------------------------------- render


@pytest.fixture(scope="module")
def nerf(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny scene and a radiance field fitted to it for 2 steps."""
    work = tmp_path_factory.mktemp("render")
    scene = write_spheres_scene(work / "scene", n_train=3, n_val=3, size=16)
    model = work / "model.pt"
    result = CliRunner().invoke(app, ["fit-nerf", str(scene), "-o", str(model), "--steps", "2", "--batch", "64",
                                      "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    return scene, model


def _fail_after(monkeypatch, good: int, error: int = errno.ENOSPC) -> None:
    """The atomic writer's file handles fail to write after ``good`` files went through."""
    real, count = os.fdopen, [0]

    class Failing:
        def __init__(self, handle):
            self._handle = handle

        def write(self, data):
            raise OSError(error, os.strerror(error))

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()
            return False

    def fdopen(*args, **kwargs):
        count[0] += 1
        handle = real(*args, **kwargs)
        return handle if count[0] <= good else Failing(handle)

    monkeypatch.setattr(os, "fdopen", fdopen)


def _render(scene: Path, model: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["render", str(model), "--scene", str(scene), "--split", "val", "-o", str(out),
                                    "--device", "cpu", "--quiet", *extra])


def test_render_on_a_full_disk_fails_and_says_what_was_written(nerf, tmp_path, monkeypatch):
    scene, model = nerf
    out = tmp_path / "renders"
    _fail_after(monkeypatch, good=1)
    result = _render(scene, model, out)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.stderr
    assert "disk is full" in errors[0] and "1 of 3 images was written" in errors[0], errors[0]
    assert "psnr" not in result.stdout  # no scores for a render that failed
    assert sorted(p.name for p in out.iterdir()) == ["val_000_r_0.png"]


def test_orbit_gif_on_a_full_disk(nerf, tmp_path, monkeypatch):
    scene, model = nerf
    _fail_after(monkeypatch, good=0, error=errno.EIO)
    result = _render(scene, model, tmp_path / "orbit", "--orbit", "2", "--gif")
    assert result.exit_code == 1 and "0 of 1 image were written" in result.stderr, result.stderr


def test_a_short_file_on_disk_is_a_failed_write(nerf, tmp_path, monkeypatch):
    """A writer that reports success but leaves fewer bytes than it was given (a lying file system)."""
    scene, model = nerf
    real = views.atomic_write_bytes
    monkeypatch.setattr(views, "atomic_write_bytes", lambda path, data: real(path, data[:-5]))
    result = _render(scene, model, tmp_path / "short")
    assert result.exit_code == 1 and "bytes on disk" in result.stderr and "0 of 3" in result.stderr, result.stderr
    assert not list((tmp_path / "short").iterdir())


def test_render_folder_that_cannot_be_created_is_a_library_error(nerf, tmp_path, monkeypatch):
    scene, model = nerf

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    options = views.RenderOptions(split="val", output=tmp_path / "denied")
    with pytest.raises(Recon3dError, match="cannot create the output folder"):
        views.render_model(model, scene, options, "cpu", show_progress=False)


def test_write_blender_scene_still_round_trips(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 6, 4), dtype=np.uint8)
    write_blender_scene(tmp_path, images, orbit_poses(2), 0.8)
    scene = read_scene(tmp_path, keep_alpha=True)
    assert torch.equal(scene.pixels, torch.from_numpy(images))


# ---------------------------------------------------------------------------------------- fuzzer

JSON_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.just(10**400) | st.just(-(10**400))
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
SCENE_KEYS = ["fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "p2", "camera_angle_x", "camera_angle_y", "aabb_scale",
              "scale", "offset", "camera_model", "train_filenames", "frames", "is_fisheye"]


def _json_paths(node, prefix=()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _json_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node[:4]):
            found += _json_paths(value, prefix + (index,))
    return found


@pytest.fixture(scope="module")
def fuzz_scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_scene")
    _nerfstudio(folder, n=4, size=(8, 6))
    return folder


@settings(max_examples=int(os.environ.get("RECON3D_FUZZ_EXAMPLES", "120")), deadline=None, database=None,
          derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_scene_json_reads_or_is_refused(fuzz_scene, data):
    """A mutated transforms.json (values replaced by junk, keys dropped or added) is read into a scene whose
    rays are finite, or refused with one Recon3dError line; never another exception."""
    meta = json.loads((fuzz_scene / "transforms.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        operation = data.draw(st.sampled_from(["replace", "delete", "add", "add to a frame"]))
        if operation.startswith("add"):
            frames = meta.get("frames")
            target = meta
            if operation == "add to a frame" and isinstance(frames, list) and frames and isinstance(frames[0], dict):
                target = frames[data.draw(st.integers(0, len(frames) - 1))]
            if isinstance(target, dict):
                target[data.draw(st.sampled_from(SCENE_KEYS))] = data.draw(JSON_JUNK)
            continue
        paths = _json_paths(meta) or [("frames",)]
        shallow = [p for p in paths if len(p) <= 3 and "transform_matrix" not in p[:-1]]  # not only matrix entries
        path = data.draw(st.sampled_from(shallow if shallow and data.draw(st.booleans()) else paths))
        node = meta
        for key in path[:-1]:
            node = node[key]
        if operation == "delete" and isinstance(node, dict):
            del node[path[-1]]
        elif path[-1] in node or isinstance(node, list):
            node[path[-1]] = data.draw(JSON_JUNK)
    mutated = fuzz_scene / "mutated.json"
    mutated.write_text(json.dumps(meta))
    try:
        scene = read_scene(mutated, split=data.draw(st.sampled_from(["train", "all"])))
    except Recon3dError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 500, str(exc)
        return
    batch = RaySampler.from_scene(scene).sample(64, torch.Generator().manual_seed(0))
    assert torch.isfinite(batch.rays.directions).all() and torch.isfinite(batch.rgb).all()
    assert torch.isfinite(scene.aabb).all() and math.isfinite(scene.near) and math.isfinite(scene.far)
