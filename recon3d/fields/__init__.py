"""Neural fields: encodings, MLPs and the field modules, each describing its own surface.

Imports nothing of fit, mesh, render or cli.
"""

from __future__ import annotations

import torch
from torch import nn

from recon3d.fields.implicit import OccupancyField, SignedDistanceField
from recon3d.fields.radiance import RadianceField
from recon3d.fields.surface import Surface

#: Checkpoint ``kind`` → the class that rebuilds the field from the checkpoint's ``field`` config.
FIELDS: dict[str, type[nn.Module]] = {
    "sdf": SignedDistanceField,
    "occupancy": OccupancyField,
    "nerf": RadianceField,
}


def build_field(kind: str, config: dict) -> nn.Module:
    """Rebuild a field from a checkpoint's ``kind`` and ``field`` config."""
    if kind not in FIELDS:
        raise ValueError(f"unknown field kind {kind!r} (known: {', '.join(FIELDS)})")
    return FIELDS[kind](**config)


def load_field(checkpoint: dict, device: torch.device) -> nn.Module:
    """The trained field of a checkpoint, on ``device``, in eval mode. Built on ``device`` itself: its random
    initial weights (a hash table of millions of rows) are made there and overwritten, not made on the CPU and
    copied over."""
    with torch.device(device):
        field = build_field(checkpoint["kind"], checkpoint["field"])
    field.load_state_dict(checkpoint["state_dict"])
    return field.to(device).eval()


__all__ = ["FIELDS", "Surface", "build_field", "load_field"]
