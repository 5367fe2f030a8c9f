"""Many inputs in one command (a glob or a folder): the inputs, the outputs named after them in an
output folder, the share of each rank under torchrun, and a run over them that skips what is done,
reports a failing input and goes on, and summarises.

Plain functions; the CLI wires them to a command's single-input path (recon3d.cli._run_many): it expands
INPUT, names the outputs in the ``-o`` folder (:func:`output_folder`) and runs :func:`run_batch`, which under
torchrun does this rank's share with each input's work alone (no collectives) and gathers every rank's
outcomes for the summary. A fit's output is done when it is a finished checkpoint (:func:`finished_checkpoint`;
an :func:`interrupted_checkpoint` is resumed).
"""

from __future__ import annotations

import glob
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from recon3d.errors import Recon3dError

GLOB_CHARACTERS = frozenset("*?[")


def is_pattern(text: str) -> bool:
    """Whether an INPUT argument is a glob pattern (quoted by the user so the shell left it alone)."""
    return any(ch in GLOB_CHARACTERS for ch in str(text))


def expand_inputs(text: str, accepts: Callable[[Path], bool]) -> list[Path]:
    """The inputs a pattern or a folder names, sorted: the matches of a glob pattern (``**`` allowed)
    or a folder's entries that ``accepts`` takes as inputs. One clear error when there are none."""
    if is_pattern(text) and not Path(text).exists():  # a folder called data[1] is a folder
        found = [Path(p) for p in glob.glob(str(text), recursive=True)]
        where = f"{text}: matches"
    else:
        folder = Path(text)
        if not folder.is_dir():
            raise Recon3dError(f"{text}: not a folder or a pattern")
        found = list(folder.iterdir())
        where = f"{text}: holds"
    inputs = sorted(p for p in found if not p.name.startswith(".") and accepts(p))
    if not inputs:
        raise Recon3dError(f"{where} no input this command reads")
    return inputs


def output_names(inputs: Sequence[Path], folder: Path, suffix: str,
                 stem: Callable[[Path], str] | None = None) -> list[Path]:
    """``folder/<stem><suffix>`` per input (``stem(input)``, by default the file's stem or the folder's
    name); inputs with the same stem in different folders get their parent folders' names in front
    (``a-x``, ``b-x``), so no two outputs collide."""
    stems = [stem(p) if stem is not None else p.stem if p.is_file() or p.suffix else p.name for p in inputs]
    names: list[str] = []
    for path, name in zip(inputs, stems):
        if stems.count(name) == 1:
            names.append(name)
            continue
        parts = [part for part in path.resolve().parent.parts[-3:] if part not in ("/", "")]
        names.append("-".join(parts[-1:] + [name]) if parts else name)
    if len(set(names)) != len(names):  # still equal: number them in input order
        names = [f"{i:05d}-{name}" for i, name in enumerate(names)]
    return [folder / f"{name}{suffix}" for name in names]


def input_size(path: Path) -> int:
    """Bytes of an input (a folder counts its files), the cost measure for balancing ranks."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except OSError:
        return 0


def share(sizes: Sequence[int], world: int) -> list[int]:
    """The rank each input goes to: largest first, each to the rank with the least work so far (ties:
    the lowest rank, then input order), so the work is balanced and every rank computes the same plan."""
    loads = [0] * max(int(world), 1)
    owner = [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-int(sizes[i]), i)):
        rank = min(range(len(loads)), key=lambda r: (loads[r], r))
        owner[index] = rank
        loads[rank] += max(int(sizes[index]), 1)
    return owner


@dataclass
class Outcome:
    """What happened to one input: ``done``, ``skipped`` (its output was already there) or ``failed``."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    rank: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        record = {"input": self.input, "output": self.output, "status": self.status,
                  "seconds": round(self.seconds, 3), "rank": self.rank}
        if self.error is not None:
            record["error"] = self.error
        record.update({k: v for k, v in self.result.items() if k not in record})
        return record


