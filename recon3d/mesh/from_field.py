"""From a checkpoint to a mesh in the input's units: rebuild the field, extract, map back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recon3d.device import MIN_CHUNK, map_in_chunks
from recon3d.errors import Recon3dError
from recon3d.fields import build_field
from recon3d.mesh.extract import extract_mesh
from recon3d.types import TriMesh


@dataclass
class MeshOptions:
    """What extract-mesh was asked for; None means the checkpoint's own or the device default."""

    resolution: int | None = None
    level: float | None = None
    method: str = "sparse"
    largest_component: bool = False
    normals: str = "field"
    chunk: int = 2**18
    refine: int = 0  # Newton steps moving vertices onto the level (opt-in)
    marching_cubes: str = "table"  # "table" (torch, on the device) or "lewiner" (scikit-image, CPU)
    keep_unsupported: bool = False  # keep closed pieces with no scan point near them (SDF fits)


def logit(tau: float) -> float:
    """The logit of a probability threshold τ in (0, 1): occupancy fields output logits."""
    if not 0.0 < tau < 1.0:
        raise Recon3dError(f"--level {tau}: an occupancy threshold is a probability strictly between 0 and 1")
    return math.log(tau / (1.0 - tau))


def field_level(checkpoint: dict, level: float | None) -> tuple[float, float]:
    """(level in the field's own values, level as the user sees it). Occupancy levels are probabilities τ."""
    if checkpoint["kind"] == "occupancy":
        tau = float(checkpoint["train"].get("threshold", 0.5)) if level is None else float(level)
        return (float(checkpoint["level"]) if level is None else logit(tau)), tau
    value = float(checkpoint["level"] if level is None else level)
    return value, value


def default_resolution(device: torch.device) -> int:
    """512³ on a GPU (seconds); 256³ on a CPU, where 512³ takes minutes."""
    return 512 if device.type == "cuda" else 256


def load_field(checkpoint: dict, device: torch.device) -> torch.nn.Module:
    """The trained field of a checkpoint, on ``device``, in eval mode."""
    field = build_field(checkpoint["kind"], checkpoint["field"])
    field.load_state_dict(checkpoint["state_dict"])
    return field.to(device).eval()


#: field.color() evaluates 14 view directions per point: vertices per call = field points per call / 16.
_COLOR_QUERIES = 16


@torch.no_grad()
def vertex_colors(field: torch.nn.Module, vertices: np.ndarray, device: torch.device, chunk: int) -> np.ndarray:
    """(V, 3) uint8 colours of a radiance field at mesh vertices (view-averaged, see ``field.color``).

    ``chunk`` counts field points per evaluation, as for extraction. On GPU out-of-memory the chunk is
    halved (down to :data:`~recon3d.device.MIN_CHUNK` field points) and colouring continues where it
    stopped (:func:`~recon3d.device.map_in_chunks`).
    """
    points = torch.as_tensor(vertices, dtype=torch.float32, device=device)
    step = max(1, chunk // _COLOR_QUERIES)
    parts, _ = map_in_chunks(lambda start, stop: field.color(points[start:stop]),
                             len(points), step, device, min_chunk=max(1, MIN_CHUNK // _COLOR_QUERIES))
    rgb = torch.cat(parts) if parts else points.new_zeros(0, 3)
    return (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def data_support(checkpoint: dict, options: MeshOptions) -> dict[str, np.ndarray] | None:
    """The scan's support picture (fit-sdf checkpoints), used at the checkpoint's own level only.

    An offset surface (``--level``) lies away from the scan by design, so nothing is dropped there.
    """
    support = checkpoint.get("support")
    if support is None or options.keep_unsupported:
        return None
    if options.level is not None and float(options.level) != float(checkpoint["level"]):
        return None
    return {key: np.asarray(value.float().numpy() if torch.is_tensor(value) else value, dtype=np.float32)
            for key, value in support.items()}


def mesh_from_checkpoint(checkpoint: dict, options: MeshOptions, device: torch.device,
                         progress=None) -> tuple[TriMesh, dict]:
    """Extract the checkpoint's surface; vertices and normals in the input's units."""
    field = load_field(checkpoint, device)
    is_radiance = checkpoint["kind"] == "nerf"
    field_fn = field.density if is_radiance else field  # meshes of radiance fields come from σ alone
    level, shown_level = field_level(checkpoint, options.level)
    refine = int(options.refine or 0)
    resolution = int(options.resolution or default_resolution(device))
    inside = checkpoint.get("inside", checkpoint["field"].get("inside", "below"))
    support = data_support(checkpoint, options)
    result = extract_mesh(
        field_fn, np.asarray(checkpoint["bounds"], dtype=np.float64), resolution=resolution, level=level,
        inside=inside, method=options.method, device=device, chunk=options.chunk,
        largest_component=options.largest_component, normals=options.normals,
        lipschitz=1.0 if checkpoint["kind"] == "sdf" else None, progress=progress, refine=refine,
        marching_cubes=options.marching_cubes, support=support,
    )
    mesh = result.mesh
    if is_radiance and mesh.n_vertices:
        mesh.vertex_colors = vertex_colors(field, mesh.vertices, device, options.chunk)
    to_world = checkpoint["to_world"]
    vertices = mesh.vertices * float(to_world["scale"]) + np.asarray(to_world["translation"], dtype=np.float64)
    world = TriMesh(vertices=vertices, faces=mesh.faces, vertex_normals=mesh.vertex_normals,
                    vertex_colors=mesh.vertex_colors)
    stats = {"vertices": world.n_vertices, "faces": world.n_faces, "resolution": list(result.resolution),
             "level": shown_level, "queries": int(result.queries),
             "lattice_queries": int(result.lattice_queries), "dropped_unsupported": int(result.dropped),
             "seconds": result.seconds}
    return world, stats
