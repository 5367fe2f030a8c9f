"""Point-cloud files: PLY, PCD, XYZ/PTS/TXT, OBJ, OFF and Occupancy-Networks NPZ.

The readers are written with numpy alone (no open3d, no torch) so that a malformed file is
reported as one :class:`InputError` line naming the file, never as a traceback from a third-party
parser. Every reader returns raw arrays; :func:`read_point_cloud` then applies the checks common to
all formats (finite coordinates, usable normals).
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon3d.console import warn
from recon3d.errors import InputError, Recon3dError, one_line
from recon3d.io.atomic import atomic_open
from recon3d.memory import check_memory, format_bytes
from recon3d.types import PointCloud

POINT_CLOUD_EXTENSIONS = (".ply", ".pcd", ".xyz", ".pts", ".txt", ".obj", ".off", ".npz")

_Arrays = tuple[np.ndarray, np.ndarray | None]

#: Text formats: ``%.9g`` round-trips float32 exactly; ``%.17g`` float64, used when 9 digits would move
#: points by more than PRECISION of the cloud's extent (georeferenced coordinates).
_FLOAT_FMT = "%.9g"
_EXACT_FMT = "%.17g"
#: Largest rounding error of a written coordinate, as a fraction of the data's extent, before a writer
#: switches from float32 (or 9 digits) to float64 (or 17 digits).
PRECISION = 1e-6
#: Most bytes an npz may declare (all arrays, uncompressed) or a PCD's compressed block may unpack to.
MAX_DECLARED_BYTES = 2 << 30
#: liblzf's best case: a 3-byte back-reference copies 264 bytes.
_LZF_MAX_RATIO = 88
_COMMENT_PREFIXES = ("#", "//")
_NORMAL_NAMES = ("nx", "ny", "nz")


# --------------------------------------------------------------------------------------- checks


def require_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it names a non-empty regular file, else raise InputError.

    A FIFO, device or socket is refused before it is opened: reading one could block forever.
    """
    path = Path(path)
    label = str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or _describe(exc)})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{label}: is a directory (a folder), not a file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{label}: is not a regular file (a {_file_kind(mode)}); recon3d reads only regular "
                         "files, which cannot block")
    if path.stat().st_size == 0:
        raise InputError(f"{label}: file is empty")
    return path


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO or pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _describe(exc: BaseException) -> str:
    """A short one-line description of a parser exception, for the InputError message."""
    text = one_line(str(exc)) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _real(path: Path, array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as float64, or one InputError when it does not hold real numbers (complex, strings)."""
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: '{name}' holds {array.dtype} values, not real numbers")
    return array.astype(np.float64, copy=False)


def _finish(path: Path, points: np.ndarray, normals: np.ndarray | None) -> PointCloud:
    """Checks shared by every format: (N, 3) shape, drop non-finite rows, clean up normals."""
    points = _real(path, points, "points")
    if normals is not None:
        normals = _real(path, normals, "normals")
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{path}: expected (N, 3) points, got an array of shape {points.shape}")
    total = len(points)
    if total == 0:
        raise InputError(f"{path}: no points")
    if normals is not None and np.shape(normals) != points.shape:
        shape = np.shape(normals)
        warn(f"{path}: normals have shape {shape}, points {points.shape}; ignoring normals")
        normals = None
    finite = np.isfinite(points).all(axis=1)
    kept = int(finite.sum())
    if kept == 0:
        raise InputError(f"{path}: all {total} points have NaN or infinite coordinates")
    if kept < total:
        warn(f"{path}: dropped {total - kept} points with NaN or infinite coordinates")
        points = points[finite]
        normals = None if normals is None else normals[finite]
    return PointCloud(np.ascontiguousarray(points), _unit_normals(path, normals))


def point_cloud_from_arrays(points: object, normals: object = None, source: str = "points") -> PointCloud:
    """A PointCloud from arrays in memory (the Python API): (N, 3) points, or (N, 6) points and normals,
    checked as a file's would be (non-finite rows dropped with a warning, normals made unit or left out)."""
    array = np.asarray(points)
    if normals is None and array.ndim == 2 and array.shape[1] == 6:
        array, normals = array[:, :3], array[:, 3:]
    return _finish(Path(source), array, None if normals is None else np.asarray(normals))


def _unit_normals(path: Path, normals: np.ndarray | None) -> np.ndarray | None:
    """Unit float32 normals, or None (with a warning) when any is non-finite or zero-length."""
    if normals is None:
        return None
    normals = np.asarray(normals, dtype=np.float64)
    length = np.linalg.norm(normals, axis=1)
    if not np.isfinite(length).all() or (length == 0).any():
        warn(f"{path}: some normals are NaN, infinite or zero-length; ignoring all normals")
        return None
    return (normals / length[:, None]).astype(np.float32)


def _truncated(path: Path, expected: int, found: int, what: str) -> InputError:
    return InputError(
        f"{path}: truncated: header says {expected} {what} but the file holds only {found}"
    )


# ------------------------------------------------------------------------------------------ PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_PLY_END = re.compile(rb"(?:^|\n)end_header[ \t]*(?:\r?\n|$)")


@dataclass
class _PlyProperty:
    name: str
    dtype: str  #: numpy type code without byte order ("f4", ...)
    count_dtype: str | None = None  #: set for list properties: the type of the length prefix


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[_PlyProperty]

    @property
    def has_lists(self) -> bool:
        return any(p.count_dtype is not None for p in self.properties)

    def index(self, name: str) -> int | None:
        names = [p.name for p in self.properties]
        return names.index(name) if name in names else None


def _read_ply(path: Path) -> _Arrays:
    data = path.read_bytes()
    header, body_start = _split_ply_header(path, data)
    fmt, elements = _parse_ply_header(path, header)
    check_ply_counts(path, fmt, elements, len(data) - body_start)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise InputError(f"{path}: PLY file has no 'vertex' element")
    wanted = _ply_wanted(path, vertex)
    before = elements[: elements.index(vertex)]
    if fmt == "ascii":
        table = _ply_ascii_vertices(path, data[body_start:], before, vertex, wanted)
    else:
        table = _ply_binary_vertices(path, data, body_start, before, vertex, wanted, fmt)
    return table[:, :3], (table[:, 3:6] if len(wanted) == 6 else None)


def _split_ply_header(path: Path, data: bytes) -> tuple[list[str], int]:
    """Header lines and the offset where the element data starts."""
    if not data.startswith(b"ply"):
        raise InputError(f"{path}: not a PLY file (it does not start with 'ply')")
    match = _PLY_END.search(data)
    if match is None:
        raise InputError(f"{path}: malformed PLY header: no 'end_header' line")
    return data[: match.start()].decode("latin-1").splitlines(), match.end()


def _parse_ply_header(path: Path, lines: list[str]) -> tuple[str, list[_PlyElement]]:
    if lines[0].strip() != "ply":
        raise InputError(f"{path}: not a PLY file (the first line is not 'ply')")
    fmt: str | None = None
    elements: list[_PlyElement] = []
    for lineno, line in enumerate(lines[1:], start=2):
        words = line.split()
        try:
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format" and len(words) == 3 and words[1] in _PLY_FORMATS:
                fmt = words[1]
            elif words[0] == "element" and len(words) == 3 and int(words[2]) >= 0:
                elements.append(_PlyElement(words[1], int(words[2]), []))
            elif words[0] == "property" and elements and words[1] == "list" and len(words) == 5:
                prop = _PlyProperty(words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]])
                elements[-1].properties.append(prop)
            elif words[0] == "property" and elements and len(words) == 3:
                elements[-1].properties.append(_PlyProperty(words[2], _PLY_TYPES[words[1]]))
            else:
                raise ValueError
        except (ValueError, KeyError, IndexError):
            raise InputError(
                f"{path}: malformed PLY header line {lineno}: {line.strip()!r}"
            ) from None
    if fmt is None:
        raise InputError(f"{path}: malformed PLY header: no valid 'format' line")
    return fmt, elements


