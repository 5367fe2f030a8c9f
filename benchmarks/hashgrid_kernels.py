"""The hash-grid encoding alone on a GPU: torch path vs Triton kernels, forward, forward + backward,
and the Jacobian path (the eikonal term's), with the fraction of the card's copy bandwidth reached.

Bytes counted per point and level are the ones the operation cannot avoid: x (12 B) once, the output
(F·4 B), and 8 table rows (8·F·4 B, or ·2 B with a half table) read — and in the backward 8 rows
atomically added (read + write) and the output gradient read. Random rows cost a whole 32-byte
sector each, so the table traffic is also given at sector granularity: the realistic limit.

    python benchmarks/hashgrid_kernels.py --points 1048576 --repeat 20 --json-out OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon3d.fields.encodings import KERNEL_ENV, HashGridEncoding, hashgrid_config  # noqa: E402


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after two warm-ups, by CUDA events."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def copy_bandwidth(repeat: int) -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write counted)."""
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), repeat)
    return 2 * src.numel() * 4 / seconds


def measure(table_dtype: str, n: int, repeat: int, bandwidth: float) -> list[dict]:
    """Timings of every path and operation for one table precision."""
    rows = []
    config = hashgrid_config("cuda")
    config.pop("type")
    enc = HashGridEncoding(**config, table_dtype=table_dtype).cuda()
    levels, feats = enc.n_levels, enc.n_features
    x = torch.rand(n, 3, device="cuda") * 2 - 1
    grad_out = torch.randn(n, enc.out_dim, device="cuda")
    grad_jac = torch.randn(n, enc.out_dim, 3, device="cuda")
    entry = 2 if table_dtype == "float16" else 4

    def forward():
        with torch.no_grad():
            enc(x)

    def forward_backward():
        out = enc(x)
        torch.autograd.grad((out * grad_out).sum(), enc.embeddings)

    def jacobian_backward():
        out, jac = enc.forward_with_jacobian(x)
        torch.autograd.grad((out * grad_out).sum() + (jac * grad_jac).sum(), enc.embeddings)

    minimum = {
        "forward": n * (12 + levels * feats * 4 + levels * 8 * feats * entry),
        "forward+backward": n * (12 + levels * feats * 4 + levels * 8 * feats * entry)
        + n * (12 + levels * feats * 4 + levels * 8 * feats * 4 * 2),
        "jacobian+backward": n * (12 + levels * feats * 16 + levels * 8 * feats * entry)
        + n * (12 + levels * feats * 16 + levels * 8 * feats * 4 * 2),
    }
    sectors = {key: value + n * levels * 8 * (32 - feats * entry) * (1 if key == "forward" else 3)
               for key, value in minimum.items()}
    for kernel in ("torch", "triton"):
        if kernel == "torch" and table_dtype != "float32":
            continue
        os.environ[KERNEL_ENV] = kernel
        for name, fn in (("forward", forward), ("forward+backward", forward_backward),
                         ("jacobian+backward", jacobian_backward)):
            seconds = timed(fn, repeat)
            rows.append({"path": "torch" if kernel == "torch" else "triton", "table": table_dtype, "op": name,
                         "points": n, "ms": seconds * 1e3, "Mpoints_per_s": n / seconds / 1e6,
                         "fraction_of_copy_bw": minimum[name] / seconds / bandwidth,
                         "fraction_at_sectors": sectors[name] / seconds / bandwidth})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2**20)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "a CUDA device is needed"
    bandwidth = copy_bandwidth(args.repeat)
    n = args.points
    rows = [row for dtype in ("float32", "float16") for row in measure(dtype, n, args.repeat, bandwidth)]
    device = torch.cuda.get_device_name()
    print(f"{device}: copy bandwidth {bandwidth / 1e9:.0f} GB/s; hash grid {hashgrid_config('cuda')}", file=sys.stderr)
    print("| path | table | op | ms | M points/s | of copy bandwidth (minimal bytes) | (32 B sectors) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['path']} | {r['table']} | {r['op']} | {r['ms']:.2f} | {r['Mpoints_per_s']:.0f} | "
              f"{r['fraction_of_copy_bw']:.1%} | {r['fraction_at_sectors']:.1%} |")
    if args.json_out:
        args.json_out.write_text(json.dumps({"device": device, "copy_bandwidth": bandwidth, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
