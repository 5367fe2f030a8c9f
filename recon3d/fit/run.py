"""One ``fit()`` for every method: run config, seed, preparation, field, resume, the training loop,
the checkpoint and the summary (the method contract: recon3d.fit.method).

:func:`train` runs a method and returns the checkpoint as plain data (the Python API keeps it in
memory); :func:`fit` does the same under the output's lock and writes it; :func:`fit_file` reads the
input first. :func:`default_output` names a checkpoint after its input and field kind, and
:func:`check_replace` refuses to replace another method's checkpoint unless asked to.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from recon3d import __version__, distributed
from recon3d.console import stage
from recon3d.device import start_kernel_key
from recon3d.errors import Recon3dError
from recon3d.fields import build_field
from recon3d.fit.loop import Sharding, Trainer, TrainState, hold_signals
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
        on_step: Callable[[Trainer, int], None] | None = None, shards_per_rank: int = 1) -> dict[str, Any]:
    """Fit ``method`` to ``data`` (what its ``read`` returns), write the checkpoint to ``output`` and
    return the summary.

    ``resume`` is an interrupted checkpoint of the same input: its config, field, optimiser and
    generator state are restored, so the result matches an uninterrupted run. ``on_step(trainer,
    step)`` runs before every step (benchmarks evaluate there, excluding their time with
    ``trainer.exclude``).

    ``output`` and the shared options are checked first (nothing slow runs for a bad one), and the
    output's lock (:func:`recon3d.io.atomic.output_lock`) is held until the checkpoint is written: another
    run writing the same file is refused at once.

    Under torchrun every rank trains (data-parallel, :class:`recon3d.fit.loop.Sharding`; with
    ``shards_per_rank`` shards each) and rank 0 alone writes the checkpoint.
    """
    method = get_method(method) if isinstance(method, str) else method
    check_output(output, what="checkpoint")
    check_fit_options(options)
    lead = distributed.leader()
    with output_lock(output) if lead else contextlib.nullcontext():
        checkpoint, run = train(method, data, options, device, source, resume, show_progress and lead, on_step,
                                shards_per_rank)
        if lead:
            save_fit(output, checkpoint, run.trainer, run.state)
        return summarize(checkpoint, output, extra=method.summary)


def train(method: Method | str, data: Any, options: FitOptions, device: torch.device, source: str = "input",
          resume: dict | None = None, show_progress: bool = True,
          on_step: Callable[[Trainer, int], None] | None = None,
          shards_per_rank: int = 1) -> tuple[dict[str, Any], FitRun]:
    """Fit ``method`` to ``data`` and return (the checkpoint as plain data, the run); nothing is written.
    An interrupted run's checkpoint holds its ``resume`` state. See :func:`fit` for the arguments."""
    method = get_method(method) if isinstance(method, str) else method
    check_fit_options(options)
    if device.type == "cuda":
        start_kernel_key()  # overlaps the preparation
    run = FitRun(config=run_config(method, options, data, device, resume), options=options, device=device,
                 source=source, resume=resume)
    torch.manual_seed(run.config["settings"].seed)
    with stage(f"{method.command}: preparing {_short(source)}", enabled=show_progress):
        run.data = method.prepare(run, data)
    if resume is None:
        method.tune(run)
    run.field = build_field(method.kind, method.field_config(run)).to(device)
    if resume is not None:
        run.field.load_state_dict(resume["state_dict"])
    run.step = method.make_step(run)
    callback = None if on_step is None else (lambda index: on_step(run.trainer, index))
    run.trainer = Trainer(run.field, run.step, run.config["settings"], device, on_step=callback,
                          label=method.command, show_progress=show_progress,
                          sharding=Sharding.current(shards_per_rank))
    if resume is not None:
        run.trainer.load_resume_state(resume["resume"])
    start = time.perf_counter()
    run.state = run.trainer.run()
    run.seconds = time.perf_counter() - start - run.trainer.excluded_seconds
    method.finish(run)
    checkpoint = build_checkpoint(method, run)
    if run.state.interrupted:
        checkpoint["resume"] = run.trainer.resume_state()
    return checkpoint, run


def _short(source: str, width: int = 60) -> str:
    """A long path shortened to its end, for progress lines."""
    return source if len(source) <= width else "…" + source[-(width - 1):]


def read_input(method: Method, path: Path, options: FitOptions, device: torch.device,
               show_progress: bool = True) -> Any:
    """``method.read(path)``, shown as a stage (a spinner, or a log line) when it takes a while."""
    with stage(f"{method.command}: reading {_short(str(path))}", enabled=show_progress):
        return method.read(Path(path), options, device)


