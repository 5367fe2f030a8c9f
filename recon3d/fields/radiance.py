"""Radiance fields (σ(x), c(x, d)) for ``recon3d fit-nerf`` and meshing at a density level.

Coordinates: positions ``x`` are in the scene's world units (the cameras' frame, e.g. Blender's for
nerf_synthetic). The field maps them into [-1, 1]³ with the axis-aligned box ``aabb`` of its
config, ``u = 2 (x − lo) / (hi − lo) − 1``, the domain of the encodings; points outside the box have
zero density. Directions ``d`` are world-space view directions (camera → point), normalised here.
σ is a density per world unit, so a renderer composites with world-unit sample spacings δ:
αᵢ = 1 − exp(−σᵢ δᵢ).

Meshing: the surface is σ = ``level`` with ``inside = "above"``; mesh ``field.density`` (forward
needs directions). σ = 10 per world unit (``DEFAULT_DENSITY_LEVEL``: a ray loses ~6% of its light
per cell of a 512³ grid over a 3-unit box) suits nerf_synthetic's scale. Trained densities climb
from ≈0 to thousands within a fine grid cell at opaque surfaces, so levels from ~2 to ~50 give
nearly the same surface; lower ones pick up semi-transparent floaters, higher ones thin out fine
parts. σ has units 1/length: the same scene in millimetres instead of metres wants a level 1000×
smaller.

Config keys (plain data, stored as the checkpoint's ``field``): ``architecture`` (paper | fast),
``aabb`` [[xmin, ymin, zmin], [xmax, ymax, zmax]], ``position_encoding`` and ``direction_encoding``
(``build_encoding`` configs), ``density_mlp`` {hidden, n_layers, skips}, ``geo_features`` (width of
the features the colour MLP sees), ``color_mlp`` {hidden, n_layers}, ``density_activation``,
``density_bias``, ``level``, ``inside``. Two architectures, both from ``radiance_preset``:

- ``paper`` — Mildenhall et al. 2020: positional encoding (L = 10 for x, 4 for d, input included),
  8×256 ReLU MLP with the encoded input concatenated again before the 6th linear layer ("skip at
  layer 5"), σ = ReLU(raw) from position only, a 256-d feature → [feature, γ(d)] → 128 ReLU →
  sigmoid RGB. 595,844 parameters. Plain ``nn.Linear`` stack (``MLP``'s skip is IGR's, scaled 1/√2).
- ``fast`` — instant-ngp (Müller et al. 2022): multiresolution hash grid (16 levels × 2 features,
  2¹⁹ entries, resolution 16 → 2048 over the box), density MLP 1×64 → 16 outputs (the first is raw
  σ, σ = trunc_exp(raw − 1)), colour MLP 2×64 on [all 16 outputs, as tiny-cuda-nn's NerfNetwork,
  degree-4 SH of d] → sigmoid RGB.

Density activations: ``relu`` (paper; ``noise_std`` adds the paper's N(0, s²) regulariser to raw σ
in training), ``softplus`` and ``trunc_exp``: exp in the forward pass (capped at e⁸⁰ to stay
finite), the gradient's exponent clamped at 15 (instant-ngp), so a large raw density cannot blow up
a step. With the bias −1 (nerfstudio's choice) an untrained field starts nearly transparent
(σ ≈ 0.4 per unit) rather than foggy. Parameters stay float32; under bf16 autocast the MLPs run in
bf16, the encodings and activations in float32, and σ, rgb come back float32.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from recon3d.fields.encodings import HASHGRID, build_encoding
from recon3d.fields.mlp import MLP
from recon3d.fields.surface import Surface

#: Suggested mesh level for ``kind = "nerf"`` checkpoints: σ per world unit (see module docstring).
DEFAULT_DENSITY_LEVEL = 10.0

#: nerf_synthetic's scene box (instant-ngp, nerfacc): the objects fit in [-1.5, 1.5]³.
NERF_SYNTHETIC_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))

_TRUNC_EXP_CLAMP = 15.0


class _TruncExp(torch.autograd.Function):
    """exp(x) with the gradient's exponent clamped at 15 (instant-ngp's truncated exponential)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=80.0))  # finite in float32 (e^88 overflows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=_TRUNC_EXP_CLAMP))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) whose gradient saturates at e^15: instant-ngp's density activation."""
    return _TruncExp.apply(x)


