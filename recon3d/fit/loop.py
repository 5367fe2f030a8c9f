"""The one training loop every method shares.

Adam with linear warm-up and cosine decay, optional bf16 autocast on GPU, a rich progress bar on
stderr (step, loss, time left), two budgets (``steps`` and ``max_seconds``; whichever ends first),
deterministic sampling from one seeded generator, and graceful interruption: SIGINT / SIGTERM set a
flag, the loop finishes the current step and returns, and the caller writes a resumable checkpoint
(``resume_state``) from which ``load_resume_state`` continues to the same result.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from recon3d.console import stderr
from recon3d.device import synchronize

#: step_fn(step, generator) -> {"loss": scalar tensor, other named terms...}. A step function with a
#: ``progress`` attribute gets, before each call, the fraction of the budget used so far (steps or
#: seconds, whichever is further along), so its own schedules end with the budget too.
StepFn = Callable[[int, torch.Generator], dict[str, torch.Tensor]]


@dataclass
class TrainSettings:
    """Resolved settings of one training run (stored in the checkpoint's ``train``)."""

    steps: int
    max_seconds: float | None = None
    lr: float = 1e-2
    lr_final_ratio: float = 0.05
    warmup_steps: int = 50
    seed: int = 0
    amp: bool = False
    log_every: int = 25
    adam_eps: float = 1e-15
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class TrainState:
    """Where training stands: steps done, seconds spent, loss history, how it ended."""

    step: int = 0
    seconds: float = 0.0
    history: list[list[float]] = field(default_factory=list)  # [step, loss, term...]
    terms: list[str] = field(default_factory=list)
    stopped_by: str = ""  # "steps" | "max_seconds" | "interrupt"

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupt"

    @property
    def last_loss(self) -> float | None:
        return self.history[-1][1] if self.history else None


def learning_rate(settings: TrainSettings, step: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``lr · lr_final_ratio`` at the end of the budget.

    The end is whichever comes first: ``settings.steps``, or ``max_seconds`` (``time_fraction`` is
    the share of it spent), so a time-budgeted run still decays fully by its deadline.
    """
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(settings.steps - settings.warmup_steps, 1)
    progress = min(max(max(step - settings.warmup_steps, 0) / span, time_fraction), 1.0)
    low = settings.lr * settings.lr_final_ratio
    return low + 0.5 * (settings.lr - low) * (1.0 + math.cos(math.pi * progress))


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop polls, restoring the old handlers afterwards."""

    def __init__(self) -> None:
        self.raised = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.raised = True

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopFlag"]:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def hold_signals() -> contextlib.AbstractContextManager:
    """SIGINT/SIGTERM are noted, not acted on, inside this block (a second one still gives up at once).

    For the final checkpoint write: a signal that arrives while it is written must not lose the work.
    """
    return _StopFlag().installed()


class Trainer:
    """Runs ``step_fn`` under one optimiser, schedule and generator until a budget ends."""

    def __init__(self, model: torch.nn.Module, step_fn: StepFn, settings: TrainSettings,
                 device: torch.device, on_step: Callable[[int], None] | None = None,
                 label: str = "fitting", show_progress: bool = True) -> None:
        self.model = model
        self.step_fn = step_fn
        self.settings = settings
        self.device = device
        self.on_step = on_step
        self.label = label
        self.show_progress = show_progress
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, eps=settings.adam_eps)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(settings.seed)
        self.state = TrainState()
        self.excluded_seconds = 0.0  # time callbacks spent on other work (e.g. evaluation)

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (spent by a callback on evaluation, say) out of the time budget."""
        self.excluded_seconds += float(seconds)

    def resume_state(self) -> dict[str, Any]:
        """Optimiser and RNG state plus progress: what ``--resume`` needs to continue exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.state.step,
            "seconds": self.state.seconds,
            "history": self.state.history,
            "terms": self.state.terms,
        }

    def load_resume_state(self, resume: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(resume["optimizer"])
        generator = resume["generator"]
        self.generator.set_state(generator.cpu() if hasattr(generator, "cpu") else generator)
        self.state.step = int(resume["step"])
        self.state.seconds = float(resume["seconds"])
        self.state.history = [list(map(float, row)) for row in resume["history"]]
        self.state.terms = list(resume.get("terms", []))

    def run(self) -> TrainState:
        settings, state = self.settings, self.state
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                                  enabled=settings.amp and self.device.type == "cuda")
        self.model.train()
        start = time.perf_counter()
        seconds_before = state.seconds
        flag = _StopFlag()
        with flag.installed(), self._progress() as progress:
            task = progress.add_task(self.label, total=settings.steps, completed=state.step, loss="")
            while True:
                elapsed = time.perf_counter() - start - self.excluded_seconds
                if state.step >= settings.steps:
                    state.stopped_by = "steps"
                    break
                if settings.max_seconds is not None and elapsed >= settings.max_seconds:
                    state.stopped_by = "max_seconds"
                    break
                if flag.raised:
                    state.stopped_by = "interrupt"
                    break
                step = state.step
                time_fraction = elapsed / settings.max_seconds if settings.max_seconds else 0.0
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(settings, step, time_fraction)
                if hasattr(self.step_fn, "progress"):
                    self.step_fn.progress = min(max(step / settings.steps, time_fraction), 1.0)
                if self.on_step is not None:
                    self.on_step(step)
                with autocast:
                    terms = self.step_fn(step, self.generator)
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                self.optimizer.step()
                state.step += 1
                if state.step % settings.log_every == 0 or state.step == settings.steps:
                    self._log(terms, progress, task)
        synchronize(self.device)
        state.seconds = seconds_before + (time.perf_counter() - start - self.excluded_seconds)
        self.model.eval()
        return state

    def _log(self, terms: dict[str, torch.Tensor], progress: Progress, task: Any) -> None:
        names = ["loss"] + sorted(k for k in terms if k != "loss")
        values = torch.stack([terms[k].detach().float() for k in names]).tolist()
        if not self.state.terms:
            self.state.terms = names
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError(f"training diverged at step {self.state.step} (loss {values[0]})")
        self.state.history.append([float(self.state.step)] + values)
        progress.update(task, completed=self.state.step, loss=f"loss {values[0]:.4g}")

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), _TimeLeftColumn(self.settings),
            console=stderr, transient=False, disable=not self.show_progress,
        )


class _TimeLeftColumn(TextColumn):
    """Time left, whichever budget (steps or seconds) will end the run first."""

    def __init__(self, settings: TrainSettings) -> None:
        super().__init__("")
        self.settings = settings

    def render(self, task: Any) -> Text:  # type: ignore[override]
        left = (task.total - task.completed) / task.speed if task.speed else None
        if self.settings.max_seconds is not None:
            budget_left = max(self.settings.max_seconds - (task.elapsed or 0.0), 0.0)
            left = budget_left if left is None else min(left, budget_left)
        text = "left ?" if left is None else f"left {int(left) // 60}:{int(left) % 60:02d}"
        return Text(text, style="progress.remaining")
