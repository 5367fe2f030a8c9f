"""The ``recon3d poses`` command: parse, call recon3d.sfm, print the scene folder (or --json).

The CLI registers it with ``app.command("poses")(poses_command)``. The shared error handling and output
helpers of recon3d.cli are looked up when the command runs, so this module imports nothing of the CLI
(and nothing heavy) at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def poses_command(
    source: Path = typer.Argument(..., metavar="INPUT",
                                  help="A folder of photos or a video file; with --known-poses, a scene."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="The scene folder to write (new, or empty): transforms.json, images/, "
                                     "sparse points; with --known-poses a folder or a .npz file."),
    frames: Optional[int] = typer.Option(None, "--frames",
                                         help="Video: frames to take, the sharpest of equal time slots "
                                              "\\[default: 120]; photos: at most this many, evenly spread "
                                              "\\[default: all]."),
    matcher: str = typer.Option("auto", "--matcher",
                                help="auto (every pair up to 100 images, else sequential), exhaustive, or "
                                     "sequential (name order, with loop closure)."),
    camera: str = typer.Option("auto", "--camera",
                               help="auto (shared for a video, or photos of one size and EXIF camera), shared "
                                    "or per-image."),
    downscale: int = typer.Option(1, "--downscale", help="Shrink the images by this factor first \\[default: 1]."),
    known_poses: bool = typer.Option(False, "--known-poses",
                                     help="INPUT is a scene with poses: keep them and triangulate its points "
                                          "(the train split) for depth supervision."),
    seed: int = typer.Option(0, "--seed", help="COLMAP's random seed."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N",
                                          help="COLMAP's CPU threads \\[default: every core]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the results on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks for errors."),
) -> None:
    """Pose photos or a video by structure from motion (COLMAP via pycolmap, CPU) into a scene for fit-*."""
    from recon3d.cli import _command

    _command(_poses)(source=source, output=output, frames=frames, matcher=matcher, camera=camera,
                     downscale=downscale, known_poses=known_poses, seed=seed, threads=threads, as_json=as_json,
                     quiet=quiet, verbose=verbose)


def _poses(source: Path, output: Path, frames: int | None, matcher: str, camera: str, downscale: int,
           known_poses: bool, seed: int, threads: int | None, as_json: bool, quiet: bool, verbose: bool) -> None:
    from recon3d.cli import _emit
    from recon3d.errors import Recon3dError
    from recon3d.sfm.poses import PosesOptions, check_options, estimate_poses, triangulate_scene

    summary: dict[str, Any]
    if known_poses:
        if frames is not None or camera != "auto" or downscale != 1:
            raise Recon3dError("--known-poses keeps the scene's images and cameras: --frames, --camera and "
                               "--downscale do not apply")
        check_options(PosesOptions(threads=threads))
        summary = triangulate_scene(source, output, matcher=matcher, show_progress=not quiet, seed=seed,
                                    threads=threads)
    else:
        options = PosesOptions(frames=frames, matcher=matcher, camera=camera, downscale=downscale, seed=seed,
                               show_progress=not quiet, threads=threads)
        summary = estimate_poses(source, output, options)
    _emit(summary, as_json, str(output), written=str(output))
