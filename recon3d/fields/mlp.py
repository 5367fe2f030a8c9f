"""Multilayer perceptrons with ReLU, softplus or sine activations and their initialisations.

- Geometric initialisation (Atzmon & Lipman, SAL 2020; used by IGR): the network starts as the
  signed distance of a sphere of radius ``init_radius``, which gives training a consistent sign
  (inside negative) from step 0. Inputs beyond the first three (encoded features) get zero weights
  at the first layer, so the encoding starts as a correction to the sphere.
- SIREN initialisation (Sitzmann et al. 2020) for sine activations with frequency ``w0``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recon3d.device import triton_can_run


class Sine(nn.Module):
    """sin(w0 · x), the SIREN activation."""

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


def _activation(name: str, softplus_beta: float, w0: float) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=softplus_beta)
    if name == "sine":
        return Sine(w0)
    raise ValueError(f"unknown activation {name!r} (known: relu, softplus, sine)")


class MLP(nn.Module):
    """A plain MLP with optional skip connections (input concatenated, IGR-style /√2)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1,
        hidden: int = 64,
        n_layers: int = 2,
        activation: str = "softplus",
        skip_layers: tuple[int, ...] | list[int] = (),
        init: str = "default",
        init_radius: float = 0.5,
        softplus_beta: float = 100.0,
        w0: float = 30.0,
        first_w0: float = 30.0,
        geometric_inputs: int = 3,
        first_scale: float = 1.0,
    ) -> None:
        """``first_scale`` multiplies the first output: −10 turns a geometric (sphere SDF) init into
        occupancy logits, o = sigmoid(−10 f), as UNISURF initialises its occupancy field."""
        super().__init__()
        self.first_scale = float(first_scale)
        self.skip_layers = tuple(int(s) for s in skip_layers)
        self.in_dim = in_dim
        dims = [in_dim] + [hidden] * n_layers + [out_dim]
        self.layers = nn.ModuleList()
        for i in range(len(dims) - 1):
            layer_in = dims[i] + (in_dim if i in self.skip_layers and i > 0 else 0)
            self.layers.append(nn.Linear(layer_in, dims[i + 1]))
        self.acts = nn.ModuleList(
            [_activation(activation, softplus_beta, first_w0 if i == 0 else w0) for i in range(len(dims) - 2)]
        )
        if init == "geometric":
            self._geometric_init(init_radius, geometric_inputs)
        elif init == "siren":
            self._siren_init(first_w0, w0)
        elif init != "default":
            raise ValueError(f"unknown init {init!r} (known: default, geometric, siren)")

    @torch.no_grad()
    def _geometric_init(self, radius: float, geometric_inputs: int) -> None:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            fan_out = layer.out_features
            if i == last:
                nn.init.normal_(layer.weight, mean=math.sqrt(math.pi) / math.sqrt(layer.in_features), std=1e-4)
                nn.init.constant_(layer.bias, -radius)
                continue
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(fan_out))
            nn.init.zeros_(layer.bias)
            if i == 0:
                layer.weight[:, geometric_inputs:] = 0.0
            elif i in self.skip_layers and self.in_dim > geometric_inputs:
                # The re-injected input: keep xyz, silence the encoded features at start.
                layer.weight[:, -(self.in_dim - geometric_inputs):] = 0.0

    @torch.no_grad()
    def _siren_init(self, first_w0: float, w0: float) -> None:
        for i, layer in enumerate(self.layers):
            fan_in = layer.in_features
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / w0
            nn.init.uniform_(layer.weight, -bound, bound)

    #: Run on the fused Triton kernels (recon3d.fields.mlp_triton) where they apply: a GPU, float32, ReLU, no
    #: skips. Off by default: their backward is first order only, so only fields that never differentiate
    #: through the MLP twice switch it on (the radiance field's).
    fused = False

    def _fusable(self, x: torch.Tensor) -> bool:
        if not self.fused or self.skip_layers or self.first_scale != 1.0 or not self.acts \
                or not isinstance(self.acts[0], nn.ReLU):
            return False
        if not triton_can_run(x) or x.dim() != 2:
            return False
        from recon3d.fields import mlp_triton  # imports Triton: only where it can run

        return mlp_triton.supported(x, list(self.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fusable(x):
            from recon3d.fields.mlp_triton import fused_mlp

            return fused_mlp(x, list(self.layers))
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i in self.skip_layers and i > 0:
                h = torch.cat([h, x], dim=-1) / math.sqrt(2.0)
            h = layer(h)
            if i < last:
                h = self.acts[i](h)
        if self.first_scale != 1.0:
            h = torch.cat([h[..., :1] * self.first_scale, h[..., 1:]], dim=-1)
        return h
