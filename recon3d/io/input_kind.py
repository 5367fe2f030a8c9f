"""What an input file holds, read from its name and header only (no torch, no full parse): a scene of
posed images, a point cloud, a triangle mesh or labelled points. ``recon3d mesh`` picks the field it
fits from this; a .ply, .obj or .off may hold either points or a mesh, so those headers are read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

from recon3d.errors import InputError

InputKind = Literal["scene", "points", "mesh", "labelled"]

#: Suffixes that always mean one kind; .ply, .obj, .off and .npz are decided by their contents.
MESH_ONLY = (".stl", ".glb")
POINTS_ONLY = (".pcd", ".xyz", ".pts", ".txt")
#: How much of a text file is scanned for a face line (an OBJ's faces follow its vertices).
SCAN_BYTES = 1 << 30


def looks_like_scene(path: str | Path) -> bool:
    """A scene is a folder or a transforms json; anything else is a point cloud or a mesh."""
    return Path(path).is_dir() or Path(path).suffix.lower() == ".json"


def input_kind(path: str | Path) -> InputKind:
    """The kind of input ``path`` is, or one clear error for a suffix no fit reads."""
    path = Path(path)
    if looks_like_scene(path):
        return "scene"
    suffix = path.suffix.lower()
    if suffix in MESH_ONLY:
        return "mesh"
    if suffix in POINTS_ONLY:
        return "points"
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix == ".npz":
        return "labelled" if _npz_has(path, "occupancies") else "points"
    if suffix == ".ply":
        return "mesh" if _ply_faces(path) > 0 else "points"
    if suffix == ".obj":
        return "mesh" if _text_has_line(path, (b"f ", b"f\t")) else "points"
    if suffix == ".off":
        return "mesh" if _off_faces(path) > 0 else "points"
    raise InputError(f"{path}: not a point cloud, mesh, labelled points or scene "
                     "(.ply .pcd .xyz .pts .txt .obj .off .stl .glb .npz, a folder or a transforms json)")


def _npz_has(path: Path, key: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{key}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable npz archive ({exc})") from None


def _ply_faces(path: Path) -> int:
    """The face count a PLY header declares (0 when it declares none)."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise InputError(f"{path}: not a PLY file (no 'ply ... end_header' header in its first 64 KB)")
    for line in head[:end].splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == b"element" and words[1] == b"face":
            try:
                return int(words[2])
            except ValueError:
                raise InputError(f"{path}: bad face count {words[2]!r} in the PLY header") from None
    return 0


def _off_faces(path: Path) -> int:
    """The face count on an OFF file's counts line (``nv nf ne``)."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    lines = [line.split(b"#")[0].strip() for line in head.splitlines()]
    lines = [line for line in lines if line]
    words = lines[0].split() if lines else []
    if not words or not words[0].endswith(b"OFF"):
        raise InputError(f"{path}: not an OFF file (no OFF header)")
    counts = words[1:] or (lines[1].split() if len(lines) > 1 else [])
    try:
        return int(counts[1])
    except (IndexError, ValueError):
        raise InputError(f"{path}: no vertex and face counts after the OFF header") from None


def _text_has_line(path: Path, prefixes: tuple[bytes, ...]) -> bool:
    """Whether a line of the text file starts with one of ``prefixes`` (read in blocks, stopping at the
    first such line)."""
    carry = b"\n"
    read = 0
    with path.open("rb") as handle:
        while read < SCAN_BYTES:
            block = handle.read(1 << 20)
            if not block:
                return False
            read += len(block)
            text = carry + block
            if any(b"\n" + prefix in text for prefix in prefixes):
                return True
            carry = text[-8:]
    return False
