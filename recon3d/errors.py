"""User-facing errors.

Anything a user can cause (a missing file, a malformed header, NaN coordinates) is raised as
:class:`Recon3dError` with a one-line message that names the file and the problem. The CLI turns it
into ``error: <message>`` on stderr and a non-zero exit code; library callers can catch it.
"""

from __future__ import annotations


class Recon3dError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class InputError(Recon3dError):
    """The input file is missing, unreadable, malformed or unusable."""


def one_line(message: str) -> str:
    """Collapse a message to one line, so ``error: …`` is always exactly one line."""
    return " ".join(str(message).split())