def run_all(jobs: Sequence[tuple[Path, Path]], work: Callable[[Path, Path], dict[str, Any]],
            done: Callable[[Path], bool], rank: int = 0, world: int = 1,
            on_outcome: Callable[[Outcome], None] | None = None, verbose: bool = False,
            on_start: Callable[[int, int, Path, Path], None] | None = None) -> list[Outcome]:
    """Run ``work(input, output)`` for this rank's share of ``jobs`` (input, output) pairs.

    An input whose output ``done`` says is complete is skipped (a rerun resumes); an input whose work
    raises is reported (its error message, with the traceback when ``verbose``) and the rest go on;
    KeyboardInterrupt stops the run. ``on_start(index, count, input, output)`` sees each of this rank's
    inputs before it is looked at (index from 1 of count), ``on_outcome`` each outcome as it happens.
    """
    owner = share([input_size(source) for source, _ in jobs], world)
    mine = [job for job, who in zip(jobs, owner) if who == rank]
    outcomes = []
    for index, (source, output) in enumerate(mine, 1):
        if on_start is not None:
            on_start(index, len(mine), source, output)
        started = time.perf_counter()
        if done(output):
            outcome = Outcome(str(source), str(output), "skipped", rank=rank)
        else:
            try:
                result = work(source, output)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # one bad input must not stop the others
                message = str(exc) if isinstance(exc, Recon3dError) else f"{type(exc).__name__}: {exc}"
                if verbose:
                    message += "\n" + traceback.format_exc()
                outcome = Outcome(str(source), str(output), "failed", time.perf_counter() - started, message,
                                  rank)
            else:
                outcome = Outcome(str(source), str(output), "done", time.perf_counter() - started, rank=rank,
                                  result=dict(result or {}))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def finished_checkpoint(path: Path, kinds: tuple[str, ...] | None = None) -> bool:
    """Whether ``path`` holds a finished recon3d checkpoint (of one of ``kinds``): what a rerun of many
    fits skips. An interrupted one (with its ``resume`` state), a checkpoint of another kind or a file
    that is no checkpoint is not finished."""
    if not Path(path).is_file():
        return False
    from recon3d.io.checkpoint import KINDS, load_checkpoint

    try:
        checkpoint = load_checkpoint(path, kinds=kinds or KINDS)
    except Recon3dError:
        return False
    train = checkpoint.get("train")
    return "resume" not in checkpoint and not (isinstance(train, dict) and train.get("complete") is False)


def interrupted_checkpoint(path: Path, kinds: tuple[str, ...] | None = None) -> bool:
    """Whether ``path`` holds an interrupted recon3d checkpoint (of one of ``kinds``) that a fit can
    resume (its ``resume`` state)."""
    if not Path(path).is_file():
        return False
    from recon3d.io.checkpoint import KINDS, load_checkpoint

    try:
        return "resume" in load_checkpoint(path, kinds=kinds or KINDS)
    except Recon3dError:
        return False


def output_folder(output: Path | None, file_suffixes: Sequence[str] = ()) -> Path:
    """The ``-o`` of many inputs: a folder (created when missing; the working folder without ``-o``);
    a file, stdout, or a new name ending in one of ``file_suffixes`` (``-o model.pt``: meant as a file)
    there is one clear error."""
    if output is None:
        return Path(".")
    folder = Path(output)
    if str(output) == "-":
        raise Recon3dError("-o -: many inputs write one output each; give a folder")
    if not folder.exists() and folder.suffix.lower() in {s.lower() for s in file_suffixes}:
        raise Recon3dError(f"-o {output}: many inputs write one output each into a folder: give a folder name, "
                           f"not a {folder.suffix} file")
    if folder.exists() and not folder.is_dir():
        raise Recon3dError(f"-o {output}: is a file; many inputs write one output each into a folder: give a "
                           "folder (created when missing)")
    if not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Recon3dError(f"-o {output}: cannot create the folder ({exc.strerror or exc})") from exc
    return folder


def run_batch(jobs: Sequence[tuple[Path, Path]], work: Callable[[Path, Path], dict[str, Any]],
              done: Callable[[Path], bool], on_outcome: Callable[[Outcome], None] | None = None,
              on_start: Callable[[int, int, Path, Path], None] | None = None,
              verbose: bool = False) -> list[Outcome]:
    """:func:`run_all` in a command: under torchrun (a process group set up by
    :func:`recon3d.distributed.setup`) this rank's share, each input's work done by this process alone
    (:func:`recon3d.distributed.alone`: no collectives, its own outputs); then every rank's outcomes,
    in input order, gathered on every rank."""
    import torch.distributed as dist

    from recon3d import distributed

    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed.active() else (0, 1)

    def alone(source: Path, output: Path) -> dict[str, Any]:
        with distributed.alone():
            return work(source, output)

    outcomes = run_all(jobs, alone, done, rank=rank, world=world, on_outcome=on_outcome, verbose=verbose,
                       on_start=on_start)
    order = {str(source): index for index, (source, _) in enumerate(jobs)}
    gathered = [outcome for part in distributed.gather(outcomes) for outcome in part]
    return sorted(gathered, key=lambda outcome: order.get(outcome.input, len(order)))


def summary_line(outcomes: Sequence[Outcome], seconds: float) -> str:
    """``12 done, 3 skipped, 1 failed in 4:05 (2.9 inputs/min)``."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    rate = counts["done"] / (seconds / 60.0) if seconds > 0 else 0.0
    minutes, secs = divmod(int(round(seconds)), 60)
    text = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in {minutes}:{secs:02d}"
    return text + (f" ({rate:.1f} inputs/min)" if counts["done"] else "")