def check_ply_counts(path: Path, fmt: str, elements: list[_PlyElement], body_bytes: int) -> None:
    """Refuse element counts the data cannot hold, before anything is allocated for them.

    Each binary row takes at least its scalars and list-length prefixes; each ASCII value at least one
    character and a separator. A header declaring 10¹² vertices in a small file is truncated, not a
    request for terabytes.
    """
    need = 0
    for element in elements:
        if fmt == "ascii":
            row = 2 * len(element.properties)
        else:
            row = sum(np.dtype(p.count_dtype or p.dtype).itemsize for p in element.properties)
        need += element.count * row
        if need - 1 > body_bytes:
            what = "vertices" if element.name == "vertex" else element.name + "s"
            most = max(0, body_bytes - (need - element.count * row)) // max(row, 1)
            raise _truncated(path, element.count, min(most, element.count), what)


def _ply_wanted(path: Path, vertex: _PlyElement) -> list[str]:
    """Vertex properties to read: x, y, z and, when all three are present, nx, ny, nz."""
    if any(vertex.index(axis) is None for axis in "xyz"):
        raise InputError(f"{path}: PLY vertex element has no x, y, z properties")
    for name in "xyz":
        if vertex.properties[vertex.index(name)].count_dtype is not None:
            raise InputError(f"{path}: PLY vertex property '{name}' is a list, not a number")
    normals = all(vertex.index(n) is not None for n in _NORMAL_NAMES)
    return ["x", "y", "z", *(_NORMAL_NAMES if normals else ())]


