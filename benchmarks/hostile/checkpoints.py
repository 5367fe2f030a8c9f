"""Hostile checkpoints (issue 17, part B): wrong shapes, missing keys, unknown activations and encodings,
placements without a scale or with NaN, strings for numbers, a tiny file declaring a huge hash grid,
zip bombs, a bad render config or occupancy grid, junk resume state. Each must end as one ``error:``
line naming the key (before any network is built or any large allocation), never "internal error",
and never a mesh of NaN vertices.

The checkpoints are small hand-built ones laid out as ``recon3d.fit.run.build_checkpoint`` writes them
(no training), so every case builds in milliseconds.
"""

from __future__ import annotations

import copy
import io
import struct
import zipfile
from pathlib import Path

from benchmarks.hostile.case import Case

TINY_GRID = {"type": "hashgrid", "n_levels": 2, "n_features": 2, "log2_table_size": 8, "base_resolution": 4,
             "max_resolution": 8}
IMPLICIT = {
    "sdf": {"encoding": {"type": "frequency", "in_dim": 3, "n_frequencies": 2, "include_input": True},
            "mlp": {"hidden": 8, "n_layers": 1, "activation": "softplus", "init": "geometric", "init_radius": 0.5},
            "level": 0.0, "inside": "below"},
    "occupancy": {"encoding": TINY_GRID, "mlp": {"hidden": 8, "n_layers": 1, "activation": "relu"},
                  "level": 0.0, "inside": "above"},
}
WEIGHT = "mlp.layers.0.weight"


def checkpoint(kind: str) -> dict:
    """A small valid checkpoint of ``kind`` (sdf, occupancy, nerf)."""
    import torch

    from recon3d.fields import build_field
    from recon3d.fields.radiance import radiance_preset
    from recon3d.render.renderer import Sampling
    from recon3d.render.samplers import OccupancyGrid

    torch.manual_seed(0)
    if kind == "nerf":
        config = radiance_preset("fast", [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
        config.update(position_encoding=dict(TINY_GRID), density_mlp={"hidden": 8, "n_layers": 1},
                      color_mlp={"hidden": 8, "n_layers": 1})
    else:
        config = copy.deepcopy(IMPLICIT[kind])
    field = build_field(kind, config)
    train = {"method": {"sdf": "fit-sdf", "occupancy": "fit-occupancy", "nerf": "fit-nerf"}[kind],
             "config": {"field": copy.deepcopy(config), "settings": {"steps": 1, "lr": 0.01}},
             "steps": 1, "seconds": 0.5, "stopped_by": "steps", "complete": True, "history_terms": ["loss"],
             "history": [[1.0, 0.25]], "device": "cpu", "versions": {"recon3d": "hostile"}}
    data = {"format": "recon3d", "version": 1, "kind": kind, "level": float(field.level), "inside": field.inside,
            "field": field.config, "state_dict": {k: v.detach().clone() for k, v in field.state_dict().items()},
            "to_world": {"scale": 2.0, "translation": [1.0, -2.0, 3.0]},
            "bounds": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], "train": train}
    if kind == "nerf":
        train.update(downscale=1, background=[1.0, 1.0, 1.0])
        train["config"].update(sampling=Sampling(near=2.0, far=6.0).to_dict(),
                               grid={"resolution": 8, "steps_per_diagonal": 64})
        grid = OccupancyGrid(torch.tensor(config["aabb"]), 8, steps_per_diagonal=64)
        data["grid"] = {k: v.clone() for k, v in grid.state_dict().items()}
    return data


def save(path: Path, data) -> Path:
    import torch

    torch.save(data, path)
    return path


def scene(work: Path) -> Path:
    """A small Blender scene (16x16 RGBA spheres) for render cases."""
    from recon3d.synthetic import write_spheres_scene

    return write_spheres_scene(work / "scene", n_train=3, n_val=3, size=16)


def _mutated(kind: str, mutate, command: str = "extract-mesh"):
    """A case builder: the ``kind`` checkpoint changed by ``mutate``, given to ``command``."""

    def build(work: Path) -> list[str]:
        data = checkpoint(kind)
        mutate(data)
        model = save(work / "model.pt", data)
        if command == "info":
            return ["info", model]
        if command == "render":
            return ["render", model, "--scene", scene(work), "--split", "val", "-o", work / "renders",
                    "--device", "cpu", "--quiet"]
        return ["extract-mesh", model, "-o", work / "mesh.ply", "-r", "32", "--device", "cpu", "--quiet"]

    return build


def _set(*keys, value):
    def mutate(data: dict) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


def _drop(*keys):
    def mutate(data: dict) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def _wrong_shape(data: dict) -> None:
    import torch

    data["state_dict"][WEIGHT] = torch.zeros(3, 3)


def _nan_weights(data: dict) -> None:
    data["state_dict"]["encoding.embeddings"].fill_(float("nan"))


def _huge_grid(data: dict) -> None:
    """A 12 GB hash grid (3 G parameters) declared in a 3 KB file (its state_dict holds one small tensor)."""
    import torch

    data["field"]["encoding"] = {"type": "hashgrid", "n_levels": 32, "n_features": 8, "log2_table_size": 24,
                                 "base_resolution": 16, "max_resolution": 65536}
    data["state_dict"] = {"encoding.embeddings": torch.zeros(1, 8)}


def _deflate_bomb(work: Path) -> list[str]:
    """A real zip bomb: 1.1 GB of zeros deflated to about 5 MB, named like a checkpoint."""
    path = work / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as entry:
            chunk = bytes(16 << 20)
            for _ in range(64):
                entry.write(chunk)
    return ["info", path]


def _declared_size(work: Path) -> list[str]:
    """A valid checkpoint whose central directory declares 4 GB per entry."""
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint("sdf"), buffer)
    data = bytearray(buffer.getvalue())
    start = 0
    while (at := data.find(b"PK\x01\x02", start)) >= 0:
        struct.pack_into("<I", data, at + 24, 0xF0000000)
        start = at + 4
    path = work / "declared.pt"
    path.write_bytes(bytes(data))
    return ["info", path]


