"""The ``--threads`` check, without torch: commands that never load torch (``recon3d poses``) share it with
those that do (recon3d.device sets torch's thread count)."""

from __future__ import annotations

from recon3d.errors import Recon3dError

#: ``--threads`` accepts 1 to this many.
MAX_THREADS = 1024


def check_threads(threads: object) -> int:
    """``--threads``: an integer in [1, MAX_THREADS], or one clear error."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise Recon3dError(f"--threads must be an integer between 1 and {MAX_THREADS}, got {threads}")
    return threads