def _ply_ascii_vertices(
    path: Path, body: bytes, before: list[_PlyElement], vertex: _PlyElement, wanted: list[str]
) -> np.ndarray:
    """ASCII PLY: one element row per line; rows of earlier elements are skipped by count."""
    skip = sum(e.count for e in before)
    lines = body.decode("ascii").split("\n", skip + vertex.count)[skip : skip + vertex.count]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < vertex.count:
        raise _truncated(path, vertex.count, len(lines), "vertices")
    if vertex.count == 0:
        return np.empty((0, len(wanted)))
    if not vertex.has_lists:
        cols = [vertex.index(name) for name in wanted]
        return np.loadtxt(lines, usecols=cols, ndmin=2, dtype=np.float64)
    return np.array([_ascii_row_values(line, vertex, wanted) for line in lines], dtype=np.float64)


def _ascii_row_values(line: str, element: _PlyElement, wanted: list[str]) -> list[float]:
    """The wanted scalar values of one ASCII row that also holds list properties (rare)."""
    tokens, pos, row = line.split(), 0, {}
    for prop in element.properties:
        if prop.count_dtype is None:
            row[prop.name] = tokens[pos]
            pos += 1
        else:
            pos += 1 + int(tokens[pos])
    return [float(row[name]) for name in wanted]


def _ply_binary_vertices(
    path: Path,
    data: bytes,
    offset: int,
    before: list[_PlyElement],
    vertex: _PlyElement,
    wanted: list[str],
    fmt: str,
) -> np.ndarray:
    order = _PLY_FORMATS[fmt]
    for element in before:
        offset = _skip_binary_element(path, data, offset, element, order)
    if not vertex.has_lists:
        dtype = _scalar_row_dtype(vertex, order)
        available = (len(data) - offset) // dtype.itemsize
        if available < vertex.count:
            raise _truncated(path, vertex.count, available, "vertices")
        rows = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
        return np.stack([rows[f"p{vertex.index(n)}"].astype(np.float64) for n in wanted], axis=1)
    table, _ = _walk_binary_rows(path, data, offset, vertex, order, wanted)
    return table


def _scalar_row_dtype(element: _PlyElement, order: str) -> np.dtype:
    """Structured dtype of one row of an element without list properties."""
    return np.dtype([(f"p{i}", order + p.dtype) for i, p in enumerate(element.properties)])


