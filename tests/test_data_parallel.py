"""Data-parallel training (recon3d.fit.loop.Sharding): two gloo ranks under torchrun give the same fit,
within float noise, as one process running the same two shards per step (the same total batch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recon3d.errors import Recon3dError
from recon3d.fit.loop import Sharding, Trainer, TrainSettings
from recon3d.fit.rays_per_step import MIN_RAYS
from recon3d.io.checkpoint import load_checkpoint
from recon3d.synthetic import write_spheres_scene

SCRIPT = Path(__file__).with_name("data_parallel_fit.py")
STEPS = 12


def _run(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("data_parallel")
    scene = work / "scene"
    write_spheres_scene(scene, n_train=8, n_val=1, size=24)
    common = [str(SCRIPT), str(scene)]
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *common,
          str(work / "ranks.pt"), str(STEPS), "1"], work)
    _run([sys.executable, *common, str(work / "shards.pt"), str(STEPS), "2"], work)
    _run([sys.executable, *common, str(work / "one.pt"), str(STEPS), "1"], work)
    return {name: load_checkpoint(work / f"{name}.pt") for name in ("ranks", "shards", "one")}


def _state_difference(a: dict, b: dict) -> float:
    return max(float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max()) for k in a["state_dict"])


def test_two_ranks_equal_one_process_with_two_shards(fits):
    ranks, shards = fits["ranks"], fits["shards"]
    assert ranks["train"]["steps"] == shards["train"]["steps"] == STEPS
    assert _state_difference(ranks, shards) < 1e-5
    assert torch.equal(ranks["grid"]["occupied"], shards["grid"]["occupied"])
    assert ranks["train"]["rays_per_step"] == shards["train"]["rays_per_step"] != MIN_RAYS  # adapted alike


def test_sharding_changes_the_fit(fits):
    """The comparison can fail: one shard per step is a different fit."""
    assert _state_difference(fits["one"], fits["shards"]) > 1e-3


def _trainer(steps: int, per_rank: int, stop_at: int | None = None) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)

    def step_fn(step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        x = torch.randn(16, 3, generator=gen)
        return {"loss": ((model(x).squeeze(-1) - x.sum(-1)) ** 2).mean()}

    settings = TrainSettings(steps=steps, lr=1e-2, warmup_steps=1)
    def interrupt(step: int) -> None:  # as a user's Ctrl-C: the loop stops after this step
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    return Trainer(model, step_fn, settings, torch.device("cpu"), show_progress=False, on_step=interrupt,
                   sharding=Sharding(0, 1, per_rank))


def test_a_sharded_run_resumes_to_the_same_result():
    straight = _trainer(6, 2)
    straight.run()
    first = _trainer(6, 2, stop_at=2)
    assert first.run().stopped_by == "interrupt" and first.state.step == 3
    saved = first.resume_state()
    assert len(saved["shard_generators"]) == 2
    second = _trainer(6, 2)
    second.model.load_state_dict(first.model.state_dict())
    second.load_resume_state(saved)
    second.run()
    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(Recon3dError, match="same number"):
        _trainer(6, 3).load_resume_state(saved)
