"""stderr-only messages. stdout carries results (paths, --json); everything else comes here."""

from __future__ import annotations

import sys

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
