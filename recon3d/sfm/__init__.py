"""Photos or a video → a posed scene by structure from motion (pycolmap, on the CPU), and sparse points
for a scene with known poses. See :mod:`recon3d.sfm.poses`; ``recon3d poses`` is recon3d.sfm.command.

pycolmap and PyAV are imported only when these functions run; :mod:`recon3d.sfm.poses` itself only when
one of its names is used (the CLI imports recon3d.sfm.command at start-up).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PosesOptions", "estimate_poses", "triangulate_scene"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from recon3d.sfm import poses

        return getattr(poses, name)
    raise AttributeError(f"module 'recon3d.sfm' has no attribute {name!r}")
