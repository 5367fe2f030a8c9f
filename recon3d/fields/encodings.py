"""Input encodings for coordinate networks.

Each encoding maps (N, in_dim) points in the normalised cube [-1, 1]^3 to (N, out_dim) features:
- ``FrequencyEncoding``: NeRF's positional encoding [x, sin(2^k πx), cos(2^k πx)], k < L.
- ``FourierFeatures``: random Gaussian Fourier features (Tancik et al. 2020).
- ``HashGridEncoding``: instant-ngp's multiresolution hash grid, written in plain torch so it runs
  on CPU and GPU and supports double backward (needed by the eikonal term).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class IdentityEncoding(nn.Module):
    """No encoding: the raw coordinates."""

    def __init__(self, in_dim: int = 3) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FrequencyEncoding(nn.Module):
    """[x, sin(2^k π x), cos(2^k π x)] for k = 0 … n_frequencies−1 (Mildenhall et al. 2020)."""

    def __init__(self, in_dim: int = 3, n_frequencies: int = 6, include_input: bool = True) -> None:
        super().__init__()
        self.include_input = include_input
        self.register_buffer("freqs", (2.0 ** torch.arange(n_frequencies)) * math.pi, persistent=False)
        self.out_dim = in_dim * 2 * n_frequencies + (in_dim if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x[..., None] * self.freqs).flatten(-2)
        parts = [torch.sin(scaled), torch.cos(scaled)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)


class FourierFeatures(nn.Module):
    """[x, sin(2π Bx), cos(2π Bx)] with B ~ N(0, σ²), fixed by ``seed`` so checkpoints rebuild it."""

    def __init__(self, in_dim: int = 3, n_features: int = 128, sigma: float = 4.0, seed: int = 0,
                 include_input: bool = True) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(in_dim, n_features, generator=gen) * sigma)
        self.include_input = include_input
        self.out_dim = 2 * n_features + (in_dim if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.B
        parts = [torch.sin(proj), torch.cos(proj)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)


_PRIMES = (1, 2654435761, 805459861)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding (Müller et al. 2022) over the cube [-1, 1]^3.

    Level l has resolution ⌊base·b^l⌋ with b chosen so the last level reaches ``max_resolution``.
    Coarse levels whose (res+1)^3 vertices fit in the table are indexed densely (no collisions);
    finer levels are hashed. Trilinear interpolation keeps the output differentiable in x, so the
    eikonal loss can backpropagate through ∇_x f. ``active_levels`` masks the finer levels for
    coarse-to-fine training (Neuralangelo); masked levels output zeros.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.n_levels = n_levels
        self.n_features = n_features
        self.out_dim = n_levels * n_features
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))
        resolutions = [int(math.floor(base_resolution * growth**level)) for level in range(n_levels)]
        table = 2**log2_table_size
        sizes = [min((r + 1) ** 3, table) for r in resolutions]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int64), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer("dense", torch.tensor([(r + 1) ** 3 <= table for r in resolutions]), persistent=False)
        self.register_buffer("level_mask", torch.ones(n_levels), persistent=False)
        bits = [[(corner >> d) & 1 for d in range(3)] for corner in range(8)]
        self.register_buffer("_corner_bits", torch.tensor(bits, dtype=torch.int64), persistent=False)
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], n_features).uniform_(-init_scale, init_scale))

    def set_active_levels(self, active: int) -> None:
        """Zero out every level past the first ``active`` (coarse-to-fine schedule)."""
        active = max(1, min(int(active), self.n_levels))
        self.level_mask.zero_()
        self.level_mask[:active] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)  # (N,3) in [0,1]
        res = self.resolutions.to(unit.dtype)[:, None, None]  # (L,1,1)
        pos = unit[None] * res  # (L,N,3)
        base = torch.minimum(pos.detach().floor(), res - 1).to(torch.int64)
        frac = pos - base.to(pos.dtype)
        # All 8 cell corners at once: one gather, so backward makes one (not 8) dense table grad.
        corners = base[:, :, None, :] + self._corner_bits  # (L,N,8,3)
        stride = (self.resolutions + 1)[:, None, None]
        dense_index = corners[..., 0] + stride * (corners[..., 1] + stride * corners[..., 2])
        hashed = (corners[..., 0] * _PRIMES[0]) ^ (corners[..., 1] * _PRIMES[1]) ^ (corners[..., 2] * _PRIMES[2])
        index = torch.where(self.dense[:, None, None], dense_index, hashed) % self.sizes[:, None, None]
        index = index + self.offsets[:, None, None]
        bits = self._corner_bits.to(frac.dtype)  # (8,3)
        per_axis = frac[:, :, None, :] * bits + (1.0 - frac[:, :, None, :]) * (1.0 - bits)  # (L,N,8,3)
        weights = per_axis[..., 0] * per_axis[..., 1] * per_axis[..., 2]  # not prod(): cheap 2nd derivative
        out = (weights[..., None] * self.embeddings[index]).sum(dim=2)  # (L,N,F)
        out = out * self.level_mask[:, None, None]
        return out.permute(1, 0, 2).reshape(x.shape[0], self.out_dim)


def build_encoding(config: dict) -> nn.Module:
    """Build an encoding from its plain-dict config (as stored in checkpoints)."""
    config = dict(config)
    kind = config.pop("type", "none")
    builders = {
        "none": IdentityEncoding,
        "frequency": FrequencyEncoding,
        "fourier": FourierFeatures,
        "hashgrid": HashGridEncoding,
    }
    if kind not in builders:
        raise ValueError(f"unknown encoding type {kind!r} (known: {', '.join(builders)})")
    if kind == "hashgrid":
        config.pop("in_dim", None)
    return builders[kind](**config)
