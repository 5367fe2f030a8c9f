"""One ``fit()`` for every method: run config, seed, preparation, field, resume, the training loop,
the checkpoint and the summary (the method contract: recon3d.fit.method)."""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from recon3d import __version__
from recon3d.errors import Recon3dError
from recon3d.fields import build_field
from recon3d.fit.loop import Trainer, TrainState, hold_signals
from recon3d.fit.method import FitOptions, FitRun, Method
from recon3d.fit.presets import check_fit_options, plain_settings, resumed_settings
from recon3d.fit.registry import get_method
from recon3d.io.atomic import check_output, output_lock, protect_inputs
from recon3d.io.checkpoint import VERSION, load_checkpoint, save_checkpoint


def make_options(method: Method, **values: Any) -> FitOptions:
    """The method's options from the values a command parsed. Values the method does not read must
    be None (not given); anything else is one clear error."""
    known = {f.name for f in dataclasses.fields(method.options)}
    unknown = [key for key, value in values.items() if key not in known and value is not None]
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") for key in unknown)
        raise Recon3dError(f"{flags}: not used by {method.command} with this kind of input")
    return method.options(**{key: value for key, value in values.items() if key in known and value is not None})


def fit(method: Method | str, data: Any, options: FitOptions, output: str | Path, device: torch.device,
        source: str = "input", resume: dict | None = None, show_progress: bool = True,
        on_step: Callable[[Trainer, int], None] | None = None) -> dict[str, Any]:
    """Fit ``method`` to ``data`` (what its ``read`` returns), write the checkpoint to ``output`` and
    return the summary.

    ``resume`` is an interrupted checkpoint of the same input: its config, field, optimiser and
    generator state are restored, so the result matches an uninterrupted run. ``on_step(trainer,
    step)`` runs before every step (benchmarks evaluate there, excluding their time with
    ``trainer.exclude``).

    ``output`` and the shared options are checked first (nothing slow runs for a bad one), and the
    output's lock (:func:`recon3d.io.atomic.output_lock`) is held until the checkpoint is written: another
    run writing the same file is refused at once.
    """
    method = get_method(method) if isinstance(method, str) else method
    check_output(output, what="checkpoint")
    check_fit_options(options)
    with output_lock(output):
        return _fit_locked(method, data, options, output, device, source, resume, show_progress, on_step)


def _fit_locked(method: Method, data: Any, options: FitOptions, output: str | Path, device: torch.device,
                source: str, resume: dict | None, show_progress: bool,
                on_step: Callable[[Trainer, int], None] | None) -> dict[str, Any]:
    """fit() under the output's lock."""
    run = FitRun(config=run_config(method, options, data, device, resume), options=options, device=device,
                 source=source, resume=resume)
    torch.manual_seed(run.config["settings"].seed)
    run.data = method.prepare(run, data)
    if resume is None:
        method.tune(run)
    run.field = build_field(method.kind, method.field_config(run)).to(device)
    if resume is not None:
        run.field.load_state_dict(resume["state_dict"])
    run.step = method.make_step(run)
    callback = None if on_step is None else (lambda index: on_step(run.trainer, index))
    run.trainer = Trainer(run.field, run.step, run.config["settings"], device, on_step=callback,
                          label=method.command, show_progress=show_progress)
    if resume is not None:
        run.trainer.load_resume_state(resume["resume"])
    start = time.perf_counter()
    run.state = run.trainer.run()
    run.seconds = time.perf_counter() - start - run.trainer.excluded_seconds
    method.finish(run)
    checkpoint = build_checkpoint(method, run)
    save_fit(output, checkpoint, run.trainer, run.state)
    return summarize(checkpoint, output, extra=method.summary)


