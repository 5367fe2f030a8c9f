"""A small ReLU MLP in one Triton kernel each way (a "fully fused" MLP, as tiny-cuda-nn's: Müller et al.
2021, "Real-time Neural Radiance Caching for Path Tracing").

torch runs a 64-wide MLP as one GEMM per layer with every activation written to and read back from
GPU memory, plus ReLU and bias-gradient kernels: at instant-ngp's widths the layers are bound by those
bytes, not by arithmetic. Here each program keeps a block of rows in registers through every layer:

- forward: y = W_L(… ReLU(W_1 x + b_1) …) + b_L reads x and writes y only;
- backward: recomputes the activations, then the gradients of every weight and bias (accumulated per
  program over its blocks of rows, summed over programs after) and, when asked, of x.

Shapes: x (N, in) float32 → y (N, out) float32; 1 or 2 hidden layers of one width; in, hidden and out
at most :data:`MAX_WIDTH` (padded to powers of two ≥ 16 inside the kernel). The products use TF32
tensor cores (Triton's default for float32 ``tl.dot``), or bfloat16 operands with :data:`HALF`; sums are
float32. First order only (the backward is not itself
differentiable). :func:`supported` says whether a given MLP and input can run here; the torch layers
stay the CPU path and the reference in tests.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from recon3d.device import triton_can_run

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

#: Widest layer the kernels take (registers hold a block of rows at this width).
MAX_WIDTH = 128
#: Rows per block.
BLOCK_M = 64
#: Products with bfloat16 operands (float32 sums) instead of TF32: ``RECON3D_MLP_OPERANDS=bf16``.
HALF = os.environ.get("RECON3D_MLP_OPERANDS", "tf32") == "bf16"
#: Warps of a forward program.
FORWARD_WARPS = 4
#: Warps of a backward program (its per-block activations and gradient sums share the registers).
BACKWARD_WARPS = 4
#: Backward programs per streaming multiprocessor (each accumulates the weight gradients of many blocks).
PROGRAMS_PER_SM = 4
#: ``RECON3D_MLP_KERNEL=torch`` keeps the torch layers on a GPU too.
KERNEL_ENV = "RECON3D_MLP_KERNEL"


def supported(x: torch.Tensor, layers: list[torch.nn.Linear]) -> bool:
    """Whether the fused kernels can run these layers on ``x``: Triton installed, x float32 on a CUDA
    device (or Triton's CPU interpreter on, for tests), no autocast, 2 or 3 layers with biases, the hidden
    ones of one width, every width ≤ :data:`MAX_WIDTH`."""
    if triton is None or os.environ.get(KERNEL_ENV) == "torch" or x.dtype != torch.float32:
        return False
    if not triton_can_run(x):
        return False
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        return False
    if len(layers) not in (2, 3) or any(layer.bias is None for layer in layers):
        return False
    hidden = {layer.out_features for layer in layers[:-1]} | {layer.in_features for layer in layers[1:]}
    widths = [layers[0].in_features, layers[-1].out_features, *hidden]
    return len(hidden) == 1 and max(widths) <= MAX_WIDTH and all(p.dtype == torch.float32 for p in _params(layers))


def _params(layers: list[torch.nn.Linear]) -> list[torch.Tensor]:
    return [t for layer in layers for t in (layer.weight, layer.bias)]


def _padded(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))


if triton is not None:

    @triton.jit
    def _weight_t(w_ptr, n_in, n_out, IN: tl.constexpr, OUT: tl.constexpr):
        """Wᵀ (IN, OUT) of a torch Linear weight W (n_out, n_in), zero-padded."""
        i = tl.arange(0, IN)
        o = tl.arange(0, OUT)
        return tl.load(w_ptr + o[None, :] * n_in + i[:, None], mask=(i[:, None] < n_in) & (o[None, :] < n_out),
                       other=0.0)

    @triton.jit
    def _mm(a, b, HALF: tl.constexpr):
        """a @ b with float32 sums: TF32 products, or bfloat16 operands where HALF."""
        if HALF:
            return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
        return tl.dot(a, b)

    @triton.jit
    def _bias(b_ptr, n, SIZE: tl.constexpr):
        o = tl.arange(0, SIZE)
        return tl.load(b_ptr + o, mask=o < n, other=0.0)

    @triton.jit
    def _mlp_forward_kernel(x_ptr, w0, b0, w1, b1, w2, b2, y_ptr, n_rows, n_in, n_hidden, n_out,
                        IN: tl.constexpr, HID: tl.constexpr, OUT: tl.constexpr, THREE: tl.constexpr,
                        HALF: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = rows < n_rows
        rows64 = rows.to(tl.int64)
        cin = tl.arange(0, IN)
        cout = tl.arange(0, OUT)
        x = tl.load(x_ptr + rows64[:, None] * n_in + cin[None, :], mask=valid[:, None] & (cin[None, :] < n_in),
                    other=0.0)
        h = tl.maximum(_mm(x, _weight_t(w0, n_in, n_hidden, IN, HID), HALF) + _bias(b0, n_hidden, HID)[None, :], 0.0)
        if THREE:
            h = tl.maximum(_mm(h, _weight_t(w1, n_hidden, n_hidden, HID, HID), HALF)
                           + _bias(b1, n_hidden, HID)[None, :], 0.0)
            y = _mm(h, _weight_t(w2, n_hidden, n_out, HID, OUT), HALF) + _bias(b2, n_out, OUT)[None, :]
        else:
            y = _mm(h, _weight_t(w1, n_hidden, n_out, HID, OUT), HALF) + _bias(b1, n_out, OUT)[None, :]
        tl.store(y_ptr + rows64[:, None] * n_out + cout[None, :], y, mask=valid[:, None] & (cout[None, :] < n_out))

    @triton.jit
    def _store_partial(ptr, grad_t, n_in, n_out, IN: tl.constexpr, OUT: tl.constexpr):
        """Writes a gradient held transposed (IN, OUT) in the torch weight's (n_out, n_in) layout."""
        i = tl.arange(0, IN)
        o = tl.arange(0, OUT)
        tl.store(ptr + o[None, :] * n_in + i[:, None], grad_t, mask=(i[:, None] < n_in) & (o[None, :] < n_out))

    @triton.jit
    def _mlp_backward_kernel(x_ptr, w0, b0, w1, b1, w2, b2, gy_ptr, gx_ptr, partial_ptr, n_rows, n_in, n_hidden,
                         n_out, n_blocks, partial_width, IN: tl.constexpr, HID: tl.constexpr, OUT: tl.constexpr,
                         THREE: tl.constexpr, NEED_X: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        cin = tl.arange(0, IN)
        chid = tl.arange(0, HID)
        cout = tl.arange(0, OUT)
        g_w0 = tl.zeros((IN, HID), dtype=tl.float32)
        g_b0 = tl.zeros((HID,), dtype=tl.float32)
        g_w1 = tl.zeros((HID, HID), dtype=tl.float32)
        g_b1 = tl.zeros((HID,), dtype=tl.float32)
        g_wl = tl.zeros((HID, OUT), dtype=tl.float32)
        g_bl = tl.zeros((OUT,), dtype=tl.float32)
        for block in range(pid, n_blocks, tl.num_programs(0)):
            rows = block * BLOCK + tl.arange(0, BLOCK)
            valid = rows < n_rows
            rows64 = rows.to(tl.int64)
            # The weights are read again for every block (from L2): held across the loop beside the
            # gradient sums, they would not fit in registers.
            w0t = _weight_t(w0, n_in, n_hidden, IN, HID)
            x = tl.load(x_ptr + rows64[:, None] * n_in + cin[None, :], mask=valid[:, None] & (cin[None, :] < n_in),
                        other=0.0)
            h0 = tl.maximum(_mm(x, w0t, HALF) + _bias(b0, n_hidden, HID)[None, :], 0.0)
            gy = tl.load(gy_ptr + rows64[:, None] * n_out + cout[None, :],
                         mask=valid[:, None] & (cout[None, :] < n_out), other=0.0)
            g_bl += tl.sum(gy, axis=0)
            if THREE:
                w1t = _weight_t(w1, n_hidden, n_hidden, HID, HID)
                wlt = _weight_t(w2, n_hidden, n_out, HID, OUT)
                h1 = tl.maximum(_mm(h0, w1t, HALF) + _bias(b1, n_hidden, HID)[None, :], 0.0)
                g_wl += _mm(tl.trans(h1), gy, HALF)
                g = tl.where(h1 > 0.0, _mm(gy, tl.trans(wlt), HALF), 0.0)
                g_w1 += _mm(tl.trans(h0), g, HALF)
                g_b1 += tl.sum(g, axis=0)
                g = tl.where(h0 > 0.0, _mm(g, tl.trans(w1t), HALF), 0.0)
            else:
                wlt = _weight_t(w1, n_hidden, n_out, HID, OUT)
                g_wl += _mm(tl.trans(h0), gy, HALF)
                g = tl.where(h0 > 0.0, _mm(gy, tl.trans(wlt), HALF), 0.0)
            g_w0 += _mm(tl.trans(x), g, HALF)
            g_b0 += tl.sum(g, axis=0)
            if NEED_X:
                gx = _mm(g, tl.trans(w0t), HALF)
                tl.store(gx_ptr + rows64[:, None] * n_in + cin[None, :], gx,
                         mask=valid[:, None] & (cin[None, :] < n_in))
        # This program's partial sums, in the order of _params: w0, b0, (w1, b1,) w_last, b_last.
        out = partial_ptr + pid.to(tl.int64) * partial_width
        _store_partial(out, g_w0, n_in, n_hidden, IN, HID)
        out += n_in * n_hidden
        tl.store(out + chid, g_b0, mask=chid < n_hidden)
        out += n_hidden
        if THREE:
            _store_partial(out, g_w1, n_hidden, n_hidden, HID, HID)
            out += n_hidden * n_hidden
            tl.store(out + chid, g_b1, mask=chid < n_hidden)
            out += n_hidden
        _store_partial(out, g_wl, n_hidden, n_out, HID, OUT)
        out += n_hidden * n_out
        tl.store(out + cout, g_bl, mask=cout < n_out)


def _shape(x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    n_in, n_hidden, n_out = params[0].shape[1], params[0].shape[0], params[-1].shape[0]
    return {"n_in": n_in, "n_hidden": n_hidden, "n_out": n_out, "IN": _padded(n_in), "HID": _padded(n_hidden),
            "OUT": _padded(n_out), "THREE": len(params) == 6}


def _weights(params: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """w0, b0, w1, b1, w2, b2 for the kernels (the two-layer MLP passes its last layer twice)."""
    flat = [p.contiguous() for p in params]
    return flat if len(flat) == 6 else flat + flat[2:4]


def _programs(device: torch.device, n_blocks: int) -> int:
    if device.type != "cuda":
        return max(1, min(n_blocks, 2))
    return max(1, min(n_blocks, PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count))


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        shape = _shape(x, params)
        y = torch.empty((x.shape[0], shape["n_out"]), dtype=torch.float32, device=x.device)
        if x.shape[0] > 0:
            grid = (triton.cdiv(x.shape[0], BLOCK_M),)
            _mlp_forward_kernel[grid](x, *_weights(params), y, x.shape[0], shape["n_in"], shape["n_hidden"],
                                      shape["n_out"], IN=shape["IN"], HID=shape["HID"], OUT=shape["OUT"],
                                      THREE=shape["THREE"], HALF=HALF, BLOCK=BLOCK_M, num_warps=FORWARD_WARPS)
        ctx.save_for_backward(x, *params)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, *params = ctx.saved_tensors
        shape = _shape(x, tuple(params))
        n = x.shape[0]
        need_x = ctx.needs_input_grad[0]
        sizes = [p.numel() for p in params]
        n_blocks = triton.cdiv(n, BLOCK_M)
        programs = _programs(x.device, n_blocks)
        partial = torch.empty((programs, sum(sizes)), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if need_x else x
        if n > 0:
            weights = _weights(tuple(params))
            _mlp_backward_kernel[(programs,)](x, *weights, grad_y.float().contiguous(), grad_x, partial, n,
                                              shape["n_in"], shape["n_hidden"], shape["n_out"], n_blocks, sum(sizes),
                                              IN=shape["IN"], HID=shape["HID"], OUT=shape["OUT"], THREE=shape["THREE"],
                                              NEED_X=need_x, HALF=HALF, BLOCK=BLOCK_M, num_warps=BACKWARD_WARPS)
            grads = partial.sum(dim=0).split(sizes)
        else:
            grads = tuple(torch.zeros(size, device=x.device) for size in sizes)
            grad_x = torch.zeros_like(x) if need_x else x
        return (grad_x if need_x else None, *(g.view_as(p) for g, p in zip(grads, params)))


def fused_mlp(x: torch.Tensor, layers: list[torch.nn.Linear]) -> torch.Tensor:
    """(N, in) float32 → (N, out) float32 through ReLU(Linear) hidden layers and a plain last Linear,
    differentiable (first order) in x and every weight and bias. Call only where :func:`supported`."""
    return _FusedMLP.apply(x, *_params(layers))
