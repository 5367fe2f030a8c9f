"""Point-cloud and mesh readers/writers: round trips, hand-written fixtures, bad inputs."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon3d.errors import InputError, Recon3dError
from recon3d.io.mesh import MESH_EXTENSIONS, mesh_to_bytes, read_mesh, write_mesh
from recon3d.io.pointcloud import (
    POINT_CLOUD_EXTENSIONS,
    lzf_decompress,
    read_point_cloud,
    write_point_cloud,
)
from recon3d.types import PointCloud, TriMesh


def _cloud(n: int = 50, normals: bool = True, seed: int = 0) -> PointCloud:
    """Float32-representable points, so text formats must round-trip them exactly."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(np.float32).astype(np.float64)
    unit = rng.normal(size=(n, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return PointCloud(points, unit.astype(np.float32) if normals else None)


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------- point-cloud round trips


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("with_normals", [True, False])
@pytest.mark.parametrize("ext", POINT_CLOUD_EXTENSIONS)
def test_point_cloud_round_trip(tmp_path, ext, with_normals, binary):
    cloud = _cloud(normals=with_normals)
    path = tmp_path / f"cloud{ext}"
    write_point_cloud(path, cloud, binary=binary)
    back = read_point_cloud(path)
    assert back.points.dtype == np.float64 and back.points.shape == cloud.points.shape
    np.testing.assert_array_equal(back.points.astype(np.float32), cloud.points.astype(np.float32))
    if with_normals:
        assert back.normals is not None and back.normals.dtype == np.float32
        np.testing.assert_allclose(back.normals, cloud.normals, atol=1e-6)
    else:
        assert back.normals is None


def test_extension_is_case_insensitive(tmp_path):
    path = tmp_path / "CLOUD.PLY"
    write_point_cloud(path, _cloud())
    assert len(read_point_cloud(path)) == 50


# ----------------------------------------------------------------------------------- PLY fixtures


def test_ascii_ply_with_face_element_before_vertices(tmp_path):
    path = _write(
        tmp_path / "faces_first.ply",
        "ply\nformat ascii 1.0\ncomment made by hand\n"
        "element face 2\nproperty list uchar int vertex_indices\n"
        "element vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nend_header\n"
        "3 0 1 2\n4 0 1 2 0\n"
        "0 0 0 255\n1 0 0 0\n0 2.5 -1 7\n",
    )
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [0, 2.5, -1]])
    assert cloud.normals is None


def _binary_ply(
    order: str,
    vertex_rows: list[tuple],
    before: bytes = b"",
    before_header: str = "",
    after: bytes = b"",
    after_header: str = "",
) -> bytes:
    """Binary PLY: double x y z, float nx ny nz, uchar red, plus optional extra elements."""
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[order]
    header = (
        f"ply\nformat {fmt} 1.0\n{before_header}element vertex {len(vertex_rows)}\n"
        "property double x\nproperty double y\nproperty double z\n"
        "property float nx\nproperty float ny\nproperty float nz\nproperty uchar red\n"
        f"{after_header}end_header\n"
    )
    body = b"".join(struct.pack(order + "dddfffB", *row) for row in vertex_rows)
    return header.encode() + before + body + after


_ROWS = [(1.5, -2.0, 3.25, 0.0, 0.0, 2.0, 9), (4.0, 5.0, 6.0, 1.0, 0.0, 0.0, 200)]


