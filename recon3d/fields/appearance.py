"""The colour network of surfaces fitted to images: rgb from the geometry's features, the surface
normal and the view direction (NeuS, Wang et al. 2021; IDR, Yariv et al. 2020)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from recon3d.fields.encodings import build_encoding
from recon3d.fields.mlp import MLP


class Appearance(nn.Module):
    """c(x, n, d) = sigmoid(MLP([features(x), n, encoding(d)])).

    Config (plain data): ``features`` (width of the geometry features it reads), ``direction`` (an
    encoding config for unit view directions; spherical harmonics by default) and ``mlp`` (hidden,
    n_layers; ReLU).
    """

    def __init__(self, features: int = 15, direction: dict | None = None, mlp: dict | None = None) -> None:
        super().__init__()
        self.config = {"features": int(features), "direction": copy.deepcopy(direction or {"type": "sh", "degree": 4}),
                       "mlp": copy.deepcopy(mlp or {"hidden": 64, "n_layers": 2})}
        self.features = int(features)
        self.direction = build_encoding(self.config["direction"])
        layers = self.config["mlp"]
        self.mlp = MLP(in_dim=self.features + 3 + self.direction.out_dim, out_dim=3, hidden=int(layers["hidden"]),
                       n_layers=int(layers["n_layers"]), activation="relu")

    def forward(self, features: torch.Tensor, normals: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """(N, F) features, (N, 3) unit normals and (N, 3) view directions → (N, 3) rgb in [0, 1], float32."""
        encoded = self.direction(F.normalize(directions.float(), dim=-1))
        h = torch.cat([features, normals.to(features.dtype), encoded.to(features.dtype)], dim=-1)
        return torch.sigmoid(self.mlp(h).float())
