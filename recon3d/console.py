"""Messages and progress, on stderr only: stdout carries results (paths, --json).

The library logs through :mod:`logging` (the ``recon3d`` logger: ``info`` and ``warn`` below); it adds no
handler of its own, so an application decides where the messages go. The command line installs
:data:`HANDLER` for the duration of a command (:func:`stderr_logging`), which prints records as the
commands always have: info lines plain, warnings as one ``warning: …`` line.

Progress (:class:`Progress`) is a rich bar when stderr is a terminal (or a notebook), and otherwise
(nohup, Slurm, CI, ``2> log``) a plain log line every :data:`PROGRESS_SECONDS` seconds with the count,
the rate and the time left, and one line at the end saying what was done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Callable, Iterator

from rich.console import Console

#: The console for progress bars, logs and warnings. Never stdout.
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

#: The library's logger; modules log through :func:`info` and :func:`warn`.
logger = logging.getLogger("recon3d")


def _progress_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("RECON3D_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


#: Seconds between two plain progress lines when stderr is not a terminal (``RECON3D_PROGRESS_SECONDS``).
PROGRESS_SECONDS = _progress_seconds()

_quiet = False


class StderrHandler(logging.Handler):
    """recon3d's records on stderr as the command line prints them: info plain, warnings (and worse) as
    one ``warning: …`` line, yellow on a terminal. Writes to whatever ``sys.stderr`` is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                stderr.print(f"warning: {' '.join(message.split())}", markup=False, style="yellow")
            else:
                stderr.print(message, markup=False)
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)


#: The handler the command line installs (one instance, so installing it twice adds nothing).
HANDLER = StderrHandler(logging.INFO)


def set_quiet(quiet: bool) -> None:
    """Silence progress and info lines (warnings and errors still show)."""
    global _quiet
    _quiet = quiet
    HANDLER.setLevel(logging.WARNING if quiet else logging.INFO)


def is_quiet() -> bool:
    return _quiet


