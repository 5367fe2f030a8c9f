"""Geometry inputs (issue 17): precision in the input's units, the outlier rule at any scale ratio,
finite and real coordinates, duplicate points and faces, reads that cannot block, sizes declared by a
file checked before anything is allocated, and memory estimates that refuse impossible requests with
the options that reduce them.

Big cases are simulated: a header that declares a huge count, a patched memory figure, never a big file.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from recon3d import memory
from recon3d.cli import app
from recon3d.errors import InputError, Recon3dError
from recon3d.fit.occupancy import clean_mesh, prepare_mesh
from recon3d.io.labelled import read_labelled_points
from recon3d.io.mesh import read_mesh, write_mesh
from recon3d.io.pointcloud import read_point_cloud, write_point_cloud
from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint
from recon3d.mesh.inside import EnclosedVolume
from recon3d.metrics import evaluate
from recon3d.points.scan import clean_scan
from recon3d.synthetic import sample_sphere
from recon3d.types import PointCloud, TriMesh

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
FIT = ["--steps", "2", "--batch", "64", "--device", "cpu", "--quiet"]
GEO = np.array([5e5, 5e6, 0.0])  # map-grid (UTM-style) coordinates
FAR = np.array([1e9, 1e9, 1e9])


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told otherwise
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


RUNNER = _runner()


def run(*args):
    return RUNNER.invoke(app, [str(a) for a in args])


def one_error(result, *fragments: str) -> str:
    """Exit 1, exactly one ``error:`` line (warnings may precede it), no traceback or internal error."""
    assert result.exit_code == 1, f"exit {result.exit_code}; stderr: {result.stderr!r}; {result.exception!r}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "internal error" not in errors[0] and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def sphere_mesh(radius: float = 5.0, centre=(0.0, 0.0, 0.0)) -> TriMesh:
    ico = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    return TriMesh(np.asarray(ico.vertices) + np.asarray(centre), np.asarray(ico.faces),
                   np.asarray(ico.vertex_normals, dtype=np.float32))


def radii(vertices: np.ndarray, centre) -> np.ndarray:
    return np.linalg.norm(vertices - np.asarray(centre), axis=1)


def ply_header(path: Path) -> str:
    data = path.read_bytes()
    return data[: data.index(b"end_header")].decode()


# ------------------------------------------------------------------------------ 1. precision


@pytest.mark.parametrize("centre", [GEO, FAR], ids=["utm", "1e9"])
@pytest.mark.parametrize("ext", [".ply", ".obj", ".off", ".glb"])
def test_georeferenced_mesh_round_trips_within_1e6_of_the_radius(tmp_path, ext, centre):
    mesh = sphere_mesh(5.0, centre)
    path = tmp_path / f"geo{ext}"
    write_mesh(path, mesh)
    back = read_mesh(path)
    assert back.n_vertices == mesh.n_vertices
    assert np.abs(radii(back.vertices, centre) - radii(mesh.vertices, centre)).max() <= 1e-6 * 5.0
    assert len(np.unique(back.vertices[:, 1])) == len(np.unique(mesh.vertices[:, 1]))


def test_stl_refuses_coordinates_float32_would_move(tmp_path):
    with pytest.raises(Recon3dError, match=r"STL holds float32.*write \.ply, \.obj, \.off or \.glb"):
        write_mesh(tmp_path / "geo.stl", sphere_mesh(5.0, GEO))
    assert not (tmp_path / "geo.stl").exists()
    write_mesh(tmp_path / "near.stl", sphere_mesh(5.0))  # ordinary coordinates: float32 is enough


def test_ordinary_meshes_and_clouds_keep_float32_and_9_digits(tmp_path):
    write_mesh(tmp_path / "m.ply", sphere_mesh(1.0, (0.5, 0.2, 0.1)))
    assert "property float x" in ply_header(tmp_path / "m.ply")
    write_mesh(tmp_path / "g.ply", sphere_mesh(5.0, GEO))
    assert "property double x" in ply_header(tmp_path / "g.ply")
    write_point_cloud(tmp_path / "c.ply", sample_sphere(50, seed=0))
    assert "property float x" in ply_header(tmp_path / "c.ply")
    write_mesh(tmp_path / "m.obj", sphere_mesh(1.0))
    first = next(line for line in (tmp_path / "m.obj").read_text().splitlines() if line.startswith("v "))
    assert max(len(word) for word in first.split()[1:]) <= 16  # %.9g


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".xyz", ".pts", ".obj", ".off", ".npz"])
@pytest.mark.parametrize("binary", [True, False])
def test_georeferenced_point_cloud_round_trips(tmp_path, ext, binary):
    cloud = sample_sphere(200, radius=5.0, seed=1)
    cloud = PointCloud(cloud.points + FAR, cloud.normals)
    path = tmp_path / f"geo{ext}"
    write_point_cloud(path, cloud, binary=binary)
    back = read_point_cloud(path)
    assert np.abs(back.points - cloud.points).max() <= 1e-6 * 10.0


def test_extract_mesh_of_a_georeferenced_fit_round_trips(tmp_path):
    cloud = sample_sphere(400, radius=5.0, seed=0)
    scan = tmp_path / "geo.ply"
    write_point_cloud(scan, PointCloud(cloud.points + GEO, None))
    model = tmp_path / "geo.pt"
    assert run("fit-sdf", scan, "-o", model, *FIT).exit_code == 0
    out = tmp_path / "geo_mesh.ply"
    result = run("extract-mesh", model, "-o", out, "-r", "16", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    expected, _ = mesh_from_checkpoint(torch.load(model, weights_only=True), MeshOptions(resolution=16), CPU)
    back = read_mesh(out)
    radius = float(np.median(radii(expected.vertices, GEO)))
    assert np.abs(radii(back.vertices, GEO) - radii(expected.vertices, GEO)).max() <= 1e-6 * radius
    assert len(np.unique(back.vertices[:, 1])) > 0.2 * back.n_vertices  # not collapsed onto a few values


# -------------------------------------------------------------------------- 2. the outlier rule


def test_a_stray_point_1e9_away_is_left_out():
    sphere = sample_sphere(400, radius=1.0, seed=0)
    cloud = PointCloud(np.vstack([sphere.points, [[1e9, 0.0, 0.0]]]), None)
    scan = clean_scan(cloud, "ignore", CPU, "stray", denoise="off")
    assert scan.outliers_dropped == 1
    assert scan.to_world["scale"] == pytest.approx(1.0 / 0.8, rel=0.05)
    assert len(np.unique(scan.points, axis=0)) == 400


def test_ordinary_stray_points_keep_todays_path():
    sphere = sample_sphere(400, radius=1.0, seed=0)
    cloud = PointCloud(np.vstack([sphere.points, [[30.0, 0.0, 0.0]]]), None)
    scan = clean_scan(cloud, "ignore", CPU, "stray", denoise="off")
    plain = clean_scan(PointCloud(sphere.points, None), "ignore", CPU, "plain", denoise="off")
    assert scan.outliers_dropped == 1
    np.testing.assert_array_equal(scan.points, plain.points)


# ---------------------------------------------------------------------------------- 3. inputs


def test_nan_and_inf_points_are_dropped_with_a_count(tmp_path, capsys):
    points = sample_sphere(30, seed=0).points
    points[[2, 5]] = np.nan
    points[7, 1] = np.inf
    path = tmp_path / "nan.xyz"
    path.write_text("\n".join(" ".join(str(float(v)) for v in row) for row in points))
    cloud = read_point_cloud(path)
    assert len(cloud) == 27
    assert "dropped 3 points with NaN or infinite coordinates" in capsys.readouterr().err
    path.write_text("nan 1 2\ninf 2 3\n")
    with pytest.raises(InputError, match="all 2 points have NaN or infinite"):
        read_point_cloud(path)


@pytest.mark.parametrize("scale, fragment", [(1e39, "beyond float32's range"), (1e-41, "too little to tell")])
def test_coordinates_beyond_float32_or_with_an_underflowing_extent_are_refused(tmp_path, scale, fragment):
    path = tmp_path / "scaled.npz"
    np.savez(path, points=sample_sphere(100, seed=0).points * scale)
    one_error(run("fit-sdf", path, "-o", tmp_path / "o.pt", *FIT), fragment)
    assert not (tmp_path / "o.pt").exists()


def test_an_extent_lost_in_the_last_digits_is_refused(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, points=1e9 + sample_sphere(100, seed=0).points * 1e-5)
    one_error(run("fit-sdf", path, "-o", tmp_path / "o.pt", *FIT), "too little to tell")


@pytest.mark.parametrize("kind", ["complex", "string"])
def test_complex_or_string_points_in_an_npz_are_one_error(tmp_path, kind):
    points = sample_sphere(100, seed=0).points
    points = points.astype(complex) + 1j if kind == "complex" else points.astype(str)
    cloud, labelled = tmp_path / "cloud.npz", tmp_path / "points.npz"
    np.savez(cloud, points=points)
    np.savez(labelled, points=points, occupancies=np.arange(100) % 2 == 0)
    one_error(run("fit-sdf", cloud, "-o", tmp_path / "o.pt", *FIT), "'points' holds", "not real numbers")
    one_error(run("fit-occupancy", labelled, "-o", tmp_path / "o.pt", *FIT), "'points' holds", "not real numbers")
    assert not (tmp_path / "o.pt").exists()


def test_string_loc_and_scale_of_labelled_points_are_one_error(tmp_path):
    path = tmp_path / "points.npz"
    np.savez(path, points=np.zeros((20, 3)), occupancies=np.arange(20) % 2 == 0, scale=np.array("big"))
    with pytest.raises(InputError, match="'scale' holds"):
        read_labelled_points(path)


def test_duplicate_points_are_collapsed_first_ones_kept_in_order(capsys):
    cloud = sample_sphere(300, seed=0)
    copies = np.array([5, 17, 5, 200, 0])
    noisy_normals = cloud.normals.copy()
    points = np.vstack([cloud.points, cloud.points[copies]])
    normals = np.vstack([noisy_normals, -noisy_normals[copies]])  # a copy's normal must not win
    plain = clean_scan(cloud, "auto", CPU, "plain", denoise="off")
    capsys.readouterr()
    scan = clean_scan(PointCloud(points, normals), "auto", CPU, "dup", denoise="off")
    assert "collapsed 5 duplicate points" in capsys.readouterr().err
    assert scan.duplicates_dropped == 5
    np.testing.assert_array_equal(scan.points, plain.points)
    np.testing.assert_array_equal(scan.normals, plain.normals)


def test_lidar_zeros_are_collapsed_before_any_neighbour_query():
    """3k scan points + 30k invalid returns at the origin: prepared like the scan alone, in about its time."""
    scan = sample_sphere(3000, radius=2.0, seed=3)
    zeros = PointCloud(np.vstack([scan.points, np.zeros((30000, 3))]), None)
    plain_cloud = PointCloud(scan.points, None)
    clean_scan(plain_cloud, "ignore", CPU, "warm-up", denoise="off")
    start = time.perf_counter()
    clean_scan(plain_cloud, "ignore", CPU, "plain", denoise="off")
    plain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cleaned = clean_scan(zeros, "ignore", CPU, "zeros", denoise="off")
    zeros_seconds = time.perf_counter() - start
    assert cleaned.duplicates_dropped == 29999 and len(cleaned.points) == 3001 - cleaned.outliers_dropped
    assert zeros_seconds <= 2 * plain_seconds + 0.5, (zeros_seconds, plain_seconds)


def test_duplicate_faces_are_collapsed_before_labelling(capsys):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    copies = np.repeat([[2, 1, 0]], 4000, axis=0)  # the first face, rotated: the same face
    mesh = TriMesh(vertices, np.vstack([faces, copies]))
    cleaned, closed = clean_mesh(mesh, "tet")
    assert cleaned.n_faces == 4 and closed
    assert "collapsed 4,000 duplicate faces" in capsys.readouterr().err
    start = time.perf_counter()
    shape = prepare_mesh(mesh, CPU, "tet")
    assert shape.rule == "parity" and time.perf_counter() - start < 5.0
    # The reversed face is another face (a double-sided surface), not a copy.
    cleaned, closed = clean_mesh(TriMesh(vertices, np.vstack([faces, [[0, 1, 2]]])), "soup")
    assert cleaned.n_faces == 5 and not closed


def test_ordinary_meshes_keep_their_faces():
    mesh = sphere_mesh(1.0)
    cleaned, closed = clean_mesh(mesh, "sphere")
    assert closed and cleaned.n_faces == mesh.n_faces


def test_max_seconds_bounds_preparation():
    cloud = sample_sphere(400, seed=0)
    with pytest.raises(Recon3dError, match="did not finish within --max-seconds"):
        clean_scan(cloud, "auto", CPU, "scan", deadline=time.monotonic() - 1.0)
    seen = []

    def stop(done: int, total: int) -> None:
        seen.append((done, total))
        raise Recon3dError("stopped")

    soup = sphere_mesh(1.0)
    with pytest.raises(Recon3dError, match="stopped"):
        EnclosedVolume(soup, np.array([[-1.1] * 3, [1.1] * 3]), 64, progress=stop)
    assert seen == [(1, seen[0][1])] and seen[0][1] >= 1


def test_repeated_reference_points_give_the_same_metrics():
    mesh = sphere_mesh(1.0)
    cloud = sample_sphere(2000, radius=1.0, seed=0)
    repeated = PointCloud(np.vstack([cloud.points, np.repeat(cloud.points[:1], 5000, axis=0)]), None)
    plain = evaluate(mesh, PointCloud(cloud.points, None), n_samples=10000)
    again = evaluate(mesh, repeated, n_samples=10000)  # clouds are used as they are: no thinning
    assert again["accuracy"] == plain["accuracy"]


# --------------------------------------------------------------------------- 4. bounded reads


SUBPROCESS_TIMEOUT = 60


def test_a_fifo_input_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "scan.ply"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "recon3d.cli", "fit-sdf", str(fifo), "-o", str(tmp_path / "o.pt"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    assert "is not a regular file (a FIFO or pipe)" in proc.stderr and "Traceback" not in proc.stderr


def test_a_device_or_folder_input_is_refused():
    with pytest.raises(InputError, match="not a regular file .a character device"):
        read_point_cloud("/dev/null")
    with pytest.raises(InputError, match="is a directory"):
        read_point_cloud("/tmp")


def _tetrahedron_glb(uri: str) -> bytes:
    """A GLB whose one buffer lives in the external file ``uri``."""
    gltf = {"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "scene": 0, "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "buffers": [{"uri": uri, "byteLength": 96}],
            "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 48},
                            {"buffer": 0, "byteOffset": 48, "byteLength": 48}],
            "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
                           "min": [0, 0, 0], "max": [1, 1, 1]},
                          {"bufferView": 1, "componentType": 5125, "count": 12, "type": "SCALAR"}]}
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    return struct.pack("<5I", 0x46546C67, 2, 20 + len(text), len(text), 0x4E4F534A) + text


_READ_SIDE_FILES = """
import sys
from recon3d.errors import InputError
from recon3d.io.mesh import read_mesh
from recon3d.io.shape import read_shape
for path in sys.argv[1:]:
    for reader in (read_mesh, read_shape):
        try:
            reader(path)
            print("read", path)
        except InputError as exc:
            print("refused", exc)