_ACTIVATIONS = {"relu": F.relu, "softplus": F.softplus, "trunc_exp": trunc_exp}


def radiance_preset(name: str, aabb: tuple | list | None = None) -> dict:
    """Config of the ``paper`` (NeRF) or ``fast`` (instant-ngp) radiance field over ``aabb``.

    ``aabb`` is ((xmin, ymin, zmin), (xmax, ymax, zmax)) in world units; nerf_synthetic's box by
    default. The config is plain data: edit it (e.g. a smaller hash table on a CPU) before building.
    """
    box = [list(map(float, corner)) for corner in (aabb if aabb is not None else NERF_SYNTHETIC_AABB)]
    common = {"aabb": box, "level": DEFAULT_DENSITY_LEVEL, "inside": "above"}
    if name == "paper":
        return {
            "architecture": "paper", **common,
            "position_encoding": {"type": "frequency", "in_dim": 3, "n_frequencies": 10, "include_input": True},
            "direction_encoding": {"type": "frequency", "in_dim": 3, "n_frequencies": 4, "include_input": True},
            "density_mlp": {"hidden": 256, "n_layers": 8, "skips": [5]},
            "geo_features": 256,
            "color_mlp": {"hidden": 128, "n_layers": 1},
            "density_activation": "relu", "density_bias": 0.0,
        }
    if name == "fast":
        return {
            "architecture": "fast", **common,
            "position_encoding": copy.deepcopy(HASHGRID["cuda"]),
            "direction_encoding": {"type": "sh", "degree": 4},
            "density_mlp": {"hidden": 64, "n_layers": 1},
            "geo_features": 16,
            "color_mlp": {"hidden": 64, "n_layers": 2},
            "density_activation": "trunc_exp", "density_bias": -1.0,
        }
    raise ValueError(f"unknown radiance preset {name!r} (known: paper, fast)")


