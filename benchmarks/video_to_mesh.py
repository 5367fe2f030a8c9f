"""Video to mesh (issue 19): a hand-held video of an object in a cluttered room → frames → poses → a watertight
mesh of the object without the room, with the README's commands alone, measured against known geometry.

There is no real phone video with ground truth, so one is synthesised with recon3d.meshscene's CPU ray caster:
a closed mesh of DATA/meshes (``--object``, default spot) scaled to ``--object-size`` metres stands on a table
in a closed, textured room (floor, walls, ceiling) with clutter on the table, on the floor and along the walls;
a camera walks once round the object (``--sweep`` degrees) at ``--distance`` times the distance that frames it,
its height, distance, aim and roll wobbling as a hand's do, and the frames are encoded as an H.264 mp4 with
PyAV (WORK/capture/, reused while the settings are the same). Every surface has a 3D texture: the meshscene
albedo at a per-part scale plus a per-part quasi-periodic pattern, so SIFT finds features that are not repeats.

The chain then runs as whole CLI processes, as a user would type it (each command's stderr in WORK/*.log):

    recon3d poses capture.mp4 -o scene --frames N --json
    recon3d fit-sdf scene -o model.pt --max-seconds S [--downscale K] --threads T --json
    recon3d extract-mesh model.pt -o object.ply --preview object_extract.png --threads T --json

and the result is judged: registered frames; the similarity (Umeyama) from the recovered camera centres to the
true ones, the centre RMS error after it (% of the camera path's extent) and the median rotation error; the
mesh mapped into the true world by that similarity against the true object with recon3d.metrics.evaluate
(Chamfer-L1 as % of the object's bounding-box diagonal, F@1%, normal consistency) plus F@5%, watertightness,
and "without the room": the share of the mesh's area farther than 5 % of the object's diagonal from the object
(split by what it is nearest to: the table, the clutter, the room), the mesh's box against the object's, and
where the fit's region (box, support plane) lay in the true world. Pictures: a few video frames, the true
object and the aligned mesh (WORK/*.png).

``--video PATH`` runs the chain on a real video instead (no synthesis, no ground-truth metrics): timing,
registered frames, mesh statistics and a picture of the mesh seen from the cameras' side.

    python benchmarks/video_to_mesh.py --work /tmp/video_bench --frames 60 --max-seconds 120 --threads 1
    python benchmarks/video_to_mesh.py --video phone.mp4 --work /tmp/phone --max-seconds 300

The markdown table goes to stdout, progress to stderr, the record to --json-out (default WORK/results.json).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.images_to_mesh import _fmt, _sha256, environment, run_cli, scene_orientation, write_record  # noqa: E402
from benchmarks.photos_to_mesh import angles, umeyama  # noqa: E402
from recon3d import meshscene  # noqa: E402
from recon3d.errors import Recon3dError  # noqa: E402
from recon3d.metrics import evaluate, mesh_is_watertight, sample_surface  # noqa: E402
from recon3d.types import PointCloud, TriMesh  # noqa: E402

#: Bumped whenever the synthesised video changes for the same settings, so cached captures are rewritten.
SYNTH_VERSION = 1
#: Room, table and clutter, metres, z up; the object stands at the table top's centre, (0, 0, TABLE_TOP).
ROOM = ((-2.2, -1.8, 0.0), (2.8, 2.2, 2.6))
TABLE_TOP = 0.75
TABLE_HALF = (0.6, 0.4)
#: Leakage: mesh area farther than this fraction of the object's bounding-box diagonal from the object.
LEAK_FRACTION = 0.05
#: Background colour composited where a ray misses (the room is closed: it should never show).
VOID = (0.5, 0.5, 0.5)


def log(message: str) -> None:
    print(f"[video_to_mesh] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ geometry


def box_mesh(lo: tuple[float, ...], hi: tuple[float, ...]) -> TriMesh:
    """A closed axis-aligned box, 12 triangles, outward winding."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    vertices = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                         [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], np.float64)
    faces = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                      [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], np.int64)
    return TriMesh(vertices=vertices, faces=faces)


def turned(mesh: TriMesh, degrees: float, about: np.ndarray | None = None) -> TriMesh:
    """``mesh`` turned by ``degrees`` about the vertical axis through ``about`` (default its box centre)."""
    v = np.asarray(mesh.vertices, np.float64)
    centre = 0.5 * (v.min(0) + v.max(0)) if about is None else np.asarray(about, np.float64)
    a = math.radians(degrees)
    rotation = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return TriMesh(vertices=(v - centre) @ rotation.T + centre, faces=np.asarray(mesh.faces, np.int64))


def standing(mesh: TriMesh, size: float, at: tuple[float, float, float], up: str = "y",
             heading: float = 0.0) -> TriMesh:
    """``mesh`` welded, turned so its ``up`` axis points along +z, its longest side ``size`` metres, its box
    centred over ``at`` in x and y with its bottom at ``at``'s z, turned by ``heading`` degrees about z."""
    placed = meshscene.scene_mesh(mesh)  # welded, centred
    v = np.asarray(placed.vertices, np.float64)
    if up == "y":  # +90 degrees about x: y → z, z → -y (a rotation, so the winding stays outward)
        v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)
    elif up == "x":
        v = np.stack([-v[:, 2], v[:, 1], v[:, 0]], axis=1)
    v = v * (size / float((v.max(0) - v.min(0)).max()))
    lo, hi = v.min(0), v.max(0)
    v = v - np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), lo[2]]) + np.asarray(at, np.float64)
    return turned(TriMesh(vertices=v, faces=np.asarray(placed.faces, np.int64)), heading, np.asarray(at))