"""


def test_fifo_side_files_of_a_mesh_are_refused_without_blocking(tmp_path):
    obj, glb = tmp_path / "tet.obj", tmp_path / "tet.glb"
    obj.write_text("mtllib mat.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    glb.write_bytes(_tetrahedron_glb("buffer.bin"))
    os.mkfifo(tmp_path / "mat.mtl")
    os.mkfifo(tmp_path / "buffer.bin")
    proc = subprocess.run([sys.executable, "-c", _READ_SIDE_FILES, str(obj), str(glb)], capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT)
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("refused") for line in lines), proc.stdout + proc.stderr
    assert "refers to mat.mtl, which is not a regular file" in lines[0]
    assert "refers to buffer.bin, which is not a regular file" in lines[2]


def test_regular_side_files_still_load(tmp_path):
    glb = tmp_path / "tet.glb"
    glb.write_bytes(_tetrahedron_glb("buffer.bin"))
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    indices = np.array([0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3], np.uint32)
    (tmp_path / "buffer.bin").write_bytes(positions.tobytes() + indices.tobytes())
    assert read_mesh(glb).n_faces == 4


# ------------------------------------------------------------------------ 5. declared sizes


def _npz_with_header(path: Path, shape: tuple) -> None:
    """An npz whose 'points' array declares ``shape`` but holds 96 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("points.npy", header.getvalue() + bytes(96))


