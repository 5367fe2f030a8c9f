"""Compares the Triton compositing kernels (recon3d.render.composite_triton) with the torch path
(recon3d.render.compositing.composite_packed); run where TRITON_INTERPRET=1 was set before Triton was
imported (tests/test_composite_kernels.py does so), or with ``--device cuda`` compiled on a GPU. Prints one
JSON object: the largest relative error of rgb, opacity and the gradients of σ and colour."""

from __future__ import annotations

import json
import os
import sys

import torch

from recon3d.render.composite_triton import available, composite_ranges
from recon3d.render.compositing import composite_packed


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main() -> None:
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    assert device != "cpu" or os.environ.get("TRITON_INTERPRET") == "1"
    torch.manual_seed(0)
    counts = torch.tensor([0, 1, 5, 17, 0, 3, 200, 2] * 40)  # empty rays, one sample, long rays; 320 rays
    n_rays = len(counts)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    slots = int(ends[-1]) + 7  # spare slots that no ray owns, as in the fixed buffer
    rays = torch.full((slots,), n_rays, dtype=torch.int64)
    for ray in range(n_rays):
        rays[starts[ray]:ends[ray]] = ray
    t_starts = torch.rand(slots).sort().values * 3
    t_ends = t_starts + torch.rand(slots) * 0.05
    sigmas = torch.rand(slots) * 30
    sigmas[::11] = 0.0
    colours = torch.rand(slots, 3)
    grad_rgb, grad_opacity = torch.randn(n_rays, 3), torch.randn(n_rays)
    tensors = [t.to(device) for t in (starts, ends, rays, t_starts, t_ends, sigmas, colours, grad_rgb, grad_opacity)]
    starts, ends, rays, t_starts, t_ends, sigmas, colours, grad_rgb, grad_opacity = tensors
    sigmas.requires_grad_(True)
    colours.requires_grad_(True)
    assert available(sigmas), "the Triton kernels did not engage"
    rgb, opacity = composite_ranges(starts, ends, sigmas, colours, t_starts, t_ends)
    got = torch.autograd.grad((rgb * grad_rgb).sum() + (opacity * grad_opacity).sum(), [sigmas, colours])
    ref = composite_packed(rays, sigmas, colours, t_starts, t_ends, n_rays + 1, None)
    want = torch.autograd.grad((ref.rgb[:n_rays] * grad_rgb).sum() + (ref.opacity[:n_rays] * grad_opacity).sum(),
                               [sigmas, colours])
    spare = slice(int(ends[-1]), slots)
    print(json.dumps({"rgb": relative(rgb, ref.rgb[:n_rays]), "opacity": relative(opacity, ref.opacity[:n_rays]),
                      "grad_sigma": relative(got[0], want[0]), "grad_colour": relative(got[1], want[1]),
                      "spare_slot_gradients": float(got[0][spare].abs().sum() + got[1][spare].abs().sum())}))


if __name__ == "__main__":
    main()
