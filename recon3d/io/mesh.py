"""Mesh files: OBJ, PLY, STL, OFF and GLB.

Reading goes through trimesh (``process=False`` so vertices are neither merged nor reordered).
OBJ, PLY and OFF are written here with numpy: it is fast for big meshes and guarantees the vertex
order, faces, normals and colours come out exactly as given. STL and GLB go through trimesh.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recon3d.errors import InputError, Recon3dError, one_line
from recon3d.io.atomic import atomic_open
from recon3d.io.pointcloud import require_file
from recon3d.types import TriMesh

MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb")

_FLOAT_FMT = "%.9g"


# --------------------------------------------------------------------------------------- reading


def read_mesh(path: str | os.PathLike) -> TriMesh:
    """Read a triangle mesh; a scene with several geometries is concatenated into one mesh.

    Vertex normals are returned only when the file stores them; vertex colours only when the file
    has per-vertex colours. Raises InputError for missing, empty, unknown or unparseable files and
    for meshes without faces.
    """
    import trimesh

    path = require_file(path)
    if path.suffix.lower() not in MESH_EXTENSIONS:
        raise InputError(
            f"{path}: unknown mesh extension '{path.suffix}' "
            f"(supported: {', '.join(MESH_EXTENSIONS)})"
        )
    try:
        # Not force="mesh": its scene flattening drops the normals the file stored.
        loaded = trimesh.load(str(path), file_type=path.suffix.lower()[1:], process=False)
        parts = _scene_parts(loaded)
    except Exception as exc:  # any parser failure is the file's fault: report it in one line
        raise InputError(f"{path}: cannot parse as a mesh: {one_line(str(exc))[:160]}") from exc
    parts = [part for part in parts if part.n_faces > 0]
    if not parts:
        raise InputError(f"{path}: has no faces (is it a point cloud?)")
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def _scene_parts(loaded: object) -> list[TriMesh]:
    """Every triangle mesh in ``loaded`` (a Trimesh or a Scene), placed by its scene transform."""
    import trimesh

    if isinstance(loaded, trimesh.Trimesh):
        return [_from_trimesh(loaded)]
    if not isinstance(loaded, trimesh.Scene):
        return []
    parts = []
    for node in loaded.graph.nodes_geometry:
        transform, name = loaded.graph[node]
        geometry = loaded.geometry[name]
        if isinstance(geometry, trimesh.Trimesh):
            parts.append(_transformed(_from_trimesh(geometry), np.asarray(transform)))
    return parts


def _from_trimesh(mesh: object) -> TriMesh:
    # trimesh computes vertex_normals on demand; only the ones the file held sit in its cache.
    has_normals = "vertex_normals" in mesh._cache
    normals = np.asarray(mesh.vertex_normals, dtype=np.float32) if has_normals else None
    colors = None
    if mesh.visual.kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(np.uint8)
    return TriMesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float64),
        faces=np.asarray(mesh.faces, dtype=np.int64),
        vertex_normals=normals,
        vertex_colors=colors,
    )


def _transformed(mesh: TriMesh, transform: np.ndarray) -> TriMesh:
    """Apply a 4x4 scene transform; normals by the inverse transpose, winding kept outward."""
    if np.allclose(transform, np.eye(4)):
        return mesh
    linear = transform[:3, :3]
    vertices = mesh.vertices @ linear.T + transform[:3, 3]
    faces = mesh.faces if np.linalg.det(linear) > 0 else mesh.faces[:, ::-1].copy()
    normals = None
    if mesh.vertex_normals is not None:
        rotated = mesh.vertex_normals @ np.linalg.inv(linear)
        length = np.linalg.norm(rotated, axis=1, keepdims=True)
        normals = (rotated / np.where(length > 0, length, 1)).astype(np.float32)
    return TriMesh(vertices, faces, normals, mesh.vertex_colors)


def _concatenate(parts: list[TriMesh]) -> TriMesh:
    """One mesh from several; normals/colours kept only when every part has them."""
    offsets = np.cumsum([0] + [part.n_vertices for part in parts[:-1]])
    normals = [part.vertex_normals for part in parts]
    colors = [part.vertex_colors for part in parts]
    return TriMesh(
        vertices=np.vstack([part.vertices for part in parts]),
        faces=np.vstack([part.faces + offset for part, offset in zip(parts, offsets)]),
        vertex_normals=None if any(n is None for n in normals) else np.vstack(normals),
        vertex_colors=None if any(c is None for c in colors) else np.vstack(colors),
    )


# --------------------------------------------------------------------------------------- writing


def _text_rows(rows: np.ndarray, fmt: str) -> bytes:
    """Format a table as text lines with one ``%``-operation for all rows (fast)."""
    if len(rows) == 0:
        return b""
    return ((fmt * len(rows)) % tuple(rows.ravel().tolist())).encode("ascii")


def _obj_bytes(mesh: TriMesh) -> bytes:
    """OBJ with ``v x y z [r g b]`` (colours in 0-1), optional ``vn``, 1-based faces."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if mesh.vertex_colors is not None:
        vertices = np.hstack([vertices, np.asarray(mesh.vertex_colors) / 255.0])
    parts = [b"# written by recon3d\n"]
    parts.append(_text_rows(vertices, "v" + f" {_FLOAT_FMT}" * vertices.shape[1] + "\n"))
    faces = np.asarray(mesh.faces, dtype=np.int64) + 1
    if mesh.vertex_normals is not None:
        normal_fmt = "vn" + f" {_FLOAT_FMT}" * 3 + "\n"
        parts.append(_text_rows(np.asarray(mesh.vertex_normals), normal_fmt))
        parts.append(_text_rows(np.repeat(faces, 2, axis=1), "f %d//%d %d//%d %d//%d\n"))
    else:
        parts.append(_text_rows(faces, "f %d %d %d\n"))
    return b"".join(parts)


