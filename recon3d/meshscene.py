"""Closed meshes rendered into posed multi-view scenes whose geometry is known exactly.

Benchmarks and tests of surfaces-from-images need images of a shape they can measure against. This
module renders a triangle mesh on the CPU (Open3D's ray caster, or plain torch where Open3D is
missing) as a textured Lambertian object and writes a Blender-format scene beside the mesh itself:

* :func:`scene_mesh` places a mesh in scene coordinates: welded (texture seams merged), its bounding
  box centred at the origin and scaled so its bounding sphere about that centre has radius
  :data:`SCENE_RADIUS` (1.2). It then lies in [-1.2, 1.2]^3, inside the Blender scene box
  [-1.5, 1.5]^3 with margin, and cameras at :data:`CAMERA_DISTANCE` (4, nerf_synthetic's) see it
  between depths 2.8 and 5.2, inside Blender's near/far (2, 6), never cut off by the frame.
* :func:`render_mesh_views` renders RGBA views: albedo from a procedural 3D texture of the surface
  position (:func:`albedo`: colour bands, a 3D checker and fine stripes, in [0.1, 0.9]), shaded by
  ambient light plus three directional lights fixed in the world (:data:`LIGHTS`) with the flat
  geometric normal of the hit face by default (the images then show exactly the surface the metrics
  compare with); alpha 1 on the object, 0 on the transparent background. Pixels are anti-aliased by
  ``supersample`` x ``supersample`` rays (default 2 x 2) averaged with premultiplied colour, as a camera
  integrates light over its pixel, so silhouette pixels have fractional alpha.
* :func:`write_mesh_scene` writes ``transforms_{train,test}.json``, RGBA PNGs in ``train/`` and
  ``test/``, ``mesh.ply`` (the mesh as rendered) and ``meshscene.json`` (the settings): train
  cameras on a Fibonacci sphere, test cameras on another rotation of one, all looking at the origin.
* :func:`preview` draws one grey picture of a mesh (or several azimuths side by side), :func:`turntable`
  an animated GIF of it turning (``recon3d preview``).

Cameras follow the project's convention (camera-to-world, OpenGL axes, pixel centres at +0.5,
focal 0.5 W / tan(camera_angle_x / 2)). From the command line::

    python -m recon3d.meshscene MESH OUT_FOLDER [--train 100] [--test 20] [--size 400]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch

from recon3d.errors import Recon3dError
from recon3d.types import TriMesh

Backend = Literal["auto", "open3d", "torch"]

#: Bumped whenever the pictures :func:`write_mesh_scene` makes change, so stored scenes get rewritten.
RENDER_VERSION = 1
#: Radius of the bounding sphere (about the bounding-box centre) of a mesh in scene coordinates.
SCENE_RADIUS = 1.2
#: Default distance of the cameras from the origin.
CAMERA_DISTANCE = 4.0
#: nerf_synthetic's horizontal field of view, radians.
CAMERA_ANGLE_X = 0.6911112070083618
#: Ambient light and the (direction towards the light, intensity) of the fixed world-space lights.
AMBIENT = 0.3
LIGHTS = (
    ((0.45, -0.55, 0.70), 0.70),
    ((-0.60, 0.45, -0.25), 0.40),
    ((0.15, 0.70, -0.70), 0.30),
)
#: (ray, triangle) pairs tested at once by the torch ray casters: bounds memory (~200 bytes a pair).
PAIR_BUDGET = {"cpu": 1 << 20, "cuda": 1 << 23}


# ------------------------------------------------------------------------------------------ meshes


def icosphere(subdivisions: int = 2, radius: float = 1.0, center: Sequence[float] = (0.0, 0.0, 0.0)) -> TriMesh:
    """A closed sphere mesh, outward winding, vertices exactly on the sphere.

    20 * 4**subdivisions faces; the largest distance between the mesh and the true sphere (the chord
    error) is about radius * (1 - cos(0.55 / 2**subdivisions)).
    """
    t = (1.0 + 5.0**0.5) / 2.0
    vertices = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
                (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]  # fmt: skip
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]  # fmt: skip
    points = [np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in vertices]
    middle: dict[tuple[int, int], int] = {}  # edge → index of its midpoint (shared by both faces)

    def midpoint(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in middle:
            m = points[a] + points[b]
            points.append(m / np.linalg.norm(m))
            middle[key] = len(points) - 1
        return middle[key]

    for _ in range(subdivisions):
        finer = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            finer += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = finer
    return TriMesh(vertices=np.stack(points) * radius + np.asarray(center, dtype=np.float64),
                   faces=np.asarray(faces, dtype=np.int64))


def scene_mesh(mesh: TriMesh, radius: float = SCENE_RADIUS) -> TriMesh:
    """``mesh`` in scene coordinates: welded, bounding box centred at the origin, bounding sphere of
    ``radius`` about that centre (so it lies in [-radius, radius]^3). Normals and colours are dropped."""
    from recon3d.mesh.weld import weld

    vertices, faces = weld(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64))
    if len(faces) == 0:
        raise Recon3dError("the mesh has no faces")
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    extent = float(np.linalg.norm(vertices - centre, axis=1).max())
    if not extent > 0:
        raise Recon3dError("the mesh is degenerate (all its vertices coincide)")
    return TriMesh(vertices=(vertices - centre) * (radius / extent), faces=faces)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals following each face's winding (outward for a well-oriented mesh)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    norm = np.linalg.norm(cross, axis=1, keepdims=True)
    return np.divide(cross, norm, out=np.zeros_like(cross), where=norm > 0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted averages of the face normals around each vertex, unit length; vertices
    at one position (split along texture seams) share theirs, so seams do not show."""
    from recon3d.mesh.weld import weld_vertices

    a, b, c = (vertices[faces[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    distinct, remap = weld_vertices(vertices)
    normals = np.zeros((len(distinct), 3))
    for k in range(3):
        np.add.at(normals, remap[faces[:, k]], cross)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)[remap]


# ------------------------------------------------------------------------------------- ray casting


def _open3d_or_none() -> ModuleType | None:
    from recon3d._open3d import import_open3d

    try:
        return import_open3d()
    except Recon3dError:
        return None


def _centre(mesh: TriMesh) -> np.ndarray:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    return 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))


