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
from recon3d.fields.appearance import Appearance
from recon3d.fields.encodings import build_encoding
from recon3d.fields.gradient import autograd_gradient
from recon3d.fields.mlp import MLP
from recon3d.fields.surface import Surface


class ImplicitField(nn.Module):
    """f(x) = MLP([x, encoding(x)]) for x in the normalised cube [-1, 1]^3.

    Fields fitted to images also carry an ``appearance`` (config of :class:`Appearance`): the MLP
    then outputs the field value and ``appearance["features"]`` geometry features that the colour
    network reads; ``variance_init`` adds NeuS's learnt sharpness, s = exp(10 · variance); and
    ``background`` (a radiance-field config over contracted space, recon3d.render.background) what
    rays see beyond the fitted region when the images have no masks.
    """

    def __init__(self, encoding: dict, mlp: dict, level: float = 0.0, inside: str = "below",
                 appearance: dict | None = None, variance_init: float | None = None,
                 background: dict | None = None) -> None:
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
        self.appearance = None if appearance is None else Appearance(**appearance)
        self.n_features = 0 if self.appearance is None else self.appearance.features
        self.mlp = MLP(in_dim=in_dim, out_dim=1 + self.n_features, **mlp)
        if self.appearance is not None:
            self.config["appearance"] = copy.deepcopy(self.appearance.config)
        self.background = None  # what rays see beyond the fitted region (captures without masks)
        if background is not None:
            from recon3d.fields.radiance import RadianceField

            self.background = RadianceField(**background)
            self.config["background"] = copy.deepcopy(self.background.config)
        self.variance = None
        if variance_init is not None:
            self.config["variance_init"] = float(variance_init)
            self.variance = nn.Parameter(torch.tensor(float(variance_init)))

    #: Fields with an appearance can be rendered (``recon3d render``).
    @property
    def renders(self) -> bool:
        return self.appearance is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) → (N,) field values."""
        if self.n_features:
            return self.outputs(x)[:, 0]
        return self.outputs(x).squeeze(-1)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) → (N, 1 + F): the field value, then the geometry features."""
        features = self.encoding(x)
        if self.prepend_input:
            features = torch.cat([x, features.to(x.dtype)], dim=-1)
        return self.mlp(features)

    def geometry(self, x: torch.Tensor, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3) points → field values (N,), geometry features (N, F) and ∇ₓf (N, 3), float32.

        ``create_graph`` keeps ∇ₓf differentiable in the parameters (for the eikonal term).
        """
        outputs, grad = gradient_of_outputs(self, x, create_graph=create_graph)
        outputs = outputs.float()
        return outputs[:, 0], outputs[:, 1:], grad.float()

    def inv_s(self) -> torch.Tensor:
        """NeuS's sharpness s = exp(10 · variance) (a scalar tensor), clamped to [1e-6, 1e6]."""
        if self.variance is None:
            raise ValueError("this field has no learnt sharpness (variance_init)")
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)

    def outward(self, grad: torch.Tensor) -> torch.Tensor:
        """Unit outward normals (N, 3) from field gradients: ∇f points out of an SDF (inside below)
        and into an occupancy field (inside above)."""
        return torch.nn.functional.normalize(grad if self.inside == "below" else -grad, dim=-1)

    @torch.no_grad()
    def color(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) points on the surface → (N, 3) rgb seen head-on (view direction −normal)."""
        assert self.appearance is not None
        _, features, grad = self.geometry(x, create_graph=False)
        normals = self.outward(grad)
        return self.appearance(features.detach(), normals, -normals)

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

    #: What :meth:`world_values` gives (the Python API's ``Model.values``).
    quantity = "signed distance"

    @staticmethod
    def world_values(values: torch.Tensor, scale: float) -> torch.Tensor:
        """Field values → signed distances in the input's units (the field's are ``scale`` times smaller)."""
        return values * scale

    def surface(self, level: float | None = None) -> Surface:
        """The level set ``level`` (default 0); |∇f| ≈ 1 makes the mesher's culling exact. Fields
        fitted to images colour their vertices (:meth:`ImplicitField.color`)."""
        value = self.level if level is None else float(level)
        colors = self.color if self.appearance is not None else None
        return Surface(self, value, self.inside, lipschitz=1.0, colors=colors)


class OccupancyField(ImplicitField):
    """f(x) = logit of the probability that x is inside; the surface is the decision boundary τ."""

    #: What :meth:`world_values` gives (the Python API's ``Model.values``).
    quantity = "occupancy"

    @staticmethod
    def world_values(values: torch.Tensor, scale: float) -> torch.Tensor:
        """Logits → the probability that a point is inside."""
        return torch.sigmoid(values)

    def surface(self, level: float | None = None) -> Surface:
        """The surface at probability ``level`` = τ in (0, 1) (default: the field's own, 0.5)."""
        colors = self.color if self.appearance is not None else None
        if level is None:
            return Surface(self, self.level, self.inside, shown_level=probability(self.level), colors=colors,
                           to_user=probability)
        return Surface(self, logit(float(level)), self.inside, shown_level=float(level), colors=colors,
                       to_user=probability)


def probability(value: float) -> float:
    """The probability of a logit (overflow-safe)."""
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    e = math.exp(value)
    return e / (1.0 + e)


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
        outputs, grad = _gradient_by_jacobian(field, x)
        return (outputs[:, 0] if field.n_features else outputs.squeeze(-1)), grad
    values, grad = autograd_gradient(field, x, create_graph=create_graph)
    if grad is None:
        raise ValueError("the field does not depend differentiably on its input")
    return values, grad


def gradient_of_outputs(field: ImplicitField, x: torch.Tensor,
                        create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All MLP outputs (N, 1 + F) at x (N, 3) and the gradient of the first (the field value) in x."""
    by_jacobian = field.prepend_input and hasattr(field.encoding, "forward_with_jacobian")
    if by_jacobian:
        return _gradient_by_jacobian(field, x, create_graph)
    kept: dict[str, torch.Tensor] = {}

    def first(points: torch.Tensor) -> torch.Tensor:
        kept["outputs"] = field.outputs(points)
        return kept["outputs"][:, 0]

    _, grad = autograd_gradient(first, x, create_graph=create_graph)
    if grad is None:
        raise ValueError("the field does not depend differentiably on its input")
    return kept["outputs"], grad


def _gradient_by_jacobian(field: ImplicitField, x: torch.Tensor,
                          create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MLP outputs (N, 1 + F) and ∇ₓ of the first, through the hash grid's own Jacobian."""
    with torch.enable_grad():
        x = x.detach()
        encoded, jacobian = field.encoding.forward_with_jacobian(x)
        inputs = torch.cat([x, encoded.to(x.dtype)], dim=-1)
        if not inputs.requires_grad:  # frozen embeddings: still differentiate the MLP in its inputs
            inputs.requires_grad_(True)
        outputs = field.mlp(inputs)
        values = outputs[:, 0] if field.n_features else outputs.squeeze(-1)
        (outer,) = torch.autograd.grad(values.sum(), inputs, create_graph=create_graph)
        outer = outer.to(jacobian.dtype)
        grad = outer[:, :3] + (outer[:, 3:, None] * jacobian).sum(dim=1)
    return outputs, grad
