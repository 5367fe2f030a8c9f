"""Neural fields: encodings, MLPs and the field modules. Imports nothing of fit, mesh or cli."""

from __future__ import annotations

from torch import nn

from recon3d.fields.implicit import ImplicitField
from recon3d.fields.radiance import RadianceField

#: Field kinds a checkpoint may hold, with the class that rebuilds them from ``field`` config.
SCALAR_KINDS = ("sdf", "occupancy")


def build_field(kind: str, config: dict) -> nn.Module:
    """Rebuild a field from a checkpoint's ``kind`` and ``field`` config."""
    if kind in SCALAR_KINDS:
        return ImplicitField(**config)
    if kind == "nerf":
        return RadianceField(**config)
    raise ValueError(f"unknown field kind {kind!r}")