def test_npz_array_declaring_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "huge.npz"
    _npz_with_header(path, (10**12, 3))
    with pytest.raises(InputError, match=r"declares shape \(1000000000000, 3\)"):
        read_point_cloud(path)


def test_npz_declared_sizes_are_checked_before_inflating(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, points=np.zeros((200_000, 3)))  # 4.8 MB of zeros in a few kB
    monkeypatch.setattr("recon3d.io.pointcloud.MAX_DECLARED_BYTES", 1 << 20)
    with pytest.raises(InputError, match="declares 4.8 MB uncompressed, more than the"):
        read_point_cloud(path)
    monkeypatch.setattr("recon3d.io.pointcloud.MAX_DECLARED_BYTES", 1 << 30)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 20)
    with pytest.raises(Recon3dError, match="needs about 4.8 MB of memory"):
        read_point_cloud(path)
    labelled = tmp_path / "points.npz"
    np.savez_compressed(labelled, points=np.zeros((200_000, 3)), occupancies=np.zeros(200_000, bool))
    with pytest.raises(Recon3dError, match="needs about"):
        read_labelled_points(labelled)


def _pcd_compressed(packed: bytes, unpacked_size: int, points: int) -> bytes:
    header = (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {points}\nHEIGHT 1\n"
              f"POINTS {points}\nDATA binary_compressed\n")
    return header.encode() + struct.pack("<II", len(packed), unpacked_size) + packed