def _legacy(work: Path) -> list[str]:
    import torch

    path = work / "legacy.pt"
    torch.save(checkpoint("sdf"), path, _use_new_zipfile_serialization=False)
    return ["info", path]


def _junk_resume(work: Path) -> list[str]:
    from recon3d.io.pointcloud import write_point_cloud
    from recon3d.synthetic import sample_sphere

    scan = work / "scan.ply"
    write_point_cloud(scan, sample_sphere(300, seed=0))
    data = checkpoint("sdf")
    data["resume"] = {"optimizer": "adam", "generator": [1, 2, 3], "step": 1, "seconds": 0.0, "history": []}
    save(work / "model.pt", data)
    return ["fit-sdf", scan, "-o", work / "model.pt", "--resume", "--device", "cpu", "--quiet"]


def _no_nan_mesh(work: Path, result) -> str | None:
    return "a mesh was written" if (work / "mesh.ply").exists() else None


def _valid(kind: str, command: str):
    return _mutated(kind, lambda data: None, command)


CASES: list[Case] = [
    Case("checkpoint: valid tiny sdf (info)", _valid("sdf", "info"), expect="ok"),
    Case("checkpoint: valid tiny occupancy (info)", _valid("occupancy", "info"), expect="ok"),
    Case("checkpoint: valid tiny sdf (extract-mesh)", _valid("sdf", "extract-mesh"), expect="ok"),
    Case("checkpoint: valid tiny nerf (render)", _valid("nerf", "render"), expect="ok"),
    Case("checkpoint: wrong tensor shape", _mutated("sdf", _wrong_shape)),
    Case("checkpoint: missing state_dict key", _mutated("sdf", _drop("state_dict", WEIGHT))),
    Case("checkpoint: NaN weights", _mutated("occupancy", _nan_weights)),
    Case("checkpoint: unknown activation", _mutated("sdf", _set("field", "mlp", "activation", value="tanh"))),
    Case("checkpoint: unknown encoding", _mutated("occupancy", _set("field", "encoding", "type", value="magic"))),
    Case("checkpoint: unknown density activation",
         _mutated("nerf", _set("field", "density_activation", value="cube"), "render")),
    Case("checkpoint: to_world without scale", _mutated("sdf", _drop("to_world", "scale"))),
    Case("checkpoint: NaN in to_world", _mutated("sdf", _set("to_world", "translation", value=[float("nan"), 0, 0])),
         check=_no_nan_mesh),
    Case("checkpoint: string level", _mutated("sdf", _set("level", value="0.5"), "info")),
    Case("checkpoint: train is a list", _mutated("sdf", _set("train", value=["steps", 1]), "info")),
    Case("checkpoint: history of strings", _mutated("sdf", _set("train", "history", value=[["a", "b"]]), "info")),
    Case("checkpoint: flat bounds", _mutated("sdf", _set("bounds", value=[[0, 0, 0], [1, 0, 1]]))),
    Case("checkpoint: 12 GB hash grid declared in 3 KB", _mutated("occupancy", _huge_grid), bounded=True),
    Case("checkpoint: deflate bomb (1.1 GB in 5 MB)", _deflate_bomb, bounded=True),
    Case("checkpoint: archive declaring 4 GB per entry", _declared_size, bounded=True),
    Case("checkpoint: legacy (non-zip) torch file", _legacy),
    Case("checkpoint: render config with a tiny step",
         _mutated("nerf", _set("train", "config", "sampling", "step_size", value=1e-12), "render"), bounded=True),
    Case("checkpoint: occupancy grid of the wrong size",
         _mutated("nerf", lambda d: d["grid"].update(density=d["grid"]["density"][:7]), "render")),
    Case("checkpoint: occupancy grid of 2048^3 cells",
         _mutated("nerf", _set("train", "config", "grid", "resolution", value=2048), "render"), bounded=True),
    Case("checkpoint: junk resume state (fit-sdf --resume)", _junk_resume),
]
