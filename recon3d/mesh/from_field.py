"""From a checkpoint to a mesh in the input's units: rebuild the field, ask it for its surface,
extract, optionally decimate, colour, map back, and say when the result looks wrong (a tiny mesh, no
surface, the whole box). Nothing here switches on the kind of field."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from recon3d.console import warn
from recon3d.device import MIN_CHUNK, map_in_chunks
from recon3d.errors import Recon3dError
from recon3d.fields import load_field
from recon3d.fields.encodings import HashGridEncoding
from recon3d.fields.gradient import autograd_gradient
from recon3d.fields.surface import Surface
from recon3d.memory import field_point_bytes
from recon3d.mesh import marching
from recon3d.mesh.decimate import check_faces, decimate
from recon3d.mesh.extract import ExtractOptions, default_resolution, extract_mesh
from recon3d.types import TriMesh

#: A one-shot extraction in a fresh process evaluates the hash grid with the torch encoding unless its dense
#: lattice has more points than this (a sparse one queries far fewer): the Triton kernels' start-up is paid
#: once per process, the torch encoding's extra cost per point (CHANGELOG, issue 20).
COLD_TORCH_POINTS = 2**26

#: A mesh is "tiny" (and said so) below TINY_FACES · resolution² faces, or when its box's diagonal is below
#: TINY_EXTENT of the fitted box's: a closed surface filling its box has about 2 · resolution² faces.
TINY_FACES = 0.02
TINY_EXTENT = 0.1


@dataclass
class MeshOptions(ExtractOptions):
    """What extract-mesh was asked for: how to extract (see :class:`ExtractOptions`), at which level
    (None: the checkpoint's own; a probability τ for occupancy fields), whether to keep closed
    pieces that no data supports (fit-sdf checkpoints of scans drop those no scan point is near, fits from
    images the cavities no camera can see), and at most how many faces
    (``faces``: quadric decimation, recon3d.mesh.decimate; None keeps every face)."""

    level: float | None = None
    keep_unsupported: bool = False
    faces: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.faces is not None:
            check_faces(self.faces)


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


def seen_from_outside(checkpoint: dict) -> bool:
    """Whether the field was fitted from images: then only surfaces some camera can reach are data, and
    a cavity sealed inside the solid is dropped (recon3d.mesh.cavities)."""
    return bool(checkpoint.get("train", {}).get("images"))


def mesh_from_checkpoint(checkpoint: dict, options: MeshOptions, device: torch.device,
                         progress=None, field: torch.nn.Module | None = None) -> tuple[TriMesh, dict]:
    """Extract the checkpoint's surface; vertices and normals in the input's units. ``field``: the
    checkpoint's field already on ``device`` (else it is rebuilt). ``stats["warnings"]`` lists what looks
    wrong about the result (each also logged as a warning); an empty mesh is returned as it is (see
    :func:`empty_mesh_message`)."""
    options.validate()
    if seen_from_outside(checkpoint) and not options.keep_unsupported:
        options = replace(options, drop_cavities=True)
    if field is None:
        field = load_field(checkpoint, device)
        cold_kernels(field, options, device)
    surface = field.surface(options.level)
    support = data_support(checkpoint, surface, field.surface().level, options)
    point_bytes = (field_point_bytes(checkpoint["field"], "eval"), field_point_bytes(checkpoint["field"], "gradient"))
    bounds = np.asarray(checkpoint["bounds"], dtype=np.float64)
    result = extract_mesh(surface, bounds, options, device, support=support, progress=progress,
                          point_bytes=point_bytes)
    mesh = result.mesh
    lighter = None
    if options.faces is not None and mesh.n_faces > options.faces:
        lighter = decimate(mesh, int(options.faces))
        mesh = lighter.mesh
        mesh.vertex_normals = surface_normals(surface, mesh, bounds, options.normals, device, options.chunk)
    if surface.colors is not None and mesh.n_vertices:
        mesh.vertex_colors = vertex_colors(surface, mesh.vertices, device, options.chunk)
    to_world = checkpoint["to_world"]
    vertices = mesh.vertices * float(to_world["scale"]) + np.asarray(to_world["translation"], dtype=np.float64)
    world = TriMesh(vertices=vertices, faces=mesh.faces, vertex_normals=mesh.vertex_normals,
                    vertex_colors=mesh.vertex_colors)
    value_range = None if result.value_range is None else [surface.user_value(v) for v in result.value_range]
    stats = {"vertices": world.n_vertices, "faces": world.n_faces, "resolution": list(result.resolution),
             "level": surface.user_level, "value_range": value_range, "queries": int(result.queries),
             "lattice_queries": int(result.lattice_queries), "dropped_unsupported": int(result.dropped),
             "dropped_cavities": int(result.cavities), "seconds": result.seconds}
    if lighter is not None:
        stats.update({"faces_before_decimation": lighter.faces_before, "watertight": lighter.watertight})
    stats["warnings"] = result_warnings(world, stats, checkpoint, surface, bounds, options, lighter)
    for message in stats["warnings"]:
        warn(message)
    return world, stats


def cold_kernels(field: torch.nn.Module, options: MeshOptions, device: torch.device) -> None:
    """The torch encoding for every hash grid of ``field`` when this process has not run the Triton kernels and
    the extraction is too small for their start-up to pay (:data:`COLD_TORCH_POINTS`)."""
    kernels = sys.modules.get("recon3d.fields.hashgrid_triton")
    if kernels is not None and kernels.launched:
        return
    resolution = int(options.resolution or default_resolution(device))
    if options.method == "dense" and resolution**3 > COLD_TORCH_POINTS:
        return
    for module in field.modules():
        if isinstance(module, HashGridEncoding):
            module.kernel = "torch"


def surface_normals(surface: Surface, mesh: TriMesh, bounds: np.ndarray, kind: str, device: torch.device,
                    chunk: int) -> np.ndarray | None:
    """Vertex normals of a mesh whose vertices moved (decimation): the field's outward gradient
    (``field``), or area-weighted face normals (``mesh``, and wherever the field's says nothing: outside
    the box, where the padding closes the mesh, or where the gradient vanishes); None for ``none``."""
    if kind == "none" or mesh.n_vertices == 0:
        return None
    from_faces = marching.vertex_normals(mesh.vertices, mesh.faces)
    if kind == "mesh":
        return from_faces
    points = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=device)
    grads = torch.zeros_like(points)

    def piece(start: int, stop: int) -> bool:
        grad = autograd_gradient(surface.function, points[start:stop].detach())[1]
        if grad is None:
            return False
        grads[start:stop] = grad.detach().float()
        return True

    done, _ = map_in_chunks(piece, len(points), chunk, device)
    if not all(done):
        return from_faces
    sign = 1.0 if surface.inside == "below" else -1.0
    normals = marching.unit_rows(grads.cpu().numpy() * sign)
    outside = ((mesh.vertices < bounds[0]) | (mesh.vertices > bounds[1])).any(axis=1)
    use_faces = outside | ~normals.any(axis=1)
    normals[use_faces] = from_faces[use_faces]
    return normals.astype(np.float32)


def _level_hint(surface: Surface) -> str:
    """Which way --level grows the surface."""
    return "a lower --level encloses more" if surface.inside == "above" else "a higher --level encloses more"


def result_warnings(mesh: TriMesh, stats: dict[str, Any], checkpoint: dict, surface: Surface, bounds: np.ndarray,
                    options: MeshOptions, lighter: Any = None) -> list[str]:
    """What looks wrong about an extraction, each with what to change: a tiny mesh (an undertrained field,
    or a level at the edge of its range), a surface that is the box itself (everything inside), and a
    decimation that opened a watertight mesh. An empty mesh is :func:`empty_mesh_message`'s."""
    messages: list[str] = []
    if mesh.n_faces == 0:
        return messages
    steps = checkpoint.get("train", {}).get("steps")
    trained = f"{steps} steps" if isinstance(steps, int) else "its training"
    span = stats.get("value_range")
    range_text = "" if span is None else f"; the field ranges over [{span[0]:.4g}, {span[1]:.4g}] in its box"
    resolution = max(stats["resolution"]) if stats.get("resolution") else int(options.resolution or 256)
    to_world = checkpoint["to_world"]
    scale = float(to_world["scale"])
    extent = float(np.linalg.norm(np.ptp(mesh.vertices, axis=0))) / scale
    box = float(np.linalg.norm(bounds[1] - bounds[0]))
    faces = int(stats.get("faces_before_decimation", mesh.n_faces))
    if span is not None and _all_inside(span, surface):
        less = "a higher --level encloses less" if surface.inside == "above" else "a lower --level encloses less"
        messages.append(f"the whole box is inside the surface at level {surface.user_level:g}{range_text}: the mesh "
                        f"is the box itself; {less}")
    elif faces < TINY_FACES * resolution**2 or extent < TINY_EXTENT * box:
        share = extent / box if box > 0 else 0.0
        messages.append(f"the mesh is tiny ({faces:,} faces, {share:.0%} of the fitted box's diagonal): the field "
                        f"may be undertrained ({trained}) or the level {surface.user_level:g} at the edge of its "
                        f"values{range_text}; fit with more --steps, or try another --level ({_level_hint(surface)})")
    if lighter is not None and lighter.watertight_before and not lighter.watertight:
        messages.append(f"decimation to --faces {options.faces} opened the watertight mesh (it has holes or "
                        "non-manifold edges now); ask for more --faces")
    return messages


def _all_inside(span: list[float], surface: Surface) -> bool:
    """Whether every sampled value lies inside the surface (the padding alone closes the mesh)."""
    level = surface.user_level
    return span[0] > level if surface.inside == "above" else span[1] < level


def empty_mesh_message(source: Any, stats: dict[str, Any], checkpoint: dict) -> str:
    """Why a checkpoint gave no surface, and what to change."""
    span = stats.get("value_range")
    steps = checkpoint.get("train", {}).get("steps")
    level = stats["level"]
    if span is None:
        return f"{source}: the field has no surface at level {level:g} inside its bounds"
    return (f"{source}: the field has no surface at level {level:g} inside its bounds: its values there range over "
            f"[{span[0]:.4g}, {span[1]:.4g}]; try a --level inside that range"
            + (f", or fit with more --steps (it had {steps})" if isinstance(steps, int) else ""))


def check_empty(mesh: TriMesh, stats: dict[str, Any], checkpoint: dict, source: Any) -> None:
    """One clear Recon3dError for a mesh without faces."""
    if mesh.n_faces == 0:
        raise Recon3dError(empty_mesh_message(source, stats, checkpoint))


__all__ = ["MeshOptions", "check_empty", "default_resolution", "load_field", "mesh_from_checkpoint"]