def test_pcd_declared_sizes_are_checked_before_decompressing(tmp_path):
    path = tmp_path / "c.pcd"
    back_references = b"\x00A" + b"\xe0\xff\x00" * 20_000  # 60 kB that expand to 5 MB
    path.write_bytes(_pcd_compressed(back_references, 2**32 - 1, 10**8))
    with pytest.raises(InputError, match="more than LZF can expand to"):
        read_point_cloud(path)
    path.write_bytes(_pcd_compressed(back_references, 120, 10))  # tiny declared: stops at once
    with pytest.raises(InputError, match="expected 120"):
        read_point_cloud(path)
    path.write_bytes(_pcd_compressed(back_references, 120, 10**9))
    with pytest.raises(InputError, match="truncated: header says 1000000000 points"):
        read_point_cloud(path)


@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
def test_ply_declaring_1e12_vertices_is_refused_before_allocating(tmp_path, fmt):
    path = tmp_path / "huge.ply"
    header = (f"ply\nformat {fmt} 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\n"
              "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    path.write_bytes(header.encode() + bytes(64))
    with pytest.raises(InputError, match="truncated: header says 1000000000000 vertices"):
        read_point_cloud(path)
    with pytest.raises(InputError, match="truncated: header says 1000000000000 vertices"):
        read_mesh(path)


def test_glb_accessor_without_data_declaring_terabytes_is_refused(tmp_path):
    gltf = {"asset": {"version": "2.0"}, "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
            "accessors": [{"componentType": 5126, "count": 10**12, "type": "VEC3"}]}
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    path = tmp_path / "placeholder.glb"
    path.write_bytes(struct.pack("<5I", 0x46546C67, 2, 20 + len(text), len(text), 0x4E4F534A) + text)
    with pytest.raises(InputError, match="accessors without data declare"):
        read_mesh(path)


@pytest.mark.parametrize("name, data", [
    ("t.glb", struct.pack("<5I", 0x46546C67, 2, 1000, 900, 0x4E4F534A) + b"{"),
    ("t.stl", b"\0" * 80 + struct.pack("<I", 10**9) + b"\0" * 10),
    ("t.off", b"OFF\n1000000000000 1000000000000 0\n0 0 0\n"),
    ("t.obj", b"v 0 0 0\nv 1 0 0\nf 1 2 999999999999\n"),
    ("t.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty double x\nend_header\n\0\0"),
])
def test_odd_mesh_files_are_one_input_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError):
        read_mesh(path)


