"""Mesh files: OBJ, PLY, STL, OFF and GLB.

Reading goes through trimesh (``process=False`` so vertices are neither merged nor reordered).
OBJ, PLY and OFF are written here with numpy: it is fast for big meshes and guarantees the vertex
order, faces, normals and colours come out exactly as given. STL and GLB go through trimesh.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recon3d.console import info
from recon3d.errors import InputError, Recon3dError, one_line
from recon3d.io.atomic import atomic_open
from recon3d.io.pointcloud import (
    MAX_DECLARED_BYTES,
    PRECISION,
    _parse_ply_header,
    _split_ply_header,
    check_ply_counts,
    needs_17_digits,
    needs_float64,
    require_file,
)
from recon3d.types import TriMesh

MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb")

_FLOAT_FMT = "%.9g"
#: Vertex coordinates when 9 digits would lose precision (see recon3d.io.pointcloud.needs_17_digits).
_EXACT_FMT = "%.17g"
#: How much of a PLY file is searched for the end of its header before the counts are checked.
_PLY_HEADER_BYTES = 1 << 20


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
    if path.suffix.lower() == ".ply":
        _check_ply_header(path)
    elif path.suffix.lower() == ".glb":
        _check_glb_accessors(path)
    resolver = _side_file_resolver(path)
    try:
        # Not force="mesh": its scene flattening drops the normals the file stored.
        loaded = trimesh.load(str(path), file_type=path.suffix.lower()[1:], process=False, resolver=resolver)
        parts = _scene_parts(loaded)
    except Exception as exc:  # any parser failure is the file's fault: report it in one line
        resolver.raise_refused()
        raise InputError(f"{path}: cannot parse as a mesh: {one_line(str(exc))[:160]}") from exc
    resolver.raise_refused()
    parts = [part for part in parts if part.n_faces > 0]
    if not parts:
        raise InputError(f"{path}: has no faces (is it a point cloud?)")
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def _check_ply_header(path: Path) -> None:
    """Element counts of a PLY mesh against the file's size, before the parser allocates for them."""
    with open(path, "rb") as handle:
        head = handle.read(_PLY_HEADER_BYTES)
    try:
        lines, body_start = _split_ply_header(path, head)
        fmt, elements = _parse_ply_header(path, lines)
    except InputError:
        return  # no header within reach, or one the mesh parser may still read: it reports the problem
    check_ply_counts(path, fmt, elements, path.stat().st_size - body_start)


class SideFileError(InputError):
    """A mesh's side file (material, texture, buffer) that is refused: not a regular file, or too big."""


#: glTF accessor component sizes (componentType) and components per element (type).
_GLTF_COMPONENT = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_GLTF_TYPE = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


def _check_glb_accessors(path: Path) -> None:
    """Accessors that hold no buffer data (zero placeholders, sparse ones) are allocated from their declared
    count alone: refuse counts beyond MAX_DECLARED_BYTES before the parser allocates them."""
    import json
    import struct

    with open(path, "rb") as handle:
        head = handle.read(20)
        if len(head) < 20:
            return
        magic, _, _, chunk_length, _ = struct.unpack("<5I", head)
        if magic != 0x46546C67 or chunk_length > path.stat().st_size:
            return  # not a GLB or a broken one: the parser reports it
        try:
            header = json.loads(handle.read(chunk_length))
            accessors = [a for a in header.get("accessors", []) if isinstance(a, dict) and "bufferView" not in a]
            declared = sum(int(a.get("count", 0)) * _GLTF_COMPONENT.get(a.get("componentType"), 4)
                           * _GLTF_TYPE.get(a.get("type"), 16) for a in accessors)
        except (ValueError, TypeError, AttributeError, RecursionError):
            return
    if declared > MAX_DECLARED_BYTES:
        raise InputError(f"{path}: accessors without data declare {declared:,} bytes, more than the "
                         f"{MAX_DECLARED_BYTES >> 30} GiB recon3d reads")


def _regular_side_file(path: Path, owner: Path) -> str | None:
    """Why a side file (material, texture, buffer) of ``owner`` must not be opened, or None."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        return (f"{owner}: refers to {path.name}, which is not a regular file (a FIFO, device, socket or "
                "folder); recon3d reads only regular files, which cannot block")
    if path.stat().st_size > MAX_DECLARED_BYTES:
        return f"{owner}: refers to {path.name}, which is larger than the {MAX_DECLARED_BYTES >> 30} GiB recon3d reads"
    return None


def _side_file_resolver(source: Path, owner: Path | None = None, refused: list[str] | None = None):
    """trimesh's file resolver for side files (OBJ materials and textures, PLY textures, glTF buffers and
    images) that opens only regular files: a FIFO or device would block the read forever.

    trimesh catches what a resolver raises for materials, so refusals are also kept in ``refused`` and
    reported after loading (``raise_refused()``).
    """
    from trimesh.resolvers import FilePathResolver

    class RegularFileResolver(FilePathResolver):
        def __init__(self) -> None:
            super().__init__(str(source))
            self.owner = Path(owner if owner is not None else source)
            self.refused = refused if refused is not None else []

        def namespaced(self, namespace: str):
            return _side_file_resolver(Path(self.parent) / namespace, self.owner, self.refused)

        def get(self, name: str) -> bytes:
            for candidate in (name.strip(), name.strip().lstrip("/"), os.path.split(name)[-1]):
                try:
                    path = self.absolute(candidate)
                except ValueError:
                    continue
                if path.exists():  # a stat: it does not block, unlike open()
                    problem = _regular_side_file(path, self.owner)
                    if problem is not None:
                        self.refused.append(problem)
                        raise SideFileError(problem)
                    return path.read_bytes()
            self.absolute(name)
            raise FileNotFoundError(name)

        def raise_refused(self) -> None:
            if self.refused:
                raise SideFileError(self.refused[0])

    return RegularFileResolver()


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


def _coordinate_format(vertices: np.ndarray) -> str:
    """``%.9g``, or ``%.17g`` where 9 digits would move vertices by more than PRECISION of the extent."""
    return _EXACT_FMT if needs_17_digits(vertices) else _FLOAT_FMT


def _obj_bytes(mesh: TriMesh) -> bytes:
    """OBJ with ``v x y z [r g b]`` (colours in 0-1), optional ``vn``, 1-based faces."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    coordinate = _coordinate_format(vertices)
    if mesh.vertex_colors is not None:
        vertices = np.hstack([vertices, np.asarray(mesh.vertex_colors) / 255.0])
    parts = [b"# written by recon3d\n"]
    row = "v" + f" {coordinate}" * 3 + f" {_FLOAT_FMT}" * (vertices.shape[1] - 3) + "\n"
    parts.append(_text_rows(vertices, row))
    faces = np.asarray(mesh.faces, dtype=np.int64) + 1
    if mesh.vertex_normals is not None:
        normal_fmt = "vn" + f" {_FLOAT_FMT}" * 3 + "\n"
        parts.append(_text_rows(np.asarray(mesh.vertex_normals), normal_fmt))
        parts.append(_text_rows(np.repeat(faces, 2, axis=1), "f %d//%d %d//%d %d//%d\n"))
    else:
        parts.append(_text_rows(faces, "f %d %d %d\n"))
    return b"".join(parts)


