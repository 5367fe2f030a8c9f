"""Input to mesh in one process (``recon3d mesh``): the field the input calls for is fitted in memory
and extracted at once, with no checkpoint written or read back unless one is asked for.

A point cloud or a scene of posed images gets a signed distance field (IGR / NeuS), a mesh or labelled
points an occupancy field (Occupancy Networks); ``field`` overrides the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from recon3d.errors import Recon3dError
from recon3d.io.input_kind import input_kind

#: The fit command each kind of input gets by default.
COMMAND_FOR_KIND = {"scene": "fit-sdf", "points": "fit-sdf", "mesh": "fit-occupancy", "labelled": "fit-occupancy"}
#: ``--field`` values and their fit commands.
COMMAND_FOR_FIELD = {"sdf": "fit-sdf", "occupancy": "fit-occupancy"}


def fit_command_for(path: Path, field: str | None = None) -> str:
    """The fit command ``recon3d mesh`` runs on ``path``: from what the input holds, or ``field``."""
    kind = input_kind(path)
    if field is None:
        return COMMAND_FOR_KIND[kind]
    if field not in COMMAND_FOR_FIELD:
        raise Recon3dError(f"--field {field}: choose sdf or occupancy")
    if field == "occupancy" and kind == "points":
        raise Recon3dError(f"{path}: a point cloud has no inside to learn occupancy from; use --field sdf")
    if field == "sdf" and kind == "labelled":
        raise Recon3dError(f"{path}: labelled points hold no surface samples for a signed distance fit; "
                           "use --field occupancy")
    return COMMAND_FOR_FIELD[field]


@dataclass
class MeshRun:
    """What :func:`fit_and_mesh` made: the mesh, extraction statistics, the in-memory checkpoint and
    the fit's summary (steps, seconds, how it stopped, last loss)."""

    mesh: Any
    stats: dict[str, Any]
    checkpoint: dict[str, Any]
    fit: dict[str, Any]


def fit_in_memory(path: Path, command: str, fit_values: dict[str, Any], device: torch.device,
                  show_progress: bool = True, keep_model: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit ``command``'s method to ``path`` with ``fit_values`` (the fit command's options by name) and
    return (the checkpoint as plain data, the fit's summary); nothing is written but ``keep_model``.

    An interrupted fit is one Recon3dError (no mesh is made of it), after ``keep_model`` is written
    resumable.
    """
    from recon3d.fit.registry import method_for
    from recon3d.fit.run import make_options, read_input, save_fit, summarize, train

    method = method_for(command, path)
    options = make_options(method, **fit_values)
    data = read_input(method, path, options, device, show_progress)
    checkpoint, run = train(method, data, options, device, source=str(path), show_progress=show_progress)
    if keep_model is not None:
        save_fit(keep_model, checkpoint, run.trainer, run.state)
    if run.state.interrupted:
        where = (f"; resumable checkpoint written to {keep_model} (recon3d {command} {path} -o {keep_model} --resume)"
                 if keep_model is not None else "")
        raise Recon3dError(f"interrupted at step {run.state.step}: no mesh written{where}")
    return checkpoint, summarize(checkpoint, keep_model, extra=method.summary)


def mesh_of(checkpoint: dict[str, Any], source: Path, mesh_options: Any, device: torch.device,
            progress: Callable[[str, float], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """The mesh of a fitted checkpoint and the extraction's statistics; an empty result is one clear
    error naming ``source``."""
    from recon3d.mesh.from_field import check_empty, mesh_from_checkpoint

    mesh, stats = mesh_from_checkpoint(checkpoint, mesh_options, device, progress=progress)
    check_empty(mesh, stats, checkpoint, source)
    return mesh, stats


def fit_and_mesh(path: Path, command: str, fit_values: dict[str, Any], mesh_options: Any, device: torch.device,
                 show_progress: bool = True, keep_model: Path | None = None) -> MeshRun:
    """:func:`fit_in_memory`, then :func:`mesh_of`: the mesh ``mesh_options``
    (:class:`recon3d.mesh.from_field.MeshOptions`) asks for."""
    checkpoint, summary = fit_in_memory(path, command, fit_values, device, show_progress, keep_model)
    mesh, stats = mesh_of(checkpoint, path, mesh_options, device)
    return MeshRun(mesh=mesh, stats=stats, checkpoint=checkpoint, fit=summary)