@dataclass
class Room:
    """The rendered world: every part merged into one mesh, each face's part (an index into ``names``), each
    part's kind (object / table / clutter / room), and the object alone (the ground truth)."""

    mesh: TriMesh
    face_part: np.ndarray
    names: list[str]
    kinds: list[str]
    object: TriMesh


def build_room(obj: TriMesh, data: Path, seed: int) -> Room:
    """The object on a table, clutter on the table, on the floor and along the walls, inside a closed room."""
    (rx0, ry0, _), (rx1, ry1, rz1) = ROOM
    tx, ty, top = TABLE_HALF[0], TABLE_HALF[1], TABLE_TOP
    parts: list[tuple[str, str, TriMesh]] = [("object", "object", obj)]
    parts.append(("table top", "table", box_mesh((-tx, -ty, top - 0.04), (tx, ty, top))))
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (tx - 0.06), sy * (ty - 0.06)
            parts.append((f"table leg {sx:+d}{sy:+d}", "table", box_mesh((x - 0.025, y - 0.025, 0.0),
                                                                          (x + 0.025, y + 0.025, top - 0.04))))
    parts += [
        ("mug-sized box", "clutter", turned(box_mesh((0.36, 0.16, top), (0.50, 0.27, top + 0.13)), 25.0)),
        ("ball on the table", "clutter", meshscene.icosphere(3, 0.07, (-0.46, -0.22, top + 0.07))),
        ("book", "clutter", turned(box_mesh((0.28, -0.33, top), (0.50, -0.17, top + 0.035)), -15.0)),
        ("tin", "clutter", box_mesh((-0.12, 0.26, top), (0.0, 0.36, top + 0.09))),
        ("cabinet", "clutter", box_mesh((rx1 - 0.45, 0.6, 0.0), (rx1, 1.5, 0.9))),
        ("bookshelf", "clutter", box_mesh((-0.3, ry1 - 0.32, 0.0), (0.7, ry1, 1.8))),
        ("crate", "clutter", turned(box_mesh((-1.55, -1.35, 0.0), (-1.05, -0.95, 0.45)), 12.0)),
        ("small crate", "clutter", turned(box_mesh((-1.45, -1.3, 0.45), (-1.15, -1.05, 0.7)), -20.0)),
        ("floor ball", "clutter", meshscene.icosphere(3, 0.14, (1.35, -1.15, 0.14))),
        ("low box", "clutter", box_mesh((1.0, 1.2, 0.0), (1.6, 1.6, 0.3))),
        ("picture", "clutter", box_mesh((rx0, -0.6, 1.2), (rx0 + 0.03, 0.4, 1.8))),
        ("poster", "clutter", box_mesh((0.8, ry0, 1.1), (1.6, ry0 + 0.02, 1.9))),
    ]
    for name, size, at, heading in (("cheburashka", 0.16, (-0.38, 0.2, top), 140.0),
                                    ("cow", 0.6, (-1.35, 1.25, 0.0), 35.0),
                                    ("homer", 0.5, (2.2, -1.2, 0.0), -120.0)):
        path = data / "meshes" / f"{name}.obj"
        if path.is_file():
            from recon3d.io.mesh import read_mesh

            parts.append((name, "clutter", standing(read_mesh(path), size, at, "y", heading)))
    walls = [("floor", (rx0, ry0, -0.05), (rx1, ry1, 0.0)), ("ceiling", (rx0, ry0, rz1), (rx1, ry1, rz1 + 0.05)),
             ("wall -x", (rx0 - 0.05, ry0, 0.0), (rx0, ry1, rz1)), ("wall +x", (rx1, ry0, 0.0), (rx1 + 0.05, ry1, rz1)),
             ("wall -y", (rx0, ry0 - 0.05, 0.0), (rx1, ry0, rz1)), ("wall +y", (rx0, ry1, 0.0), (rx1, ry1 + 0.05, rz1))]
    parts += [(name, "room", box_mesh(lo, hi)) for name, lo, hi in walls]
    vertices, faces, face_part, offset = [], [], [], 0
    for index, (_, _, mesh) in enumerate(parts):
        vertices.append(np.asarray(mesh.vertices, np.float64))
        faces.append(np.asarray(mesh.faces, np.int64) + offset)
        face_part.append(np.full(len(mesh.faces), index, np.int64))
        offset += len(mesh.vertices)
    merged = TriMesh(vertices=np.concatenate(vertices), faces=np.concatenate(faces))
    return Room(merged, np.concatenate(face_part), [p[0] for p in parts], [p[1] for p in parts], obj)


# ------------------------------------------------------------------------------------------ texture