def _results(mesh: TriMesh, t: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, face, normal, hit) from per-ray distances (inf on a miss) and face ids (-1 on a miss)."""
    hit = np.isfinite(t)
    normal = np.zeros((len(t), 3))
    normal[hit] = face_normals(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces))[face[hit]]
    return t, face, normal, hit


def raycast(mesh: TriMesh, origins: np.ndarray,
            directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first triangle each ray meets, by Open3D's ``RaycastingScene`` (float32, Embree).

    ``origins``, ``directions``: (N, 3). Returns ``t`` (N,) float64 with the hit at origin + t *
    direction (Euclidean distance for unit directions; inf on a miss), ``face`` (N,) int64 (-1 on a
    miss), ``normal`` (N, 3) the hit face's unit normal by its winding (0 on a miss) and ``hit`` (N,)
    bool. Triangles count from both sides. Coordinates are centred on the mesh before the float32 cast.
    """
    from recon3d._open3d import import_open3d

    o3d = import_open3d()
    centre = _centre(mesh)
    scene = _open3d_scene(o3d, mesh, centre)
    t, face = _cast_open3d(o3d, scene, centre, np.asarray(origins, np.float64), np.asarray(directions, np.float64))
    return _results(mesh, t, face)


def _open3d_scene(o3d: ModuleType, mesh: TriMesh, centre: np.ndarray):
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(np.asarray(mesh.vertices, np.float64) - centre, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
    )
    return scene


