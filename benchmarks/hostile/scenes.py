"""Hostile scenes and images (issue 17, part B): JSON nested 100k deep, integers of 5000 digits, poses out
of float range, an ``aabb_scale`` or ``scale`` that empties the box, a box no camera sees, PNG
decompression bombs (checked from the header, nothing decoded), a split too large for memory held as
uint8, a sideways phone JPEG with EXIF orientation, and render's writes on a full disk or into a folder
that cannot be made.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from benchmarks.hostile.case import Case
from benchmarks.hostile.checkpoints import checkpoint, save
from benchmarks.hostile.checkpoints import scene as spheres

FIT = ["--steps", "1", "--batch", "64", "--device", "cpu", "--quiet"]


def _nerfstudio(work: Path, n: int = 6, size: tuple[int, int] = (16, 12), **extra) -> Path:
    """A nerfstudio scene of ``n`` random RGB PNGs on an orbit around the origin; returns its folder."""
    import numpy as np
    from PIL import Image

    from recon3d.synthetic import orbit_poses

    folder = work / "scene"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(0)
    frames = []
    for i, pose in enumerate(orbit_poses(n, radius=3.0)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(folder / "images" / f"f{i}.png")
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": pose.tolist()})
    meta = {"fl_x": 16.0, "fl_y": 16.0, "cx": w / 2, "cy": h / 2, "w": w, "h": h, "frames": frames, **extra}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def _fit(edit=None, text=None, **extra):
    """A fit-nerf case on a nerfstudio scene whose json is edited (``edit(meta)``) or replaced (``text``)."""

    def build(work: Path) -> list[str]:
        folder = _nerfstudio(work, **extra)
        path = folder / "transforms.json"
        if edit is not None:
            meta = json.loads(path.read_text())
            edit(meta)
            path.write_text(json.dumps(meta))
        if text is not None:
            path.write_text(text(path.read_text()))
        return ["fit-nerf", folder, "-o", work / "model.pt", *FIT]

    return build


def _pose_entry(frame: int, row: int, col: int, value):
    return lambda meta: meta["frames"][frame]["transform_matrix"][row].__setitem__(col, value)


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG claiming width x height RGB pixels that holds almost nothing."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))


def _bomb(kind: str):
    def build(work: Path) -> list[str]:
        from PIL import Image

        folder = _nerfstudio(work)
        target = folder / "images" / "f1.png"
        if kind == "1-bit":  # a real, valid 12000 x 12000 PNG of a few KB
            Image.new("1", (12000, 12000)).save(target)
        else:
            _png_header(target, *{"header": (12000, 12000), "pillow": (20000, 20000)}[kind])
        return ["fit-nerf", folder, "-o", work / "model.pt", *FIT]

    return build


def _many_frames(work: Path) -> list[str]:
    """250 frames of one 1000 x 1000 RGBA PNG (a copy each): 1 GB as uint8, 4 GB as float32 before."""
    import numpy as np

    from recon3d.io.scene import write_blender_scene
    from recon3d.synthetic import orbit_poses

    folder = work / "scene"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 1000, 1000, 4), np.uint8)
    write_blender_scene(folder, image, orbit_poses(1), 0.69, split="train")
    meta = json.loads((folder / "transforms_train.json").read_text())
    poses = orbit_poses(250)
    for i in range(1, 250):
        shutil.copyfile(folder / "train" / "r_0.png", folder / "train" / f"r_{i}.png")
    meta["frames"] = [{"file_path": f"./train/r_{i}", "transform_matrix": poses[i].tolist()} for i in range(250)]
    (folder / "transforms_train.json").write_text(json.dumps(meta))
    return ["fit-nerf", folder, "-o", work / "model.pt", "--steps", "1", "--batch", "256", "--device", "cpu",
            "--quiet"]


def _exif_jpeg(work: Path) -> list[str]:
    """A phone photo stored sideways (EXIF orientation 6) in a scene declaring the upright 24 x 32 size:
    read upright it fits; read as stored it would be 32 x 24."""
    import numpy as np
    from PIL import Image

    from recon3d.synthetic import orbit_poses

    folder = work / "scene"
    (folder / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = []
    for i, pose in enumerate(orbit_poses(4, radius=3.0)):
        upright = np.random.default_rng(i).integers(0, 256, (32, 24, 3), np.uint8)
        Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(folder / "images" / f"f{i}.jpg", exif=exif)
        frames.append({"file_path": f"images/f{i}.jpg", "transform_matrix": pose.tolist()})
    meta = {"fl_x": 24.0, "w": 24, "h": 32, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return ["fit-nerf", folder, "-o", work / "model.pt", *FIT]


def _full_disk(work: Path) -> list[str]:
    """render -o onto a 64 kB tmpfs filled to a few kB (needs root to mount; see the check)."""
    model = save(work / "model.pt", checkpoint("nerf"))
    folder = spheres(work)
    mount = work / "full"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    if mounted:
        filler = mount / "filler"
        with open(filler, "wb") as handle:
            try:
                handle.write(bytes(64 << 10))
            except OSError:
                pass
        (mount / "renders").mkdir()
    else:
        (work / "not-mounted").write_text("mount -t tmpfs failed (not root?)")
    return ["render", model, "--scene", folder, "--split", "val", "-o", mount / "renders", "--device", "cpu",
            "--quiet"]


def _full_disk_check(work: Path, result) -> str | None:
    mount = work / "full"
    problem = None
    if (work / "not-mounted").exists():
        problem = "skipped: could not mount a tmpfs (needs root)"
    elif "images" not in result.stderr or "written" not in result.stderr:
        problem = "the error does not say how many images were written"
    subprocess.run(["umount", str(mount)], capture_output=True)
    return problem


def _unmakeable_folder(work: Path) -> list[str]:
    model = save(work / "model.pt", checkpoint("nerf"))
    return ["render", model, "--scene", spheres(work), "--split", "val", "-o", "/proc/recon3d-renders",
            "--device", "cpu", "--quiet"]


CASES: list[Case] = [
    Case("scene: JSON nested 100k deep", _fit(text=lambda t: t[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000
                                              + "}"), bounded=True),
    Case("scene: 5000-digit integer focal length", _fit(text=lambda t: t.replace('"fl_x": 16.0', '"fl_x": '
                                                                                  + "9" * 5000))),
    Case("scene: integer too large for float in a pose",
         _fit(edit=_pose_entry(1, 0, 3, "HUGE"), text=lambda t: t.replace('"HUGE"', "1" * 400))),
    Case("scene: pose translation 1e300", _fit(edit=_pose_entry(1, 0, 3, 1e300))),
    Case("scene: NaN in a pose", _fit(edit=_pose_entry(2, 1, 3, float("nan")))),
    Case("scene: aabb_scale that empties the box", _fit(aabb_scale=1e-300)),
    Case("scene: scale that empties the box", _fit(aabb_scale=2, scale=1e300)),
    Case("scene: box no camera sees", _fit(aabb_scale=2, offset=[0.5, -1e6, 0.5])),
    Case("scene: field of view of 4 radians", _fit(edit=lambda m: (m.pop("fl_x"), m.pop("fl_y"),
                                                                   m.update(camera_angle_x=4.0)))),
    Case("scene: PNG bomb: real 12000^2 1-bit PNG", _bomb("1-bit"), bounded=True),
    Case("scene: PNG bomb: header of 12000^2", _bomb("header"), bounded=True),
    Case("scene: PNG bomb past Pillow's own limit", _bomb("pillow"), bounded=True),
    Case("scene: 250 frames of 1000^2 (uint8 storage)", _many_frames, expect="ok", bounded=True, timeout=300),
    Case("scene: sideways phone JPEG with EXIF orientation", _exif_jpeg, expect="ok"),
    Case("render: full disk (tmpfs)", _full_disk, bounded=True, check=_full_disk_check),
    Case("render: output folder that cannot be made", _unmakeable_folder),
]
