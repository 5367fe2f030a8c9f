"""The method contract (DESIGN.md): what a fitting method declares, once, in its own module.

A method is its **preparation** (input → training data), its **field** (kind + config), its **step**
(sampler + loss on a batch), its **surface** (told by the field it builds, see
:mod:`recon3d.fields.surface`), the **extras** it stores in the checkpoint and the **records** that
``info`` and ``--json`` show. :func:`recon3d.fit.run.fit` runs any method: settings, seed, resume,
the training loop, the checkpoint and the summary are the same for all of them.

Adding a method: subclass :class:`Method` in its own module, add one line to
:data:`recon3d.fit.registry.METHODS`, write its tests and its docs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from recon3d.fit.loop import StepFn, Trainer, TrainState


@dataclass
class FitOptions:
    """What the user asked any fit for; None means the preset's default for the device."""

    preset: str = "fast"
    steps: int | None = None
    max_seconds: float | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int = 0
    amp: bool = False


@dataclass
class FitRun:
    """One run of a method, as the hooks see it. ``config`` is the resolved run config: plain data and
    ``settings`` (a TrainSettings); it is stored in the checkpoint and a resumed run reads it back as is."""

    config: dict[str, Any]
    options: FitOptions
    device: torch.device
    source: str
    data: Any = None  # what prepare() returned
    field: torch.nn.Module | None = None
    step: StepFn | None = None
    trainer: Trainer | None = None
    state: TrainState | None = None
    resume: dict[str, Any] | None = None  # the interrupted checkpoint being resumed
    seconds: float = 0.0  # training wall clock, without the time callbacks excluded


class Method(ABC):
    """A fitting method. Subclasses set the class attributes and implement the hooks."""

    #: Registry key; stored in the checkpoint as ``train["method"]``.
    name: ClassVar[str]
    #: The CLI command that runs it (``fit-sdf``); the input decides between methods of one command.
    command: ClassVar[str]
    #: The field kind, stored as the checkpoint's ``kind`` (see :data:`recon3d.fields.FIELDS`).
    kind: ClassVar[str]
    #: The options dataclass this method reads.
    options: ClassVar[type[FitOptions]] = FitOptions
    #: Training records (keys of the checkpoint's ``train``) that ``info`` shows ...
    records: ClassVar[tuple[str, ...]] = ()
    #: ... and those the ``--json`` summary of a fit adds.
    summary: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ input

    def accepts(self, path: Path) -> bool:
        """Whether this method reads ``path`` (the input decides among the methods of one command)."""
        return True

    def input_files(self, path: Path) -> list[Path]:
        """The files the input consists of besides ``path`` itself (a scene's json and images), which
        the output must not overwrite."""
        return []

    def default_stem(self, path: Path) -> str:
        """The checkpoint's default file name without ``.pt``."""
        return path.stem

    @abstractmethod
    def read(self, path: Path, options: FitOptions, device: torch.device) -> Any:
        """Read the input file into the data :meth:`prepare` takes."""

    def check_resume(self, checkpoint: dict[str, Any], data: Any, output: Path, path: Path) -> None:
        """Refuse (Recon3dError) to resume ``checkpoint`` on other input than it was fitted to."""

    # ------------------------------------------------------------------ fitting

    @abstractmethod
    def configure(self, options: FitOptions, data: Any, device: torch.device) -> dict[str, Any]:
        """The run config for these options, data and device (validated): plain data + ``settings``."""

    def prepare(self, run: FitRun, data: Any) -> Any:
        """Input → training data on ``run.device``."""
        return data

    def placement(self, run: FitRun) -> tuple[dict[str, Any], Any]:
        """(``to_world``, ``bounds``): the map from field coordinates to the input's units
        (x = scale · u + translation) and the (2, 3) box to mesh in field coordinates."""
        return run.data.to_world, run.data.bounds

    def tune(self, run: FitRun) -> None:
        """Adjust a fresh run's config to its prepared data (not called when resuming)."""

    def field_config(self, run: FitRun) -> dict[str, Any]:
        """The field's constructor config (its surface level and inside side included)."""
        return dict(run.config["field"])

    @abstractmethod
    def make_step(self, run: FitRun) -> StepFn:
        """The per-step closure: ``step(index, generator) -> {"loss": …, other terms}``."""

    def finish(self, run: FitRun) -> None:
        """After training, before the checkpoint (e.g. undo a schedule a budget cut short)."""

    def train_records(self, run: FitRun) -> dict[str, Any]:
        """Method records for the checkpoint's ``train``."""
        return {}

    def extras(self, run: FitRun) -> dict[str, Any]:
        """Method extras stored at the checkpoint's top level (plain data and tensors)."""
        return {}
