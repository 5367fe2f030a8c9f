"""The checkpoint contract: one file, plain tensors and values, loadable with weights_only=True.

Keys: ``format`` ("recon3d"), ``version``, ``kind`` (sdf | occupancy | nerf), ``level``, ``field``
(constructor arguments), ``state_dict``, ``to_world`` ({"scale": s, "translation": [tx, ty, tz]}:
x_world = s · x_field + t), ``bounds`` (2×3 box in field coordinates holding the data), ``train``
(settings, steps done, loss history, seconds, device, versions), optionally ``support`` (fit-sdf: a
voxel-thinned copy of the scan, ``points`` (M,3) and ``radius`` (M,) float16 in field coordinates, with
which extraction drops closed pieces no scan point is near; see recon3d.mesh.support) and, while
training is unfinished, ``resume`` (optimiser and RNG state). A stranger's file cannot run code: torch's weights-only
unpickler refuses anything but tensors and plain containers; nor can it exhaust memory or crash a
command: its declared size is checked before loading and its content against the schema after
(recon3d.io.schema), before any network is built.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from typing import Any

import torch

from recon3d.errors import InputError
from recon3d.fields import FIELDS
from recon3d.io.atomic import atomic_open
from recon3d.io.pointcloud import require_file
from recon3d.io.schema import FORMAT, REQUIRED_KEYS, check_archive, validate_checkpoint

__all__ = ["FORMAT", "KINDS", "REQUIRED_KEYS", "VERSION", "load_checkpoint", "save_checkpoint"]

VERSION = 1
#: The field kinds a checkpoint may hold: those recon3d.fields can rebuild.
KINDS = tuple(FIELDS)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Validate and write ``checkpoint`` atomically (temporary sibling, fsync, rename)."""
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Load and check a checkpoint: refuse pickled code, other formats, newer versions, wrong kinds,
    archives declaring too much data, and anything the schema (recon3d.io.schema) does not allow."""
    path = require_file(path)
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    check_archive(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None and "load key" in str(exc):
            raise InputError(f"{path}: not a recon3d checkpoint (not a torch file)") from exc
        what = f"it asks for {found.group(1)[:80]}" if found else "it holds objects other than plain data"
        raise InputError(f"{path}: refused to load: {what}; a recon3d checkpoint holds only tensors "
                         "and plain values (nothing was executed)") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable checkpoint (truncated or not a torch file)") from exc
    except (MemoryError, RecursionError) as exc:
        raise InputError(f"{path}: not a loadable checkpoint ({type(exc).__name__} while unpickling)") from exc
    except Exception as exc:  # noqa: BLE001 - whatever a crafted pickle provokes in the unpickler: one line
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__} while unpickling)") from exc
    return validate_checkpoint(data, path, VERSION, kinds)
