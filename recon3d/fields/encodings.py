"""Input encodings for coordinate networks.

Each encoding maps (N, in_dim) points in the normalised cube [-1, 1]^3 to (N, out_dim) features:
- ``FrequencyEncoding``: NeRF's positional encoding [x, sin(2^k πx), cos(2^k πx)], k < L.
- ``FourierFeatures``: random Gaussian Fourier features (Tancik et al. 2020).
- ``HashGridEncoding``: instant-ngp's multiresolution hash grid, in plain torch (double backward
  supported), or on a GPU through fused Triton kernels (``recon3d.fields.hashgrid_triton``, opt-in);
  it gives its Jacobian ∂h/∂x directly (``forward_with_jacobian``) so that the eikonal term needs
  only first-order autograd.
- ``SphericalHarmonicsEncoding``: real spherical harmonics of unit directions (view directions of
  radiance fields), the basis of instant-ngp / tiny-cuda-nn.
"""

from __future__ import annotations

import copy
import math
import os

import torch
from torch import nn

from recon3d.device import triton_can_run

#: The hash grid runs through the Triton kernels wherever they can run (a CUDA device with Triton);
#: ``RECON3D_HASHGRID_KERNEL=torch`` keeps the torch path everywhere.
KERNEL_ENV = "RECON3D_HASHGRID_KERNEL"
_TABLE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


#: The project's default multiresolution hash grid per device, for every field that uses one: 16
#: levels up to 2048 cells and 2¹⁹ entries per level on a GPU (instant-ngp's); 12 levels up to 1024
#: and 2¹⁷ entries on a CPU, where every level costs time.
HASHGRID = {
    "cuda": {"type": "hashgrid", "n_levels": 16, "n_features": 2, "log2_table_size": 19,
             "base_resolution": 16, "max_resolution": 2048},
    "cpu": {"type": "hashgrid", "n_levels": 12, "n_features": 2, "log2_table_size": 17,
            "base_resolution": 16, "max_resolution": 1024},
}


def hashgrid_config(device_type: str) -> dict:
    """A copy of the default hash grid for a device type (``cuda``, else the CPU's)."""
    return copy.deepcopy(HASHGRID["cuda" if device_type == "cuda" else "cpu"])


