"""The training loop's contract with step functions: budgets, and the progress it tells them."""

from __future__ import annotations

import torch

from recon3d.fit.images import levels_at
from recon3d.fit.loop import Trainer, TrainSettings, learning_rate


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