def test_big_endian_binary_ply_with_faces_after(tmp_path):
    faces = struct.pack(">Biii", 3, 0, 1, 0)
    path = _write(
        tmp_path / "big.ply",
        _binary_ply(">", _ROWS, after=faces,
                    after_header="element face 1\nproperty list uchar int vertex_indices\n"),
    )
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [r[:3] for r in _ROWS])
    np.testing.assert_allclose(cloud.normals, [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("lengths", [(3, 3, 3), (3, 4, 0)], ids=["uniform", "ragged"])
def test_binary_ply_skips_list_element_before_vertices(tmp_path, lengths):
    before = b"".join(struct.pack(f"<H{n}if", n, *range(n), 0.5) for n in lengths)
    header = f"element face {len(lengths)}\nproperty list ushort int idx\nproperty float w\n"
    path = _write(tmp_path / "lists.ply", _binary_ply("<", _ROWS, before, header))
    np.testing.assert_array_equal(read_point_cloud(path).points, [r[:3] for r in _ROWS])


@pytest.mark.parametrize(
    "name",
    ["char", "uchar", "short", "ushort", "int", "uint", "float", "double",
     "int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"],
)
def test_binary_ply_scalar_types(tmp_path, name):
    code = {"char": "b", "int8": "b", "uchar": "B", "uint8": "B", "short": "h", "int16": "h",
            "ushort": "H", "uint16": "H", "int": "i", "int32": "i", "uint": "I", "uint32": "I",
            "float": "f", "float32": "f", "double": "d", "float64": "d"}[name]
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty {name} x\n"
              f"property {name} y\nproperty {name} z\nend_header\n")
    body = struct.pack("<" + code * 6, 1, 2, 3, 4, 5, 6)
    path = _write(tmp_path / "t.ply", header.encode() + body)
    np.testing.assert_array_equal(read_point_cloud(path).points, [[1, 2, 3], [4, 5, 6]])


def test_vertex_element_with_list_property(tmp_path):
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\n"
              "property list uchar float extra\nproperty float y\nproperty float z\nend_header\n")
    body = struct.pack("<fBfff", 1, 1, 9, 2, 3) + struct.pack("<fBff", 4, 0, 5, 6)
    np.testing.assert_array_equal(
        read_point_cloud(_write(tmp_path / "v.ply", header.encode() + body)).points,
        [[1, 2, 3], [4, 5, 6]],
    )


@pytest.mark.parametrize("binary", [True, False])
def test_ply_vertex_count_too_large_is_truncated(tmp_path, binary):
    path = tmp_path / "short.ply"
    write_point_cloud(path, _cloud(4, normals=False), binary=binary)
    data = path.read_bytes().replace(b"element vertex 4", b"element vertex 10")
    _write(path, data)
    message = r"truncated: header says 10 vertices but the file holds only 4"
    with pytest.raises(InputError, match=message):
        read_point_cloud(path)


@pytest.mark.parametrize(
    "header",
    [
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty flot x\nend_header\n",
        "ply\nformat ascii 1.0\nelement vertex one\nend_header\n",
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n",
        "ply\nelement vertex 1\nproperty float x\nend_header\n",
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n",
        "ply\nformat ascii 1.0\nelement face 1\nproperty float a\nend_header\n1\n",
    ],
)
def test_malformed_ply_header(tmp_path, header):
    with pytest.raises(InputError, match=r"bad\.ply: .*(PLY|ply)"):
        read_point_cloud(_write(tmp_path / "bad.ply", header))


# ---------------------------------------------------------------------------------- PCD fixtures


def test_pcd_ascii_by_hand(tmp_path):
    path = _write(
        tmp_path / "hand.pcd",
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb normal_x normal_y normal_z\n"
        "SIZE 4 4 4 4 4 4 4\nTYPE F F F U F F F\nCOUNT 1 1 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n"
        "1 2 3 4278190080 0 0 3\n-1 -2 -3 0 0 1 0\n",
    )
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [-1, -2, -3]])
    np.testing.assert_allclose(cloud.normals, [[0, 0, 1], [0, 1, 0]])


def _lzf_literals(data: bytes) -> bytes:
    """A valid (uncompressed) LZF stream: literal runs of at most 32 bytes."""
    return b"".join(
        bytes([len(data[i : i + 32]) - 1]) + data[i : i + 32] for i in range(0, len(data), 32)
    )


