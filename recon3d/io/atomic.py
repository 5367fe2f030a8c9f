"""Atomic file output: a temporary file in the destination folder, then ``os.replace``.

An interrupted or failed write never leaves a half-written file where a good one stood.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from recon3d.errors import Recon3dError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; move it into place on success.

    On any exception the temporary file is removed and the previous ``path`` (if any) is kept.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise Recon3dError(f"{path}: output folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise Recon3dError(f"{path}: cannot write here ({_reason(exc)})") from exc
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise Recon3dError(f"{path}: write failed ({_reason(exc)})") from exc
        raise


def _reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: the disk is full" if exc.errno == errno.ENOSPC else reason


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
