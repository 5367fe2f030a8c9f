"""fit-nerf's fixed-shape step (what CUDA graphs replay), run eagerly on the CPU: the marcher against the
variable-size one, training quality, interruption and resume, the optimiser's learning-rate tensor."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest
import torch

from recon3d.fields.encodings import HASHGRID
from recon3d.fit import nerf, nerf_captured
from recon3d.fit.captured import CapturedUpdates, make_capturable
from recon3d.fit.loop import TrainSettings, make_adam, set_learning_rate
from recon3d.fit.nerf import NerfOptions, fit_nerf
from recon3d.io.checkpoint import load_checkpoint
from recon3d.io.scene import read_scene
from recon3d.render import samplers
from recon3d.render.fixed_march import march_fixed, steps_per_ray
from recon3d.render.model import load_renderer
from recon3d.render.samplers import OccupancyGrid
from recon3d.render.views import render_split
from recon3d.synthetic import write_spheres_scene

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def small_cpu_defaults() -> Iterator[None]:
    """The small grids of tests/test_nerf.py, and the fixed-shape step on the CPU."""
    saved_hash, saved_grid = dict(HASHGRID["cpu"]), dict(nerf.GRID["cpu"])
    saved_budget = dict(nerf.PRESETS["fast"]["budget"]["cpu"])
    HASHGRID["cpu"].update({"n_levels": 8, "log2_table_size": 14, "max_resolution": 128})
    nerf.GRID["cpu"].update({"resolution": 32, "steps_per_diagonal": 128})
    nerf.PRESETS["fast"]["budget"]["cpu"].update({"batch": 512, "target_samples": 1 << 13})
    patch = pytest.MonkeyPatch()
    patch.setenv("RECON3D_CUDA_GRAPHS", "fixed")
    patch.setattr(nerf_captured, "EAGER_STEPS", 8)
    yield
    patch.undo()
    HASHGRID["cpu"].clear()
    HASHGRID["cpu"].update(saved_hash)
    nerf.GRID["cpu"].update(saved_grid)
    nerf.PRESETS["fast"]["budget"]["cpu"].update(saved_budget)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spheres")
    write_spheres_scene(folder, n_train=12, n_val=2, size=32)
    return folder


def random_rays(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 3 towards random points near the centre of the unit box."""
    origins = torch.randn(n, 3, generator=generator)
    origins = 3.0 * origins / origins.norm(dim=1, keepdim=True)
    directions = 0.5 * torch.randn(n, 3, generator=generator) - origins
    return origins, directions / directions.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("capacity", [1 << 20, 3000])
def test_fixed_march_equals_march_for_the_same_offsets(capacity: int, monkeypatch) -> None:
    """The samples that fit are OccupancyGrid.march's, in the same order; rays flagged as fitting have all
    theirs; the rest of the buffer is the padding ray's empty intervals."""
    generator = torch.Generator().manual_seed(0)
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), resolution=16)
    grid.occupied.copy_(torch.rand(16**3, generator=generator) > 0.6)
    n_rays = 200
    origins, directions = random_rays(n_rays, generator)
    offsets = torch.rand(n_rays, generator=generator)
    monkeypatch.setattr(samplers, "_uniform", lambda *args, **kwargs: offsets.clone())
    rays, starts, ends = grid.march(origins, directions, 0.5, 6.0, stratified=True)
    fixed = march_fixed(grid, origins, directions, offsets, capacity, near=0.5, far=6.0)
    total = rays.numel()
    assert int(fixed.samples) == total and total > 3000  # the small capacity overflows
    used = min(total, capacity)
    assert torch.equal(fixed.ray_indices[:used], rays[:used])
    assert torch.equal(fixed.t_starts[:used], starts[:used]) and torch.equal(fixed.t_ends[:used], ends[:used])
    assert bool((fixed.ray_indices[used:] == n_rays).all()) and bool((fixed.t_ends[used:] == 0).all())
    last = torch.zeros(n_rays, dtype=torch.int64).index_reduce_(0, rays, torch.arange(total), "amax",
                                                                include_self=False)
    has_samples = torch.bincount(rays, minlength=n_rays) > 0
    expected_fits = ~has_samples | (last < capacity)
    assert torch.equal(fixed.fits, expected_fits)
    assert steps_per_ray(grid) == grid.steps_per_diagonal + 1


def test_ray_counts_are_rounded_to_few_sizes() -> None:
    sizes = {nerf_captured.rounded_rays(n) for n in range(256, 65537, 7)}
    assert all(size % 64 == 0 for size in sizes) and len(sizes) <= 8 * 8 + 1
    for n in (300, 4096, 10000, 60000):
        assert abs(nerf_captured.rounded_rays(n) / n - 1.0) < 0.1


def val_psnr(checkpoint_path: Path, scene_dir: Path) -> float:
    renderer = load_renderer(load_checkpoint(checkpoint_path), CPU)
    return render_split(renderer, read_scene(scene_dir, "val"), None)["psnr"]