@contextlib.contextmanager
def stderr_logging(quiet: bool = False) -> Iterator[None]:
    """While the block runs, recon3d's log records go to stderr through :data:`HANDLER` (info and up;
    warnings and up with ``quiet``) and not on to the root logger; everything is restored afterwards."""
    added = HANDLER not in logger.handlers
    saved = (logger.level, logger.propagate, HANDLER.level, _quiet)
    if added:
        logger.addHandler(HANDLER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    set_quiet(quiet)
    try:
        yield
    finally:
        if added:
            logger.removeHandler(HANDLER)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        set_quiet(saved[3])
        HANDLER.setLevel(saved[2])


def info(message: str) -> None:
    """A log line (logging.INFO on the ``recon3d`` logger)."""
    logger.info(message)


def warn(message: str) -> None:
    """A warning, one line (logging.WARNING on the ``recon3d`` logger)."""
    logger.warning(" ".join(str(message).split()))


def error_line(message: str) -> None:
    """The one ``error: …`` line the CLI prints before a non-zero exit."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def interactive() -> bool:
    """Whether progress can be drawn as a live bar (stderr is a terminal or a notebook)."""
    return bool(stderr.is_terminal or stderr.is_jupyter)


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def duration(seconds: float) -> str:
    """``0.42 s``, ``12.3 s``, or ``m:ss`` past a minute."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


class Progress:
    """Progress of one piece of work: ``completed`` of ``total`` ``unit`` (``percent=True``: a fraction
    shown in %), with an optional ``note`` (``loss 0.0123``) and, when a time budget applies,
    ``budget_seconds`` (the time left is then whichever ends first).

    On a terminal: a rich bar. Elsewhere: ``label: 250/1500 steps (17%), loss 0.0123, 24.1 steps/s,
    ETA 0:52`` every :data:`PROGRESS_SECONDS` seconds as an info log line, and at the end ``label:
    1500/1500 steps in 1:02 (24.2 steps/s), loss 0.0045``. Nothing at all when disabled or quiet.
    """

    def __init__(self, label: str, total: float, unit: str = "", *, enabled: bool = True, completed: float = 0,
                 budget_seconds: float | None = None, percent: bool = False, interval: float | None = None) -> None:
        self.label, self.total, self.unit, self.percent = label, float(total), unit, percent
        self.enabled = enabled and not _quiet
        self.budget_seconds = budget_seconds
        self.interval = PROGRESS_SECONDS if interval is None else interval
        self.completed = self.start_completed = float(completed)
        self.note = ""
        self.stage = ""
        self._bar = None
        self._task = None
        self._start = self._last_line = 0.0

    # ---------------------------------------------------------------- context

    def __enter__(self) -> Progress:
        self._start = self._last_line = time.perf_counter()
        if self.enabled and interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            count = TaskProgressColumn() if self.percent else MofNCompleteColumn()
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), count,
                                     TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=stderr,
                                     transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.completed, status="")
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.__exit__(kind, value, traceback)
        elif self.enabled and kind is None:
            logger.info(self.final_line())

    # ---------------------------------------------------------------- reporting

    def update(self, completed: float, total: float | None = None, note: str | None = None,
               stage: str | None = None) -> None:
        """Report ``completed`` (of ``total``, when it changed); ``note`` and ``stage`` replace the previous."""
        self.completed = float(completed)
        if total is not None:
            self.total = float(total)
        if note is not None:
            self.note = note
        if stage is not None:
            self.stage = stage
        if not self.enabled:
            return
        if self._bar is not None:
            self._refresh()
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval and self.completed < self.total:
            self._last_line = now
            logger.info(self.line())

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def rate(self) -> float | None:
        """Units per second since the start (None before any progress)."""
        done, elapsed = self.completed - self.start_completed, self.elapsed()
        return done / elapsed if done > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left: the remaining units at the current rate, or the time budget's rest if sooner."""
        rate = self.rate()
        left = (self.total - self.completed) / rate if rate else None
        if self.budget_seconds is not None:
            budget_left = max(self.budget_seconds - self.elapsed(), 0.0)
            left = budget_left if left is None else min(left, budget_left)
        return left

    def _count(self) -> str:
        if self.percent:
            return f"{100.0 * self.completed / max(self.total, 1e-12):.0f}%"
        share = f" ({100.0 * self.completed / self.total:.0f}%)" if self.total else ""
        return f"{self.completed:.0f}/{self.total:.0f}{' ' + self.unit if self.unit else ''}{share}"

    def _rate_text(self) -> str:
        rate = self.rate()
        if rate is None or self.percent:
            return ""
        figure = f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"
        return f"{figure} {self.unit}/s" if self.unit else f"{figure}/s"

    def line(self) -> str:
        """The periodic plain line."""
        eta = self.eta()
        parts = [self._count(), self.note, self._rate_text(), "" if eta is None else f"ETA {clock(eta)}"]
        head = f"{self.label}: {self.stage} " if self.stage else f"{self.label}: "
        return head + ", ".join(p for p in parts if p)

    def final_line(self) -> str:
        """What was done, for the end of the work."""
        rate = self._rate_text()
        unit = f" {self.unit}" if self.unit else ""
        done = "done" if self.percent else f"{self.completed:.0f}/{self.total:.0f}{unit}"
        text = f"{self.label}: {done} in {duration(self.elapsed())}" + (f" ({rate})" if rate else "")
        return text + (f", {self.note}" if self.note else "")

    def _refresh(self) -> None:
        eta = self.eta()
        parts = [self.stage, self.note, self._rate_text(), "" if eta is None else f"left {clock(eta)}"]
        self._bar.update(self._task, completed=self.completed, total=self.total,
                         status=" · ".join(p for p in parts if p))


@contextlib.contextmanager
def progress_bar(label: str, total: int, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Progress of ``total`` items (see :class:`Progress`); yields ``advance(done, total)`` to report with."""
    with Progress(label, total, enabled=not disable) as progress:
        yield lambda done, of: progress.update(done, of)


@contextlib.contextmanager
def stage(label: str, enabled: bool = True, report_after: float = 2.0) -> Iterator[None]:
    """A step without a count (reading, preparing): a spinner on a terminal; elsewhere a ``label …`` line
    once it has run ``report_after`` seconds, and ``label: 3.2 s`` when it ends after that (quick stages
    print nothing)."""
    enabled = enabled and not _quiet
    start = time.perf_counter()
    status = timer = None
    if enabled and interactive():
        status = stderr.status(f"{label} …")
        status.__enter__()
    elif enabled:
        timer = threading.Timer(report_after, logger.info, (f"{label} …",))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if status is not None:
            status.__exit__(None, None, None)
        if timer is not None:
            timer.cancel()
    seconds = time.perf_counter() - start
    if enabled and seconds >= report_after:
        logger.info(f"{label}: {duration(seconds)}")
