"""The command's process around the work, without torch: start the GPU's driver while torch imports, and end
without the interpreter's teardown (measurements: CHANGELOG, issue 20).

- :func:`warm_gpu`: creating the GPU's context takes a noticeable part of a short command's start. It does not
  need torch: a thread creates the primary context through the driver API (``cuInit``,
  ``cuDevicePrimaryCtxRetain``; ctypes releases the interpreter's lock during the calls) while the main
  thread imports torch, and torch's runtime later finds that context ready.
- :func:`end_process`: the interpreter's teardown after the command (freeing every module, torch's C++ static
  destructors, the CUDA context's destruction) costs a short command up to half a second. What a normal exit
  does that matters — waiting for non-daemon threads, ``atexit`` handlers (temporary files, logging),
  flushing stdout and stderr — is done here, then the process ends with ``os._exit``.
  ``RECON3D_QUICK_EXIT=0`` keeps the normal exit (for tools that report at teardown, ``python -m cProfile``).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import sys
import threading
from typing import NoReturn

#: Commands that may run on a GPU (their ``--device`` decides).
GPU_COMMANDS = frozenset({"fit-sdf", "fit-occupancy", "fit-nerf", "mesh", "extract-mesh", "render", "demo"})
#: Commands that surely run the Triton kernels (they train or render); a one-shot extract-mesh does not.
KERNEL_COMMANDS = frozenset({"fit-sdf", "fit-occupancy", "fit-nerf", "mesh", "render", "demo"})
QUICK_EXIT_ENV = "RECON3D_QUICK_EXIT"


def device_argument(argv: list[str]) -> str:
    """The value of ``--device`` in ``argv`` (``--device X`` or ``--device=X``; the last one wins, as the
    command reads it), or ``auto``."""
    value = "auto"
    for i, token in enumerate(argv):
        if token == "--device" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith("--device="):
            value = token.split("=", 1)[1]
    return value.strip().lower()


def gpu_ordinal(argv: list[str]) -> int | None:
    """The CUDA device a command line will use (``argv`` without the program name), or None where it will
    not use one or cannot be told: another command, ``--device cpu``, an unreadable index, and every rank
    under torchrun (each picks its own device from LOCAL_RANK)."""
    if not argv or argv[0] not in GPU_COMMANDS or "LOCAL_RANK" in os.environ:
        return None
    device = device_argument(argv[1:])
    if device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def _load_driver() -> ctypes.CDLL | None:
    """The CUDA driver library, or None where there is none."""
    for name in ("libcuda.so.1", ctypes.util.find_library("cuda")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    return None


def _retain_primary_context(ordinal: int) -> None:
    """Initialise the driver and create device ``ordinal``'s primary context (the one torch's runtime uses),
    quietly doing nothing where any step fails: torch reports its own errors later."""
    driver = _load_driver()
    if driver is None:
        return
    device = ctypes.c_int()
    context = ctypes.c_void_p()
    if driver.cuInit(0) != 0 or driver.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
        return
    driver.cuDevicePrimaryCtxRetain(ctypes.byref(context), device)  # held until the process ends


def warm_gpu(ordinal: int | None) -> threading.Thread | None:
    """Start creating GPU ``ordinal``'s context (:func:`gpu_ordinal` of the command line; see the module's
    docstring) on a daemon thread; returns it, or None where there is no GPU to warm."""
    if ordinal is None or not sys.platform.startswith("linux"):
        return None
    thread = threading.Thread(target=_retain_primary_context, args=(ordinal,), daemon=True, name="gpu-context")
    thread.start()
    return thread


def exit_status(code: object) -> int:
    """The process status of ``SystemExit(code)``: None is 0, an integer itself, anything else (a message,
    printed to stderr as Python does) 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(code: object) -> NoReturn:
    """End the process with ``SystemExit(code)``'s status, skipping the interpreter's teardown (see the
    module's docstring), unless ``RECON3D_QUICK_EXIT=0``."""
    if os.environ.get(QUICK_EXIT_ENV, "1") == "0":
        device = sys.modules.get("recon3d.device")
        if device is not None:  # the teardown must not free CUDA under a warm-up thread still starting cuBLAS
            device.join_warmups()
        raise SystemExit(code)
    status = exit_status(code)
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(status)
