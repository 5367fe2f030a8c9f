"""Fused Triton kernels for the multiresolution hash encoding (Müller et al. 2022) on a GPU.

The plain-torch encoding (:class:`recon3d.fields.encodings.HashGridEncoding`) materialises (N, L, 8)
index and weight tensors and gathers (N, L, 8, F) features, then scatters gradients through
autograd: several times the bytes the operation needs. These kernels compute, per point and level,
the 8 corner rows, the trilinear weights and their derivatives in registers, and read or write only
x, the table rows and the outputs:

- :func:`encode`: h(x) (N, L·F), differentiable in the table and in x (the backward of x uses the
  interpolation's Jacobian; first order only: losses on ∇ₓf use :func:`encode_with_jacobian`);
- :func:`encode_with_jacobian`: h(x) and ∂h/∂x (N, L·F, 3), both differentiable in the table (the
  eikonal term of IGR / NeuS), x not differentiable.

Gradients of the table are accumulated in fp32 with atomics. The table may be read in fp16 or bf16
(``table_dtype``; instant-ngp stores its table in half precision) while the parameter and its
gradient stay fp32. Same conventions as the torch encoding (corner order, clamping to the cube, dense
coarse levels, the per-axis hash of instant-ngp), which is the reference the tests compare against.
Importing this module needs Triton; :func:`available` says whether it can run for a tensor.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from recon3d.device import triton_can_run, triton_interpreting

try:  # Triton ships with CUDA builds of torch; the CPU build runs the torch encoding instead
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

#: Whether this process has run the kernels (then their start-up is paid: Triton's cache key, loading).
launched = False

#: Points per program. Each program walks every level for its points, so x is read once and ∂/∂x
#: is summed over levels in registers.
BLOCK = 128


def available(x: torch.Tensor, n_features: int) -> bool:
    """Whether the kernels can encode ``x``: Triton installed, x on a CUDA device (or Triton's CPU
    interpreter switched on, for tests), and a power-of-two feature count."""
    if triton is None or n_features & (n_features - 1):
        return False
    return triton_can_run(x)


if triton is not None:

    @triton.jit
    def _corner_rows(c0, c1, c2, b0: tl.constexpr, b1: tl.constexpr, b2: tl.constexpr, side, dense, offset,
                     hash_mask):
        """Table rows of corner (b0, b1, b2) of cells with lower corner (c0, c1, c2) at one level."""
        k0, k1, k2 = c0 + b0, c1 + b1, c2 + b2
        dense_row = k0 + side * (k1 + side * k2)
        hashed = ((k0.to(tl.uint32) * 1) ^ (k1.to(tl.uint32) * 2654435761) ^ (k2.to(tl.uint32) * 805459861))
        hashed = (hashed & hash_mask).to(tl.int64)
        return tl.where(dense != 0, dense_row.to(tl.int64), hashed) + offset

    @triton.jit
    def _unit(x_ptr, rows64, axis: tl.constexpr, valid):
        """One coordinate of the points mapped from [-1, 1] to [0, 1] (clamped), and 1.0 where it lies
        inside the cube (∂h/∂x is 0 outside)."""
        x = tl.load(x_ptr + rows64 * 3 + axis, mask=valid, other=0.0).to(tl.float32)
        return tl.minimum(tl.maximum((x + 1.0) * 0.5, 0.0), 1.0), ((x >= -1.0) & (x <= 1.0)).to(tl.float32)

    @triton.jit
    def _cell(unit, res):
        """Lower cell corner (int32) and position in the cell of unit coordinates at resolution res."""
        pos = unit * res
        base = tl.minimum(tl.floor(pos), res - 1.0)
        return base.to(tl.int32), pos - base

    @triton.jit
    def _add_row(target, values, F: tl.constexpr):
        """Adds each point's F = 2 or 4 gradient values to its table row with one vector reduction
        (``red.global.add.v2/v4.f32``, sm_90) instead of F scalar atomics. Rows of points past the end get
        zeros (their gradient was loaded as 0), so no mask is needed."""
        target = target.to(tl.int64)  # the address as an integer: older Triton refuses pointer operands here
        if F == 2:
            a, b = tl.split(values)
            tl.inline_asm_elementwise("red.relaxed.gpu.global.add.v2.f32 [$1], {$2, $3};\n\tmov.u32 $0, 0;",
                                      "=r,l,f,f", [target, a, b], dtype=tl.int32, is_pure=False, pack=1)
        else:
            pairs = tl.reshape(values, (values.shape[0], 2, 2))
            low, high = tl.split(pairs)
            a, b = tl.split(low)
            c, d = tl.split(high)
            tl.inline_asm_elementwise(
                "red.relaxed.gpu.global.add.v4.f32 [$1], {$2, $3, $4, $5};\n\tmov.u32 $0, 0;",
                "=r,l,f,f,f,f", [target, a, c, b, d], dtype=tl.int32, is_pure=False, pack=1)

    @triton.jit
    def _encode_kernel(x_ptr, table_ptr, res_ptr, offset_ptr, dense_ptr, mask_ptr, out_ptr, jac_ptr, n_points,
                       hash_mask, N_LEVELS: tl.constexpr, F: tl.constexpr, WITH_JAC: tl.constexpr,
                       BLOCK_N: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        valid = rows < n_points
        feats = tl.arange(0, F)
        rows64 = rows.to(tl.int64)
        u0, in0 = _unit(x_ptr, rows64, 0, valid)
        u1, in1 = _unit(x_ptr, rows64, 1, valid)
        u2, in2 = _unit(x_ptr, rows64, 2, valid)
        width = N_LEVELS * F
        for level in range(N_LEVELS):
            res = tl.load(res_ptr + level)
            offset = tl.load(offset_ptr + level)
            dense = tl.load(dense_ptr + level)
            level_mask = tl.load(mask_ptr + level)
            side = res.to(tl.int32) + 1
            c0, t0 = _cell(u0, res)
            c1, t1 = _cell(u1, res)
            c2, t2 = _cell(u2, res)
            acc = tl.zeros((BLOCK_N, F), dtype=tl.float32)
            g0 = tl.zeros((BLOCK_N, F), dtype=tl.float32)
            g1 = tl.zeros((BLOCK_N, F), dtype=tl.float32)
            g2 = tl.zeros((BLOCK_N, F), dtype=tl.float32)
            for corner in tl.static_range(8):
                b0 = corner & 1
                b1 = (corner >> 1) & 1
                b2 = (corner >> 2) & 1
                w0 = t0 if b0 else 1.0 - t0
                w1 = t1 if b1 else 1.0 - t1
                w2 = t2 if b2 else 1.0 - t2
                row = _corner_rows(c0, c1, c2, b0, b1, b2, side, dense, offset, hash_mask)
                feat = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=valid[:, None],
                               other=0.0).to(tl.float32)
                acc += ((w0 * w1) * w2)[:, None] * feat
                if WITH_JAC:
                    s0 = 1.0 if b0 else -1.0
                    s1 = 1.0 if b1 else -1.0
                    s2 = 1.0 if b2 else -1.0
                    g0 += (s0 * w1 * w2)[:, None] * feat
                    g1 += (w0 * s1 * w2)[:, None] * feat
                    g2 += (w0 * w1 * s2)[:, None] * feat
            out_cols = level * F + feats
            tl.store(out_ptr + rows64[:, None] * width + out_cols[None, :], acc * level_mask, mask=valid[:, None])
            if WITH_JAC:
                scale = 0.5 * res * level_mask
                base = (rows64[:, None] * width + out_cols[None, :]) * 3
                tl.store(jac_ptr + base + 0, g0 * (scale * in0)[:, None], mask=valid[:, None])
                tl.store(jac_ptr + base + 1, g1 * (scale * in1)[:, None], mask=valid[:, None])
                tl.store(jac_ptr + base + 2, g2 * (scale * in2)[:, None], mask=valid[:, None])

    @triton.jit
    def _backward_kernel(x_ptr, table_ptr, res_ptr, offset_ptr, dense_ptr, mask_ptr, grad_out_ptr, grad_jac_ptr,
                         grad_table_ptr, grad_x_ptr, n_points, hash_mask, N_LEVELS: tl.constexpr, F: tl.constexpr,
                         WITH_JAC: tl.constexpr, NEED_X: tl.constexpr, VECTOR_ADD: tl.constexpr,
                         BLOCK_N: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        valid = rows < n_points
        feats = tl.arange(0, F)
        rows64 = rows.to(tl.int64)
        u0, in0 = _unit(x_ptr, rows64, 0, valid)
        u1, in1 = _unit(x_ptr, rows64, 1, valid)
        u2, in2 = _unit(x_ptr, rows64, 2, valid)
        dx0 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        dx1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        dx2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        width = N_LEVELS * F
        for level in range(N_LEVELS):
            res = tl.load(res_ptr + level)
            offset = tl.load(offset_ptr + level)
            dense = tl.load(dense_ptr + level)
            level_mask = tl.load(mask_ptr + level)
            side = res.to(tl.int32) + 1
            c0, t0 = _cell(u0, res)
            c1, t1 = _cell(u1, res)
            c2, t2 = _cell(u2, res)
            cols = rows64[:, None] * width + (level * F + feats)[None, :]
            grad = tl.load(grad_out_ptr + cols, mask=valid[:, None], other=0.0).to(tl.float32) * level_mask
            scale = 0.5 * res * level_mask
            if WITH_JAC:
                gj0 = tl.load(grad_jac_ptr + cols * 3 + 0, mask=valid[:, None], other=0.0).to(tl.float32)
                gj1 = tl.load(grad_jac_ptr + cols * 3 + 1, mask=valid[:, None], other=0.0).to(tl.float32)
                gj2 = tl.load(grad_jac_ptr + cols * 3 + 2, mask=valid[:, None], other=0.0).to(tl.float32)
                gj0 = gj0 * (scale * in0)[:, None]
                gj1 = gj1 * (scale * in1)[:, None]
                gj2 = gj2 * (scale * in2)[:, None]
            for corner in tl.static_range(8):
                b0 = corner & 1
                b1 = (corner >> 1) & 1
                b2 = (corner >> 2) & 1
                w0 = t0 if b0 else 1.0 - t0
                w1 = t1 if b1 else 1.0 - t1
                w2 = t2 if b2 else 1.0 - t2
                s0 = 1.0 if b0 else -1.0
                s1 = 1.0 if b1 else -1.0
                s2 = 1.0 if b2 else -1.0
                row = _corner_rows(c0, c1, c2, b0, b1, b2, side, dense, offset, hash_mask)
                contribution = ((w0 * w1) * w2)[:, None] * grad
                if WITH_JAC:
                    contribution += (s0 * w1 * w2)[:, None] * gj0
                    contribution += (w0 * s1 * w2)[:, None] * gj1
                    contribution += (w0 * w1 * s2)[:, None] * gj2
                if VECTOR_ADD:
                    _add_row(grad_table_ptr + row * F, contribution, F)
                else:
                    target = grad_table_ptr + row[:, None] * F + feats[None, :]
                    tl.atomic_add(target, contribution, mask=valid[:, None], sem="relaxed")
                if NEED_X:
                    feat = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=valid[:, None],
                                   other=0.0).to(tl.float32)
                    along = (0.5 * res) * tl.sum(grad * feat, axis=1)
                    dx0 += s0 * w1 * w2 * along
                    dx1 += w0 * s1 * w2 * along
                    dx2 += w0 * w1 * s2 * along
        if NEED_X:
            tl.store(grad_x_ptr + rows64 * 3 + 0, dx0 * in0, mask=valid)
            tl.store(grad_x_ptr + rows64 * 3 + 1, dx1 * in1, mask=valid)
            tl.store(grad_x_ptr + rows64 * 3 + 2, dx2 * in2, mask=valid)


class LevelTable:
    """The per-level constants the kernels read: resolution (float32), table offset (int64), dense flag
    (int32) and level mask (float32), each (L,), plus the hash mask (table size − 1)."""

    def __init__(self, resolutions: torch.Tensor, offsets: torch.Tensor, dense: torch.Tensor,
                 level_mask: torch.Tensor, hash_mask: int) -> None:
        self.resolutions = resolutions.to(torch.float32).contiguous()
        self.offsets = offsets.to(torch.int64).contiguous()
        self.dense = dense.to(torch.int32).contiguous()
        self.level_mask = level_mask.to(torch.float32).contiguous()
        self.hash_mask = int(hash_mask)
        self.n_levels = int(self.resolutions.numel())

    def args(self) -> tuple[torch.Tensor, ...]:
        return self.resolutions, self.offsets, self.dense, self.level_mask


def vector_add(device: torch.device, n_features: int) -> bool:
    """Whether the backward adds a row's 2 or 4 features with one vector reduction: an sm_90 GPU (Hopper),
    not Triton's CPU interpreter (no inline assembly there), unless ``RECON3D_VECTOR_ATOMICS=0``."""
    if n_features not in (2, 4) or device.type != "cuda" or os.environ.get("RECON3D_VECTOR_ATOMICS") == "0":
        return False
    return not triton_interpreting() and torch.cuda.get_device_capability(device)[0] >= 9


