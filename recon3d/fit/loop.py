"""The one training loop every method shares.

Adam with linear warm-up and cosine decay, optional bf16 autocast on GPU, progress on stderr (a rich
bar on a terminal, periodic log lines elsewhere: step, loss, rate, time left), two budgets (``steps``
and ``max_seconds``; whichever ends first), deterministic sampling from one seeded generator, and
graceful interruption: SIGINT / SIGTERM set a flag, the loop finishes the current step and returns,
and the caller writes a resumable checkpoint (``resume_state``) from which ``load_resume_state``
continues to the same result.

A step can be sharded (:class:`Sharding`): each shard draws its batch from its own generator, and the
gradients are averaged over every shard before the optimiser step: on data-parallel ranks under
torchrun (the mean is an all-reduce, DDP's rule) and/or several shards per rank (gradient
accumulation). The result depends on the shards only, not on how they are spread over ranks.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from recon3d import distributed
from recon3d.console import Progress
from recon3d.device import synchronize, tf32_matmuls
from recon3d.errors import Recon3dError

#: step_fn(step, generator) -> {"loss": scalar tensor, other named terms...}. A step function with a
#: ``progress`` attribute gets, before each call, the fraction of the budget used so far (steps or
#: seconds, whichever is further along), so its own schedules end with the budget too.
#: When a step is sharded, a step function with ``end_step(mean)`` has ``sharded`` set and gets that call
#: once per step after every shard's backward (``mean(x)``: x's mean over all shards), to change
#: adaptive state identically on every rank; and its ``grid`` (an occupancy grid) gets a generator
#: shared by every rank, so each rank's copy stays equal.
#: A step function with ``update(step, generator, optimizer) -> terms`` runs the whole step itself (forward,
#: backward and the optimiser's update: a captured step, recon3d.fit.captured) when the step is not sharded
#: and autocast is off.
StepFn = Callable[[int, torch.Generator], dict[str, torch.Tensor]]

#: Seed offsets: shard s draws from seed + s·SHARD_SEED_STRIDE; the shared grid generator from seed + GRID_SEED.
SHARD_SEED_STRIDE, GRID_SEED = 1_000_003, 7_919


@dataclass(frozen=True)
class Sharding:
    """``per_rank`` shards on each of ``world`` ranks; this process is ``rank``."""

    rank: int = 0
    world: int = 1
    per_rank: int = 1

    @classmethod
    def current(cls, per_rank: int = 1) -> Sharding:
        """This process's sharding: the process group's ranks (one rank outside torchrun)."""
        if per_rank < 1:
            raise Recon3dError(f"shards per rank must be at least 1, got {per_rank}")
        if distributed.active():
            import torch.distributed as dist

            return cls(dist.get_rank(), dist.get_world_size(), per_rank)
        return cls(0, 1, per_rank)

    @property
    def total(self) -> int:
        return self.world * self.per_rank

    @property
    def shards(self) -> range:
        """The global indices of this rank's shards."""
        return range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)


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
    tf32: bool = False
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


