"""The Triton ray-marching kernels against the torch marchers; prints one JSON line.

    python tests/march_kernel_checks.py                  # Triton's CPU interpreter (TRITON_INTERPRET=1)
    python tests/march_kernel_checks.py --device cuda    # compiled, on a GPU
    python tests/march_kernel_checks.py --compile        # compile both kernels to sm_90 code, no GPU needed

Cases: random occupancy grids of several resolutions, rays from outside and inside the box, near/far
cuts, the variable-size marcher and the fixed-size one with and without overflow. Reported per case:
samples of each, the share of samples that differ (float rounding at cell boundaries may move one) and
the largest interval difference.
"""

from __future__ import annotations

import os
import sys

import torch
from kernel_check_runner import check_main, compile_sm90


def compile_for_hopper() -> list[str]:
    """Compile the kernels to sm_90 machine code without a GPU (Triton's bundled ptxas)."""
    from recon3d.render import march_triton as kernels

    scalars = {name: "fp32" for name in ("lo_x", "lo_y", "lo_z", "size_x", "size_y", "size_z", "hi_x", "hi_y",
                                          "hi_z", "step")}
    common = {"origins": "*fp32", "directions": "*fp32", "t0s": "*fp32", "t1s": "*fp32", "offsets": "*fp32",
              "counts": "*i32", "occupied": "*u8"}
    count = dict(common, out_counts="*i32", n_rays="i32", **scalars, resolution="i32")
    write = dict(common, firsts="*i64", out_rays="*i64", out_starts="*fp32", out_ends="*fp32", capacity="i64",
                 n_rays="i32", **scalars, resolution="i32")
    done = []
    for fn, signature in ((kernels._count_kernel, count), (kernels._write_kernel, write)):
        compiled = compile_sm90(fn, signature, {"BLOCK_R": kernels.BLOCK_RAYS, "BLOCK_K": kernels.BLOCK_STEPS})
        done.append(f"{fn.__name__}: {len(compiled.asm['cubin'])} B")
    return done


def rays_towards_box(n: int, generator: torch.Generator, inside_share: float = 0.2) -> tuple[torch.Tensor, ...]:
    origins = torch.randn(n, 3, generator=generator)
    origins = 3.0 * origins / origins.norm(dim=1, keepdim=True)
    inside = torch.rand(n, generator=generator) < inside_share
    origins[inside] *= 0.2  # some cameras inside the box
    directions = 0.6 * torch.randn(n, 3, generator=generator) - origins
    return origins, directions / directions.norm(dim=1, keepdim=True)


def compare(device: str) -> list[dict]:
    from recon3d.render import samplers
    from recon3d.render.fixed_march import march_fixed
    from recon3d.render.samplers import OccupancyGrid

    rows = []
    generator = torch.Generator().manual_seed(0)
    for resolution, n_rays, near, far in ((16, 64, 0.0, 100.0), (32, 300, 1.0, 4.0), (64, 200, 0.5, 6.0)):
        grid = OccupancyGrid(torch.tensor([[-1.0, -0.5, -1.5], [1.0, 1.5, 0.5]]), resolution=resolution,
                             steps_per_diagonal=256).to(device)
        grid.occupied.copy_((torch.rand(resolution**3, generator=generator) > 0.5).to(device))
        origins, directions = (t.to(device) for t in rays_towards_box(n_rays, generator))
        offsets = torch.rand(n_rays, generator=generator).to(device)
        results = {}
        for kernel in ("torch", "triton"):
            os.environ["RECON3D_MARCH_KERNEL"] = kernel
            saved, samplers._uniform = samplers._uniform, lambda *args, fixed=offsets, **kwargs: fixed.clone()
            try:
                marched = grid.march(origins, directions, near, far, stratified=True)
            finally:
                samplers._uniform = saved
            full = march_fixed(grid, origins, directions, offsets, 1 << 20, near, far)
            small = march_fixed(grid, origins, directions, offsets, max(int(full.samples) // 3, 1), near, far)
            results[kernel] = (marched, full, small)
        (m_ref, f_ref, s_ref), (m_new, f_new, s_new) = results["torch"], results["triton"]
        row = {"case": f"res {resolution}, {n_rays} rays, near {near}, far {far}",
               "samples_torch": int(m_ref[0].numel()), "samples_triton": int(m_new[0].numel())}
        if m_ref[0].numel() == m_new[0].numel():
            row["differ"] = float((m_ref[0] != m_new[0]).float().mean())
            row["interval"] = float(max((m_ref[1] - m_new[1]).abs().max(), (m_ref[2] - m_new[2]).abs().max()))
        row["fixed_equal"] = bool(torch.equal(f_ref.ray_indices, f_new.ray_indices)
                                  and torch.equal(f_ref.fits, f_new.fits))
        same_rays = torch.equal(s_ref.ray_indices, s_new.ray_indices)
        row["overflow_equal"] = bool(same_rays and torch.equal(s_ref.fits, s_new.fits)
                                     and int(s_ref.samples) == int(s_new.samples))
        row["overflow_fits"] = int(s_new.fits.sum())
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    check_main(compile_for_hopper, compare)