def _cast_open3d(o3d: ModuleType, scene, centre: np.ndarray, origins: np.ndarray,
                 directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t (N,) float64, inf on a miss; face (N,) int64, -1 on a miss) from an Open3D scene."""
    rays = np.concatenate([origins.reshape(-1, 3) - centre, directions.reshape(-1, 3)], axis=1)
    found = scene.cast_rays(o3d.core.Tensor(np.ascontiguousarray(rays, dtype=np.float32)))
    t = found["t_hit"].numpy().astype(np.float64)
    face = found["primitive_ids"].numpy().astype(np.int64)
    miss = ~np.isfinite(t)
    face[miss] = -1
    t[miss] = np.inf
    return t, face


def _moller_trumbore(origins: torch.Tensor, directions: torch.Tensor, v0: torch.Tensor, e1: torch.Tensor,
                     e2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-triangle intersection of broadcast (..., 3) rays and triangles (corner v0, edges e1, e2).

    Returns (t, u, v): parametric distance (inf where the ray misses or the triangle is edge-on) and
    the barycentric weights of the second and third corners.
    """
    pvec = torch.linalg.cross(directions, e2)  # broadcasts over the leading dimensions
    det = (e1 * pvec).sum(-1)
    scale = torch.linalg.norm(torch.linalg.cross(e1, e2), dim=-1)
    ok = det.abs() > 1e-10 * scale
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    svec = origins - v0
    u = (svec * pvec).sum(-1) * inv
    qvec = torch.linalg.cross(svec, e1)
    v = (directions * qvec).sum(-1) * inv
    t = (e2 * qvec).sum(-1) * inv
    ok &= (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    return torch.where(ok, t, torch.full_like(t, torch.inf)), u, v


def _triangles(mesh: TriMesh, device: torch.device, dtype: torch.dtype,
               centre: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    vertices = torch.as_tensor(np.asarray(mesh.vertices, np.float64) - centre, dtype=dtype, device=device)
    faces = torch.as_tensor(np.asarray(mesh.faces, np.int64), device=device)
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    return v0, v1 - v0, v2 - v0


def _budget(device: torch.device) -> int:
    return PAIR_BUDGET.get(device.type, PAIR_BUDGET["cuda"])


def raycast_torch(mesh: TriMesh, origins: np.ndarray, directions: np.ndarray, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`raycast` in plain torch: brute-force Möller–Trumbore over every (ray, triangle) pair.

    Same arguments and results; runs on any device without Open3D and serves as an independent
    reference. Costs N x F pair tests (in chunks of :data:`PAIR_BUDGET`): fine for small meshes or a
    GPU. On ties (a ray through an edge) the lower face id wins.
    """
    device = torch.device(device)
    centre = _centre(mesh)
    v0, e1, e2 = _triangles(mesh, device, dtype, centre)
    o = torch.as_tensor(np.asarray(origins, np.float64).reshape(-1, 3) - centre, dtype=dtype, device=device)
    d = torch.as_tensor(np.asarray(directions, np.float64).reshape(-1, 3), dtype=dtype, device=device)
    n_rays, n_faces = len(o), len(v0)
    best_t = torch.full((n_rays,), torch.inf, dtype=dtype, device=device)
    best_face = torch.full((n_rays,), -1, dtype=torch.int64, device=device)
    face_chunk = max(1, min(n_faces, _budget(device) // 64))
    ray_chunk = max(1, _budget(device) // face_chunk)
    for r0 in range(0, n_rays, ray_chunk):
        rays = slice(r0, r0 + ray_chunk)
        for f0 in range(0, n_faces, face_chunk):
            tri = slice(f0, f0 + face_chunk)
            t, _, _ = _moller_trumbore(o[rays, None], d[rays, None], v0[None, tri], e1[None, tri], e2[None, tri])
            t_min, index = t.min(dim=1)  # the first minimum: the lowest face id of the chunk
            better = t_min < best_t[rays]
            best_t[rays] = torch.where(better, t_min, best_t[rays])
            best_face[rays] = torch.where(better, index + f0, best_face[rays])
    return _results(mesh, best_t.double().cpu().numpy(), best_face.cpu().numpy())


@dataclass
class Camera:
    """A pinhole camera: (4, 4) camera-to-world ``c2w`` (OpenGL axes), focal lengths and principal
    point in pixels, image size. Pixel (u, v) has its centre at (u + 0.5, v + 0.5)."""

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def blender(cls, c2w: np.ndarray, width: int, height: int, camera_angle_x: float) -> Camera:
        """The camera a Blender scene describes (square pixels, principal point at the centre)."""
        focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
        return cls(np.asarray(c2w, np.float64), focal, focal, width / 2.0, height / 2.0, int(width), int(height))

    def scaled(self, factor: int) -> Camera:
        """The same view at ``factor`` times the resolution: its pixel (u, v) covers the sub-pixel
        (u mod factor, v mod factor) of pixel (u // factor, v // factor)."""
        return Camera(self.c2w, self.fx * factor, self.fy * factor, self.cx * factor, self.cy * factor,
                      self.width * factor, self.height * factor)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """(H*W, 3) origins and unit directions through the pixel centres, row-major."""
        v, u = np.meshgrid(np.arange(self.height) + 0.5, np.arange(self.width) + 0.5, indexing="ij")
        local = np.stack([(u - self.cx) / self.fx, -(v - self.cy) / self.fy, -np.ones_like(u)], -1).reshape(-1, 3)
        directions = local @ self.c2w[:3, :3].T
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return np.broadcast_to(self.c2w[:3, 3], directions.shape).copy(), directions


class MeshCaster:
    """Casts camera rays at one mesh, with Open3D or torch; built once, reused for every view.

    ``backend``: ``auto`` (Open3D when importable, else torch), ``open3d`` or ``torch``. The torch
    caster tests each triangle only against the pixels inside its projected bounding box, which is
    exact for triangles in front of the camera (the others are tested against every pixel).
    """

    def __init__(self, mesh: TriMesh, backend: Backend = "auto", device: torch.device | str = "cpu") -> None:
        self.mesh = mesh
        self.centre = _centre(mesh)
        self.o3d = None if backend == "torch" else _open3d_or_none()
        if backend == "open3d" and self.o3d is None:
            from recon3d._open3d import import_open3d

            import_open3d()  # raises the reason
        self.backend = "open3d" if self.o3d is not None else "torch"
        self.device = torch.device(device)
        if self.o3d is not None:
            self.scene = _open3d_scene(self.o3d, mesh, self.centre)
        else:
            self.v0, self.e1, self.e2 = _triangles(mesh, self.device, torch.float64, self.centre)
            self.vertices = torch.as_tensor(np.asarray(mesh.vertices, np.float64) - self.centre, device=self.device)
            self.faces = torch.as_tensor(np.asarray(mesh.faces, np.int64), device=self.device)

    def cast(self, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every pixel's ray: (origins (P, 3), unit directions (P, 3), t (P,), face (P,)), P = H*W row-major."""
        origins, directions = camera.rays()
        if self.o3d is not None:
            t, face = _cast_open3d(self.o3d, self.scene, self.centre, origins, directions)
        else:
            t, face = self._cast_torch(camera, directions)
        return origins, directions, t, face

    def _cast_torch(self, camera: Camera, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        device, n_pixels = self.device, camera.width * camera.height
        c2w = torch.as_tensor(camera.c2w, dtype=torch.float64, device=device)
        origin = c2w[:3, 3] - torch.as_tensor(self.centre, device=device)
        u0, v0, widths, counts = self._pixel_boxes(camera, c2w, origin)
        dirs = torch.as_tensor(directions, dtype=torch.float64, device=device)
        best_t = torch.full((n_pixels,), torch.inf, dtype=torch.float64, device=device)
        best_face = torch.full((n_pixels,), -1, dtype=torch.int64, device=device)
        ends = torch.cumsum(counts, 0)
        budget, start = _budget(device), 0
        while start < len(counts):
            base = int(ends[start - 1]) if start else 0
            stop = max(start + 1, int(torch.searchsorted(ends, base + budget, right=True)))
            faces = torch.arange(start, stop, device=device)
            face = torch.repeat_interleave(faces, counts[start:stop])
            if len(face):
                local = torch.arange(len(face), device=device) - (ends[face] - counts[face] - base)
                pixel = (v0[face] + local // widths[face]) * camera.width + u0[face] + local % widths[face]
                t, _, _ = _moller_trumbore(origin, dirs[pixel], self.v0[face], self.e1[face], self.e2[face])
                _keep_nearest(best_t, best_face, pixel, t, face)
            start = stop
        return best_t.cpu().numpy(), best_face.cpu().numpy()

    def _pixel_boxes(self, camera: Camera, c2w: torch.Tensor,
                     origin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per face: first pixel column and row, box width and pixel count of its projected bounding
        box (1 pixel of margin, clipped to the image; the whole image for faces not in front)."""
        local = (self.vertices - origin) @ c2w[:3, :3]  # camera frame: x right, y up, looking down -z
        depth = -local[:, 2]
        safe = depth.clamp(min=1e-12)
        u = camera.cx + camera.fx * local[:, 0] / safe
        v = camera.cy - camera.fy * local[:, 1] / safe
        corners_u, corners_v = u[self.faces], v[self.faces]
        in_front = (depth[self.faces] > 1e-9).all(dim=1)
        limit_u, limit_v = camera.width - 1, camera.height - 1
        lo_u = torch.where(in_front, torch.floor(corners_u.min(1).values) - 1, torch.zeros_like(u[:1]))
        hi_u = torch.where(in_front, torch.floor(corners_u.max(1).values) + 1, torch.full_like(u[:1], limit_u))
        lo_v = torch.where(in_front, torch.floor(corners_v.min(1).values) - 1, torch.zeros_like(v[:1]))
        hi_v = torch.where(in_front, torch.floor(corners_v.max(1).values) + 1, torch.full_like(v[:1], limit_v))
        lo_u, hi_u = lo_u.clamp(0, limit_u).long(), hi_u.clamp(-1, limit_u).long()
        lo_v, hi_v = lo_v.clamp(0, limit_v).long(), hi_v.clamp(-1, limit_v).long()
        widths = (hi_u - lo_u + 1).clamp(min=0)
        counts = widths * (hi_v - lo_v + 1).clamp(min=0)
        return lo_u, lo_v, widths.clamp(min=1), counts


def _keep_nearest(best_t: torch.Tensor, best_face: torch.Tensor, pixel: torch.Tensor, t: torch.Tensor,
                  face: torch.Tensor) -> None:
    """Merge (pixel, t, face) candidates into the per-pixel nearest hit; ties go to the lower face id."""
    chunk_t = torch.full_like(best_t, torch.inf).scatter_reduce(0, pixel, t, "amin")
    winner = torch.isfinite(t) & (t == chunk_t[pixel])
    big = torch.iinfo(torch.int64).max
    chunk_face = torch.full_like(best_face, big).scatter_reduce(0, pixel[winner], face[winner], "amin")
    better = (chunk_t < best_t) | ((chunk_t == best_t) & (chunk_face < best_face) & torch.isfinite(chunk_t))
    best_t.copy_(torch.where(better, chunk_t, best_t))
    best_face.copy_(torch.where(better, chunk_face, best_face))


# ------------------------------------------------------------------------------------------ shading


def albedo(points: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0.1, 0.9] of surface points (N, 3): a deterministic 3D texture in scene units.

    Three colour bands (period ~1.6, one direction per channel), a 3D checker of 0.25 cells and
    diagonal stripes of period ~0.16 give every part of the surface detail at several scales, so
    views can be matched photometrically at full size and at --downscale 4.
    """
    p = np.asarray(points, dtype=np.float64)
    axes = np.array([[0.8, 0.6, 0.0], [0.0, 0.8, 0.6], [0.6, 0.0, 0.8]])
    bands = 0.5 + 0.18 * np.sin(4.0 * p @ axes.T + np.array([0.3, 1.9, 4.1]))
    checker = (np.floor((p + 0.1) / 0.25).astype(np.int64).sum(axis=1) % 2) * 2.0 - 1.0
    stripes = np.sin(40.0 * p @ np.array([0.57735, -0.57735, 0.57735]))
    colour = bands + 0.12 * checker[:, None] + 0.08 * stripes[:, None]
    return np.clip(colour, 0.1, 0.9)


def _light_array(lights: Sequence[tuple[Sequence[float], float]]) -> tuple[np.ndarray, np.ndarray]:
    directions = np.array([d for d, _ in lights], dtype=np.float64)
    return directions / np.linalg.norm(directions, axis=1, keepdims=True), np.array([i for _, i in lights])


def lambert(normals: np.ndarray, ambient: float, lights: Sequence[tuple[Sequence[float], float]]) -> np.ndarray:
    """(N,) irradiance: ambient + sum of intensity * max(0, n . l) over directional lights."""
    directions, intensities = _light_array(lights)
    return ambient + np.clip(normals @ directions.T, 0.0, None) @ intensities


def _shading_normals(mesh: TriMesh, points: np.ndarray, face: np.ndarray, directions: np.ndarray,
                     smooth: bool, cache: dict) -> np.ndarray:
    """(N, 3) unit normals at hit points, turned to face the viewer (triangles are two-sided).

    Flat: the face's geometric normal. Smooth: vertex normals interpolated by barycentric weights.
    """
    vertices, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces)
    if "face" not in cache:
        cache["face"] = face_normals(vertices, faces)
    geometric = cache["face"][face]
    flip = np.where(np.einsum("ij,ij->i", geometric, directions) > 0, -1.0, 1.0)[:, None]
    if not smooth:
        return geometric * flip
    if "vertex" not in cache:
        cache["vertex"] = vertex_normals(vertices, faces)
    corners = vertices[faces[face]]  # (N, 3, 3)
    weights = _barycentric(points, corners)
    normals = np.einsum("nk,nkj->nj", weights, cache["vertex"][faces[face]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return normals * flip


def _barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(N, 3) barycentric weights of points (N, 3) in triangles (N, 3, 3), clipped to the triangle."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denom = np.where(np.abs(d00 * d11 - d01 * d01) > 0, d00 * d11 - d01 * d01, 1.0)
    w1 = (d11 * d20 - d01 * d21) / denom
    w2 = (d00 * d21 - d01 * d20) / denom
    weights = np.clip(np.stack([1.0 - w1 - w2, w1, w2], axis=1), 0.0, None)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


ColourFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _render(caster: MeshCaster, camera: Camera, supersample: int, colour: ColourFn) -> np.ndarray:
    """(H, W, 4) float32 straight-alpha RGBA of one view; ``colour(points, faces, directions)`` gives
    the RGB of the hits. Sub-pixel samples are averaged with premultiplied colour."""
    fine = camera.scaled(supersample)
    origins, directions, t, face = caster.cast(fine)
    rows = np.flatnonzero(np.isfinite(t))
    points = origins[rows] + t[rows, None] * directions[rows]
    rgba = np.zeros((fine.height * fine.width, 4))
    rgba[rows, :3] = np.clip(colour(points, face[rows], directions[rows]), 0.0, 1.0)
    rgba[rows, 3] = 1.0
    s = supersample
    rgba = rgba.reshape(camera.height, s, camera.width, s, 4)
    alpha = rgba[..., 3].mean(axis=(1, 3))
    premultiplied = (rgba[..., :3] * rgba[..., 3:]).mean(axis=(1, 3))
    rgb = np.divide(premultiplied, alpha[..., None], out=np.zeros_like(premultiplied), where=alpha[..., None] > 0)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def render_mesh_views(
    mesh: TriMesh,
    poses: np.ndarray,
    width: int,
    height: int,
    camera_angle_x: float = CAMERA_ANGLE_X,
    *,
    supersample: int = 2,
    smooth: bool = False,
    backend: Backend = "auto",
    device: torch.device | str = "cpu",
    caster: MeshCaster | None = None,
) -> np.ndarray:
    """(V, H, W, 4) float32 RGBA (straight alpha, background 0) of the textured Lambertian ``mesh``
    seen by cameras ``poses`` (V, 4, 4) camera-to-world, OpenGL axes, Blender intrinsics.

    ``supersample`` s: s x s rays per pixel (1 turns anti-aliasing off); ``smooth``: interpolated
    vertex normals instead of the faces' geometric ones. Lights and texture: :data:`LIGHTS`,
    :func:`albedo`. ``backend``/``device``: see :class:`MeshCaster` (``caster`` reuses one).
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    caster = caster or MeshCaster(mesh, backend, device)
    cache: dict = {}

    def colour(points: np.ndarray, faces: np.ndarray, directions: np.ndarray) -> np.ndarray:
        normals = _shading_normals(mesh, points, faces, directions, smooth, cache)
        return albedo(points) * lambert(normals, AMBIENT, LIGHTS)[:, None]

    views = [_render(caster, Camera.blender(pose, width, height, camera_angle_x), supersample, colour)
             for pose in np.asarray(poses, np.float64).reshape(-1, 4, 4)]
    return np.stack(views) if views else np.zeros((0, height, width, 4), np.float32)


# ------------------------------------------------------------------------------------------ scenes


def sphere_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly on the sphere (Fibonacci lattice, never exactly at a pole)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a Gaussian matrix, signs fixed, det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def camera_directions(n_train: int, n_test: int, seed: int = 0, tries: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions from the origin to the train and test cameras.

    Train: a Fibonacci lattice turned by a seeded random rotation. Test: another lattice, turned by
    whichever of ``tries`` seeded rotations keeps its nearest train direction farthest away, so that
    test views are new viewpoints rather than near copies of training ones.
    """
    rng = np.random.default_rng(seed)
    train = sphere_directions(n_train) @ _rotation(rng).T if n_train else np.zeros((0, 3))
    base = sphere_directions(n_test)
    if n_test == 0 or n_train == 0:
        return train, base @ _rotation(rng).T
    best, best_cos = base, np.inf
    for _ in range(tries):
        candidate = base @ _rotation(rng).T
        closest = float((candidate @ train.T).max())  # cosine of the closest (test, train) pair
        if closest < best_cos:
            best, best_cos = candidate, closest
    return train, best


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world matrix, OpenGL axes, at ``eye`` looking at ``target`` with ``up`` up."""
    from recon3d.synthetic import look_at as _look_at

    return _look_at(eye, target, up)


def scene_poses(n_train: int, n_test: int, radius: float = CAMERA_DISTANCE,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n_train, 4, 4) and (n_test, 4, 4) cameras at ``radius`` looking at the origin, z up."""
    train, test = camera_directions(n_train, n_test, seed)
    up, origin = np.array([0.0, 0.0, 1.0]), np.zeros(3)
    poses = [np.stack([look_at(radius * d, origin, up) for d in dirs]) if len(dirs) else np.zeros((0, 4, 4))
             for dirs in (train, test)]
    return poses[0], poses[1]


def scene_settings(n_train: int, n_test: int, size: int, camera_angle_x: float, radius: float, seed: int,
                   supersample: int, smooth: bool) -> dict:
    """What a written scene depends on (stored as ``meshscene.json``), to tell whether it is stale."""
    return {"version": RENDER_VERSION, "n_train": int(n_train), "n_test": int(n_test), "size": int(size),
            "camera_angle_x": float(camera_angle_x), "radius": float(radius), "seed": int(seed),
            "supersample": int(supersample), "smooth": bool(smooth)}


def write_mesh_scene(
    mesh: TriMesh,
    folder: str | os.PathLike,
    n_train: int = 100,
    n_test: int = 20,
    size: int = 400,
    camera_angle_x: float = CAMERA_ANGLE_X,
    radius: float | None = None,
    seed: int = 0,
    *,
    supersample: int = 2,
    smooth: bool = False,
    backend: Backend = "auto",
    device: torch.device | str = "cpu",
    extra: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``mesh`` as it is (see :func:`scene_mesh` to place it first) into a Blender scene.

    Writes into ``folder``: ``transforms_train.json`` / ``transforms_test.json`` (``camera_angle_x``,
    frames ``./{split}/r_{i}`` with their camera-to-world matrices), ``size`` x ``size`` RGBA PNGs in
    ``train/`` and ``test/``, ``mesh.ply`` (binary PLY of the mesh rendered) and ``meshscene.json``
    (:func:`scene_settings` plus ``extra``), that last, so a folder holding it is complete. Cameras
    at ``radius`` (default :data:`CAMERA_DISTANCE`) from the origin; deterministic for a ``seed``.
    ``progress(done, total)`` is called after each view.
    """
    from recon3d.io.atomic import atomic_write_bytes
    from recon3d.io.mesh import write_mesh
    from recon3d.io.scene import write_blender_scene

    radius = CAMERA_DISTANCE if radius is None else float(radius)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meshscene.json").unlink(missing_ok=True)
    train, test = scene_poses(n_train, n_test, radius, seed)
    caster = MeshCaster(mesh, backend, device)
    done, total = 0, n_train + n_test
    for split, poses in (("train", train), ("test", test)):
        if len(poses) == 0:
            continue
        images = np.zeros((len(poses), size, size, 4), np.uint8)
        for i, pose in enumerate(poses):
            view = render_mesh_views(mesh, pose[None], size, size, camera_angle_x, supersample=supersample,
                                     smooth=smooth, caster=caster)[0]
            images[i] = np.round(np.clip(view, 0.0, 1.0) * 255.0).astype(np.uint8)
            done += 1
            if progress is not None:
                progress(done, total)
        write_blender_scene(folder, images, poses, camera_angle_x, split)
        _remove_stale_images(folder / split, len(poses))
    write_mesh(folder / "mesh.ply", TriMesh(vertices=np.asarray(mesh.vertices, np.float64),
                                            faces=np.asarray(mesh.faces, np.int64)))
    settings = {**scene_settings(n_train, n_test, size, camera_angle_x, radius, seed, supersample, smooth),
                **(extra or {})}
    atomic_write_bytes(folder / "meshscene.json", (json.dumps(settings, indent=2) + "\n").encode("utf-8"))
    return folder


def _remove_stale_images(folder: Path, count: int) -> None:
    """Delete ``r_{i}.png`` with i >= count: views of an earlier, larger scene that no json names."""
    for path in folder.glob("r_*.png"):
        index = path.stem[2:]
        if index.isdigit() and int(index) >= count:
            path.unlink()


# ----------------------------------------------------------------------------------------- preview

#: Preview lights, in the camera's frame (x right, y up, z towards the viewer): a key light from the
#: upper left and a weaker fill from the right.
PREVIEW_LIGHTS = (((-0.5, 0.6, 0.65), 0.7), ((0.8, -0.1, 0.6), 0.3))
PREVIEW_AMBIENT = 0.12
PREVIEW_GREY = 0.8


def preview_pictures(
    mesh: TriMesh,
    size: int = 512,
    azimuths: Sequence[float] = (0.0,),
    *,
    elevation: float = 25.0,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    front: Sequence[float] | None = None,
    smooth: bool = True,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    camera_angle_x: float = 0.7,
    supersample: int = 2,
    backend: Backend = "auto",
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """(size, size, 3) uint8 pictures of ``mesh``, one per azimuth: grey Lambertian, two lights that follow
    the camera, on ``background``.

    Cameras look at the bounding-box centre from ``elevation`` degrees above the plane normal to ``up``,
    at ``azimuths`` (degrees) counted from ``front`` (default: a horizontal axis), far enough that the
    bounding sphere fills 90% of the frame. ``progress(done, total)`` after each picture.
    """
    vertices = np.asarray(mesh.vertices, np.float64)
    if mesh.n_faces == 0:
        raise Recon3dError("cannot preview a mesh without faces")
    centre = _centre(mesh)
    reach = max(float(np.linalg.norm(vertices - centre, axis=1).max()), 1e-9)
    distance = reach / math.sin(math.atan(0.9 * math.tan(0.5 * camera_angle_x)))
    up_axis, front_axis = _frame(up, front)
    side = np.cross(up_axis, front_axis)
    caster = MeshCaster(mesh, backend, device)
    cache: dict = {}
    pictures = []
    for azimuth in azimuths:
        a, e = math.radians(azimuth), math.radians(elevation)
        direction = math.cos(e) * (math.cos(a) * front_axis + math.sin(a) * side) + math.sin(e) * up_axis
        pose = look_at(centre + distance * direction, centre, up_axis)
        camera = Camera.blender(pose, size, size, camera_angle_x)
        lights = [(pose[:3, :3] @ np.asarray(d, np.float64), i) for d, i in PREVIEW_LIGHTS]

        def colour(points: np.ndarray, faces: np.ndarray, directions: np.ndarray, lights: list = lights) -> np.ndarray:
            normals = _shading_normals(mesh, points, faces, directions, smooth, cache)
            return np.repeat((PREVIEW_GREY * lambert(normals, PREVIEW_AMBIENT, lights))[:, None], 3, axis=1)

        rgba = _render(caster, camera, supersample, colour)
        rgb = rgba[..., :3] * rgba[..., 3:] + np.asarray(background) * (1.0 - rgba[..., 3:])
        pictures.append(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8))
        if progress is not None:
            progress(len(pictures), len(azimuths))
    return pictures


def preview(
    mesh: TriMesh,
    path: str | os.PathLike,
    size: int = 512,
    views: int = 1,
    *,
    azimuths: Sequence[float] | None = None,
    **options,
) -> Path:
    """Write a PNG picture of ``mesh`` (:func:`preview_pictures`): ``views`` pictures side by side
    (size*views x size pixels), at azimuths evenly spread from 0 unless ``azimuths`` are given."""
    from PIL import Image

    from recon3d.io.atomic import atomic_open

    angles = list(azimuths) if azimuths is not None else [360.0 * k / views for k in range(views)]
    pictures = preview_pictures(mesh, size, angles, **options)
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(np.concatenate(pictures, axis=1)).save(handle, format="PNG")
    return path


def turntable(mesh: TriMesh, path: str | os.PathLike, size: int = 256, frames: int = 36, fps: float = 15.0,
              **options) -> Path:
    """Write an animated GIF of ``mesh`` turning once about its up axis: ``frames`` pictures of
    :func:`preview_pictures` (one supersample by default: a turntable is seen in motion)."""
    from PIL import Image

    from recon3d.io.atomic import atomic_open

    options.setdefault("supersample", 1)
    pictures = preview_pictures(mesh, size, [360.0 * k / frames for k in range(frames)], **options)
    images = [Image.fromarray(picture) for picture in pictures]
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps),
                       loop=0)
    return path


def _frame(up: Sequence[float], front: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``up`` and a unit ``front`` made perpendicular to it (any horizontal axis by default)."""
    up_axis = np.asarray(up, np.float64)
    up_axis = up_axis / np.linalg.norm(up_axis)
    if front is None:
        front = (1.0, 0.0, 0.0) if abs(up_axis[0]) < 0.9 else (0.0, 1.0, 0.0)
    f = np.asarray(front, np.float64)
    f = f - (f @ up_axis) * up_axis
    if np.linalg.norm(f) < 1e-9:
        f = np.cross(up_axis, (1.0, 0.0, 0.0) if abs(up_axis[0]) < 0.9 else (0.0, 1.0, 0.0))
    return up_axis, f / np.linalg.norm(f)


# -------------------------------------------------------------------------------------------- CLI


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m recon3d.meshscene MESH OUT``: place MESH with :func:`scene_mesh`, write its scene."""
    import argparse
    import sys

    from recon3d.console import error_line, progress_bar
    from recon3d.io.mesh import read_mesh

    parser = argparse.ArgumentParser(prog="python -m recon3d.meshscene",
                                     description="Render a closed mesh into a Blender-format scene with known "
                                                 "geometry (RGBA PNGs, transforms_{train,test}.json, mesh.ply).")
    parser.add_argument("mesh", type=Path, help="the mesh (OBJ, PLY, STL, OFF, GLB)")
    parser.add_argument("out", type=Path, help="the scene folder to write")
    parser.add_argument("--train", type=int, default=100, help="training views (default 100)")
    parser.add_argument("--test", type=int, default=20, help="test views (default 20)")
    parser.add_argument("--size", type=int, default=400, help="image width and height in pixels (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="camera placement seed (default 0)")
    parser.add_argument("--supersample", type=int, default=2, help="s x s rays per pixel (default 2; 1: no AA)")
    parser.add_argument("--smooth", action="store_true", help="shade with interpolated vertex normals")
    args = parser.parse_args(argv)
    try:
        if args.train < 0 or args.test < 0 or args.train + args.test == 0:
            raise Recon3dError("--train and --test must be >= 0 and not both 0")
        if args.size < 1 or args.supersample < 1:
            raise Recon3dError("--size and --supersample must be >= 1")
        mesh = scene_mesh(read_mesh(args.mesh))
        with progress_bar("rendering views", args.train + args.test) as advance:
            folder = write_mesh_scene(mesh, args.out, args.train, args.test, args.size, seed=args.seed,
                                      supersample=args.supersample, smooth=args.smooth,
                                      extra={"source": str(args.mesh)}, progress=advance)
    except Recon3dError as exc:
        error_line(str(exc))
        return 1
    print(folder)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