class Texture:
    """Per-part surface colour: meshscene.albedo at the part's own scale and offset (so parts differ), mixed
    with a quasi-periodic pattern of random plane waves (so no patch repeats and SIFT matches are unique)."""

    def __init__(self, n_parts: int, kinds: list[str], seed: int) -> None:
        rng = np.random.default_rng(seed + 1)
        scale_by_kind = {"object": 5.0, "table": 3.0, "clutter": 3.5, "room": 2.0}
        self.scales = np.array([scale_by_kind[k] for k in kinds])
        self.offsets = rng.uniform(-5.0, 5.0, (n_parts, 3))
        directions = rng.normal(size=(n_parts, 12, 3))
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        frequencies = np.exp(rng.uniform(math.log(6.0), math.log(45.0), (n_parts, 12, 1)))  # rad / metre
        self.waves = directions * frequencies * (self.scales[:, None, None] / 3.0)
        self.phases = rng.uniform(0.0, 2.0 * math.pi, (n_parts, 12))
        self.weights = rng.normal(0.0, 1.0 / math.sqrt(12.0), (n_parts, 12, 3))

    def __call__(self, points: np.ndarray, part: np.ndarray) -> np.ndarray:
        colour = np.empty((len(points), 3))
        for p in np.unique(part):
            rows = part == p
            q = points[rows]
            base = meshscene.albedo(q * self.scales[p] + self.offsets[p])
            pattern = np.sin(q @ self.waves[p].T + self.phases[p]) @ self.weights[p]
            colour[rows] = 0.55 * base + 0.45 * (0.5 + 0.35 * np.tanh(pattern))
        return np.clip(colour, 0.04, 0.96)


