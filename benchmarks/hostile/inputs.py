"""Geometry inputs (issue 17, part C): precision at georeferenced coordinates, a stray point 10⁹ away,
non-finite, overflowing, complex and string coordinates, duplicate points (a LiDAR scan's invalid returns
at the origin) and faces, FIFOs as inputs and side files, files that declare more than they hold (npz,
PCD, PLY, GLB), odd files of every mesh and point-cloud format, and requests whose memory cannot fit
(``--resolution 4096``, ``--chunk``, ``--batch 1e9``).

Each case builds its own inputs under ``work``; checkpoints come from tiny library fits (not timed).
The memory refusals depend on the machine: they assume less than about 60 GB of free memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

from benchmarks.hostile.case import Case

CPU = ["--device", "cpu"]
TINY = ["--steps", "3", "--batch", "64", "--device", "cpu", "--quiet"]
LIDAR = ["--steps", "20", "--device", "cpu"]
GEO = (5e5, 5e6, 0.0)


# ------------------------------------------------------------------------------------ inputs


def _write_cloud(path: Path, points, normals=None) -> Path:
    from recon3d.io.pointcloud import write_point_cloud
    from recon3d.types import PointCloud

    write_point_cloud(path, PointCloud(points, normals))
    return path


def _sphere(n: int, radius: float = 1.0, seed: int = 0):
    from recon3d.synthetic import sample_sphere

    return sample_sphere(n, radius=radius, seed=seed).points


def _model(work: Path, points, name: str = "model") -> Path:
    """A 3-step fit-sdf checkpoint of ``points`` (library call, not timed)."""
    import torch

    from recon3d.fit.sdf import SDFOptions, fit_sdf
    from recon3d.types import PointCloud

    path = work / f"{name}.pt"
    fit_sdf(PointCloud(points, None), SDFOptions(steps=3, batch=64), path, torch.device("cpu"), show_progress=False)
    return path


def _npz(path: Path, **arrays) -> Path:
    import numpy as np

    np.savez(path, **arrays)
    return path


def _tetrahedron(extra_faces: list[str] = (), mtllib: str | None = None) -> str:
    lines = ([f"mtllib {mtllib}"] if mtllib else []) + ["v 0 0 0", "v 1 0 0", "v 0 1 0", "v 0 0 1",
                                                         "f 1 3 2", "f 1 2 4", "f 1 4 3", "f 2 3 4"]
    return "\n".join(lines + list(extra_faces)) + "\n"


def _glb(gltf: dict) -> bytes:
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    return struct.pack("<5I", 0x46546C67, 2, 20 + len(text), len(text), 0x4E4F534A) + text


def _external_buffer_glb(uri: str) -> bytes:
    return _glb({"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "scene": 0, "nodes": [{"mesh": 0}],
                 "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
                 "buffers": [{"uri": uri, "byteLength": 96}],
                 "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 48},
                                 {"buffer": 0, "byteOffset": 48, "byteLength": 48}],
                 "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
                                "min": [0, 0, 0], "max": [1, 1, 1]},
                               {"bufferView": 1, "componentType": 5125, "count": 12, "type": "SCALAR"}]})


# ----------------------------------------------------------------------------- precision


def georeferenced_extract(fmt: str):
    def build(work: Path) -> list:
        import numpy as np

        model = _model(work, _sphere(400, radius=5.0) + np.asarray(GEO))
        return ["extract-mesh", model, "-o", work / f"mesh.{fmt}", "-r", "24", *CPU, "-q"]

    def check(work: Path, proc) -> str | None:
        import numpy as np
        import torch

        from recon3d.io.mesh import read_mesh
        from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint

        expected, _ = mesh_from_checkpoint(torch.load(work / "model.pt", weights_only=True),
                                           MeshOptions(resolution=24), torch.device("cpu"))
        back = read_mesh(work / f"mesh.{fmt}")
        error = float(np.abs(back.vertices - expected.vertices).max())
        return None if error <= 5e-6 else f"vertices moved by up to {error:.3g} (radius 5)"

    return build, check


def _stl_build(work: Path) -> list:
    import numpy as np

    model = _model(work, _sphere(400, radius=5.0) + np.asarray(GEO))
    return ["extract-mesh", model, "-o", work / "mesh.stl", "-r", "16", *CPU, "-q"]


# ---------------------------------------------------------------------------- coordinates


def _stray_build(work: Path) -> list:
    import numpy as np

    scan = _write_cloud(work / "stray.ply", np.vstack([_sphere(2000), [[1e9, 0.0, 0.0]]]))
    return ["fit-sdf", scan, "-o", work / "stray.pt", *TINY]


def _stray_check(work: Path, proc) -> str | None:
    import torch

    checkpoint = torch.load(work / "stray.pt", weights_only=True)
    scale, dropped = checkpoint["to_world"]["scale"], checkpoint["train"]["outliers_dropped"]
    return None if dropped == 1 and abs(scale - 1.25) < 0.1 else f"scale {scale:g}, {dropped} points left out"


def _nan_build(work: Path) -> list:
    import numpy as np

    points = _sphere(500)
    points[::50] = np.nan
    points[1, 2] = np.inf
    return ["fit-sdf", _write_cloud(work / "nan.xyz", points), "-o", work / "nan.pt", *TINY]


def _nan_check(work: Path, proc) -> str | None:
    return None if "dropped 11 points with NaN or infinite" in proc.stderr else "no warning with the count"


def _scaled_build(scale: float, offset: float = 0.0):
    def build(work: Path) -> list:
        return ["fit-sdf", _npz(work / "scaled.npz", points=offset + _sphere(200) * scale), "-o", work / "o.pt", *TINY]

    return build


def _npz_kind_build(kind: str, labelled: bool):
    def build(work: Path) -> list:
        import numpy as np

        points = _sphere(200)
        points = points.astype(complex) + 1j if kind == "complex" else points.astype(str)
        if labelled:
            path = _npz(work / "points.npz", points=points, occupancies=np.arange(200) % 2 == 0)
            return ["fit-occupancy", path, "-o", work / "o.pt", *TINY]
        return ["fit-sdf", _npz(work / "cloud.npz", points=points), "-o", work / "o.pt", *TINY]

    return build


# ------------------------------------------------------------------------------ duplicates


def _lidar_build(zeros: int):
    def build(work: Path) -> list:
        import numpy as np

        from recon3d.synthetic import sample_torus

        points = np.vstack([sample_torus(30_000, seed=1).points, np.zeros((zeros, 3))])
        return ["fit-sdf", _write_cloud(work / "lidar.ply", points), "-o", work / "lidar.pt", *LIDAR]

    return build


def _duplicate_faces_build(alternate: bool):
    def build(work: Path) -> list:
        copies = ["f 1 3 2", "f 1 2 3"] * 2000 if alternate else ["f 1 3 2"] * 4000
        path = work / "tet.obj"
        path.write_text(_tetrahedron(copies))
        return ["fit-occupancy", path, "-o", work / "tet.pt", "--steps", "20", *CPU]

    return build


def _soup_build(work: Path) -> list:
    """2,000 large random triangles (an open soup): rasterising it for the enclosed-volume rule takes minutes."""
    import numpy as np

    from recon3d.io.mesh import write_mesh
    from recon3d.types import TriMesh

    rng = np.random.default_rng(0)
    vertices = rng.uniform(-1.0, 1.0, (6000, 3))
    write_mesh(work / "soup.ply", TriMesh(vertices, np.arange(6000).reshape(-1, 3)))
    return ["fit-occupancy", work / "soup.ply", "-o", work / "soup.pt", "--max-seconds", "10", *CPU]


# ------------------------------------------------------------------------------ bounded reads


def _fifo_input_build(work: Path) -> list:
    os.mkfifo(work / "scan.ply")
    return ["fit-sdf", work / "scan.ply", "-o", work / "o.pt", *TINY]


def _fifo_mtllib_build(work: Path) -> list:
    (work / "tet.obj").write_text(_tetrahedron(mtllib="material.mtl"))
    os.mkfifo(work / "material.mtl")
    return ["fit-occupancy", work / "tet.obj", "-o", work / "o.pt", *TINY]


def _fifo_texture_build(work: Path) -> list:
    (work / "tet.obj").write_text(_tetrahedron(mtllib="material.mtl"))
    (work / "material.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd skin.png\n")
    os.mkfifo(work / "skin.png")
    return ["eval", work / "tet.obj", work / "tet.obj"]


def _fifo_buffer_build(work: Path) -> list:
    (work / "tet.glb").write_bytes(_external_buffer_glb("buffer.bin"))
    os.mkfifo(work / "buffer.bin")
    return ["fit-occupancy", work / "tet.glb", "-o", work / "o.pt", *TINY]


# --------------------------------------------------------------------------- declared sizes


def _npz_bomb_build(work: Path) -> list:
    """About 4.3 GB of zeros deflated into a few MB (built in pieces: the harness never holds it)."""
    import numpy as np

    rows = 180_000_000
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (rows, 3)})
    zeros = bytes(1 << 26)
    with zipfile.ZipFile(work / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("points.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            left = rows * 24
            while left:
                member.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
    return ["fit-sdf", work / "bomb.npz", "-o", work / "o.pt", *TINY]


def _npz_shape_build(work: Path) -> list:
    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
    with zipfile.ZipFile(work / "shape.npz", "w") as archive:
        archive.writestr("points.npy", header.getvalue() + bytes(96))
    return ["fit-sdf", work / "shape.npz", "-o", work / "o.pt", *TINY]


def _pcd(packed: bytes, unpacked: int, points: int) -> bytes:
    header = (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {points}\nHEIGHT 1\n"
              f"POINTS {points}\nDATA binary_compressed\n")
    return header.encode() + struct.pack("<II", len(packed), unpacked) + packed


def _pcd_lzf_build(unpacked: int, points: int):
    def build(work: Path) -> list:
        back_references = b"\x00A" + b"\xe0\xff\x00" * 10_000_000  # 30 MB that expand to 2.6 GB
        (work / "lzf.pcd").write_bytes(_pcd(back_references, unpacked, points))
        return ["fit-sdf", work / "lzf.pcd", "-o", work / "o.pt", *TINY]

    return build


def _ply_count_build(command: str):
    def build(work: Path) -> list:
        header = ("ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\n"
                  "property float y\nproperty float z\nelement face 1\nproperty list uchar int vertex_indices\n"
                  "end_header\n")
        (work / "huge.ply").write_bytes(header.encode() + bytes(64))
        return [command, work / "huge.ply", "-o", work / "o.pt", *TINY]

    return build


def _glb_placeholder_build(work: Path) -> list:
    gltf = {"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
            "accessors": [{"componentType": 5126, "count": 10**11, "type": "VEC3"}]}
    (work / "placeholder.glb").write_bytes(_glb(gltf))
    return ["fit-occupancy", work / "placeholder.glb", "-o", work / "o.pt", *TINY]


def _odd_file_build(name: str, data: bytes, command: str):
    def build(work: Path) -> list:
        (work / name).write_bytes(data)
        if command == "eval":
            return ["eval", work / name, work / name]
        return [command, work / name, "-o", work / "o.pt", *TINY]

    return build


_ODD_FILES = [
    ("truncated.glb", struct.pack("<5I", 0x46546C67, 2, 1000, 900, 0x4E4F534A) + b"{", "fit-occupancy"),
    ("lying.stl", b"\0" * 80 + struct.pack("<I", 10**9) + b"\0" * 50, "fit-occupancy"),
    ("counts.off", b"OFF\n1000000000000 1000000000000 0\n0 0 0\n", "fit-occupancy"),
    ("index.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 999999999999\n", "fit-occupancy"),
    ("short.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty double x\nend_header\n\0",
     "fit-sdf"),
    ("counts.pcd", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1000000000000\nWIDTH 1\n"
     b"POINTS 1\nDATA binary\n\0\0\0\0", "fit-sdf"),
    ("text.xyz", b"1 2 3\n4 5\n", "fit-sdf"),
    ("broken.npz", b"PK\x03\x04" + bytes(40), "fit-sdf"),
    ("labels.npz", b"PK\x03\x04" + bytes(40), "fit-occupancy"),
    ("mesh.off", b"OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n", "eval"),
]


# -------------------------------------------------------------------------------------- memory


def _extract_build(*options: str):
    def build(work: Path) -> list:
        return ["extract-mesh", _model(work, _sphere(400)), "-o", work / "mesh.ply", *options, *CPU]

    return build


def _batch_build(command: str):
    def build(work: Path) -> list:
        if command == "fit-sdf":
            data = _write_cloud(work / "scan.ply", _sphere(400))
        else:
            data = work / "tet.obj"
            data.write_text(_tetrahedron())
        return [command, data, "-o", work / "o.pt", "--batch", str(10**9), *CPU]

    return build


def _guarded(check):
    """A check that reports its own failure (a missing output, say) as the case's problem."""
    def guarded(work: Path, proc) -> str | None:
        try:
            return check(work, proc)
        except Exception as exc:  # noqa: BLE001 - any failure of the check is the case's problem
            return f"check failed: {type(exc).__name__}: {exc}"[:200]

    return guarded


