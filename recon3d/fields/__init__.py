"""Neural fields: encodings, MLPs and the field modules, each describing its own surface.

Imports nothing of fit, mesh, render or cli.
"""

from __future__ import annotations

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


__all__ = ["FIELDS", "Surface", "build_field"]
