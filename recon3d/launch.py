"""The ``recon3d`` console entry: checks the one thing it can without importing torch (an input path
right after a command that reads one), so a typo fails at once; starts the GPU's context on a thread while
torch imports, then cuBLAS on another, and Triton's cache key on a third (commands that train or render); runs
the CLI; ends the process without the interpreter's teardown (recon3d.process)."""

from __future__ import annotations

import os
import sys

#: Commands whose first argument is an input file or folder.
READS_INPUT = frozenset({"fit-sdf", "fit-occupancy", "fit-nerf", "mesh", "extract-mesh", "render", "eval", "info",
                         "preview", "poses"})


def missing_input(argv: list[str]) -> str | None:
    """The error line for ``recon3d COMMAND INPUT ...`` whose INPUT does not exist, else None.

    Only the token right after the command is looked at (options may come later), and glob patterns
    are left to the command (they may match many inputs).
    """
    if len(argv) < 2 or argv[0] not in READS_INPUT:
        return None
    path = argv[1]
    if not path or path.startswith("-") or any(ch in path for ch in "*?[") or os.path.exists(path):
        return None
    kind = "file" if os.path.splitext(path.rstrip("/"))[1] else "file or folder"
    return f"error: {path}: no such {kind}"


def main() -> None:
    message = missing_input(sys.argv[1:])
    if message is not None:
        print(message, file=sys.stderr)
        raise SystemExit(1)
    from recon3d.process import KERNEL_COMMANDS, end_process, gpu_ordinal, warm_gpu

    ordinal = gpu_ordinal(sys.argv[1:])
    context = warm_gpu(ordinal)
    from recon3d.cli import main as cli_main  # imports torch

    if ordinal is not None and context is not None:
        from recon3d.device import start_blas_warmup, start_kernel_key

        start_blas_warmup(ordinal)
        if sys.argv[1] in KERNEL_COMMANDS:
            start_kernel_key()
    try:
        cli_main()
    except SystemExit as exc:
        end_process(exc.code)
