"""From a checkpoint to a mesh in the input's units: rebuild the field, ask it for its surface,
extract, colour, map back. Nothing here switches on the kind of field."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recon3d.device import MIN_CHUNK, map_in_chunks
from recon3d.fields import build_field
from recon3d.fields.surface import Surface
from recon3d.memory import field_point_bytes
from recon3d.mesh.extract import ExtractOptions, extract_mesh
from recon3d.types import TriMesh


@dataclass
class MeshOptions(ExtractOptions):
    """What extract-mesh was asked for: how to extract (see :class:`ExtractOptions`), at which level
    (None: the checkpoint's own; a probability τ for occupancy fields), and whether to keep closed
    pieces that no scan point is near (fit-sdf checkpoints drop them)."""

    level: float | None = None
    keep_unsupported: bool = False


def load_field(checkpoint: dict, device: torch.device) -> torch.nn.Module:
    """The trained field of a checkpoint, on ``device``, in eval mode."""
    field = build_field(checkpoint["kind"], checkpoint["field"])
    field.load_state_dict(checkpoint["state_dict"])
    return field.to(device).eval()


@torch.no_grad()
def vertex_colors(surface: Surface, vertices: np.ndarray, device: torch.device, chunk: int) -> np.ndarray:
    """(V, 3) uint8 colours of a coloured surface at mesh vertices (``surface.colors``).

    ``chunk`` counts field points per evaluation, as for extraction. On GPU out-of-memory the chunk is
    halved (down to :data:`~recon3d.device.MIN_CHUNK` field points) and colouring continues where it
    stopped (:func:`~recon3d.device.map_in_chunks`).
    """
    assert surface.colors is not None
    points = torch.as_tensor(vertices, dtype=torch.float32, device=device)
    cost = max(1, int(surface.color_cost))
    parts, _ = map_in_chunks(lambda start, stop: surface.colors(points[start:stop]),
                             len(points), max(1, chunk // cost), device, min_chunk=max(1, MIN_CHUNK // cost))
    rgb = torch.cat(parts) if parts else points.new_zeros(0, 3)
    return (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def data_support(checkpoint: dict, surface: Surface, own_level: float,
                 options: MeshOptions) -> dict[str, np.ndarray] | None:
    """The data's support picture (a checkpoint's optional ``support``), used at the field's own level.

    An offset surface (``--level``) lies away from the data by design, so nothing is dropped there.
    """
    support = checkpoint.get("support")
    if support is None or options.keep_unsupported or float(surface.level) != float(own_level):
        return None
    return {key: np.asarray(value.float().numpy() if torch.is_tensor(value) else value, dtype=np.float32)
            for key, value in support.items()}


def mesh_from_checkpoint(checkpoint: dict, options: MeshOptions, device: torch.device,
                         progress=None) -> tuple[TriMesh, dict]:
    """Extract the checkpoint's surface; vertices and normals in the input's units."""
    options.validate()
    field = load_field(checkpoint, device)
    surface = field.surface(options.level)
    support = data_support(checkpoint, surface, field.surface().level, options)
    point_bytes = (field_point_bytes(checkpoint["field"], "eval"), field_point_bytes(checkpoint["field"], "gradient"))
    result = extract_mesh(surface, np.asarray(checkpoint["bounds"], dtype=np.float64), options, device,
                          support=support, progress=progress, point_bytes=point_bytes)
    mesh = result.mesh
    if surface.colors is not None and mesh.n_vertices:
        mesh.vertex_colors = vertex_colors(surface, mesh.vertices, device, options.chunk)
    to_world = checkpoint["to_world"]
    vertices = mesh.vertices * float(to_world["scale"]) + np.asarray(to_world["translation"], dtype=np.float64)
    world = TriMesh(vertices=vertices, faces=mesh.faces, vertex_normals=mesh.vertex_normals,
                    vertex_colors=mesh.vertex_colors)
    stats = {"vertices": world.n_vertices, "faces": world.n_faces, "resolution": list(result.resolution),
             "level": surface.user_level, "queries": int(result.queries),
             "lattice_queries": int(result.lattice_queries), "dropped_unsupported": int(result.dropped),
             "seconds": result.seconds}
    return world, stats