def _case(name: str, build, check=None, **kwargs) -> Case:
    return Case(name=f"inputs/{name}", build=build, check=None if check is None else _guarded(check), tags=("inputs",),
                **kwargs)


CASES: list[Case] = [
    *[_case(f"georeferenced-{fmt}", georeferenced_extract(fmt)[0], expect="ok", check=georeferenced_extract(fmt)[1])
      for fmt in ("ply", "obj", "off", "glb")],
    _case("georeferenced-stl-refused", _stl_build),
    _case("stray-point-1e9-away", _stray_build, expect="ok", check=_stray_check),
    _case("nan-and-inf-points", _nan_build, expect="ok", check=_nan_check),
    _case("coordinates-1e39", _scaled_build(1e39)),
    _case("extent-underflows", _scaled_build(1e-41)),
    _case("extent-lost-in-last-digits", _scaled_build(1e-5, offset=1e9)),
    _case("npz-complex-points", _npz_kind_build("complex", labelled=False)),
    _case("npz-string-points", _npz_kind_build("string", labelled=False)),
    _case("labelled-npz-complex-points", _npz_kind_build("complex", labelled=True)),
    _case("labelled-npz-string-points", _npz_kind_build("string", labelled=True)),
    _case("lidar-30k-plus-300k-zeros", _lidar_build(300_000), expect="ok", bounded=True, timeout=300),
    _case("lidar-30k-without-zeros", _lidar_build(0), expect="ok", bounded=True, timeout=300),
    _case("tetrahedron-plus-4000-face-copies", _duplicate_faces_build(False), expect="ok", bounded=True, timeout=300),
    _case("tetrahedron-plus-4000-alternating-copies", _duplicate_faces_build(True), expect="ok", bounded=True,
          timeout=300),
    _case("soup-preparation-past-max-seconds", _soup_build, bounded=True, timeout=120),
    _case("fifo-input", _fifo_input_build, bounded=True, timeout=60),
    _case("fifo-mtllib", _fifo_mtllib_build, bounded=True, timeout=60),
    _case("fifo-texture", _fifo_texture_build, bounded=True, timeout=60),
    _case("fifo-glb-buffer", _fifo_buffer_build, bounded=True, timeout=60),
    _case("npz-4.3-GB-of-zeros-deflated", _npz_bomb_build, bounded=True, timeout=120),
    _case("npz-declares-1e12-rows", _npz_shape_build, bounded=True),
    _case("pcd-lzf-expands-past-declared", _pcd_lzf_build(12_000, 1000), bounded=True),
    _case("pcd-lzf-declares-4-GB", _pcd_lzf_build(2**32 - 1, 300_000_000), bounded=True),
    _case("ply-declares-1e12-vertices-fit-sdf", _ply_count_build("fit-sdf"), bounded=True),
    _case("ply-declares-1e12-vertices-fit-occupancy", _ply_count_build("fit-occupancy"), bounded=True),
    _case("glb-accessor-declares-1.2-TB", _glb_placeholder_build, bounded=True),
    *[_case(f"odd-{name}-{command}", _odd_file_build(name, data, command)) for name, data, command in _ODD_FILES],
    _case("extract-resolution-4096", _extract_build("--resolution", "4096"), bounded=True, timeout=120),
    _case("extract-chunk-1e9", _extract_build("--chunk", str(10**9)), bounded=True, timeout=120),
    _case("extract-dense-2048", _extract_build("--resolution", "2048", "--method", "dense"), bounded=True,
          timeout=120),
    _case("fit-sdf-batch-1e9", _batch_build("fit-sdf"), bounded=True),
    _case("fit-occupancy-batch-1e9", _batch_build("fit-occupancy"), bounded=True),
]