# ---------------------------------------------------------------------------------- 5. memory


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs_model")
    write_point_cloud(folder / "s.ply", sample_sphere(300, seed=0))
    model = folder / "s.pt"
    assert run("fit-sdf", folder / "s.ply", "-o", model, *FIT).exit_code == 0
    return model


@pytest.fixture
def eight_gigabytes(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 8 * 10**9)


def test_resolution_4096_is_refused_quickly(small_model, tmp_path, eight_gigabytes):
    start = time.perf_counter()
    result = run("extract-mesh", small_model, "-o", tmp_path / "m.ply", "--resolution", "4096", "--device", "cpu")
    one_error(result, "extraction at --resolution 4096", "more than the 8.0 GB available", "smaller --resolution")
    assert time.perf_counter() - start < 10.0
    assert not (tmp_path / "m.ply").exists()


def test_a_huge_chunk_is_refused_naming_chunk(small_model, tmp_path, eight_gigabytes):
    result = run("extract-mesh", small_model, "-o", tmp_path / "m.ply", "--chunk", str(10**9), "--device", "cpu")
    one_error(result, "--chunk", "use a smaller --chunk")


def test_dense_extraction_names_mise(small_model, tmp_path, eight_gigabytes):
    result = run("extract-mesh", small_model, "-o", tmp_path / "m.ply", "-r", "2048", "--method", "dense",
                 "--device", "cpu")
    one_error(result, "--resolution 2048", "--method mise")


