"""Many inputs in one command (a glob or a folder): the inputs, the outputs named after them in an
output folder, the share of each rank under torchrun, and a run over them that skips what is done,
reports a failing input and goes on, and summarises.

Plain functions; the CLI wires them to a command's single-input path.
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
    if is_pattern(text):
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


def output_names(inputs: Sequence[Path], folder: Path, suffix: str) -> list[Path]:
    """``folder/<stem><suffix>`` per input; inputs with the same stem in different folders get their
    parent folders' names in front (``a-x``, ``b-x``), so no two outputs collide."""
    stems = [p.stem if p.is_file() or p.suffix else p.name for p in inputs]
    names: list[str] = []
    for path, stem in zip(inputs, stems):
        if stems.count(stem) == 1:
            names.append(stem)
            continue
        parts = [part for part in path.resolve().parent.parts[-3:] if part not in ("/", "")]
        names.append("-".join(parts[-1:] + [stem]) if parts else stem)
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
            on_outcome: Callable[[Outcome], None] | None = None, verbose: bool = False) -> list[Outcome]:
    """Run ``work(input, output)`` for this rank's share of ``jobs`` (input, output) pairs.

    An input whose output ``done`` says is complete is skipped (a rerun resumes); an input whose work
    raises is reported (its error message, with the traceback when ``verbose``) and the rest go on;
    KeyboardInterrupt stops the run. ``on_outcome`` sees each outcome as it happens.
    """
    owner = share([input_size(source) for source, _ in jobs], world)
    outcomes = []
    for (source, output), who in zip(jobs, owner):
        if who != rank:
            continue
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


def summary_line(outcomes: Sequence[Outcome], seconds: float) -> str:
    """``12 done, 3 skipped, 1 failed in 4:05 (2.9 inputs/min)``."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    rate = counts["done"] / (seconds / 60.0) if seconds > 0 else 0.0
    minutes, secs = divmod(int(round(seconds)), 60)
    text = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in {minutes}:{secs:02d}"
    return text + (f" ({rate:.1f} inputs/min)" if counts["done"] else "")
