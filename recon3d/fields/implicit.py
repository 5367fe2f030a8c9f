"""Scalar implicit fields f: R³ → R as encoding + MLP: signed distances (IGR, Gropp et al. 2020)
and occupancy logits (Occupancy Networks, Mescheder et al. 2019).

A field is rebuilt from its plain-dict ``config`` (stored in the checkpoint as ``field``), so a
checkpoint never needs a pickled class. Each field carries the ``level`` of its surface and which
side is ``inside`` ("below": f < level, as for SDFs; "above": f > level, as for occupancy), and
describes its surface to the mesher (:meth:`ImplicitField.surface`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from recon3d.errors import Recon3dError
from recon3d.fields.encodings import build_encoding
from recon3d.fields.gradient import autograd_gradient
from recon3d.fields.mlp import MLP
from recon3d.fields.surface import Surface


class ImplicitField(nn.Module):
    """f(x) = MLP([x, encoding(x)]) for x in the normalised cube [-1, 1]^3."""

    def __init__(self, encoding: dict, mlp: dict, level: float = 0.0, inside: str = "below") -> None:
        super().__init__()
        self.config = {"encoding": copy.deepcopy(encoding), "mlp": copy.deepcopy(mlp),
                       "level": float(level), "inside": inside}
        self.level = float(level)
        self.inside = inside
        self.encoding = build_encoding(encoding)
        enc_type = encoding.get("type", "none")
        # Encodings that do not already include the raw coordinates get them prepended, so the
        # first three MLP inputs are always xyz (geometric init relies on it).
        self.prepend_input = enc_type == "hashgrid"
        in_dim = self.encoding.out_dim + (3 if self.prepend_input else 0)
        self.mlp = MLP(in_dim=in_dim, out_dim=1, **mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) → (N,) field values."""
        features = self.encoding(x)
        if self.prepend_input:
            features = torch.cat([x, features.to(x.dtype)], dim=-1)
        return self.mlp(features).squeeze(-1)

    @staticmethod
    def summary(config: dict) -> dict[str, str | None]:
        """The encoding type and the MLP in a few words, for ``info``."""
        mlp = config.get("mlp") or {}
        text = "-" if not mlp else (
            f"{mlp.get('n_layers')}x{mlp.get('hidden')} {mlp.get('activation')}, init {mlp.get('init', 'default')}"
            + (f", skip {list(mlp['skip_layers'])}" if mlp.get("skip_layers") else ""))
        return {"encoding": (config.get("encoding") or {}).get("type"), "mlp": text}

    def surface(self, level: float | None = None) -> Surface:
        """The surface at ``level`` (a field value; default: the field's own)."""
        return Surface(self, self.level if level is None else float(level), self.inside)


class SignedDistanceField(ImplicitField):
    """f(x) ≈ signed distance to the surface (negative inside); the surface is f = 0."""

    def surface(self, level: float | None = None) -> Surface:
        """The level set ``level`` (default 0); |∇f| ≈ 1 makes the mesher's culling exact."""
        value = self.level if level is None else float(level)
        return Surface(self, value, self.inside, lipschitz=1.0)


class OccupancyField(ImplicitField):
    """f(x) = logit of the probability that x is inside; the surface is the decision boundary τ."""

    def surface(self, level: float | None = None) -> Surface:
        """The surface at probability ``level`` = τ in (0, 1) (default: the field's own, 0.5)."""
        if level is None:
            return Surface(self, self.level, self.inside, shown_level=1.0 / (1.0 + math.exp(-self.level)))
        return Surface(self, logit(float(level)), self.inside, shown_level=float(level))


def logit(tau: float) -> float:
    """The logit of a probability threshold τ in (0, 1): occupancy fields output logits."""
    if not 0.0 < tau < 1.0:
        raise Recon3dError(f"--level {tau}: an occupancy threshold is a probability strictly between 0 and 1")
    return math.log(tau / (1.0 - tau))


def gradient(field: nn.Module, x: torch.Tensor, create_graph: bool = True,
             jacobian: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return f(x) and ∇ₓf(x) (create_graph=True so losses on ∇f can be trained).

    A field whose encoding knows its own Jacobian (the hash grid) gets ∇ₓf = ∂f/∂x + ∂f/∂h · ∂h/∂x,
    with autograd only through the MLP: the same gradient and the same parameter gradients of any
    loss on it, for about half the work of differentiating the interpolation twice. Other fields
    use autograd, as does ``jacobian=False`` (for comparisons). ∇ₓf from the Jacobian is not itself
    differentiable in x (no loss needs that).
    """
    encoding = getattr(field, "encoding", None)
    by_jacobian = getattr(field, "prepend_input", False) and hasattr(encoding, "forward_with_jacobian")
    if jacobian and create_graph and by_jacobian:
        return _gradient_by_jacobian(field, x)
    values, grad = autograd_gradient(field, x, create_graph=create_graph)
    if grad is None:
        raise ValueError("the field does not depend differentiably on its input")
    return values, grad


def _gradient_by_jacobian(field: "ImplicitField", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach()
        encoded, jacobian = field.encoding.forward_with_jacobian(x)
        inputs = torch.cat([x, encoded.to(x.dtype)], dim=-1)
        if not inputs.requires_grad:  # frozen embeddings: still differentiate the MLP in its inputs
            inputs.requires_grad_(True)
        values = field.mlp(inputs).squeeze(-1)
        (outer,) = torch.autograd.grad(values.sum(), inputs, create_graph=True)
        outer = outer.to(jacobian.dtype)
        grad = outer[:, :3] + (outer[:, 3:, None] * jacobian).sum(dim=1)
    return values, grad