def _skip_binary_element(
    path: Path, data: bytes, offset: int, element: _PlyElement, order: str
) -> int:
    """Offset just past ``element``'s rows.

    Rows without lists have a fixed size. Rows with lists (faces) almost always have the same list
    lengths on every row, so that case is checked with one vectorised read; otherwise rows are
    walked one at a time.
    """
    if not element.has_lists:
        size = _scalar_row_dtype(element, order).itemsize
        if offset + size * element.count > len(data):
            raise _truncated(path, element.count, (len(data) - offset) // size, element.name + "s")
        return offset + size * element.count
    if element.count == 0:
        return offset
    try:
        dtype, count_fields, lengths = _uniform_list_dtype(data, offset, element, order)
    except ValueError:  # the first row itself runs past the end: let the walker report it
        return _walk_binary_rows(path, data, offset, element, order, [])[1]
    if offset + dtype.itemsize * element.count <= len(data):
        rows = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
        if all((rows[f] == n).all() for f, n in zip(count_fields, lengths)):
            return offset + dtype.itemsize * element.count
    return _walk_binary_rows(path, data, offset, element, order, [])[1]


def _uniform_list_dtype(
    data: bytes, offset: int, element: _PlyElement, order: str
) -> tuple[np.dtype, list[str], list[int]]:
    """Row dtype assuming every row's lists are as long as the first row's."""
    fields: list[tuple] = []
    count_fields: list[str] = []
    lengths: list[int] = []
    pos = offset
    for i, prop in enumerate(element.properties):
        if prop.count_dtype is None:
            fields.append((f"p{i}", order + prop.dtype))
            pos += np.dtype(prop.dtype).itemsize
            continue
        count_type = np.dtype(order + prop.count_dtype)
        length = int(np.frombuffer(data, dtype=count_type, count=1, offset=pos)[0])
        fields.append((f"n{i}", count_type))
        if length > 0:
            fields.append((f"p{i}", order + prop.dtype, (length,)))
        count_fields.append(f"n{i}")
        lengths.append(length)
        pos += count_type.itemsize + length * np.dtype(prop.dtype).itemsize
    return np.dtype(fields), count_fields, lengths


def _walk_binary_rows(
    path: Path, data: bytes, offset: int, element: _PlyElement, order: str, wanted: list[str]
) -> tuple[np.ndarray, int]:
    """Row-by-row reader for elements with variable-length lists: wanted values and end offset."""
    values = np.empty((element.count, len(wanted)))
    columns = {name: j for j, name in enumerate(wanted)}
    # Per property: struct format of the scalar or list length, and the list item size (0: scalar)
    layout = [
        (
            columns.get(p.name) if p.count_dtype is None else None,
            struct.Struct(order + np.dtype(p.count_dtype or p.dtype).char),
            0 if p.count_dtype is None else np.dtype(p.dtype).itemsize,
        )
        for p in element.properties
    ]
    row = 0
    try:
        for row in range(element.count):
            for column, scalar, item_size in layout:
                (value,) = scalar.unpack_from(data, offset)
                offset += scalar.size
                if item_size:
                    if value < 0:
                        raise ValueError(f"negative list length in {element.name} row {row}")
                    offset += value * item_size
                elif column is not None:
                    values[row, column] = value
        if offset > len(data):
            raise struct.error
    except struct.error:
        what = "vertices" if element.name == "vertex" else element.name + "s"
        raise _truncated(path, element.count, row, what) from None
    return values, offset


# ------------------------------------------------------------------------------------------ PCD

_PCD_TYPES = {"F": "f", "I": "i", "U": "u"}
_PCD_NORMALS = ("normal_x", "normal_y", "normal_z")


@dataclass
class _PcdHeader:
    fields: list[str]
    dtypes: list[np.dtype]  #: per field, with its COUNT as a sub-array shape
    points: int
    data: str


def _read_pcd(path: Path) -> _Arrays:
    data = path.read_bytes()
    header, body_start = _parse_pcd_header(path, data)
    body = data[body_start:]
    if header.data == "ascii":
        columns = _pcd_ascii_columns(path, body, header)
    elif header.data == "binary":
        columns = _pcd_binary_columns(path, body, header)
    else:
        columns = _pcd_compressed_columns(path, body, header)
    if any(axis not in columns for axis in "xyz"):
        raise InputError(f"{path}: PCD file has no x, y, z fields (fields: {header.fields})")
    points = np.stack([columns[a] for a in "xyz"], axis=1)
    has_normals = all(n in columns for n in _PCD_NORMALS)
    normals = np.stack([columns[n] for n in _PCD_NORMALS], axis=1) if has_normals else None
    return points, normals


def _parse_pcd_header(path: Path, data: bytes) -> tuple[_PcdHeader, int]:
    """Parse header lines up to and including ``DATA``; return the header and the data offset."""
    entries: dict[str, list[str]] = {}
    offset = 0
    while "DATA" not in entries:
        end = data.find(b"\n", offset)
        if end < 0:
            raise InputError(f"{path}: malformed PCD header: no 'DATA' line")
        words = data[offset:end].decode("latin-1").split()
        offset = end + 1
        if words and not words[0].startswith("#"):
            entries[words[0].upper()] = words[1:]
    try:
        return _pcd_header_from(entries), offset
    except (KeyError, ValueError, IndexError, TypeError):
        raise InputError(
            f"{path}: malformed PCD header (needs FIELDS, SIZE, TYPE, COUNT, WIDTH, POINTS "
            "and DATA ascii|binary|binary_compressed)"
        ) from None


def _pcd_header_from(entries: dict[str, list[str]]) -> _PcdHeader:
    fields = entries["FIELDS"]
    sizes = [int(s) for s in entries["SIZE"]]
    types = entries["TYPE"]
    counts = [int(c) for c in entries.get("COUNT", ["1"] * len(fields))]
    if not len(fields) == len(sizes) == len(types) == len(counts):
        raise ValueError
    dtypes = [
        np.dtype(("<" + _PCD_TYPES[t.upper()] + str(s), (c,)))
        for t, s, c in zip(types, sizes, counts)
    ]
    if "POINTS" in entries:
        points = int(entries["POINTS"][0])
    else:
        points = int(entries["WIDTH"][0]) * int(entries.get("HEIGHT", ["1"])[0])
    mode = entries["DATA"][0].lower()
    if mode not in ("ascii", "binary", "binary_compressed") or points < 0:
        raise ValueError
    return _PcdHeader(fields, dtypes, points, mode)


def _pcd_ascii_columns(path: Path, body: bytes, header: _PcdHeader) -> dict[str, np.ndarray]:
    lines = [line for line in body.decode("ascii").splitlines() if line.strip()]
    if len(lines) < header.points:
        raise _truncated(path, header.points, len(lines), "points")
    if header.points == 0:
        return {name: np.empty(0) for name in header.fields}
    table = np.loadtxt(lines[: header.points], ndmin=2, dtype=np.float64)
    starts = np.cumsum([0] + [dt.shape[0] for dt in header.dtypes])
    return {name: table[:, starts[i]] for i, name in enumerate(header.fields)}


def _pcd_binary_columns(path: Path, body: bytes, header: _PcdHeader) -> dict[str, np.ndarray]:
    """Binary PCD: little-endian rows, fields interleaved (array of structs)."""
    row = np.dtype([(f"f{i}", dt) for i, dt in enumerate(header.dtypes)])
    available = len(body) // row.itemsize
    if available < header.points:
        raise _truncated(path, header.points, available, "points")
    rows = np.frombuffer(body, dtype=row, count=header.points)
    return {name: rows[f"f{i}"][:, 0].astype(np.float64) for i, name in enumerate(header.fields)}


def _pcd_compressed_columns(path: Path, body: bytes, header: _PcdHeader) -> dict[str, np.ndarray]:
    """binary_compressed PCD: two uint32 sizes, then LZF data holding each field contiguously."""
    if len(body) < 8:
        raise InputError(f"{path}: truncated: binary_compressed PCD data has no size header")
    packed, unpacked = struct.unpack_from("<II", body)
    if len(body) - 8 < packed:
        raise InputError(
            f"{path}: truncated: header says {packed} compressed bytes but the file holds only "
            f"{len(body) - 8}"
        )
    row_size = sum(dtype.itemsize for dtype in header.dtypes)
    if unpacked < row_size * header.points:
        raise _truncated(path, header.points, unpacked // max(row_size, 1), "points")
    if unpacked > _LZF_MAX_RATIO * packed + 64:
        raise InputError(f"{path}: binary_compressed PCD data declares {unpacked} bytes from {packed} compressed "
                         "bytes, more than LZF can expand to")
    _check_declared(path, unpacked, "the compressed PCD data")
    raw = lzf_decompress(body[8 : 8 + packed], unpacked)
    columns: dict[str, np.ndarray] = {}
    offset = 0
    for name, dtype in zip(header.fields, header.dtypes):
        block = np.frombuffer(raw, dtype=dtype, count=header.points, offset=offset)
        columns[name] = block[:, 0].astype(np.float64)
        offset += dtype.itemsize * header.points
    return columns


def lzf_decompress(data: bytes, size: int) -> bytes:
    """Decompress LZF (liblzf's format, as used by PCL's binary_compressed) to ``size`` bytes.

    Each control byte starts either a literal run (< 32: copy ctrl + 1 bytes) or a back-reference
    (length in the top 3 bits, distance in the low 5 bits plus the next byte). Copying whole runs
    with slices keeps this fast enough for millions of points.
    """
    out = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        if len(out) > size:  # never grow past what was declared (and checked against memory)
            break
        ctrl = data[pos]
        pos += 1
        if ctrl < 32:
            if pos + ctrl + 1 > end:
                raise ValueError("LZF literal run past the end of the data")
            out += data[pos : pos + ctrl + 1]
            pos += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            length += data[pos]
            pos += 1
        if pos >= end:
            raise ValueError("LZF back-reference past the end of the data")
        start = len(out) - ((ctrl & 0x1F) << 8) - data[pos] - 1
        pos += 1
        length += 2
        if start < 0:
            raise ValueError("LZF back-reference before the start of the output")
        if start + length <= len(out):
            out += out[start : start + length]
        else:  # overlapping copy: the output repeats with period len(out) - start
            period = out[start:]
            out += (period * (length // len(period) + 1))[:length]
    if len(out) != size:
        raise ValueError(f"LZF data decompressed to {len(out)} bytes, expected {size}")
    return bytes(out)


# ---------------------------------------------------------------------------------------- text


def _data_lines(text: str) -> list[str]:
    """Non-blank lines that are not ``#`` or ``//`` comments, commas turned into spaces."""
    lines = [line for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.lstrip().startswith(_COMMENT_PREFIXES)]
    return [line.replace(",", " ") for line in lines] if "," in text else lines


def _read_text(path: Path) -> _Arrays:
    """XYZ/PTS/TXT: one point per line, whitespace- or comma-separated.

    Column rule: the first three columns are x y z. With exactly six columns, columns 4-6 are
    normals, but only when every row's columns 4-6 form a (near) unit vector; otherwise they are
    taken to be colours and ignored with a warning. Any other column count (4, 5, 7, 9...: e.g.
    intensity, colours) uses x y z only. A leading line holding a single integer (the point count
    of Leica ``.pts`` files) is skipped.
    """
    lines = _data_lines(path.read_bytes().decode("utf-8"))
    if len(lines) > 1 and re.fullmatch(r"\s*\d+\s*", lines[0]):
        lines = lines[1:]
    if not lines:
        raise InputError(f"{path}: no points (only comments or blank lines)")
    table = np.loadtxt(lines, ndmin=2, dtype=np.float64)
    if table.shape[1] < 3:
        raise InputError(f"{path}: expected at least 3 columns (x y z), found {table.shape[1]}")
    if table.shape[1] != 6:
        return table[:, :3], None
    length = np.linalg.norm(table[:, 3:6], axis=1)
    if not (np.abs(length - 1) <= 0.1).all():
        warn(f"{path}: columns 4-6 are not unit vectors, so they are not used as normals")
        return table[:, :3], None
    return table[:, :3], table[:, 3:6]


def _read_obj(path: Path) -> _Arrays:
    """OBJ: ``v`` lines (colour columns after x y z ignored); ``vn`` only if one per vertex."""
    lines = path.read_bytes().decode("utf-8").splitlines()
    vertices = [line for line in lines if line.startswith(("v ", "v\t"))]
    normal_lines = [line for line in lines if line.startswith(("vn ", "vn\t"))]
    if not vertices:
        return np.empty((0, 3)), None
    points = np.loadtxt(vertices, usecols=(1, 2, 3), ndmin=2, dtype=np.float64)
    if len(normal_lines) != len(vertices):
        return points, None
    return points, np.loadtxt(normal_lines, usecols=(1, 2, 3), ndmin=2, dtype=np.float64)


def _read_off(path: Path) -> _Arrays:
    """OFF/NOFF/COFF/CNOFF: vertices only; normals (columns 4-6) when the keyword has an N."""
    text = path.read_bytes().decode("utf-8")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    keyword = lines[0].split()[0].upper() if lines else ""
    if not keyword.endswith("OFF") or keyword.startswith("4") or "BINARY" in lines[0].upper():
        raise InputError(f"{path}: not an ASCII 3-D OFF file (no OFF/NOFF/COFF header line)")
    words = lines[0].split()
    counts, first = (words[1:], 1) if len(words) > 1 else (lines[1].split(), 2)
    n_vertices = int(counts[0])
    rows = lines[first : first + n_vertices]
    if len(rows) < n_vertices:
        raise _truncated(path, n_vertices, len(rows), "vertices")
    if n_vertices == 0:
        return np.empty((0, 3)), None
    has_normals = "N" in keyword[:-3]
    cols = (0, 1, 2, 3, 4, 5) if has_normals else (0, 1, 2)
    table = np.loadtxt(rows, usecols=cols, ndmin=2, dtype=np.float64)
    return table[:, :3], (table[:, 3:6] if has_normals else None)


def _check_declared(path: Path, size: int, what: str) -> None:
    """A size a file declares (before inflating it) against MAX_DECLARED_BYTES and the free memory."""
    if size > MAX_DECLARED_BYTES:
        raise InputError(f"{path}: {what} declares {format_bytes(size)} uncompressed, more than the "
                         f"{format_bytes(MAX_DECLARED_BYTES)} recon3d reads from one file")
    check_memory(size, f"{path}: {what} ({format_bytes(size)} uncompressed)", "free memory or split the file")


def check_npz(path: Path, keys: tuple[str, ...]) -> None:
    """Check the arrays ``keys`` of an npz before any is inflated: the sizes the zip directory declares
    (against MAX_DECLARED_BYTES and the free memory), and each array's header against its member's size."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if info.filename[:-4] in keys
                       and info.filename.endswith(".npy")]
            _check_declared(path, sum(info.file_size for info in members), "the npz archive")
            for info in members:
                with archive.open(info) as handle:
                    _check_npy_header(path, info, handle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError, OSError,
            ValueError, struct.error) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({_describe(exc)})") from None


def _check_npy_header(path: Path, info: zipfile.ZipInfo, handle) -> None:
    """An array member must not declare more data than its (already checked) uncompressed size."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        reader = readers.get(np.lib.format.read_magic(handle))
        if reader is None:
            return
        shape, _, dtype = reader(handle)
    except (ValueError, TypeError, OSError, EOFError, SyntaxError):
        return  # np.load reports a malformed member itself
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > info.file_size:
        raise InputError(f"{path}: array '{info.filename[:-4]}' declares shape {tuple(shape)} ({format_bytes(need)}) "
                         f"but holds only {format_bytes(info.file_size)}")


def _read_npz(path: Path) -> _Arrays:
    """Occupancy Networks ``pointcloud.npz``: ``points`` (or ``xyz``), optional ``normals``."""
    check_npz(path, ("points", "xyz", "normals"))
    with np.load(path, allow_pickle=False) as archive:
        key = next((k for k in ("points", "xyz") if k in archive.files), None)
        if key is None:
            raise InputError(
                f"{path}: npz has no 'points' or 'xyz' array (it has: {', '.join(archive.files)})"
            )
        points = archive[key]
        normals = archive["normals"] if "normals" in archive.files else None
    return points, normals


_READERS: dict[str, Callable[[Path], _Arrays]] = {
    ".ply": _read_ply,
    ".pcd": _read_pcd,
    ".xyz": _read_text,
    ".pts": _read_text,
    ".txt": _read_text,
    ".obj": _read_obj,
    ".off": _read_off,
    ".npz": _read_npz,
}


def read_point_cloud(path: str | os.PathLike) -> PointCloud:
    """Read a point cloud; the format comes from the (case-insensitive) extension.

    Raises InputError with a one-line message naming the file for anything wrong with it: missing,
    empty, unknown extension, malformed or truncated data, no finite points.
    """
    path = require_file(path)
    ext = path.suffix.lower()
    if ext not in _READERS:
        raise InputError(
            f"{path}: unknown point-cloud extension '{path.suffix}' "
            f"(supported: {', '.join(POINT_CLOUD_EXTENSIONS)})"
        )
    try:
        with np.errstate(all="ignore"):  # overflowing or invalid values are dropped below, with a count
            points, normals = _READERS[ext](path)
    except Recon3dError:
        raise
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or _describe(exc)})") from exc
    except Exception as exc:  # any parser failure is the file's fault: report it in one line
        raise InputError(f"{path}: cannot parse as {ext[1:].upper()}: {_describe(exc)}") from exc
    return _finish(path, points, normals)


# --------------------------------------------------------------------------------------- writing


def _extent(points: np.ndarray) -> float:
    return float(np.ptp(points, axis=0).max()) if len(points) else 0.0


def needs_float64(points: np.ndarray) -> bool:
    """Whether float32 would move some coordinate by more than PRECISION of the points' extent
    (coordinates far from the origin against the object's size, as georeferenced ones are)."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return False
    error = float(np.abs(points - points.astype(np.float32).astype(np.float64)).max())
    return error > PRECISION * _extent(points)


def needs_17_digits(points: np.ndarray) -> bool:
    """Whether 9 significant digits (``%.9g``) would move some coordinate by more than PRECISION of
    the points' extent: the rounding bound of the largest magnitude against the extent."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return False
    largest = float(np.abs(points).max())
    if largest == 0:
        return False
    bound = 0.5 * 10.0 ** (np.floor(np.log10(largest)) - 8)
    return bound > PRECISION * _extent(points)


def _text_rows(rows: np.ndarray, prefix: str = "", exact_columns: int = 0) -> bytes:
    """Format a float table as text lines, one ``%``-operation for all rows (fast); the first
    ``exact_columns`` columns with 17 significant digits (float64 round trip), the rest with 9."""
    if len(rows) == 0:
        return b""
    formats = [_EXACT_FMT] * exact_columns + [_FLOAT_FMT] * (rows.shape[1] - exact_columns)
    line = prefix + " ".join(formats) + "\n"
    return ((line * len(rows)) % tuple(rows.ravel().tolist())).encode("ascii")


def _table(pc: PointCloud) -> np.ndarray:
    """Points, with normals as columns 4-6 when present."""
    if pc.normals is None:
        return np.asarray(pc.points, dtype=np.float64)
    return np.hstack([pc.points, np.asarray(pc.normals, dtype=np.float64)])


def _text_table(pc: PointCloud, prefix: str = "") -> bytes:
    """Points (and normals) as text: 9 digits, or 17 for the points when 9 would lose precision."""
    return _text_rows(_table(pc), prefix, 3 if needs_17_digits(pc.points) else 0)


def _binary_rows(pc: PointCloud, wide: bool) -> bytes:
    """Little-endian rows: x y z as float32, or float64 when ``wide``; normals float32."""
    if not wide:
        return _table(pc).astype("<f4").tobytes()
    fields = [(name, "<f8") for name in "xyz"]
    if pc.normals is not None:
        fields += [(name, "<f4") for name in _NORMAL_NAMES]
    rows = np.empty(len(pc), dtype=fields)
    for i, axis in enumerate("xyz"):
        rows[axis] = pc.points[:, i]
        if pc.normals is not None:
            rows[_NORMAL_NAMES[i]] = pc.normals[:, i]
    return rows.tobytes()


def _ply_bytes(pc: PointCloud, binary: bool) -> bytes:
    names = ["x", "y", "z", *(_NORMAL_NAMES if pc.normals is not None else ())]
    wide = needs_float64(pc.points) if binary else needs_17_digits(pc.points)
    header = "ply\nformat {} 1.0\ncomment written by recon3d\nelement vertex {}\n{}end_header\n"
    props = "".join(f"property {'double' if wide and n in 'xyz' else 'float'} {n}\n" for n in names)
    fmt = "binary_little_endian" if binary else "ascii"
    head = header.format(fmt, len(pc), props).encode("ascii")
    return head + (_binary_rows(pc, wide) if binary else _text_table(pc))


def _pcd_bytes(pc: PointCloud, binary: bool) -> bytes:
    names = ["x", "y", "z", *(_PCD_NORMALS if pc.normals is not None else ())]
    k = len(names)
    wide = needs_float64(pc.points) if binary else needs_17_digits(pc.points)
    sizes = ["8" if wide and i < 3 else "4" for i in range(k)]
    head = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(names)}\nSIZE {' '.join(sizes)}\nTYPE {' '.join(['F'] * k)}\n"
        f"COUNT {' '.join(['1'] * k)}\nWIDTH {len(pc)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {len(pc)}\nDATA {'binary' if binary else 'ascii'}\n"
    ).encode("ascii")
    return head + (_binary_rows(pc, wide) if binary else _text_table(pc))