_PRIMES = (1, 2654435761, 805459861)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding (Müller et al. 2022) over the cube [-1, 1]^3.

    Level l has resolution ⌊base·b^l⌋ with b chosen so the last level reaches ``max_resolution``.
    Coarse levels whose (res+1)^3 vertices fit in the table are indexed densely (no collisions);
    finer levels are hashed. Trilinear interpolation keeps the output differentiable in x, so the
    eikonal loss can backpropagate through ∇_x f. ``active_levels`` masks the finer levels for
    coarse-to-fine training (Neuralangelo); masked levels output zeros. ``table_dtype`` ("float16",
    "bfloat16") makes the GPU kernels read a half-precision copy of the table, as instant-ngp stores
    it; the parameter and its gradient stay float32, and the torch path ignores it.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, init_scale: float = 1e-4,
                 table_dtype: str = "float32") -> None:
        super().__init__()
        if table_dtype not in _TABLE_DTYPES:
            raise ValueError(f"table_dtype {table_dtype!r}: one of {', '.join(_TABLE_DTYPES)}")
        self.table_dtype = _TABLE_DTYPES[table_dtype]
        #: "auto": the Triton kernels wherever they can run; "torch": this module's own path (a one-shot
        #: evaluation in a fresh process, recon3d.mesh.from_field.cold_kernels).
        self.kernel = "auto"
        self._kernel_levels: tuple | None = None  # (device, LevelTable) for the Triton kernels
        self._read_copy = None
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
        # For forward(): per-axis scales of the dense index (1, s, s²; s = res+1), hash primes, mask.
        self._n_dense = sum(1 for r in resolutions if (r + 1) ** 3 <= table)
        scale = [[1, r + 1, (r + 1) ** 2] for r in resolutions]
        self.register_buffer("_dense_axis_scale", torch.tensor(scale, dtype=torch.int64), persistent=False)
        self.register_buffer("_primes", torch.tensor(_PRIMES, dtype=torch.int64), persistent=False)
        self.register_buffer("_bit_pair", torch.tensor([0, 1], dtype=torch.int64), persistent=False)
        self._hash_mask = table - 1  # tables are powers of two, so % table == & (table − 1)
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], n_features).uniform_(-init_scale, init_scale))

    def set_active_levels(self, active: int) -> None:
        """Zero out every level past the first ``active`` (coarse-to-fine schedule)."""
        active = max(1, min(int(active), self.n_levels))
        self.level_mask.zero_()
        self.level_mask[:active] = 1.0

    def _kernels(self, x: torch.Tensor):
        """The Triton module and this grid's level constants when the kernels serve ``x``, else None."""
        if (self.kernel == "torch" or os.environ.get(KERNEL_ENV, "triton") == "torch"
                or torch.are_deterministic_algorithms_enabled()):
            return None  # the kernels accumulate gradients with atomics: not bitwise reproducible
        if not triton_can_run(x):
            return None  # on the CPU Triton is not even imported (a third of a second)
        try:
            from recon3d.fields import hashgrid_triton
        except ImportError:  # pragma: no cover - Triton present but broken
            return None
        if not hashgrid_triton.available(x, self.n_features):
            return None
        key = (x.device, self.level_mask._version)
        if self._kernel_levels is None or self._kernel_levels[0] != key:
            levels = hashgrid_triton.LevelTable(self.resolutions, self.offsets, self.dense, self.level_mask,
                                                self._hash_mask)
            self._kernel_levels = (key, levels)
            self._read_copy = self._read_copy or hashgrid_triton.ReadCopy()
        return hashgrid_triton

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = self._kernels(x)
        if kernels is not None:
            return kernels.encode(x, self.embeddings, self._kernel_levels[1], self._read_copy, self.table_dtype)
        # Same values as the textbook formulation (tests/test_radiance.py compares with a reference
        # copy; forward bit-identical), about 2x faster: layout (N, L, …) so the output needs no
        # permute; the 8 corners are combined by broadcasting, so (N,L,8) tensors are only the index
        # and the weights (see _lookup for the index).
        n, n_levels = x.shape[0], self.n_levels
        index, frac = self._lookup(x)
        w = torch.stack((1.0 - frac, frac), dim=-1)  # (N,L,3,2)
        # (w0·w1)·w2 in this order: the same rounding as the per-corner product.
        weights = (w[:, :, 0, None, None, :] * w[:, :, 1, None, :, None]) * w[:, :, 2, :, None, None]
        weights = weights.reshape(n, n_levels, 8)
        table = self.embeddings
        rows = (table.index_select(0, index.view(-1)) if torch.is_grad_enabled() and table.requires_grad
                else _gather_rows(table, index.view(-1)))  # no autograd through the complex view
        features = rows.view(n, n_levels, 8, self.n_features)
        out = (weights[..., None] * features).sum(dim=2)  # (N,L,F)
        out = out * self.level_mask[:, None]
        return out.reshape(n, self.out_dim)

    def forward_with_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoding (N, D) and its Jacobian ∂h/∂x (N, D, 3), both differentiable in the embeddings.

        For the eikonal term: ∇ₓf = ∂f/∂h · ∂h/∂x computed this way needs only first-order autograd
        through the grid (the Jacobian is linear in the embeddings), where autograd's ∇ₓ with
        create_graph=True differentiates the whole interpolation twice. Not differentiable in x.
        Trilinear interpolation as three rounds of lerps, axis by axis: the derivative along an axis
        is the difference of the two sides instead of the lerp, so both come from the same partial sums.
        """
        kernels = self._kernels(x)
        if kernels is not None:
            out, jac = kernels.encode_with_jacobian(x, self.embeddings, self._kernel_levels[1], self._read_copy,
                                                    self.table_dtype)
            return out, jac
        n, n_levels, n_feat = x.shape[0], self.n_levels, self.n_features
        with torch.no_grad():
            index, frac = self._corner_lookup(x)
            # d unit / dx = 1/2 inside the cube and 0 where the coordinates are clamped.
            inside = ((x >= -1.0) & (x <= 1.0)).to(frac.dtype)  # (N,3)
            scale = 0.5 * self.resolutions.to(frac.dtype)[:, None] * inside[:, None, :]  # (N,L,3)
            scale = scale * self.level_mask[:, None]
            # Per axis, repeated over the features: every elementwise op below then runs over whole
            # contiguous (N,L,F) blocks (broadcasting a size-1 innermost dim is ~10x slower on a CPU).
            dtype = self.embeddings.dtype
            frac = frac.to(dtype).permute(2, 0, 1)[..., None].expand(3, n, n_levels, n_feat).contiguous()
            scale = scale.to(dtype).permute(2, 0, 1)[..., None].expand(3, n, n_levels, n_feat).contiguous()
        return _GridWithJacobian.apply(self.embeddings, index, frac, scale, self.level_mask)

    def _cell(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each point's cell at every level: its lower corner (N,L,3) as floats and the position in it (N,L,3)."""
        unit = ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)  # (N,3) in [0,1]
        res = self.resolutions.to(torch.float32)[:, None]  # (L,1)
        pos = unit[:, None, :] * res  # (N,L,3)
        base_f = torch.minimum(pos.detach().floor(), res - 1)
        return base_f, pos - base_f

    def _corner_lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``_lookup`` with the corners first: table rows (2,2,2,N,L) ordered (b2,b1,b0), and the
        position in the cell (N,L,3). The same rows; per-corner blocks keep forward_with_jacobian's
        arithmetic on contiguous (N,L,F) slices."""
        n, n_levels = x.shape[0], self.n_levels
        base_f, frac = self._cell(x)
        corner = base_f.to(torch.int64).permute(2, 0, 1)[:, None] + self._bit_pair[:, None, None]  # (3,2,N,L)
        n_dense = self._n_dense
        index = torch.empty(2, 2, 2, n, n_levels, dtype=torch.int64, device=x.device)  # (b2,b1,b0)
        if n_dense > 0:  # c0 + s·c1 + s²·c2 + offset, the offset folded into the small per-axis term
            axis = corner[..., :n_dense] * self._dense_axis_scale[:n_dense].T[:, None, None, :]
            axis[0] += self.offsets[:n_dense]
            pair = axis[2][:, None] + axis[1][None, :]
            torch.add(pair[:, :, None], axis[0][None, None], out=index[..., :n_dense])
        if n_dense < n_levels:  # ((c0·p0) ^ (c1·p1) ^ (c2·p2)) mod T + offset
            axis = (corner[..., n_dense:] * self._primes[:, None, None, None]) & self._hash_mask
            pair = axis[2][:, None] ^ axis[1][None, :]
            hashed = index[..., n_dense:]
            torch.bitwise_xor(pair[:, :, None], axis[0][None, None], out=hashed)
            hashed += self.offsets[n_dense:]
        return index, frac

    def _lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows of the 8 cell corners (N,L,8), ordered (b2,b1,b0), and the position in the cell (N,L,3).

        Only the two candidate coordinates per axis are scaled/hashed, (N,L,3,2), and combined by
        broadcasting; dense levels are a prefix (resolutions grow) and get their own combine (sum)
        instead of computing dense and hashed indices for every level and selecting one; hashes are
        reduced per axis, (a^b^c) & m = (a&m)^(b&m)^(c&m), tables being powers of two. index_select
        backward is index_add (scatter-add on CPU, atomics on CUDA), not advanced indexing's
        index_put(accumulate) (sort-based on CUDA); on CUDA it is bitwise reproducible only under
        torch.use_deterministic_algorithms(True). int64 indices: int32 ones made the CPU index_add 3x slower.
        """
        n, n_levels = x.shape[0], self.n_levels
        base_f, frac = self._cell(x)
        corner = base_f.to(torch.int64)[..., None] + self._bit_pair  # (N,L,3,2): coordinate of bit 0/1
        n_dense = self._n_dense
        index = torch.empty(n, n_levels, 2, 2, 2, dtype=torch.int64, device=x.device)  # (b2,b1,b0)
        if n_dense > 0:  # c0 + s·c1 + s²·c2 + offset, the offset folded into the small per-axis term
            axis = corner[:, :n_dense] * self._dense_axis_scale[:n_dense, :, None]
            axis[:, :, 0] += self.offsets[:n_dense, None]
            pair = axis[:, :, 2, :, None, None] + axis[:, :, 1, None, :, None]
            torch.add(pair, axis[:, :, 0, None, None, :], out=index[:, :n_dense])
        if n_dense < n_levels:  # ((c0·p0) ^ (c1·p1) ^ (c2·p2)) mod T + offset
            axis = (corner[:, n_dense:] * self._primes[:, None]) & self._hash_mask
            pair = axis[:, :, 2, :, None, None] ^ axis[:, :, 1, None, :, None]
            hashed = index[:, n_dense:]
            torch.bitwise_xor(pair, axis[:, :, 0, None, None, :], out=hashed)
            hashed += self.offsets[n_dense:, None, None, None]
        return index.view(n, n_levels, 8), frac


