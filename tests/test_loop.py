"""The training loop's contract with step functions: budgets, and the progress it tells them; its optimiser;
the method registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from recon3d.fit.images import levels_at
from recon3d.fit.loop import Trainer, TrainSettings, learning_rate
from recon3d.fit.registry import METHODS, SCENE_SUFFIX, get_method

REPO = Path(__file__).resolve().parents[1]


class RecordingStep:
    """A step of a one-parameter model that records the progress the loop gives it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.progress, self.seen = model, 0.0, []

    def __call__(self, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        self.seen.append(self.progress)
        return {"loss": (self.model.weight ** 2).sum()}


def test_the_loop_tells_steps_their_share_of_the_step_budget():
    model = torch.nn.Linear(1, 1, bias=False)
    step = RecordingStep(model)
    Trainer(model, step, TrainSettings(steps=10), torch.device("cpu"), show_progress=False).run()
    assert step.seen == [i / 10 for i in range(10)]


def test_a_time_budget_moves_progress_ahead_of_the_step_count():
    """With --max-seconds the progress is the larger of the two fractions, as for the learning rate."""
    model = torch.nn.Linear(1, 1, bias=False)
    step = RecordingStep(model)
    Trainer(model, step, TrainSettings(steps=10**9, max_seconds=0.2), torch.device("cpu"),
            show_progress=False).run()
    assert step.seen[0] < 0.05 and 0.5 < step.seen[-1] <= 1.0
    assert all(b >= a for a, b in zip(step.seen, step.seen[1:]))
    assert step.seen[-1] > 100 * len(step.seen) / 10**9  # far ahead of steps / total


def test_levels_follow_progress():
    assert levels_at(0.0, 0.2, 16) == 4 and levels_at(0.2, 0.2, 16) == 16 and levels_at(0.5, 0.0, 16) == 16
    assert [levels_at(p / 100, 0.2, 16) for p in range(0, 21, 5)] == [4, 7, 10, 13, 16]
    settings = TrainSettings(steps=100)
    assert learning_rate(settings, 99) < learning_rate(settings, 60)


def test_adam_steps_like_torchs_without_importing_dynamo():
    """recon3d's Adam makes torch's fused Adam updates (bitwise, through steps, zero_grad and a state round
    trip) and a fit never imports torch._dynamo (1.2 s of start-up on this CPU)."""
    code = (
        "import sys, torch\n"
        "from recon3d.fit.loop import TrainSettings, make_adam\n"
        "ours = [torch.nn.Parameter(torch.randn(100, generator=torch.Generator().manual_seed(i))) for i in range(2)]\n"
        "theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]\n"
        "a = make_adam(ours, TrainSettings(steps=10, lr=0.1))\n"
        "for i in range(6):\n"
        "    for p in ours: p.grad = torch.sin(p.detach() * (i + 1))\n"
        "    a.step(); a.zero_grad()\n"
        "    if i == 2: a.load_state_dict(a.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
        "b = torch.optim.Adam(theirs, lr=0.1, betas=(0.9, 0.99), eps=1e-15, fused=True)\n"
        "for i in range(6):\n"
        "    for p in theirs: p.grad = torch.sin(p.detach() * (i + 1))\n"
        "    b.step(); b.zero_grad()\n"
        "print(all(torch.equal(p, q) for p, q in zip(ours, theirs)), float((ours[0] - theirs[0]).abs().max()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "True", "0.0"]


def test_a_point_cloud_fit_does_not_import_the_image_methods(tmp_path):
    """The registry picks fit-sdf's method for a .ply without importing the scene methods (and their
    rendering and SciPy imports); every registered name is its command, or its command + "-images"."""
    for name in METHODS:
        method = get_method(name)
        assert name in (method.command, method.command + SCENE_SUFFIX)
        assert method.accepts(tmp_path / "x.ply") == (not name.endswith(SCENE_SUFFIX))
    code = (
        "import sys\n"
        "from recon3d.fit.registry import method_for\n"
        f"print(method_for('fit-sdf', {str(tmp_path / 'x.ply')!r}).name, 'recon3d.fit.images' in sys.modules)\n"
        f"print(method_for('fit-sdf', {str(tmp_path)!r}).name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["fit-sdf", "False", "fit-sdf-images"]


def test_tf32_is_the_presets_choice_unless_the_environment_overrides_it(monkeypatch):
    """fit-nerf's GPU preset multiplies in TF32; its CPU preset and other fits do not; RECON3D_TF32 overrides
    both ways, and a bad value is one clear error."""
    import pytest

    from recon3d.device import tf32_wanted
    from recon3d.errors import Recon3dError
    from recon3d.fit.nerf import PRESETS
    from recon3d.fit.presets import make_settings

    monkeypatch.delenv("RECON3D_TF32", raising=False)
    budgets = PRESETS["fast"]["budget"]
    assert make_settings(budgets["cuda"], None, None, None, 0, False).tf32
    assert not make_settings(budgets["cpu"], None, None, None, 0, False).tf32
    assert not tf32_wanted(False) and tf32_wanted(True)
    monkeypatch.setenv("RECON3D_TF32", "0")
    assert not make_settings(budgets["cuda"], None, None, None, 0, False).tf32
    monkeypatch.setenv("RECON3D_TF32", "1")
    assert tf32_wanted(False)
    monkeypatch.setenv("RECON3D_TF32", "yes")
    with pytest.raises(Recon3dError, match="RECON3D_TF32 must be 0 or 1"):
        tf32_wanted(True)


def test_tf32_matmuls_are_switched_on_for_a_gpu_block_only_and_restored():
    from recon3d.device import tf32_matmuls

    before = torch.backends.cuda.matmul.allow_tf32
    seen = []
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with tf32_matmuls(True, "cpu"):
            seen.append(torch.backends.cuda.matmul.allow_tf32)
        with tf32_matmuls(False, "cuda"):
            seen.append(torch.backends.cuda.matmul.allow_tf32)
        try:
            with tf32_matmuls(True, "cuda"):
                seen.append(torch.backends.cuda.matmul.allow_tf32)
                raise KeyError("stop")
        except KeyError:
            pass
        assert seen == [False, False, True] and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_the_loop_runs_its_steps_in_the_settings_precision(monkeypatch):
    """The Trainer switches TF32 on around its steps when the settings ask for it (a cuda device is only
    named here: the step runs on the CPU) and off after."""
    from recon3d.fit import loop

    model = torch.nn.Linear(1, 1, bias=False)
    flags = []

    def step(index: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        flags.append(torch.backends.cuda.matmul.allow_tf32)
        return {"loss": (model.weight ** 2).sum()}

    monkeypatch.setattr(loop, "synchronize", lambda device: None)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        trainer = Trainer(model, step, TrainSettings(steps=3, tf32=True), torch.device("cpu"), show_progress=False)
        trainer.device = torch.device("cuda")
        trainer.run()
        assert flags == [True] * 3 and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