def render_frame(caster: meshscene.MeshCaster, room: Room, texture: Texture, camera: meshscene.Camera,
                 supersample: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 of one view (textured, Lambert with meshscene's fixed lights, flat normals turned to the
    viewer, ``supersample``² rays a pixel) and the share of the pixel area that hit the room (1: no void)."""
    fine = camera.scaled(supersample)
    origins, directions, t, face = caster.cast(fine)
    hit = np.isfinite(t)
    rgb = np.tile(np.asarray(VOID, np.float64), (len(t), 1))
    rows = np.flatnonzero(hit)
    points = origins[rows] + t[rows, None] * directions[rows]
    normals = meshscene.face_normals(np.asarray(room.mesh.vertices), np.asarray(room.mesh.faces))[face[rows]]
    normals *= np.where(np.einsum("ij,ij->i", normals, directions[rows]) > 0, -1.0, 1.0)[:, None]
    shade = meshscene.lambert(normals, meshscene.AMBIENT, meshscene.LIGHTS)
    rgb[rows] = np.clip(texture(points, room.face_part[face[rows]]) * shade[:, None], 0.0, 1.0)
    s = supersample
    rgb = rgb.reshape(camera.height, s, camera.width, s, 3).mean(axis=(1, 3))
    return np.round(rgb * 255.0).astype(np.uint8), float(hit.mean())


# ------------------------------------------------------------------------------------------ capture


def smooth_noise(rng: np.random.Generator, t: np.ndarray, amplitude: float, cycles: tuple[float, ...]) -> np.ndarray:
    """(len(t), 3) a smooth wobble: sines of a few frequencies (cycles over the clip) with random phases."""
    out = np.zeros((len(t), 3))
    for c in cycles:
        phase = rng.uniform(0.0, 2.0 * math.pi, 3)
        out += np.sin(2.0 * math.pi * c * t[:, None] + phase) * rng.uniform(0.5, 1.0, 3)
    return amplitude * out / len(cycles)


def camera_path(n: int, centre: np.ndarray, distance: float, sweep: float, seed: int) -> np.ndarray:
    """(n, 4, 4) camera-to-world poses (OpenGL axes) of a hand-held walk round ``centre``: ``sweep`` degrees
    of azimuth, elevation 12-28 degrees, distance ±6 %, the hand's wobble (1.5 cm smooth + 2 mm shake) in
    position, 2.5 cm in aim, ±3 degrees of roll."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / max(n, 1)
    azimuth = rng.uniform(0.0, 2.0 * math.pi) + math.radians(sweep) * t
    elevation = np.radians(20.0 + 8.0 * np.sin(2.0 * math.pi * 2.0 * t + rng.uniform(0, 2 * math.pi)))
    reach = distance * (1.0 + 0.06 * np.sin(2.0 * math.pi * 1.3 * t + rng.uniform(0, 2 * math.pi)))
    eyes = centre + reach[:, None] * np.stack([np.cos(elevation) * np.cos(azimuth),
                                               np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=1)
    eyes += smooth_noise(rng, t, 0.015, (3.0, 7.0, 13.0)) + rng.normal(0.0, 0.002, eyes.shape)
    targets = centre + smooth_noise(rng, t, 0.025, (2.0, 5.0))
    roll = np.radians(3.0) * smooth_noise(rng, t, 1.0, (1.5, 4.0))[:, 0]
    poses = []
    for eye, target, r in zip(eyes, targets, roll):
        pose = meshscene.look_at(eye, target, np.array([0.0, 0.0, 1.0]))
        turn = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
        pose[:3, :3] = pose[:3, :3] @ turn  # about the camera's own optical axis
        poses.append(pose)
    return np.stack(poses)


def framing_distance(obj: TriMesh, width: int, height: int, camera_angle_x: float) -> float:
    """The distance at which the object's bounding sphere (about its box centre) just fills the shorter side."""
    v = np.asarray(obj.vertices)
    radius = float(np.linalg.norm(v - 0.5 * (v.min(0) + v.max(0)), axis=1).max())
    half = math.atan(math.tan(0.5 * camera_angle_x) * min(width, height) / width)
    return radius / math.sin(half)


def capture_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the synthesised video depends on (stored as WORK/capture/capture.json, to tell a stale one)."""
    source = args.data / "meshes" / f"{args.object}.obj"
    return {"version": SYNTH_VERSION, "render_version": meshscene.RENDER_VERSION, "object": args.object,
            "object_sha256": _sha256(source) if source.is_file() else None,
            "object_size": args.object_size, "object_up": args.object_up, "video_frames": args.video_frames,
            "fps": args.fps, "width": args.width, "height": args.height, "fov_degrees": args.fov,
            "distance": args.distance, "sweep": args.sweep, "supersample": args.supersample, "crf": args.crf,
            "codec": args.codec, "seed": args.seed}


def make_object(args: argparse.Namespace) -> TriMesh:
    """The object in the world: standing at the table top's centre, its longest side ``--object-size``."""
    from recon3d.io.mesh import read_mesh

    source = args.data / "meshes" / f"{args.object}.obj"
    if not source.is_file():
        raise Recon3dError(f"{source}: no such mesh (--object names a mesh of DATA/meshes)")
    return standing(read_mesh(source), args.object_size, (0.0, 0.0, TABLE_TOP), args.object_up, 30.0)


def synthesise(args: argparse.Namespace, folder: Path) -> tuple[Path, np.ndarray, Room, dict[str, Any]]:
    """The synthetic capture (video, true poses of every frame, the room) in ``folder``, rendered and encoded
    unless ``capture.json`` there holds the same settings."""
    import av

    settings = capture_settings(args)
    obj = make_object(args)
    room = build_room(obj, args.data, args.seed)
    video, truth, stored = folder / "capture.mp4", folder / "truth.npz", folder / "capture.json"
    if stored.is_file() and video.is_file() and truth.is_file():
        have = json.loads(stored.read_text(encoding="utf-8"))
        if have.get("settings") == settings:
            log(f"capture {video} is up to date")
            return video, np.load(truth)["poses"], room, have
        log(f"capture {video} was made with other settings; rendering it again")
    folder.mkdir(parents=True, exist_ok=True)
    angle = math.radians(args.fov)
    v = np.asarray(obj.vertices)
    centre = 0.5 * (v.min(0) + v.max(0))
    distance = args.distance * framing_distance(obj, args.width, args.height, angle)
    poses = camera_path(args.video_frames, centre, distance, args.sweep, args.seed)
    caster = meshscene.MeshCaster(room.mesh)
    texture = Texture(len(room.names), room.kinds, args.seed)
    log(f"rendering {args.video_frames} frames {args.width}x{args.height} ({caster.backend} ray caster, "
        f"{len(room.mesh.faces):,} faces, camera {distance:.2f} m from the object) into {video}")
    started, coverage, sheet = time.perf_counter(), [], []
    partial = folder / f".capture.{os.getpid()}.mp4"
    with av.open(str(partial), "w") as container:
        stream = container.add_stream(args.codec, rate=args.fps)
        stream.width, stream.height, stream.pix_fmt = args.width, args.height, "yuv420p"
        stream.options = {"crf": str(args.crf), "preset": "medium"} if args.codec == "libx264" else {"qscale": "3"}
        for i, pose in enumerate(poses):
            camera = meshscene.Camera.blender(pose, args.width, args.height, angle)
            frame, hit = render_frame(caster, room, texture, camera, args.supersample)
            coverage.append(hit)
            if i % max(1, len(poses) // 4) == 0 and len(sheet) < 4:
                sheet.append(frame)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            if (i + 1) % 30 == 0 or i + 1 == len(poses):
                log(f"    {i + 1}/{len(poses)} frames ({time.perf_counter() - started:.0f} s)")
        for packet in stream.encode():
            container.mux(packet)
    os.replace(partial, video)
    np.savez(truth, poses=poses)
    from PIL import Image

    Image.fromarray(np.concatenate(sheet, axis=1)).save(folder / "frames.png")
    meta = {"settings": settings, "render_seconds": time.perf_counter() - started,
            "min_coverage": float(min(coverage)), "camera_distance": distance, "object_centre": centre.tolist(),
            "video_bytes": video.stat().st_size}
    if meta["min_coverage"] < 1.0:
        log(f"WARNING: some rays missed the room (least coverage {meta['min_coverage']:.4f}); the void shows")
    stored.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return video, poses, room, meta


# ------------------------------------------------------------------------------------------ alignment


def registered_poses(scene: Path, frame_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(video frame index (N,), camera-to-world (N, 4, 4)) of the scene's registered images: ``frame_K.jpg`` is
    the K-th chosen frame (recon3d.sfm.frames.video_frames), ``frame_indices`` the chosen frames' indices."""
    meta = json.loads((scene / "transforms.json").read_text(encoding="utf-8"))
    index, poses = [], []
    for frame in meta["frames"]:
        k = int(Path(frame["file_path"]).stem.split("_")[-1])
        index.append(frame_indices[k - 1])
        poses.append(np.array(frame["transform_matrix"], np.float64))
    return np.array(index, np.int64), np.stack(poses)


def pose_errors(estimated: np.ndarray, truth: np.ndarray) -> tuple[dict[str, float], tuple]:
    """Camera errors after the similarity that maps the estimated centres onto the true ones; and it."""
    scale, rotation, shift = umeyama(estimated[:, :3, 3], truth[:, :3, 3])
    centres = scale * estimated[:, :3, 3] @ rotation.T + shift
    extent = float(np.linalg.norm(truth[:, :3, 3].max(0) - truth[:, :3, 3].min(0)))
    residual = np.linalg.norm(centres - truth[:, :3, 3], axis=1)
    degrees = angles(np.einsum("ij,njk->nik", rotation, estimated[:, :3, :3]), truth[:, :3, :3])
    return ({"centre_rms_pct": float(100.0 * np.sqrt((residual**2).mean()) / extent),
             "centre_max_pct": float(100.0 * residual.max() / extent), "path_extent_m": extent,
             "rotation_median_deg": float(np.median(degrees)), "rotation_max_deg": float(degrees.max()),
             "alignment_scale": scale}, (scale, rotation, shift))


def to_true(points: np.ndarray, similarity: tuple) -> np.ndarray:
    scale, rotation, shift = similarity
    return scale * np.asarray(points, np.float64) @ rotation.T + shift


# ------------------------------------------------------------------------------------------ metrics


def judge_mesh(mesh: TriMesh, room: Room, samples: int, pieces: bool = True) -> dict[str, Any]:
    """The aligned mesh against the object: evaluate(), F@5%, leakage (area beyond 5 % of the object's
    diagonal from it, by what it is nearest to), the box, the metrics of the part within the object's box and
    (``pieces``) its connected pieces, with the largest one judged alone (what --largest-component keeps)."""
    from scipy.spatial import cKDTree

    obj = room.object
    lo, hi = obj.vertices.min(0), obj.vertices.max(0)
    diagonal = float(np.linalg.norm(hi - lo))
    metrics = evaluate(mesh, obj, n_samples=samples, seed=0)
    pred, _ = sample_surface(mesh, samples, seed=10)
    ref, _ = sample_surface(obj, samples, seed=11)
    to_obj = cKDTree(ref).query(pred, workers=1)[0]
    to_pred = cKDTree(pred).query(ref, workers=1)[0]
    tau = 0.05 * diagonal
    precision, recall = float((to_obj <= tau).mean()), float((to_pred <= tau).mean())
    far = to_obj > LEAK_FRACTION * diagonal
    world, face = _sample_parts(room, 4 * samples)
    nearest_kind = np.array(room.kinds)[room.face_part[face[cKDTree(world).query(pred[far], workers=1)[1]]]] \
        if far.any() else np.array([], str)
    leak = {kind: float((nearest_kind == kind).sum() / len(pred)) for kind in ("table", "clutter", "room", "object")}
    areas = 0.5 * np.linalg.norm(np.cross(mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]],
                                          mesh.vertices[mesh.faces[:, 2]] - mesh.vertices[mesh.faces[:, 0]]), axis=1)
    obj_area = 0.5 * np.linalg.norm(np.cross(obj.vertices[obj.faces[:, 1]] - obj.vertices[obj.faces[:, 0]],
                                             obj.vertices[obj.faces[:, 2]] - obj.vertices[obj.faces[:, 0]]), axis=1)
    m_lo, m_hi = mesh.vertices.min(0), mesh.vertices.max(0)
    margin = 0.05 * diagonal
    inside = np.all((pred >= lo - margin) & (pred <= hi + margin), axis=1)
    cropped = evaluate(PointCloud(pred[inside]), obj, n_samples=samples, seed=0) if inside.sum() >= 1000 else {}
    extra: dict[str, Any] = {}
    if pieces:
        from recon3d.mesh.support import component_labels

        count, labels = component_labels(mesh.n_vertices, np.asarray(mesh.faces, np.int64))
        by_piece = np.bincount(labels, weights=areas, minlength=count)
        largest = np.asarray(mesh.faces)[labels == int(np.argmax(by_piece))]
        used, remap = np.unique(largest, return_inverse=True)
        alone = TriMesh(vertices=np.asarray(mesh.vertices)[used], faces=remap.reshape(-1, 3).astype(np.int64))
        judged = judge_mesh(alone, room, samples, pieces=False)
        extra = {"pieces": int(count), "largest_piece_area_share": float(by_piece.max() / by_piece.sum()),
                 "largest_piece": {k: judged[k] for k in ("chamfer_l1_pct", "fscore@1%", "fscore@5%",
                                                          "normal_consistency", "watertight", "leak_area_fraction",
                                                          "leak_by_nearest", "box_ratio")}}
    return {**extra,
        "chamfer_l1_pct": 100.0 * metrics["chamfer_l1"], "fscore@1%": metrics["fscore@1%"],
        "fscore@0.5%": metrics["fscore@0.5%"], "fscore@5%": 2 * precision * recall / max(precision + recall, 1e-12),
        "precision@5%": precision, "recall@5%": recall, "normal_consistency": metrics["normal_consistency"],
        "watertight": mesh_is_watertight(mesh), "volume_iou": metrics.get("volume_iou"),
        "faces": int(mesh.n_faces), "object_diagonal_m": diagonal,
        "leak_area_fraction": float(far.mean()), "leak_by_nearest": leak,
        "mesh_area_m2": float(areas.sum()), "object_area_m2": float(obj_area.sum()),
        "mesh_box_m": (m_hi - m_lo).tolist(), "object_box_m": (hi - lo).tolist(),
        "box_ratio": ((m_hi - m_lo) / (hi - lo)).tolist(), "mesh_box_lo": m_lo.tolist(), "mesh_box_hi": m_hi.tolist(),
        "object_box_lo": lo.tolist(), "object_box_hi": hi.tolist(),
        "within_object_box": {"share_of_area": float(inside.mean()),
                              "chamfer_l1_pct": 100.0 * cropped["chamfer_l1"] if cropped else None,
                              "fscore@1%": cropped.get("fscore@1%"),
                              "recall@1%": cropped.get("recall@1%")},
    }  # fmt: skip


def _sample_parts(room: Room, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform samples of the whole room (points, face ids), to tell what a stray surface is nearest to."""
    v, f = np.asarray(room.mesh.vertices), np.asarray(room.mesh.faces)
    areas = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    near = np.linalg.norm(v[f].mean(1) - room.object.vertices.mean(0), axis=1) < 1.5  # where leaks can reach
    weights = np.where(near, areas, 0.0)
    rng = np.random.default_rng(3)
    face = rng.choice(len(f), n, p=weights / weights.sum())
    r1, r2 = rng.random((2, n, 1))
    s = np.sqrt(r1)
    points = (1 - s) * v[f[face, 0]] + s * (1 - r2) * v[f[face, 1]] + s * r2 * v[f[face, 2]]
    return points, face


def region_in_world(model: Path, similarity: tuple | None, room: Room | None = None) -> dict[str, Any]:
    """The fit's region from the checkpoint (train.config box_world and region_plane), in the SfM frame and,
    with a similarity, in the true world (the box's corners' bounding box; the plane's normal and height; the
    box's volume against the object's box; the share of each part's surface inside the region)."""
    import torch

    checkpoint = torch.load(model, map_location="cpu", weights_only=True)
    config = checkpoint["train"]["config"]
    to_world = checkpoint["to_world"]
    box = np.asarray(config.get("box_world"), np.float64)
    out: dict[str, Any] = {"box_sfm": box.tolist(), "steps": checkpoint["train"].get("steps"),
                           "stopped_by": checkpoint["train"].get("stopped_by")}
    plane = config.get("region_plane")
    if plane is not None:  # field coordinates: n·u ≥ c with x = scale·u + translation
        normal, c = np.asarray(plane[:3], np.float64), float(plane[3])
        offset = c * float(to_world["scale"]) + float(normal @ np.asarray(to_world["translation"], np.float64))
        out["plane_sfm"] = [*normal.tolist(), offset]
    if similarity is None:
        return out
    corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    true = to_true(corners, similarity)
    out["box_true_lo"], out["box_true_hi"] = true.min(0).tolist(), true.max(0).tolist()
    if plane is not None:
        scale, rotation, shift = similarity
        n_true = rotation @ normal
        out["plane_true_normal"] = n_true.tolist()
        out["plane_true_offset"] = float(scale * offset + n_true @ shift)  # n·x ≥ offset in the true world
        out["plane_tilt_deg"] = float(np.degrees(np.arccos(np.clip(abs(n_true[2]), 0.0, 1.0))))
    if room is not None:
        scale, rotation, shift = similarity
        v = np.asarray(room.object.vertices)
        out["box_volume_over_object_box"] = float(np.prod(box[1] - box[0]) * scale**3 / np.prod(v.max(0) - v.min(0)))
        world, face = _sample_parts(room, 200_000)
        sfm = (world - shift) @ rotation / scale  # the inverse similarity
        inside = np.all((sfm >= box[0]) & (sfm <= box[1]), axis=1)
        if plane is not None:
            inside &= sfm @ normal >= offset
        part = room.face_part[face]
        shares = {room.names[p]: float(inside[part == p].mean()) for p in np.unique(part)}
        out["parts_in_region"] = {name: round(share, 4) for name, share in shares.items() if share > 0}
    return out


# ------------------------------------------------------------------------------------------ chain


def run_chain(video: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """poses → fit-sdf → extract-mesh as CLI processes; per command its JSON, wall seconds and log."""
    scene, model, mesh = work / "scene", work / "model.pt", work / "object.ply"
    shutil.rmtree(scene, ignore_errors=True)
    for path in (model, mesh):
        path.unlink(missing_ok=True)
    threads = ["--threads", str(args.threads)] if args.threads else []
    result: dict[str, Any] = {"scene": str(scene), "model": str(model), "mesh_file": str(mesh)}
    poses_argv = ["poses", str(video), "-o", str(scene), "--json"]
    if args.frames is not None:
        poses_argv += ["--frames", str(args.frames)]  # `poses` takes no --threads
    fit_argv = ["fit-sdf", str(scene), "-o", str(model), "--max-seconds", str(args.max_seconds), "--json",
                "--device", args.device, *threads]
    if args.downscale != 1:
        fit_argv += ["--downscale", str(args.downscale)]
    extract_argv = ["extract-mesh", str(model), "-o", str(mesh), "--preview", str(work / "object_extract.png"),
                    "--json", "--device", args.device, *threads]
    if args.resolution is not None:
        extract_argv += ["--resolution", str(args.resolution)]
    for name, argv in (("poses", poses_argv), ("fit-sdf", fit_argv), ("extract-mesh", extract_argv)):
        log_path = work / f"{name}.log"
        log_path.write_text("", encoding="utf-8")
        log(f"recon3d {shlex.join(argv)}")
        output, wall, error = run_cli(argv, log_path)
        result[name] = {"argv": argv, "seconds": wall, "log": str(log_path), "error": error,
                        "json": _brief(output)}
        log(f"    {name}: {wall:.1f} s" + (f", FAILED {error}" if error else ""))
        if error is not None:
            result["error"] = f"{name}: {error}"
            return result
    return result


def _brief(output: dict | None) -> dict | None:
    """A command's JSON without its long lists (the loss history)."""
    if output is None:
        return None
    return {k: v for k, v in output.items() if k not in ("history",)}


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="data folder (meshes/)")
    p.add_argument("--work", type=Path, default=None, help="capture, scene, checkpoint, mesh, logs [a new temp dir]")
    p.add_argument("--json-out", type=Path, default=None, help="the run record [WORK/results.json]")
    p.add_argument("--video", type=Path, default=None, help="a real video: run the chain on it, no ground truth")
    p.add_argument("--object", default="spot", help="the object: a closed mesh DATA/meshes/<name>.obj")
    p.add_argument("--object-up", default="y", choices=("x", "y", "z"), help="the object mesh's up axis")
    p.add_argument("--object-size", type=float, default=0.4, help="the object's longest side, metres")
    p.add_argument("--video-frames", type=int, default=180, help="frames of the synthetic video")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the synthetic video")
    p.add_argument("--width", type=int, default=480, help="synthetic video width (even)")
    p.add_argument("--height", type=int, default=360, help="synthetic video height (even)")
    p.add_argument("--fov", type=float, default=60.0, help="horizontal field of view, degrees (a phone's main camera)")
    p.add_argument("--distance", type=float, default=1.2, help="camera distance, times the one that frames the object")
    p.add_argument("--sweep", type=float, default=360.0, help="degrees walked round the object")
    p.add_argument("--supersample", type=int, default=2, help="rays per pixel side when rendering")
    p.add_argument("--codec", default="libx264", choices=("libx264", "mpeg4"), help="video codec")
    p.add_argument("--crf", type=int, default=20, help="libx264 constant rate factor (quality)")
    p.add_argument("--seed", type=int, default=0, help="camera path and texture seed")
    p.add_argument("--frames", type=int, default=None, help="recon3d poses --frames [its default]")
    p.add_argument("--max-seconds", type=float, default=300.0, help="fit-sdf --max-seconds")
    p.add_argument("--downscale", type=int, default=1, help="fit-sdf --downscale")
    p.add_argument("--resolution", type=int, default=None, help="extract-mesh --resolution [its default]")
    p.add_argument("--device", default="auto", help="fit-sdf / extract-mesh --device")
    p.add_argument("--threads", type=int, default=None, help="--threads of fit-sdf and extract-mesh, and "
                                                             "OMP_NUM_THREADS of every command [their default]")
    p.add_argument("--eval-samples", type=int, default=100_000, help="surface samples per mesh for the metrics")
    p.add_argument("--preview-size", type=int, default=320, help="pixels per view of the pictures")
    p.add_argument("--judge-only", action="store_true", help="judge the scene, checkpoint and mesh that the last "
                                                               "run left in WORK (WORK/results.json) again")
    args = p.parse_args(argv)
    if args.width % 2 or args.height % 2:
        p.error("--width and --height must be even (yuv420p)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    work = (args.work or Path(tempfile.mkdtemp(prefix="video_to_mesh-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    json_out = args.json_out or work / "results.json"
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every command (pycolmap has no flag)
    started = time.perf_counter()
    record: dict[str, Any] = {"benchmark": "video_to_mesh", "date": _dt.datetime.now().astimezone().isoformat(
        timespec="seconds"), "command": shlex.join(command), "environment": environment(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    room, truth_poses = None, None
    if args.video is None:
        try:
            video, truth_poses, room, capture = synthesise(args, work / "capture")
        except (Recon3dError, OSError) as exc:
            log(f"cannot synthesise the capture: {exc}")
            return 1
        record["capture"] = {**capture, "video": str(video), "parts": room.names}
        _preview(room.object, work / "truth.png", args, label="true object")
    else:
        video = args.video.resolve()
        record["capture"] = {"video": str(video)}
    previous = work / "results.json"
    if args.judge_only and previous.is_file():
        chain = json.loads(previous.read_text(encoding="utf-8"))["chain"]
        log(f"judging the chain's results of the previous run ({previous})")
        record["judge_only"] = True  # total_seconds is then this run's, not the chain's
    else:
        chain = run_chain(video, work, args)
    record["chain"] = chain
    record["seconds"] = {name: chain[name]["seconds"] for name in ("poses", "fit-sdf", "extract-mesh")
                         if name in chain}
    summary = (chain.get("poses") or {}).get("json") or {}
    record["frames"] = {"video": summary.get("video_frames"), "chosen": summary.get("images"),
                        "registered": summary.get("registered"), "points": summary.get("points"),
                        "mean_reprojection_error": summary.get("mean_reprojection_error"),
                        "camera_model": summary.get("camera_model"), "aabb": summary.get("aabb")}
    if "error" not in chain:
        _judge(record, chain, room, truth_poses, summary, work, args)
    record["total_seconds"] = time.perf_counter() - started
    write_record(json_out, record)
    log(f"wrote {json_out}")
    print(table(record))
    return 0 if "error" not in chain and "error" not in record else 1


def _judge(record: dict[str, Any], chain: dict[str, Any], room: Room | None, truth_poses: np.ndarray | None,
           summary: dict[str, Any], work: Path, args: argparse.Namespace) -> None:
    """Poses, mesh and region against the truth (synthetic), or the mesh's own statistics (a real video)."""
    from recon3d.io.mesh import read_mesh

    scene = Path(chain["scene"])
    mesh = read_mesh(chain["mesh_file"])
    similarity = None
    if room is not None and truth_poses is not None:
        index, estimated = registered_poses(scene, summary["frame_indices"])
        errors, similarity = pose_errors(estimated, truth_poses[index])
        record["poses"] = errors
        log(f"    poses: centre RMS {errors['centre_rms_pct']:.2f} % of the path, rotation median "
            f"{errors['rotation_median_deg']:.2f} deg")
        aligned = TriMesh(vertices=to_true(mesh.vertices, similarity), faces=np.asarray(mesh.faces, np.int64))
        aligned.save(work / "object_aligned.ply")
        try:
            record["mesh"] = judge_mesh(aligned, room, args.eval_samples)
        except Recon3dError as exc:
            record["error"] = f"evaluation failed: {exc}"
        record["pictures"] = {"mesh": _preview(aligned, work / "object.png", args, label="aligned mesh"),
                              "truth": str(work / "truth.png"), "frames": str(work / "capture" / "frames.png"),
                              "extract_preview": str(work / "object_extract.png")}
    else:
        from recon3d.mesh.support import component_labels

        v = np.asarray(mesh.vertices)
        record["mesh"] = {"faces": int(mesh.n_faces), "watertight": mesh_is_watertight(mesh),
                          "pieces": component_labels(mesh.n_vertices, np.asarray(mesh.faces, np.int64))[0],
                          "mesh_box_sfm": (v.max(0) - v.min(0)).tolist()}
        up, front = scene_orientation(scene)
        record["pictures"] = {"mesh": _preview(mesh, work / "object.png", args, up=up, front=front,
                                               label="mesh"), "extract_preview": str(work / "object_extract.png")}
    record["region"] = region_in_world(Path(chain["model"]), similarity, room)


def _preview(mesh: TriMesh, path: Path, args: argparse.Namespace, label: str, **view: Any) -> str | None:
    view.setdefault("up", (0.0, 0.0, 1.0))
    view.setdefault("front", (1.0, 0.0, 0.0))
    try:
        meshscene.preview(mesh, path, size=args.preview_size, views=3, supersample=1, **view)
    except (Recon3dError, RuntimeError, ValueError) as exc:
        log(f"    {label} picture failed: {exc}")
        return None
    log(f"    {label}: {path}")
    return str(path)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def table(record: dict[str, Any]) -> str:
    """One markdown row (with its header) of the run."""
    header = ["input", "registered / chosen (video frames)", "poses s", "fit-sdf s", "extract s", "centre RMS %",
              "rot. median °", "Chamfer-L1 %", "F@1%", "F@5%", "NC", "watertight", "leak area %", "box ratio",
              "pieces (largest % area)", "largest piece: Chamfer-L1 %, leak %"]
    frames, seconds = record.get("frames", {}), record.get("seconds", {})
    poses, mesh = record.get("poses", {}), record.get("mesh", {})
    name = record["capture"].get("settings", {}).get("object") or Path(record["capture"]["video"]).name
    box, largest = mesh.get("box_ratio"), mesh.get("largest_piece") or {}
    cells = [f"{name} ({'synthetic' if 'settings' in record['capture'] else 'video'})",
             f"{_fmt(frames.get('registered'), 'd')} / {_fmt(frames.get('chosen'), 'd')} "
             f"({_fmt(frames.get('video'), 'd')})",
             _fmt(seconds.get("poses"), ".1f"), _fmt(seconds.get("fit-sdf"), ".1f"),
             _fmt(seconds.get("extract-mesh"), ".1f"), _fmt(poses.get("centre_rms_pct"), ".2f"),
             _fmt(poses.get("rotation_median_deg"), ".2f"), _fmt(mesh.get("chamfer_l1_pct"), ".3f"),
             _fmt(mesh.get("fscore@1%"), ".3f"), _fmt(mesh.get("fscore@5%"), ".3f"),
             _fmt(mesh.get("normal_consistency"), ".3f"), _fmt(mesh.get("watertight"), ""),
             _fmt(None if mesh.get("leak_area_fraction") is None else 100 * mesh["leak_area_fraction"], ".1f"),
             "–" if box is None else "×".join(f"{r:.2f}" for r in box),
             f"{_fmt(mesh.get('pieces'), 'd')} ({_fmt(_pct(mesh.get('largest_piece_area_share')), '.1f')})",
             f"{_fmt(largest.get('chamfer_l1_pct'), '.3f')}, {_fmt(_pct(largest.get('leak_area_fraction')), '.1f')}"]
    error = record.get("chain", {}).get("error") or record.get("error")
    if error:
        cells = cells[:2] + [f"failed: {error[:120]}"] + [""] * (len(cells) - 3)
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
                      "| " + " | ".join(cells) + " |"])


if __name__ == "__main__":
    sys.exit(main())