def _ply_bytes(mesh: TriMesh) -> bytes:
    """Binary little-endian PLY: float32 positions/normals, uchar colours, int32 triangles."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.vertex_normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if mesh.vertex_colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(mesh.n_vertices, dtype=fields)
    for i, axis in enumerate("xyz"):
        vertices[axis] = mesh.vertices[:, i]
        if mesh.vertex_normals is not None:
            vertices["n" + axis] = mesh.vertex_normals[:, i]
    if mesh.vertex_colors is not None:
        for i, channel in enumerate(("red", "green", "blue")):
            vertices[channel] = mesh.vertex_colors[:, i]
    faces = np.empty(mesh.n_faces, dtype=[("n", "u1"), ("v", "<i4", (3,))])
    faces["n"] = 3
    faces["v"] = mesh.faces
    kind = {"<f4": "float", "u1": "uchar"}
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by recon3d\n"
        f"element vertex {mesh.n_vertices}\n"
        + "".join(f"property {kind[t]} {name}\n" for name, t in fields)
        + f"element face {mesh.n_faces}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    return header.encode("ascii") + vertices.tobytes() + faces.tobytes()


def _off_bytes(mesh: TriMesh) -> bytes:
    """OFF: positions and triangles (OFF has no standard place for per-vertex normals here)."""
    head = f"OFF\n{mesh.n_vertices} {mesh.n_faces} 0\n".encode("ascii")
    vertices = _text_rows(np.asarray(mesh.vertices), f"{_FLOAT_FMT} {_FLOAT_FMT} {_FLOAT_FMT}\n")
    return head + vertices + _text_rows(np.asarray(mesh.faces), "3 %d %d %d\n")


def _trimesh_bytes(mesh: TriMesh, file_type: str) -> bytes:
    """STL and GLB through trimesh (binary STL has no shared vertices; GLB keeps the order)."""
    import trimesh

    colors = None
    if mesh.vertex_colors is not None:
        colors = np.hstack([mesh.vertex_colors, np.full((mesh.n_vertices, 1), 255, np.uint8)])
    tm = trimesh.Trimesh(
        vertices=mesh.vertices,
        faces=mesh.faces,
        vertex_normals=mesh.vertex_normals,
        vertex_colors=colors,
        process=False,
    )
    kwargs = {"include_normals": mesh.vertex_normals is not None} if file_type == "glb" else {}
    return tm.export(file_type=file_type, **kwargs)


_WRITERS: dict[str, Callable[[TriMesh], bytes]] = {
    "obj": _obj_bytes,
    "ply": _ply_bytes,
    "off": _off_bytes,
    "stl": lambda mesh: _trimesh_bytes(mesh, "stl"),
    "glb": lambda mesh: _trimesh_bytes(mesh, "glb"),
}


def _normalise_format(fmt: str) -> str:
    name = fmt.lower().lstrip(".")
    if name not in _WRITERS:
        raise Recon3dError(
            f"unknown mesh format '{fmt}' (supported: {', '.join(e[1:] for e in MESH_EXTENSIONS)})"
        )
    return name


def mesh_to_bytes(mesh: TriMesh, fmt: str) -> bytes:
    """Serialise ``mesh`` as ``fmt`` (obj, ply, stl, off or glb; a leading dot is accepted)."""
    return _WRITERS[_normalise_format(fmt)](mesh)


def check_mesh_output(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format a mesh written to ``path`` takes (``fmt``, else the extension; ``"-"``, stdout,
    needs ``fmt``), or one clear error: checked before any long work."""
    if str(path) == "-":
        if fmt is None:
            raise Recon3dError(
                "writing a mesh to stdout ('-') needs an explicit format "
                f"(--format {', '.join(e[1:] for e in MESH_EXTENSIONS)})"
            )
        return _normalise_format(fmt)
    if fmt is None:
        suffix = Path(path).suffix.lower()
        if suffix not in MESH_EXTENSIONS:
            raise Recon3dError(
                f"{path}: unknown mesh extension '{Path(path).suffix}' "
                f"(supported: {', '.join(MESH_EXTENSIONS)})"
            )
        return suffix[1:]
    return _normalise_format(fmt)


def write_mesh(path: str | os.PathLike, mesh: TriMesh, fmt: str | None = None) -> None:
    """Write ``mesh`` to ``path`` atomically, or to stdout when ``path`` is ``"-"``.

    The format is ``fmt`` when given, else the extension of ``path``; stdout needs ``fmt``.
    """
    data = mesh_to_bytes(mesh, check_mesh_output(path, fmt))
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_open(Path(path), "wb") as handle:
        handle.write(data)