def fit_file(method: Method, path: Path, options: FitOptions, output: Path, device: torch.device,
             resume: bool = False, show_progress: bool = True, inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Read ``path`` with ``method`` and fit it (``resume``: continue the interrupted ``output``).

    Before anything slow, ``output`` is checked (a ``.pt`` file that is neither ``path`` nor one of the
    other files the input consists of, ``inputs``, e.g. a scene's json and images; see
    :func:`recon3d.io.atomic.check_output`) and so are the shared options; the output's lock is held from
    before reading the input until the checkpoint is written.
    """
    files = [Path(path), *map(Path, inputs)]
    check_output(output, files, suffixes=(".pt",), example="model.pt", what="checkpoint")
    check_fit_options(options)
    with output_lock(output), protect_inputs(files):
        previous = load_resumable(output, method.kind) if resume else None
        data = method.read(path, options, device)
        if previous is not None:
            method.check_resume(previous, data, output, path)
        return fit(method, data, options, output, device, source=str(path), resume=previous,
                   show_progress=show_progress)


def load_resumable(path: Path, kind: str) -> dict[str, Any]:
    """An interrupted checkpoint of ``kind`` to continue, or one clear error."""
    if not Path(path).exists():
        raise Recon3dError(f"{path}: nothing to resume (no such checkpoint)")
    checkpoint = load_checkpoint(path, kinds=(kind,))
    if "resume" not in checkpoint:
        raise Recon3dError(f"{path}: is a finished fit ({checkpoint['train']['steps']} steps); nothing to resume")
    return checkpoint


def run_config(method: Method, options: FitOptions, data: Any, device: torch.device,
               resume: dict | None) -> dict[str, Any]:
    """The run's config: an interrupted run's own (with any new budgets) when resuming, else the
    method's for these options and this device. Both have one shape."""
    if resume is None:
        return method.configure(options, data, device)
    config = copy.deepcopy(resume["train"]["config"])
    config["settings"] = resumed_settings(config["settings"], options.steps, options.max_seconds)
    return config


def build_checkpoint(method: Method, run: FitRun) -> dict[str, Any]:
    """The plain-data checkpoint (see recon3d.io.checkpoint): the field, where it sits in the input's
    units, the run config and record, and the method's extras."""
    assert run.field is not None and run.state is not None
    config = {key: value for key, value in run.config.items() if key != "settings"}
    train = {"method": method.name, "config": {**config, "settings": plain_settings(run.config["settings"])},
             **method.train_records(run)}
    to_world, bounds = method.placement(run)
    field, state = run.field, run.state
    checkpoint = {
        "format": "recon3d",
        "version": VERSION,
        "kind": method.kind,
        "level": float(field.level),
        "inside": field.inside,
        "field": field.config,
        "state_dict": {k: v.detach().cpu() for k, v in field.state_dict().items()},
        "to_world": to_world,
        "bounds": np.asarray(bounds, dtype=np.float64).tolist(),
        "train": {**train, **_run_record(state, run.device)},
    }
    checkpoint.update(method.extras(run))
    return checkpoint


def _run_record(state: TrainState, device: torch.device) -> dict[str, Any]:
    return {
        "steps": state.step,
        "seconds": state.seconds,
        "stopped_by": state.stopped_by,
        "complete": not state.interrupted,
        "history_terms": state.terms,
        "history": state.history,
        "device": str(device),
        "versions": {"recon3d": __version__, "torch": str(torch.__version__)},
    }


def summarize(checkpoint: dict, output: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The --json summary of a fit: checkpoint path, budget used, how it ended, last loss."""
    train = checkpoint["train"]
    summary = {
        "checkpoint": str(output), "kind": checkpoint["kind"], "steps": train["steps"],
        "seconds": round(train["seconds"], 3), "stopped_by": train["stopped_by"],
        "complete": train["complete"], "loss": train["history"][-1][1] if train["history"] else None,
    }
    summary.update({key: train[key] for key in extra if key in train})
    summary["device"] = train["device"]
    return summary


def save_fit(output: Any, checkpoint: dict, trainer: Trainer, state: TrainState) -> None:
    """Write a fit's checkpoint, resumable when training was interrupted.

    SIGINT/SIGTERM arriving during the write are held until it is done (a second one gives up at once,
    and the atomic write keeps the old file), so a late signal never throws the finished work away.
    """
    if state.interrupted:
        checkpoint["resume"] = trainer.resume_state()
    with hold_signals():
        save_checkpoint(output, checkpoint)
