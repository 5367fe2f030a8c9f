"""Speed of one fit-sdf training step: ∇f through the hash grid's Jacobian vs autograd's double backward, and
(on a GPU) the Jacobian step replayed as a CUDA graph (what fit-sdf runs there).

    python benchmarks/sdf_step_speed.py --device cuda --points 200000 --steps 100
    python benchmarks/sdf_step_speed.py --device cpu --points 360000 --steps 20

Same scan (samples of a sphere, no normals), preset and batch as fit-sdf's default on the device; each
method runs in alternating blocks after a warm-up, and the table gives the median step time and the
speed-up. Both methods give the same gradients (tests/test_radiance.py). The graph runs its own copy of the
field and optimiser (a captured optimiser keeps its rate on the device); ``RECON3D_CUDA_GRAPHS=fixed`` runs
its fixed-buffer update eagerly, on any device (to check the script).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recon3d.device import resolve_device, synchronize, tf32_matmuls, tf32_wanted  # noqa: E402
from recon3d.fields import build_field  # noqa: E402
from recon3d.fit import sdf as sdf_fit  # noqa: E402
from recon3d.fit.captured import fixed_step_mode  # noqa: E402
from recon3d.fit.loop import TrainSettings, make_adam  # noqa: E402
from recon3d.synthetic import sample_sphere  # noqa: E402
from recon3d.types import PointCloud  # noqa: E402


def step_times(device: torch.device, points: int, steps: int, blocks: int) -> dict[str, list[float]]:
    config = sdf_fit.resolve_preset(sdf_fit.SDFOptions(), device)
    cloud = sample_sphere(points, seed=0)
    scan = sdf_fit.prepare_scan(PointCloud(cloud.points, None), "auto", device, "sphere")
    field = build_field("sdf", {**config["field"], "level": 0.0, "inside": "below"}).to(device)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-3, eps=1e-15)
    generator = torch.Generator(device=device).manual_seed(0)
    times: dict[str, list[float]] = {"jacobian": [], "autograd": []}
    mode = fixed_step_mode(device)
    if mode is not None:
        times["jacobian, CUDA graph" if mode == "capture" else "jacobian, fixed buffers"] = []
    graph_field = copy.deepcopy(field)
    graph_optimizer = make_adam(list(graph_field.parameters()), TrainSettings(steps=1000, lr=1e-3))
    graph_step = sdf_fit.make_step(graph_field, scan, config["loss"], config["batch"], 1000, mode=mode)
    original = sdf_fit.gradient
    try:
        with tf32_matmuls(tf32_wanted(False), device):  # RECON3D_TF32=1 times the step in TF32
            for block in range(blocks + 1):  # block 0 warms every method up (and captures the graph)
                for method in times:
                    sdf_fit.gradient = functools.partial(original, jacobian=method != "autograd")
                    step = sdf_fit.make_step(field, scan, config["loss"], config["batch"], 1000)
                    for i in range(steps):
                        synchronize(device)
                        start = time.perf_counter()
                        if method in ("jacobian", "autograd"):
                            terms = step(i, generator)
                            optimizer.zero_grad(set_to_none=True)
                            terms["loss"].backward()
                            optimizer.step()
                        else:
                            graph_step.update(block * steps + i, generator, graph_optimizer)
                        synchronize(device)
                        if block > 0:
                            times[method].append(time.perf_counter() - start)
    finally:
        sdf_fit.gradient = original
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=50, help="steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per method, alternating")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    times = step_times(device, args.points, args.steps, args.blocks)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = {method: 1000 * statistics.median(values) for method, values in times.items()}
    batch = sdf_fit.resolve_preset(sdf_fit.SDFOptions(), device)["batch"]
    print(f"\n{name}, torch {torch.__version__}, batch {batch}, TF32 {tf32_wanted(False)}, "
          f"{args.blocks} × {args.steps} steps per method")
    print("| ∇f | median ms / step |\n|---|---|")
    for method, ms in rows.items():
        print(f"| {method} | {ms:.2f} |")
    for method, ms in rows.items():
        if method != "autograd":
            print(f"speed-up of {method} over autograd: {rows['autograd'] / ms:.2f}×")
    if args.json_out:
        args.json_out.write_text(json.dumps({"device": name, "torch": torch.__version__, "points": args.points,
                                             "median_ms": rows, "times_s": times}, indent=1) + "\n")


if __name__ == "__main__":
    main()