def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a (M, F) table and a flat index: (K, F). Pairs of float32 features are read as
    one complex64 each: index_select of single elements is ~8x faster on a CPU than of 2-element rows."""
    if table.device.type == "cpu" and table.shape[1] == 2 and table.dtype == torch.float32 and table.is_contiguous():
        return torch.view_as_real(table.view(torch.complex64).view(-1).index_select(0, index))
    return table.index_select(0, index)


def _scatter_rows(rows: int, index: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """A (rows, F) zero table with source (K, F) added at index (K,): index_select's backward, ~2x
    faster on a CPU for float32 pairs as complex64 (the same additions in the same order)."""
    source = source.contiguous()
    if source.device.type == "cpu" and source.shape[1] == 2 and source.dtype == torch.float32:
        out = torch.zeros(rows, dtype=torch.complex64, device=source.device)
        out.index_add_(0, index, source.view(torch.complex64).view(-1))
        return torch.view_as_real(out)
    return torch.zeros(rows, source.shape[1], dtype=source.dtype, device=source.device).index_add_(0, index, source)


class _GridWithJacobian(torch.autograd.Function):
    """The hash grid's values (N, L·F) and Jacobian ∂h/∂x (N, L·F, 3) from the corners' table rows
    (2,2,2,N,L), the position in the cell t (3,N,L,F) and dunit/dx·res (3,N,L,F); differentiable in
    the table only, with a closed-form backward.

    Both outputs are linear in the 8 corner features: value = Σ_c w_c f_c and ∂/∂t_a = Σ_c ∂w_c/∂t_a f_c,
    w_c = Π_a u_a(b_a), u(0) = 1 − t, u(1) = t. Autograd through the lerps would record ~30 ops whose
    slice backwards each zero-fill and copy a full (N,L,8,F) tensor; here each corner's gradient is
    built axis by axis, once, and added into the table once. Everything is laid out corners first,
    (2,2,2,N,L,F), so that each op runs over contiguous (N,L,F) blocks.
    """

    @staticmethod
    def forward(ctx, embeddings, index, t, scale, level_mask):  # noqa: D102 - see the class
        n, n_levels, n_feat = t.shape[1:]
        feat = _gather_rows(embeddings, index.view(-1)).view(2, 2, 2, n, n_levels, n_feat)  # b2,b1,b0
        t0, t1, t2 = t
        # Trilinear interpolation as three rounds of lerps, axis by axis: the derivative along an axis
        # is the difference of the two sides instead of the lerp, so both come from the same partial sums.
        # Axis 0 (b0): four edges of the cell.
        d0 = feat[:, :, 1] - feat[:, :, 0]  # (2,2,N,L,F): b2,b1
        a = feat[:, :, 0] + t0 * d0
        # Axis 1 (b1): two faces.
        d1 = a[:, 1] - a[:, 0]  # (2,N,L,F): b2
        b = a[:, 0] + t1 * d1
        e0 = d0[:, 0] + t1 * (d0[:, 1] - d0[:, 0])
        # Axis 2 (b2): the point.
        d2 = b[1] - b[0]  # (N,L,F)
        out = (b[0] + t2 * d2) * level_mask[:, None]
        g0 = e0[0] + t2 * (e0[1] - e0[0])
        g1 = d1[0] + t2 * (d1[1] - d1[0])
        jac = torch.stack((g0 * scale[0], g1 * scale[1], d2 * scale[2]), dim=-1)  # (N,L,F,3)
        ctx.save_for_backward(index, t, scale, level_mask)
        ctx.table_rows = embeddings.shape[0]
        return out.reshape(n, n_levels * n_feat), jac.reshape(n, n_levels * n_feat, 3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_jac):  # noqa: D102 - see the class
        index, t, scale, level_mask = ctx.saved_tensors
        n, n_levels, n_feat = t.shape[1:]
        grad_out = grad_out.view(n, n_levels, n_feat) * level_mask[:, None]
        grad_t = grad_jac.view(n, n_levels, n_feat, 3).permute(3, 0, 1, 2) * scale  # ∂loss/∂(∂h/∂t_a), (3,N,L,F)
        u = torch.stack((1.0 - t, t), dim=1)  # (3,2,N,L,F): u_a(b)
        v = torch.tensor([-1.0, 1.0], dtype=t.dtype, device=t.device).view(2, 1, 1, 1)  # ∂u/∂t
        # Coefficients of the corner weights' factors, axis 2 first: the value's and ∂/∂t2's terms share
        # u1·u0, ∂/∂t1's is on v1·u0 and ∂/∂t0's on u1·v0.
        p = grad_out * u[2] + grad_t[2] * v  # (2,N,L,F): b2
        q = grad_t[1] * u[2]
        r = grad_t[0] * u[2]
        s = p[:, None] * u[1] + q[:, None] * v  # (2,2,N,L,F): b2,b1
        r = r[:, None] * u[1]
        corners = s[:, :, None] * u[0] + r[:, :, None] * v  # (2,2,2,N,L,F)
        table = _scatter_rows(ctx.table_rows, index.view(-1), corners.view(-1, n_feat))
        return table, None, None, None, None


class SphericalHarmonicsEncoding(nn.Module):
    """Real spherical harmonics Y_lm(d), l < ``degree``, of unit vectors: degree² outputs.

    Orthonormal on the sphere (∫ Y_i Y_j dω = δ_ij), with tiny-cuda-nn's constants, signs and order
    (l = 0, then m = −l … l per band), so ``degree=4`` is instant-ngp's 16-value view encoding. A
    smooth, bounded basis of directions: a colour MLP on it extrapolates more gently to unseen views
    than on sin/cos of growing frequency. Inputs are used as given: pass unit vectors.
    """

    MAX_DEGREE = 4

    def __init__(self, in_dim: int = 3, degree: int = 4) -> None:
        super().__init__()
        if in_dim != 3 or not 1 <= degree <= self.MAX_DEGREE:
            raise ValueError(f"spherical harmonics need in_dim 3 and degree 1..{self.MAX_DEGREE}")
        self.degree = degree
        self.out_dim = degree**2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.float()  # polynomials of degree 3: keep them out of bf16 under autocast
        x, y, z = d.unbind(-1)
        out = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
        if self.degree > 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out += [1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
                    -1.0925484305920792 * xz, 0.54627421529603959 * (xx - yy)]
        if self.degree > 3:
            out += [0.59004358992664352 * y * (yy - 3.0 * xx), 2.8906114426405538 * xy * z,
                    0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
                    0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
                    0.59004358992664352 * x * (3.0 * yy - xx)]
        return torch.stack(out, dim=-1)


def build_encoding(config: dict) -> nn.Module:
    """Build an encoding from its plain-dict config (as stored in checkpoints)."""
    config = dict(config)
    kind = config.pop("type", "none")
    builders = {
        "none": IdentityEncoding,
        "frequency": FrequencyEncoding,
        "fourier": FourierFeatures,
        "hashgrid": HashGridEncoding,
        "sh": SphericalHarmonicsEncoding,
    }
    if kind not in builders:
        raise ValueError(f"unknown encoding type {kind!r} (known: {', '.join(builders)})")
    if kind == "hashgrid":
        config.pop("in_dim", None)
    return builders[kind](**config)
