"""Photos or a video → a posed scene by structure from motion (pycolmap, on the CPU), and sparse points
for a scene with known poses. See :mod:`recon3d.sfm.poses`; ``recon3d poses`` is recon3d.sfm.command.

pycolmap and PyAV are imported only when these functions run.
"""

from recon3d.sfm.poses import PosesOptions, estimate_poses, triangulate_scene

__all__ = ["PosesOptions", "estimate_poses", "triangulate_scene"]