def _grid(n_points: int) -> tuple[int]:
    return (triton.cdiv(n_points, BLOCK),)


def _launch_encode(x: torch.Tensor, table: torch.Tensor, levels: LevelTable,
                   with_jacobian: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    n, n_features = x.shape[0], table.shape[1]
    width = levels.n_levels * n_features
    out = torch.empty((n, width), dtype=torch.float32, device=x.device)
    jac = torch.empty((n, width, 3), dtype=torch.float32, device=x.device) if with_jacobian else out
    if n > 0:
        _encode_kernel[_grid(n)](x, table, *levels.args(), out, jac, n, levels.hash_mask, N_LEVELS=levels.n_levels,
                                 F=n_features, WITH_JAC=with_jacobian, BLOCK_N=BLOCK)
    return out, (jac if with_jacobian else None)


def _launch_backward(x: torch.Tensor, table: torch.Tensor, levels: LevelTable, grad_out: torch.Tensor,
                     grad_jac: torch.Tensor | None, n_rows: int,
                     need_x: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    n, n_features = x.shape[0], table.shape[1]
    grad_table = torch.zeros((n_rows, n_features), dtype=torch.float32, device=x.device)
    grad_x = torch.empty((n, 3), dtype=torch.float32, device=x.device) if need_x else grad_table
    with_jac = grad_jac is not None
    if n > 0:
        _backward_kernel[_grid(n)](x, table, *levels.args(), grad_out.contiguous(),
                                   grad_jac.contiguous() if with_jac else grad_out, grad_table, grad_x, n,
                                   levels.hash_mask, N_LEVELS=levels.n_levels, F=n_features, WITH_JAC=with_jac,
                                   NEED_X=need_x, VECTOR_ADD=vector_add(x.device, n_features), BLOCK_N=BLOCK)
    return grad_table, (grad_x if need_x else None)


class _Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, table: torch.Tensor, read_table: torch.Tensor,
                levels: LevelTable) -> torch.Tensor:
        x = x.detach().float().contiguous()
        out, _ = _launch_encode(x, read_table, levels, with_jacobian=False)
        ctx.save_for_backward(x, read_table)
        ctx.levels, ctx.n_rows = levels, table.shape[0]
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, read_table = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        grad_table, grad_x = _launch_backward(x, read_table, ctx.levels, grad_out.float(), None, ctx.n_rows, need_x)
        return grad_x, grad_table if ctx.needs_input_grad[1] else None, None, None


class _EncodeWithJacobian(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, table: torch.Tensor, read_table: torch.Tensor,
                levels: LevelTable) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().float().contiguous()
        out, jac = _launch_encode(x, read_table, levels, with_jacobian=True)
        ctx.save_for_backward(x, read_table)
        ctx.levels, ctx.n_rows = levels, table.shape[0]
        return out, jac

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, grad_jac: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, read_table = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        if grad_out is None:
            grad_out = torch.zeros((x.shape[0], ctx.levels.n_levels * read_table.shape[1]), device=x.device)
        grad_jac = None if grad_jac is None else grad_jac.float()
        grad_table, _ = _launch_backward(x, read_table, ctx.levels, grad_out.float(), grad_jac, ctx.n_rows, False)
        return None, grad_table, None, None


class ReadCopy:
    """The table as the kernels read it: the fp32 parameter itself, or a half-precision copy remade
    only when the parameter changed (its version counter moves at every optimiser step)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.copy: torch.Tensor | None = None

    def __call__(self, table: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype == table.dtype:
            return table.detach().contiguous()
        key = (table.data_ptr(), table._version, dtype)
        if key != self.key or self.copy is None:
            self.copy, self.key = table.detach().to(dtype).contiguous(), key
        return self.copy


def encode(x: torch.Tensor, table: torch.Tensor, levels: LevelTable, read_copy: ReadCopy,
           table_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """h(x): (N, 3) points in [-1, 1]³ -> (N, L·F) float32, differentiable in ``table`` (T, F) and x."""
    global launched
    launched = True
    return _Encode.apply(x, table, read_copy(table, table_dtype), levels)


def encode_with_jacobian(x: torch.Tensor, table: torch.Tensor, levels: LevelTable, read_copy: ReadCopy,
                         table_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """h(x) (N, L·F) and ∂h/∂x (N, L·F, 3), float32, differentiable in ``table``; x is not."""
    global launched
    launched = True
    return _EncodeWithJacobian.apply(x, table, read_copy(table, table_dtype), levels)
