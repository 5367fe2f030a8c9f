"""The method registry: one line per method, each imported on first use (so ``info`` and a typo'd
command do not pay for every method's imports)."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from recon3d.errors import Recon3dError
from recon3d.fit.method import Method
from recon3d.io.input_kind import looks_like_scene

#: Every fitting method: its name (stored in checkpoints as ``train["method"]``) → ``module:class``.
#: A command runs the first of its methods that accepts the input (scenes first, then 3D input).
METHODS: dict[str, str] = {
    "fit-sdf-images": "recon3d.fit.neus:SdfFromImages",
    "fit-sdf": "recon3d.fit.sdf:SdfFromPoints",
    "fit-occupancy-images": "recon3d.fit.unisurf:OccupancyFromImages",
    "fit-occupancy": "recon3d.fit.occupancy:OccupancyFromShape",
    "fit-nerf": "recon3d.fit.nerf:RadianceFromImages",
}
#: Each command's methods, from the names: ``fit-sdf-images`` is ``fit-sdf`` on a scene of posed images
#: (tried only when the input looks like one, so a point cloud does not import the image methods).
SCENE_SUFFIX = "-images"


@cache
def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in METHODS:
        raise Recon3dError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def method_for(command: str, path: Path) -> Method:
    """The method of ``command`` (``fit-sdf``, …) that reads ``path``: the input decides."""
    names = [name for name in METHODS if name == command or name == command + SCENE_SUFFIX]
    if not names:
        raise Recon3dError(f"unknown command {command!r}")
    scene = looks_like_scene(path)
    for name in names:
        if name.endswith(SCENE_SUFFIX) and not scene:
            continue
        method = get_method(name)
        if method.accepts(Path(path)):
            return method
    raise Recon3dError(f"{path}: {command} cannot fit this kind of input")


def method_of(checkpoint: dict) -> Method | None:
    """The method that wrote ``checkpoint`` (None for an unknown or missing name)."""
    name = checkpoint.get("train", {}).get("method") if isinstance(checkpoint.get("train"), dict) else None
    return get_method(name) if isinstance(name, str) and name in METHODS else None
