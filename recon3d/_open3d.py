"""Lazy Open3D import.

Open3D is used only by optional paths (baselines, some readers, inside tests); fitting and mesh
extraction never need it. Its wheel links against ``libusb-1.0.so.0``, which fresh machines often
lack; the ``libusb-package`` dependency ships that library, so we preload it before importing.
"""

from __future__ import annotations

import ctypes
import functools
from types import ModuleType

from recon3d.errors import Recon3dError


@functools.lru_cache(maxsize=1)
def import_open3d() -> ModuleType:
    """Return the ``open3d`` module, preloading a bundled libusb when the system has none."""
    try:
        import open3d  # noqa: F401

        return open3d
    except ImportError as first:
        if "libusb" not in str(first):
            raise Recon3dError(f"open3d is not usable: {first}") from first
        try:
            import libusb_package

            path = libusb_package.get_library_path()
            if path is None:
                raise Recon3dError("open3d needs libusb-1.0.so.0; install libusb-package")
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            import open3d

            return open3d
        except ImportError as second:
            raise Recon3dError(f"open3d is not usable: {second}") from second