def test_ordinary_extraction_passes_the_check(small_model, tmp_path, eight_gigabytes):
    result = run("extract-mesh", small_model, "-o", tmp_path / "m.ply", "-r", "16", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("command", ["fit-sdf", "fit-occupancy"])
def test_a_batch_of_1e9_is_refused_before_preparation(tmp_path, command, eight_gigabytes):
    if command == "fit-sdf":
        data = tmp_path / "s.ply"
        write_point_cloud(data, sample_sphere(100, seed=0))
    else:
        data = tmp_path / "s.obj"
        write_mesh(data, sphere_mesh(1.0))
    start = time.perf_counter()
    result = run(command, data, "-o", tmp_path / "o.pt", "--batch", str(10**9), "--device", "cpu")
    one_error(result, f"a {command} step of --batch 1000000000", "use a smaller --batch")
    assert time.perf_counter() - start < 10.0
    assert not (tmp_path / "o.pt").exists()


def test_eval_samples_memory_is_checked(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 10**8)
    with pytest.raises(Recon3dError, match="eval with --samples 1000000 needs about .* use a smaller --samples"):
        evaluate(sphere_mesh(1.0), sphere_mesh(1.0), n_samples=10**6)


def test_field_memory_estimates_follow_the_config():
    from recon3d.fit.sdf import PRESETS

    fast = PRESETS["fast"]["field"]["cpu"]
    paper = PRESETS["paper"]["field"]["any"]
    assert memory.field_point_bytes(paper, "train2") > 10 * memory.field_point_bytes(fast, "eval")
    assert memory.field_point_bytes({"bad": "config"}) > 0
    assert memory.format_bytes(4.6e9) == "4.6 GB"


def test_extraction_memory_is_checked_again_with_the_surface_found(monkeypatch):
    from recon3d.fields.surface import Surface
    from recon3d.mesh.extract import ExtractOptions, extract_mesh

    def busy(x: torch.Tensor) -> torch.Tensor:  # far more surface than a shape filling its box
        return torch.sin(40 * x[:, 0]) * torch.sin(40 * x[:, 1]) * torch.sin(40 * x[:, 2])

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 200 * 10**6)
    box = np.array([[-1.0] * 3, [1.0] * 3])
    with pytest.raises(Recon3dError, match="extraction at --resolution 128 .*smaller --resolution"):
        extract_mesh(Surface(busy, 0.0, "below"), box, ExtractOptions(resolution=128))


def test_an_allocator_failure_during_extraction_names_the_options(monkeypatch):
    from recon3d.fields.surface import Surface
    from recon3d.mesh import cubes
    from recon3d.mesh.extract import ExtractOptions, extract_mesh

    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(cubes, "triangulate", fail)
    sphere = Surface(lambda x: x.norm(dim=1) - 0.5, 0.0, "below")
    with pytest.raises(Recon3dError, match="ran out of memory; use a smaller --resolution or --chunk"):
        extract_mesh(sphere, np.array([[-1.0] * 3, [1.0] * 3]), ExtractOptions(resolution=16))


def test_stl_precision_can_be_checked_before_extraction():
    from recon3d.io.mesh import check_format_precision

    with pytest.raises(Recon3dError, match="STL holds float32"):
        check_format_precision("stl", np.array([GEO - 5, GEO + 5]))
    check_format_precision("stl", np.array([[-5.0] * 3, [5.0] * 3]))
    check_format_precision("ply", np.array([GEO - 5, GEO + 5]))


def test_preparation_memory_is_checked_on_the_distinct_points(monkeypatch):
    cloud = sample_sphere(1000, seed=0)
    repeated = PointCloud(np.vstack([cloud.points, np.zeros((20000, 3))]), None)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1001 * 2048 + 1)
    assert clean_scan(repeated, "ignore", CPU, "zeros", denoise="off").duplicates_dropped == 19999
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 500 * 2048)
    with pytest.raises(Recon3dError, match="preparing 1,001 points needs about .* thin the scan"):
        clean_scan(repeated, "ignore", CPU, "zeros", denoise="off")