def _ply_bytes(mesh: TriMesh) -> bytes:
    """Binary little-endian PLY: float32 positions (float64 where float32 would lose precision, see
    recon3d.io.pointcloud.needs_float64), float32 normals, uchar colours, int32 triangles."""
    position = "<f8" if needs_float64(mesh.vertices) else "<f4"
    fields = [("x", position), ("y", position), ("z", position)]
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
    kind = {"<f4": "float", "<f8": "double", "u1": "uchar"}
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
    coordinate = _coordinate_format(np.asarray(mesh.vertices))
    vertices = _text_rows(np.asarray(mesh.vertices), f"{coordinate} {coordinate} {coordinate}\n")
    return head + vertices + _text_rows(np.asarray(mesh.faces), "3 %d %d %d\n")


def _stl_bytes(mesh: TriMesh) -> bytes:
    """Binary STL; it holds float32 only, so a mesh that float32 would move is refused (no silent loss)."""
    if needs_float64(mesh.vertices):
        raise Recon3dError(f"STL holds float32 coordinates, which would move this mesh's vertices by more than "
                           f"{PRECISION:g} of its size ({_placement(mesh)}); write .ply, .obj, .off or .glb instead")
    return _trimesh_bytes(mesh, "stl")


def _glb_bytes(mesh: TriMesh) -> bytes:
    """GLB holds float32 positions: where float32 would move the vertices, they are written relative to
    their centre and the centre goes into the node's transform (float64 in the JSON), which readers apply."""
    if not needs_float64(mesh.vertices):
        return _trimesh_bytes(mesh, "glb")
    centre = 0.5 * (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0))
    info(f"GLB holds float32 positions: vertices written relative to ({', '.join(f'{c:.17g}' for c in centre)}), "
         "the offset in the node's transform")
    local = TriMesh(mesh.vertices - centre, mesh.faces, mesh.vertex_normals, mesh.vertex_colors)
    return _trimesh_bytes(local, "glb", offset=centre)


def _placement(mesh: TriMesh) -> str:
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    largest = float(np.abs(mesh.vertices).max())
    return f"coordinates up to {largest:.6g} for an extent of {extent:.6g}"


def _trimesh_bytes(mesh: TriMesh, file_type: str, offset: np.ndarray | None = None) -> bytes:
    """STL and GLB through trimesh (binary STL has no shared vertices; GLB keeps the order).

    ``offset``: GLB only, a translation for the mesh's node (the vertices are relative to it)."""
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
    if offset is None:
        return tm.export(file_type=file_type, **kwargs)
    transform = np.eye(4)
    transform[:3, 3] = offset
    scene = trimesh.Scene()
    scene.add_geometry(tm, transform=transform)
    return scene.export(file_type=file_type, **kwargs)


_WRITERS: dict[str, Callable[[TriMesh], bytes]] = {
    "obj": _obj_bytes,
    "ply": _ply_bytes,
    "off": _off_bytes,
    "stl": _stl_bytes,
    "glb": _glb_bytes,
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


def check_format_precision(fmt: str, box: np.ndarray) -> None:
    """Refuse, before any long work, a float32-only format (STL) for a mesh that will fill ``box`` ((2, 3),
    the input's units) where float32 would move its vertices (see :func:`_stl_bytes`)."""
    corners = np.asarray(box, dtype=np.float64).reshape(2, 3)
    # Rounding bound of float32 (half a unit in the last place) at the largest coordinate, against the extent:
    # the box's corners themselves may happen to be exact in float32.
    bound = float(np.abs(corners).max()) * 2.0**-24
    if _normalise_format(fmt) == "stl" and bound > PRECISION * float(np.ptp(corners, axis=0).max()):
        raise Recon3dError(f"STL holds float32 coordinates, which would move this mesh's vertices by more than "
                           f"{PRECISION:g} of its size (coordinates up to {np.abs(corners).max():.6g} for an extent of "
                           f"{np.ptp(corners, axis=0).max():.6g}); write .ply, .obj, .off or .glb instead")


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