def test_the_fixed_step_trains_as_well_as_the_eager_one(scene_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Same scene, seed and steps: the fixed-shape step reaches the eager step's val PSNR within 1 dB."""
    scene = read_scene(scene_dir, "train", keep_alpha=True)
    calls = []
    original = nerf_captured.CapturedNerfStep.fixed_forward
    monkeypatch.setattr(nerf_captured.CapturedNerfStep, "fixed_forward",
                        lambda self, inputs: calls.append(1) or original(self, inputs))
    fixed = fit_nerf(scene, NerfOptions(steps=150, seed=0), tmp_path / "fixed.pt", CPU, show_progress=False)
    assert len(calls) == 150 - nerf_captured.EAGER_STEPS
    with monkeypatch.context() as patch:
        patch.setenv("RECON3D_CUDA_GRAPHS", "0")
        fit_nerf(scene, NerfOptions(steps=150, seed=0), tmp_path / "eager.pt", CPU, show_progress=False)
    assert fixed["samples_per_second"] > 0
    eager_psnr, fixed_psnr = val_psnr(tmp_path / "eager.pt", scene_dir), val_psnr(tmp_path / "fixed.pt", scene_dir)
    print(f"val PSNR eager {eager_psnr:.2f} dB, fixed shapes {fixed_psnr:.2f} dB")
    assert fixed_psnr > 16.0 and fixed_psnr > eager_psnr - 1.0


def test_sigterm_then_resume_equals_one_run(scene_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Interrupted between fixed-shape steps (whose ray counts are read back a step late), resuming ends
    with the weights, grid and ray count of one uninterrupted run."""
    scene = read_scene(scene_dir, "train", keep_alpha=True)
    options = NerfOptions(steps=30, seed=0)
    reference = tmp_path / "reference.pt"
    fit_nerf(scene, options, reference, CPU, show_progress=False)

    class Terminated(nerf_captured.CapturedNerfStep):
        def update(self, step, generator, optimizer):
            if step == 21:
                signal.raise_signal(signal.SIGTERM)
            return super().update(step, generator, optimizer)

    out = tmp_path / "resumed.pt"
    with monkeypatch.context() as patch:
        patch.setattr(nerf_captured, "CapturedNerfStep", Terminated)
        summary = fit_nerf(scene, options, out, CPU, show_progress=False)
    assert summary["stopped_by"] == "interrupt"
    fit_nerf(scene, options, out, CPU, show_progress=False, resume=load_checkpoint(out))
    resumed, expected = load_checkpoint(out), load_checkpoint(reference)
    assert resumed["train"]["steps"] == 30 and resumed["train"]["rays_per_step"] == expected["train"]["rays_per_step"]
    for part in ("state_dict", "grid"):
        for key, value in expected[part].items():
            assert torch.equal(resumed[part][key], value), (part, key)


def test_a_capturable_optimiser_takes_its_rate_from_a_tensor() -> None:
    """The loop fills a tensor learning rate in place (a captured step reads it there); the resume state
    stores it as a plain number."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = make_adam([weight], TrainSettings(steps=1, lr=0.1))
    make_capturable(optimizer)
    rate = optimizer.param_groups[0]["lr"]
    set_learning_rate(optimizer, 0.25)
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == 0.25
    weight.grad = torch.ones(3)
    optimizer.step()
    assert torch.allclose(weight.detach(), torch.full((3,), 0.75), atol=1e-4)  # Adam's first step: lr · sign


def test_no_capture_before_the_optimiser_has_its_state(monkeypatch) -> None:
    """Adam creates its moments on its first step; created inside a CUDA graph capture they would be zeroed
    by every replay (each step an Adam first step). CapturedUpdates runs steps eagerly until the optimiser
    has stepped, then captures: the first run is a real eager step and nothing is captured for it."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = make_adam([weight], TrainSettings(steps=1, lr=0.1))
    captured = CapturedUpdates(optimizer)
    captures = []

    def fake_capture(forward):
        assert len(optimizer.state[weight]) > 0, "capturing before Adam has its state"
        captures.append(1)
        return _ReplayEagerly(captured, forward), {}

    monkeypatch.setattr(captured, "_capture", fake_capture)
    forward = lambda: {"loss": (weight ** 2).sum()}  # noqa: E731
    first = captured.run("key", forward)
    assert not captures and torch.allclose(weight.detach(), torch.full((3,), 0.9), atol=1e-4)
    assert float(first["loss"]) == 3.0 and not first["loss"].requires_grad
    captured.run("key", forward)
    assert captures == [1]


class _ReplayEagerly:
    """Stands in for a CUDA graph on the CPU: ``replay`` runs the step."""

    def __init__(self, captured: CapturedUpdates, forward) -> None:
        self.captured, self.forward = captured, forward

    def replay(self) -> None:
        self.captured.eager(self.forward)