def test_lzf_back_references():
    stream = b"\x02abc" + b"\xe0\x00\x02" + b"\x20\x00" + b"\x00X"
    assert lzf_decompress(stream, 16) == b"abc" + b"abcabcabc" + b"ccc" + b"X"
    with pytest.raises(ValueError):
        lzf_decompress(b"\x20\x05", 3)


def test_pcd_binary_compressed(tmp_path):
    cloud = _cloud(40)
    table = np.hstack([cloud.points, cloud.normals]).astype("<f4")
    raw = table.T.tobytes()  # binary_compressed stores each field contiguously
    header = (
        "VERSION 0.7\nFIELDS x y z normal_x normal_y normal_z\nSIZE 4 4 4 4 4 4\n"
        "TYPE F F F F F F\nCOUNT 1 1 1 1 1 1\nWIDTH 40\nHEIGHT 1\nPOINTS 40\n"
        "DATA binary_compressed\n"
    )
    packed = _lzf_literals(raw)
    sizes = struct.pack("<II", len(packed), len(raw))
    path = _write(tmp_path / "c.pcd", header.encode() + sizes + packed)
    back = read_point_cloud(path)
    np.testing.assert_array_equal(back.points, cloud.points)
    np.testing.assert_allclose(back.normals, cloud.normals, atol=1e-6)


def test_pcd_truncated_binary(tmp_path):
    path = tmp_path / "t.pcd"
    write_point_cloud(path, _cloud(5, normals=False))
    _write(path, path.read_bytes()[:-13])
    message = "truncated: header says 5 points but the file holds only 3"
    with pytest.raises(InputError, match=message):
        read_point_cloud(path)


# --------------------------------------------------------------------------- text/OBJ/OFF/NPZ


def test_pts_with_count_line(tmp_path):
    path = _write(tmp_path / "scan.pts", "3\n1 2 3 -100 10 20 30\n4 5 6 -90 1 2 3\n7 8 9 0 0 0 0\n")
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert cloud.normals is None


def test_xyz_with_comments_blank_lines_and_commas(tmp_path):
    path = _write(
        tmp_path / "c.xyz",
        "# exported by hand\n// another comment\n\n1,2,3,0,0,1\n  \n4, 5, 6, 0, -0.6, 0.8\n",
    )
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(cloud.normals, [[0, 0, 1], [0, -0.6, 0.8]], atol=1e-6)


def test_six_columns_of_colours_are_not_normals(tmp_path, capsys):
    cloud = read_point_cloud(_write(tmp_path / "rgb.xyz", "1 2 3 255 0 0\n4 5 6 0 128 255\n"))
    assert cloud.normals is None
    assert "not unit vectors" in capsys.readouterr().err


def test_four_columns_use_xyz_only(tmp_path):
    cloud = read_point_cloud(_write(tmp_path / "i.txt", "1 2 3 0.5\n4 5 6 0.25\n"))
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    assert cloud.normals is None


def test_obj_vertex_colours_and_mismatched_normals(tmp_path):
    path = _write(tmp_path / "c.obj", "# hi\nv 1 2 3 1 0 0\nv 4 5 6 0 1 0\nvn 0 0 1\nf 1 2 1\n")
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    assert cloud.normals is None


