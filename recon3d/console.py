"""stderr-only messages. stdout carries results (paths, --json); everything else comes here."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from rich.console import Console

#: The console for progress, logs and warnings. Never stdout.
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence ``info`` (warnings and errors still show)."""
    global _quiet
    _quiet = quiet


def info(message: str) -> None:
    """A progress or log line on stderr."""
    if not _quiet:
        stderr.print(message, markup=False)


def warn(message: str) -> None:
    """A one-line ``warning: …`` on stderr."""
    stderr.print(f"warning: {' '.join(str(message).split())}", markup=False, style="yellow")


def error_line(message: str) -> None:
    """The one ``error: …`` line the CLI prints before a non-zero exit."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_bar(label: str, total: int, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``advance(done, total)`` to report with."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=stderr, disable=disable or _quiet) as progress:
        task = progress.add_task(label, total=total)

        def advance(done: int, of: int) -> None:
            progress.update(task, completed=done, total=of)

        yield advance