class _PaperTrunk(nn.Module):
    """NeRF's trunk: ReLU layers with the input re-concatenated before ``skips``; σ and feature heads."""

    def __init__(self, in_dim: int, hidden: int, n_layers: int, skips: list[int], geo_features: int) -> None:
        super().__init__()
        self.skips = tuple(int(s) for s in skips)
        dims_in = [in_dim] + [hidden + (in_dim if i in self.skips else 0) for i in range(1, n_layers)]
        self.layers = nn.ModuleList(nn.Linear(d, hidden) for d in dims_in)
        self.sigma = nn.Linear(hidden, 1)
        self.feature = nn.Linear(hidden, geo_features)

    def forward(self, encoded: torch.Tensor, with_features: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = encoded
        for i, layer in enumerate(self.layers):
            if i in self.skips and i > 0:
                h = torch.cat([h, encoded.to(h.dtype)], dim=-1)
            h = F.relu(layer(h))
        return self.sigma(h).squeeze(-1), (self.feature(h) if with_features else None)


class _FastTrunk(nn.Module):
    """instant-ngp's density network: one small MLP whose first output is raw σ; all outputs are features."""

    def __init__(self, in_dim: int, hidden: int, n_layers: int, geo_features: int) -> None:
        super().__init__()
        self.mlp = MLP(in_dim=in_dim, out_dim=geo_features, hidden=hidden, n_layers=n_layers, activation="relu")

    def forward(self, encoded: torch.Tensor, with_features: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(encoded)
        return h[:, 0], h


class RadianceField(nn.Module):
    """σ(x) ≥ 0 from position only and rgb(x, d) ∈ [0, 1]³; x in world units inside ``aabb``."""

    #: ``forward(x, d)`` gives (σ, rgb): the renderers can draw it.
    renders = True
    #: What :meth:`world_values` gives (the Python API's ``Model.values``).
    quantity = "density"

    @staticmethod
    def world_values(values: torch.Tensor, scale: float) -> torch.Tensor:
        """Densities of the field's coordinates → per unit of the input's (σ has units 1/length)."""
        return values / scale

    def __init__(self, architecture: str, aabb: list, position_encoding: dict, direction_encoding: dict,
                 density_mlp: dict, geo_features: int, color_mlp: dict, density_activation: str = "trunc_exp",
                 density_bias: float = 0.0, level: float = DEFAULT_DENSITY_LEVEL, inside: str = "above",
                 background: dict | None = None) -> None:
        """``background``: the config of a second radiance field over contracted space that explains what
        lies beyond ``aabb`` (captures without masks; recon3d.render.background), or None."""
        super().__init__()
        self.config = copy.deepcopy({
            "architecture": architecture, "aabb": [list(map(float, c)) for c in aabb],
            "position_encoding": position_encoding, "direction_encoding": direction_encoding,
            "density_mlp": density_mlp, "geo_features": int(geo_features), "color_mlp": color_mlp,
            "density_activation": density_activation, "density_bias": float(density_bias),
            "level": float(level), "inside": inside,
        })
        lo, hi = torch.tensor(self.config["aabb"], dtype=torch.float32)
        if lo.shape != (3,) or not bool((hi > lo).all()):
            raise ValueError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min, got {aabb}")
        if density_activation not in _ACTIVATIONS:
            raise ValueError(f"unknown density activation {density_activation!r} (known: {', '.join(_ACTIVATIONS)})")
        self.level = float(level)
        self.inside = inside
        self.density_bias = float(density_bias)
        self._activation = _ACTIVATIONS[density_activation]
        self.register_buffer("aabb_min", lo, persistent=False)
        self.register_buffer("aabb_max", hi, persistent=False)
        self.position_encoding = build_encoding(position_encoding)
        self.direction_encoding = build_encoding(direction_encoding)
        if architecture == "paper":
            self.trunk: nn.Module = _PaperTrunk(self.position_encoding.out_dim, int(density_mlp["hidden"]),
                                                int(density_mlp["n_layers"]), list(density_mlp.get("skips", [])),
                                                int(geo_features))
        elif architecture == "fast":
            self.trunk = _FastTrunk(self.position_encoding.out_dim, int(density_mlp["hidden"]),
                                    int(density_mlp["n_layers"]), int(geo_features))
        else:
            raise ValueError(f"unknown radiance architecture {architecture!r} (known: paper, fast)")
        self.color_mlp = MLP(in_dim=int(geo_features) + self.direction_encoding.out_dim, out_dim=3,
                             hidden=int(color_mlp["hidden"]), n_layers=int(color_mlp["n_layers"]), activation="relu")
        if architecture == "fast":  # instant-ngp's MLPs run fused on a GPU (recon3d.fields.mlp_triton)
            self.trunk.mlp.fused = self.color_mlp.fused = True
        self.background = None
        if background is not None:
            self.background = RadianceField(**background)
            self.config["background"] = copy.deepcopy(self.background.config)

    @staticmethod
    def summary(config: dict) -> dict[str, str | None]:
        """The position encoding and the MLPs in a few words, for ``info``."""
        encoding = (config.get("position_encoding") or {}).get("type")
        if "density_mlp" not in config:
            return {"encoding": encoding, "mlp": "-"}
        density, color = config["density_mlp"], config.get("color_mlp", {})
        direction = config.get("direction_encoding", {}).get("type")
        return {"encoding": encoding,
                "mlp": f"{config.get('architecture')}: density {density.get('n_layers')}x{density.get('hidden')}, "
                       f"colour {color.get('n_layers')}x{color.get('hidden')}, direction {direction}"}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World positions → the encodings' cube [-1, 1]³ (outside the box: beyond ±1)."""
        return (x.float() - self.aabb_min) * (2.0 / (self.aabb_max - self.aabb_min)) - 1.0

    def _geometry(self, x: torch.Tensor, noise_std: float,
                  with_features: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, 3) world positions → σ (N,) float32 and the colour MLP's geometry features."""
        u = self.normalize(x)
        raw, features = self.trunk(self.position_encoding(u), with_features)
        raw = raw.float() + self.density_bias  # the activation in float32, also under autocast
        if noise_std > 0:
            raw = raw + torch.randn_like(raw) * noise_std
        inside = (u.abs() <= 1.0).all(dim=-1)
        sigma = torch.where(inside, self._activation(raw), torch.zeros_like(raw))
        return sigma, features

    def _rgb(self, features: torch.Tensor, encoded_dirs: torch.Tensor) -> torch.Tensor:
        h = torch.cat([features, encoded_dirs.to(features.dtype)], dim=-1)
        return torch.sigmoid(self.color_mlp(h).float())

    def density(self, x: torch.Tensor, noise_std: float = 0.0) -> torch.Tensor:
        """(…, 3) world positions → σ (…) ≥ 0, float32; zero outside the box. ``noise_std``: training only."""
        sigma, _ = self._geometry(x.reshape(-1, 3), noise_std, with_features=False)
        return sigma.reshape(x.shape[:-1])

    def forward(self, x: torch.Tensor, d: torch.Tensor, noise_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(…, 3) positions and view directions → σ (…) and rgb (…, 3) in [0, 1], both float32."""
        shape = x.shape[:-1]
        sigma, features = self._geometry(x.reshape(-1, 3), noise_std)
        dirs = F.normalize(d.reshape(-1, 3).float(), dim=-1)
        rgb = self._rgb(features, self.direction_encoding(dirs))
        return sigma.reshape(shape), rgb.reshape(*shape, 3)

    def surface(self, level: float | None = None) -> Surface:
        """The density level set σ = ``level`` (default: the field's own), coloured by :meth:`color`."""
        value = self.level if level is None else float(level)
        return Surface(self.density, value, self.inside, colors=self.color, color_cost=COLOR_QUERIES)

    def color(self, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """(…, 3) positions → view-averaged rgb (…, 3) in [0, 1], for mesh vertex colours.

        The surface normal is not known here, so the colour is the mean over 14 fixed directions
        (±axes and the 8 cube diagonals, a symmetric set): the view-independent (diffuse) part,
        with specular highlights averaged out. A caller with normals can use ``forward(x, -n)``.
        """
        dirs = _color_directions(x.device)
        encoded = self.direction_encoding(dirs)  # (K, D)
        flat = x.reshape(-1, 3)
        out = []
        for start in range(0, flat.shape[0], chunk):
            _, features = self._geometry(flat[start:start + chunk], 0.0)
            n, k = features.shape[0], encoded.shape[0]
            feats = features[:, None, :].expand(n, k, features.shape[1]).reshape(n * k, -1)
            dirs_enc = encoded[None].expand(n, k, encoded.shape[1]).reshape(n * k, -1)
            out.append(self._rgb(feats, dirs_enc).view(n, k, 3).mean(dim=1))
        rgb = torch.cat(out) if out else flat.new_zeros(0, 3, dtype=torch.float32)
        return rgb.reshape(*x.shape[:-1], 3)


#: Field evaluations per point of :meth:`RadianceField.color` (14 directions, rounded up to 16).
COLOR_QUERIES = 16


def _color_directions(device: torch.device) -> torch.Tensor:
    axes = torch.eye(3)
    diagonals = torch.tensor([[sx, sy, sz] for sx in (-1.0, 1.0) for sy in (-1.0, 1.0) for sz in (-1.0, 1.0)])
    return torch.cat([axes, -axes, diagonals / math.sqrt(3.0)]).to(device)