def test_noff_with_comments(tmp_path):
    path = _write(tmp_path / "n.off", "# comment\nNOFF\n2 0 0 # counts\n1 2 3 0 0 1\n4 5 6 0 2 0\n")
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(cloud.normals, [[0, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize("key", ["points", "xyz"])
def test_onet_npz_float16(tmp_path, key):
    cloud = _cloud(30)
    path = tmp_path / "pointcloud.npz"
    normals = cloud.normals.astype(np.float16)
    np.savez(path, **{key: cloud.points.astype(np.float16), "normals": normals})
    back = read_point_cloud(path)
    np.testing.assert_array_equal(back.points, cloud.points.astype(np.float16).astype(np.float64))
    np.testing.assert_allclose(back.normals, cloud.normals, atol=2e-3)


# ------------------------------------------------------------------------------------ bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.ply: no such file"):
        read_point_cloud(tmp_path / "nope.ply")


def test_directory(tmp_path):
    (tmp_path / "d.ply").mkdir()
    with pytest.raises(InputError, match="directory"):
        read_point_cloud(tmp_path / "d.ply")


def test_empty_file(tmp_path):
    with pytest.raises(InputError, match=r"e\.xyz: file is empty"):
        read_point_cloud(_write(tmp_path / "e.xyz", b""))


def test_unknown_extension(tmp_path):
    message = r"unknown point-cloud extension '\.foo' \(supported: \.ply"
    with pytest.raises(InputError, match=message):
        read_point_cloud(_write(tmp_path / "x.foo", "1 2 3\n"))


def test_all_nan_coordinates(tmp_path):
    with pytest.raises(InputError, match="all 2 points have NaN or infinite"):
        read_point_cloud(_write(tmp_path / "n.xyz", "nan 1 2\n1 inf 2\n"))


def test_some_nan_coordinates_are_dropped(tmp_path, capsys):
    cloud = read_point_cloud(_write(tmp_path / "n.xyz", "nan 1 2\n1 2 3\n4 -inf 5\n"))
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3]])
    assert "dropped 2 points with NaN or infinite coordinates" in capsys.readouterr().err


def test_zero_length_normals_are_dropped(tmp_path, capsys):
    cloud = PointCloud(np.eye(3), np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]], np.float32))
    write_point_cloud(tmp_path / "z.ply", cloud)
    back = read_point_cloud(tmp_path / "z.ply")
    assert back.normals is None and len(back) == 3
    assert "ignoring all normals" in capsys.readouterr().err


