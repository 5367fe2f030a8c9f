"""What every benchmark records about the code it measured: git commit, dirty flag, recon3d version."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def code_stamp() -> dict[str, Any]:
    """``git_commit`` (None outside a git checkout, e.g. on the device copy), ``git_dirty``, ``recon3d``."""
    info: dict[str, Any] = {}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        info["git_dirty"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    try:
        from recon3d import __version__

        info["recon3d"] = __version__
    except ImportError:
        pass
    return info
