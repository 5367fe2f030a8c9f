"""One hostile-input case: how to build its inputs, the command to run, and what a clean end is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Case:
    """``build(work)`` makes the inputs under the folder ``work`` and returns the recon3d arguments
    (after ``recon3d``). ``expect``: ``"error"`` (one ``error:`` line on stderr, exit 1, no
    traceback, no new output file), ``"ok"`` (exit 0) or ``"either"`` (one of the two, still clean).
    ``bounded``: the case checks a time or memory bound, so the table reports its seconds and peak
    memory. ``check(work, result)`` may add assertions of its own (return a message on failure)."""

    name: str
    build: Callable[[Path], list[str]]
    expect: str = "error"
    bounded: bool = False
    timeout: float = 120.0
    check: Callable[[Path, object], str | None] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