def test_zero_points(tmp_path):
    header = ("ply\nformat ascii 1.0\nelement vertex 0\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    with pytest.raises(InputError, match="no points"):
        read_point_cloud(_write(tmp_path / "z.ply", header))


@pytest.mark.parametrize(
    "name, data",
    [
        ("garbage.ply", bytes(range(256)) * 4),
        ("garbage.pcd", bytes(range(256)) * 4),
        ("garbage.xyz", bytes(range(256)) * 4),
        ("garbage.obj", b"v 1 2 x\n"),
        ("garbage.off", b"OFF\n2 0 0\n1 2 3\n"),
        ("garbage.npz", zlib.compress(b"not a zip")),
        ("ragged.txt", b"1 2 3\n4 5\n"),
    ],
)
def test_garbage_is_one_line_input_error(tmp_path, name, data):
    with pytest.raises(InputError) as info:
        read_point_cloud(_write(tmp_path / name, data))
    message = str(info.value)
    assert name in message and "\n" not in message


def test_npz_refuses_pickles(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, points=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match=r"obj\.npz"):
        read_point_cloud(path)


def test_write_unknown_extension(tmp_path):
    with pytest.raises(Recon3dError, match="unknown point-cloud extension"):
        write_point_cloud(tmp_path / "c.las", _cloud())


# ------------------------------------------------------------------------------------------ meshes


def _sphere(normals: bool = True, colors: bool = False) -> TriMesh:
    sphere = trimesh.creation.icosphere(subdivisions=1)
    colours = np.random.default_rng(1).integers(0, 256, (len(sphere.vertices), 3), dtype=np.uint8)
    return TriMesh(
        vertices=np.asarray(sphere.vertices, dtype=np.float64),
        faces=np.asarray(sphere.faces, dtype=np.int64),
        vertex_normals=np.asarray(sphere.vertex_normals, dtype=np.float32) if normals else None,
        vertex_colors=colours if colors else None,
    )


@pytest.mark.parametrize("ext", MESH_EXTENSIONS)
def test_mesh_round_trip(tmp_path, ext):
    mesh = _sphere()
    write_mesh(tmp_path / f"m{ext}", mesh)
    back = read_mesh(tmp_path / f"m{ext}")
    assert back.n_faces == mesh.n_faces
    triangles = mesh.vertices[mesh.faces]
    np.testing.assert_allclose(back.vertices[back.faces], triangles, atol=1e-6)
    if ext == ".stl":  # STL stores triangle soup: shared vertices come back after merging
        assert len(np.unique(back.vertices.astype(np.float32), axis=0)) == mesh.n_vertices
        return
    assert back.n_vertices == mesh.n_vertices
    np.testing.assert_array_equal(back.faces, mesh.faces)
    if ext in (".obj", ".ply", ".glb"):
        np.testing.assert_allclose(back.vertex_normals, mesh.vertex_normals, atol=1e-6)


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb"])
def test_mesh_vertex_colours(tmp_path, ext):
    mesh = _sphere(normals=False, colors=True)
    write_mesh(tmp_path / f"c{ext}", mesh)
    back = read_mesh(tmp_path / f"c{ext}")
    np.testing.assert_array_equal(back.vertex_colors, mesh.vertex_colors)
    assert back.vertex_normals is None


def test_multi_geometry_scene_is_concatenated(tmp_path):
    scene = trimesh.Scene()
    shift = trimesh.transformations.translation_matrix([3, 0, 0])
    scene.add_geometry(trimesh.creation.box(), transform=shift)
    scene.add_geometry(trimesh.creation.icosphere(subdivisions=1))
    scene.export(tmp_path / "s.glb")
    back = read_mesh(tmp_path / "s.glb")
    assert (back.n_vertices, back.n_faces) == (8 + 42, 12 + 80)
    assert back.vertices[:, 0].max() == pytest.approx(3.5)


def test_write_mesh_to_stdout(capsysbinary):
    mesh = _sphere()
    write_mesh("-", mesh, fmt="ply")
    assert capsysbinary.readouterr().out == mesh_to_bytes(mesh, "ply")


def test_write_mesh_to_stdout_in_a_subprocess(tmp_path):
    code = (
        "import trimesh, numpy as np\n"
        "from recon3d.io.mesh import write_mesh\nfrom recon3d.types import TriMesh\n"
        "s = trimesh.creation.icosphere(subdivisions=1)\n"
        "write_mesh('-', TriMesh(np.asarray(s.vertices), np.asarray(s.faces)), fmt='off')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert out.startswith(b"OFF\n42 80 0\n")


def test_write_mesh_format_errors(tmp_path):
    with pytest.raises(Recon3dError, match="needs an explicit format"):
        write_mesh("-", _sphere())
    with pytest.raises(Recon3dError, match=r"unknown mesh extension '\.fbx' \(supported: \.obj"):
        write_mesh(tmp_path / "m.fbx", _sphere())
    with pytest.raises(Recon3dError, match="unknown mesh format"):
        mesh_to_bytes(_sphere(), "dae")
    write_mesh(tmp_path / "m.bin", _sphere(), fmt="stl")
    assert (tmp_path / "m.bin").stat().st_size == 84 + 80 * 50


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("missing.obj", None, "no such file"),
        ("empty.ply", b"", "file is empty"),
        ("mesh.fbx", b"x", "unknown mesh extension"),
        ("garbage.ply", bytes(range(256)) * 4, "garbage.ply"),
        ("points.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                       b"property float y\nproperty float z\nend_header\n1 2 3\n", "has no faces"),
    ],
)
def test_read_mesh_errors(tmp_path, name, data, message):
    path = tmp_path / name if data is None else _write(tmp_path / name, data)
    with pytest.raises(InputError, match=message) as info:
        read_mesh(path)
    assert "\n" not in str(info.value)


def test_io_does_not_import_torch_or_open3d():
    code = (
        "import sys, recon3d.io.pointcloud, recon3d.io.mesh\n"
        "print(sorted(m for m in ('torch', 'open3d') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    assert out.stdout.strip() == "[]"