def _xyz_bytes(pc: PointCloud, binary: bool) -> bytes:
    return _text_table(pc)


def _pts_bytes(pc: PointCloud, binary: bool) -> bytes:
    return f"{len(pc)}\n".encode("ascii") + _text_table(pc)


def _obj_bytes(pc: PointCloud, binary: bool) -> bytes:
    normals = b"" if pc.normals is None else _text_rows(np.asarray(pc.normals), "vn ")
    points = np.asarray(pc.points)
    return _text_rows(points, "v ", 3 if needs_17_digits(points) else 0) + normals


def _off_bytes(pc: PointCloud, binary: bool) -> bytes:
    keyword = "OFF" if pc.normals is None else "NOFF"
    return f"{keyword}\n{len(pc)} 0 0\n".encode("ascii") + _text_table(pc)


def _npz_bytes(pc: PointCloud, binary: bool) -> bytes:
    arrays = {"points": np.asarray(pc.points, dtype=np.float64)}
    if pc.normals is not None:
        arrays["normals"] = np.asarray(pc.normals, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


_WRITERS: dict[str, Callable[[PointCloud, bool], bytes]] = {
    ".ply": _ply_bytes,
    ".pcd": _pcd_bytes,
    ".xyz": _xyz_bytes,
    ".txt": _xyz_bytes,
    ".pts": _pts_bytes,
    ".obj": _obj_bytes,
    ".off": _off_bytes,
    ".npz": _npz_bytes,
}


def write_point_cloud(path: str | os.PathLike, pc: PointCloud, binary: bool = True) -> None:
    """Write ``pc`` atomically in the format given by the extension of ``path``.

    ``binary`` selects binary (little-endian float32) or ASCII for PLY and PCD; the other formats
    are text (``%.9g``, exact for float32) or, for NPZ, lossless float64 points and float32
    normals. Where float32 (or 9 digits) would move points by more than PRECISION of the cloud's
    extent (georeferenced coordinates), points are written as float64 (or with 17 digits).
    ``.pts`` files start with the point count line.
    """
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise Recon3dError(
            f"{path}: unknown point-cloud extension '{path.suffix}' "
            f"(supported: {', '.join(POINT_CLOUD_EXTENSIONS)})"
        )
    data = writer(pc, binary)
    with atomic_open(path, "wb") as handle:
        handle.write(data)