class Adam(torch.optim.Adam):
    """torch's Adam without importing torch._dynamo on the first step (1.2 s on this CPU, at the start
    of every fit): torch wraps Optimizer.step and a few methods in decorators that import it only to keep
    them out of torch.compile, which recon3d does not use. The step itself is torch's, unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _mark_dynamo_disabled(torch.optim.Optimizer)
        super().__init__(*args, **kwargs)

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        plain = inspect.unwrap(torch.optim.Adam.step)  # below torch's wrappers (and their profiling hook)
        if plain is torch.optim.Adam.step or self.defaults.get("differentiable"):  # pragma: no cover
            return super().step(closure)
        with torch.no_grad():
            return plain(self, closure)


def _mark_dynamo_disabled(cls: type) -> None:
    """torch._disable_dynamo's wrappers import torch._dynamo on their first call unless the function is
    marked as already excluded from compilation; mark them (a no-op on a torch without the mark)."""
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        fn = getattr(getattr(cls, name, None), "__wrapped__", None)
        if fn is not None and not hasattr(fn, "__dynamo_disable"):
            setattr(fn, "__dynamo_disable", fn)


def make_adam(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Adam:
    """Adam with one fused kernel per step where torch has one for the parameters' device (CPU and CUDA):
    the same update as the per-tensor loop to float rounding, 10x faster on a 3M-entry hash table on
    this CPU (22 → 1.9 ms a step)."""
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    try:
        return Adam(params, lr=settings.lr, betas=settings.betas, eps=settings.adam_eps, fused=fused)
    except (RuntimeError, ValueError):  # pragma: no cover - a torch without the fused kernel for this device
        return Adam(params, lr=settings.lr, betas=settings.betas, eps=settings.adam_eps)


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Every group's learning rate; filled in place where it is a device tensor (a captured step reads it
    there: recon3d.fit.captured)."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


class Trainer:
    """Runs ``step_fn`` under one optimiser, schedule and generator until a budget ends."""

    def __init__(self, model: torch.nn.Module, step_fn: StepFn, settings: TrainSettings,
                 device: torch.device, on_step: Callable[[int], None] | None = None,
                 label: str = "fitting", show_progress: bool = True, sharding: Sharding | None = None) -> None:
        self.model = model
        self.step_fn = step_fn
        self.settings = settings
        self.device = device
        self.on_step = on_step
        self.label = label
        self.show_progress = show_progress
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_adam(params, settings)
        self.sharding = sharding or Sharding()
        self.generators = [self._seeded(settings.seed + s * SHARD_SEED_STRIDE) for s in self.sharding.shards]
        self.generator = self.generators[0]
        self.grid_generator: torch.Generator | None = None
        if self.sharding.total > 1:
            self._prepare_shards()
        self.state = TrainState()
        self.excluded_seconds = 0.0  # time callbacks spent on other work (e.g. evaluation)

    def _seeded(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return generator

    def _prepare_shards(self) -> None:
        """Every rank starts from rank 0's parameters; adaptive state and the grid stay equal (StepFn)."""
        distributed.broadcast_parameters(self.model)
        if hasattr(self.step_fn, "end_step"):
            self.step_fn.sharded = True
        grid = getattr(self.step_fn, "grid", None)
        if grid is not None and hasattr(grid, "generator"):
            self.grid_generator = self._seeded(self.settings.seed + GRID_SEED)
            grid.generator = self.grid_generator

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (spent by a callback on evaluation, say) out of the time budget."""
        self.excluded_seconds += float(seconds)

    def resume_state(self) -> dict[str, Any]:
        """Optimiser and RNG state plus progress: what ``--resume`` needs to continue exactly."""
        optimizer = self.optimizer.state_dict()
        optimizer["param_groups"] = [{**group, "lr": float(group["lr"])} for group in optimizer["param_groups"]]
        state = {
            "optimizer": optimizer,
            "generator": self.generator.get_state(),
            "step": self.state.step,
            "seconds": self.state.seconds,
            "history": self.state.history,
            "terms": self.state.terms,
        }
        if self.sharding.total > 1:  # every shard's generator, gathered from every rank (a collective)
            mine = [g.get_state() for g in self.generators]
            state["shard_generators"] = [s for part in distributed.gather(mine) for s in part]
            state["grid_generator"] = None if self.grid_generator is None else self.grid_generator.get_state()
        return state

    def load_resume_state(self, resume: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(resume["optimizer"])
        shards = resume.get("shard_generators")
        if self.sharding.total > 1 or shards is not None:
            count = len(shards) if shards is not None else 1
            if count != self.sharding.total:
                raise Recon3dError(f"this run was trained in {count} shard(s) per step (ranks × shards per rank); "
                                   f"resume it with the same number, not {self.sharding.total}")
            for generator, index in zip(self.generators, self.sharding.shards):
                generator.set_state(_cpu(shards[index]))
            if self.grid_generator is not None and resume.get("grid_generator") is not None:
                self.grid_generator.set_state(_cpu(resume["grid_generator"]))
        else:
            self.generator.set_state(_cpu(resume["generator"]))
        self.state.step = int(resume["step"])
        self.state.seconds = float(resume["seconds"])
        self.state.history = [list(map(float, row)) for row in resume["history"]]
        self.state.terms = list(resume.get("terms", []))

    def run(self) -> TrainState:
        settings, state = self.settings, self.state
        amp = settings.amp and self.device.type == "cuda"
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp)
        self.model.train()
        start = time.perf_counter()
        seconds_before = state.seconds
        flag = _StopFlag()
        progress = Progress(self.label, settings.steps, "steps", enabled=self.show_progress, completed=state.step,
                            budget_seconds=settings.max_seconds)
        if state.last_loss is not None:
            progress.note = f"loss {state.last_loss:.4g}"
        with flag.installed(), progress, tf32_matmuls(settings.tf32, self.device):
            while True:
                elapsed = time.perf_counter() - start - self.excluded_seconds
                raised = flag.raised
                if self.sharding.world > 1:  # every rank decides on the same numbers
                    elapsed, raised = distributed.agree(elapsed, raised)
                if state.step >= settings.steps:
                    state.stopped_by = "steps"
                    break
                if settings.max_seconds is not None and elapsed >= settings.max_seconds:
                    state.stopped_by = "max_seconds"
                    break
                if raised:
                    state.stopped_by = "interrupt"
                    break
                step = state.step
                time_fraction = elapsed / settings.max_seconds if settings.max_seconds else 0.0
                set_learning_rate(self.optimizer, learning_rate(settings, step, time_fraction))
                if hasattr(self.step_fn, "progress"):
                    self.step_fn.progress = min(max(step / settings.steps, time_fraction), 1.0)
                if self.on_step is not None:
                    self.on_step(step)
                if self.sharding.total > 1:
                    terms = self._sharded_step(step, autocast)
                    self.optimizer.step()
                elif hasattr(self.step_fn, "update") and not amp:
                    terms = self.step_fn.update(step, self.generator, self.optimizer)
                else:
                    with autocast:
                        terms = self.step_fn(step, self.generator)
                    self.optimizer.zero_grad(set_to_none=True)
                    terms["loss"].backward()
                    self.optimizer.step()
                state.step += 1
                if state.step % settings.log_every == 0 or state.step == settings.steps:
                    self._log(terms, progress)
                progress.update(state.step)
        synchronize(self.device)
        state.seconds = seconds_before + (time.perf_counter() - start - self.excluded_seconds)
        self.model.eval()
        return state

    def _sharded_step(self, step: int, autocast: Any) -> dict[str, torch.Tensor]:
        """This rank's shards, each on its own generator, gradients accumulated, then averaged over
        every shard of every rank; returns the last shard's terms."""
        self.optimizer.zero_grad(set_to_none=True)
        for generator in self.generators:
            with autocast:
                terms = self.step_fn(step, generator)
            (terms["loss"] / self.sharding.per_rank).backward()
        distributed.average_gradients(p for group in self.optimizer.param_groups for p in group["params"])
        if hasattr(self.step_fn, "end_step"):
            per_rank = self.sharding.per_rank
            self.step_fn.end_step(lambda x: distributed.mean_over_ranks(x) / per_rank)
        return terms

    def _log(self, terms: dict[str, torch.Tensor], progress: Progress) -> None:
        names = ["loss"] + sorted(k for k in terms if k != "loss")
        values = torch.stack([terms[k].detach().float() for k in names]).tolist()
        if not self.state.terms:
            self.state.terms = names
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError(f"training diverged at step {self.state.step} (loss {values[0]})")
        self.state.history.append([float(self.state.step)] + values)
        extra = "".join(f", {name} {value:.4g}" for name, value in zip(names, values) if name == "psnr")
        progress.note = f"loss {values[0]:.4g}{extra}"


def _cpu(state: Any) -> torch.Tensor:
    """A generator state as a CPU byte tensor (checkpoints may hold it elsewhere)."""
    return state.cpu() if hasattr(state, "cpu") else state
