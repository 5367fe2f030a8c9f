"""recon3d: raw 3D observations to clean, watertight meshes through neural implicit fields.

The Python API (recon3d.api), imported on first use so that ``import recon3d`` stays light::

    import recon3d
    model = recon3d.fit_sdf("scan.ply", steps=300, device="cpu")
    mesh = model.mesh(resolution=128)
    mesh.save("scan.obj")

``fit_sdf``, ``fit_occupancy``, ``fit_nerf`` → :class:`Model`; ``load(path)`` → :class:`Model`;
:class:`Mesh` (vertices, faces, ``save``, ``to_trimesh``, ``to_open3d``); :class:`Recon3dError` for
anything a user can cause.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("fit_sdf", "fit_occupancy", "fit_nerf", "load", "Model", "Mesh")


def __getattr__(name: str) -> Any:
    if name in _API:
        from recon3d import api

        return getattr(api, name)
    if name == "Recon3dError":
        from recon3d.errors import Recon3dError

        return Recon3dError
    raise AttributeError(f"module 'recon3d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "Recon3dError"])


__all__ = ["Mesh", "Model", "Recon3dError", "__version__", "fit_nerf", "fit_occupancy", "fit_sdf", "load"]