def fit_file(method: Method, path: Path, options: FitOptions, output: Path, device: torch.device,
             resume: bool = False, show_progress: bool = True, inputs: Sequence[Path] = (),
             force: bool = False, shards_per_rank: int = 1) -> dict[str, Any]:
    """Read ``path`` with ``method`` and fit it (``resume``: continue the interrupted ``output``).

    Before anything slow, ``output`` is checked (a ``.pt`` file that is neither ``path`` nor one of the
    other files the input consists of, ``inputs``, e.g. a scene's json and images; see
    :func:`recon3d.io.atomic.check_output`) and so are the shared options; the output's lock is held from
    before reading the input until the checkpoint is written. An existing checkpoint of another method is
    not replaced unless ``force`` (:func:`check_replace`).
    """
    files = [Path(path), *map(Path, inputs)]
    check_output(output, files, suffixes=(".pt",), example="model.pt", what="checkpoint")
    check_fit_options(options)
    lead = distributed.leader()
    with output_lock(output) if lead else contextlib.nullcontext(), protect_inputs(files):
        if not resume and not force and lead:
            check_replace(output, method)
        previous = load_resumable(output, method.kind) if resume else None
        data = read_input(method, path, options, device, show_progress)
        if previous is not None:
            method.check_resume(previous, data, output, path)
        return fit(method, data, options, output, device, source=str(path), resume=previous,
                   show_progress=show_progress, shards_per_rank=shards_per_rank)


#: Input names datasets give every shape (ShapeNet's and Occupancy Networks' files, one folder per shape): a
#: default checkpoint name takes the folder's name too, so inputs in sibling folders do not share one.
GENERIC_STEMS = frozenset({"pointcloud", "points", "point_cloud", "model", "model_normalized", "model_watertight",
                           "mesh"})
SCENE_FILES = frozenset({"transforms", "transforms_train", "transforms_val", "transforms_test"})


def default_output(method: Method, path: Path) -> Path:
    """The checkpoint name a fit writes without ``-o``, in the working folder: the input's name and the
    field kind, so that fitting one input with several methods keeps every result (``spot.obj`` →
    ``spot.sdf.pt``, ``spot.occupancy.pt``), with the folder's name for generic names
    (``…/1a04e3/pointcloud.npz`` → ``1a04e3-pointcloud.sdf.pt``; ``fox/transforms.json`` → ``fox.nerf.pt``)."""
    path = Path(path)
    stem = method.default_stem(path) if path.name not in ("", ".", "..") else ""
    parent = path.resolve().parent.name if path.name not in ("", ".", "..") else ""
    if not stem:
        stem = path.resolve().name or "model"
    elif stem.lower() in SCENE_FILES and parent:
        stem = parent
    elif stem.lower() in GENERIC_STEMS and parent:
        stem = f"{parent}-{stem}"
    return Path(f"{stem}.{method.kind}.pt")


def check_replace(output: Path, method: Method) -> None:
    """Refuse to replace a recon3d checkpoint that another method wrote (``--force`` replaces it); a file
    that is not a recon3d checkpoint, or one of this method, is replaced as before."""
    output = Path(output)
    if not output.is_file():
        return
    try:
        existing = load_checkpoint(output)
    except Recon3dError:
        return
    name = existing["train"].get("method") if isinstance(existing.get("train"), dict) else None
    if name == method.name:
        return
    held = f"{_a(existing['kind'])} checkpoint" + (f" written by {_command_of(name)}" if name else "")
    raise Recon3dError(f"{output}: holds {held}; {method.command} would replace it with {_a(method.kind)} fit: give "
                       "another -o, or --force to replace it")


def _a(kind: str) -> str:
    """``kind`` with its article: an sdf, an occupancy, a nerf."""
    return f"{'an' if kind[:1] in 'aeiosx' else 'a'} {kind}"


def _command_of(name: str) -> str:
    """The command that runs the method called ``name`` (the name itself when unknown)."""
    try:
        method = get_method(name)
    except Recon3dError:
        return name
    return method.command + (" on a scene" if method.name.endswith("-images") else "")


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
    summary["history"] = history_summary(train)
    summary["device"] = train["device"]
    return summary


def _step(value: Any) -> int | None:
    """A history row's step as an integer (None when it is not a finite number)."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def history_summary(train: dict[str, Any]) -> dict[str, Any] | None:
    """The loss history in brief: its first, last and lowest loss (with their steps), every logged term's
    last value, and how many rows the full history has (``info --json`` and ``info --history`` show them)."""
    history = train.get("history") or []
    if not history:
        return None
    terms = list(train.get("history_terms") or [])
    losses = [(row[0], row[1]) for row in history if len(row) > 1]
    finite = [pair for pair in losses if pair[1] == pair[1]]  # NaN never compares equal
    low = min(finite, key=lambda pair: pair[1]) if finite else (None, None)
    summary: dict[str, Any] = {"rows": len(history), "first_step": _step(history[0][0]), "first_loss": history[0][1],
                               "last_step": _step(history[-1][0]), "last_loss": history[-1][1],
                               "min_loss": low[1], "min_step": _step(low[0])}
    last = history[-1]
    for index, name in enumerate(terms):
        if name != "loss" and index + 1 < len(last):
            summary[f"last_{name}"] = last[index + 1]
    return summary


def save_fit(output: Any, checkpoint: dict, trainer: Trainer, state: TrainState) -> None:
    """Write a fit's checkpoint, resumable when training was interrupted.

    SIGINT/SIGTERM arriving during the write are held until it is done (a second one gives up at once,
    and the atomic write keeps the old file), so a late signal never throws the finished work away.
    """
    if state.interrupted and "resume" not in checkpoint:
        checkpoint["resume"] = trainer.resume_state()
    with hold_signals():
        save_checkpoint(output, checkpoint)
