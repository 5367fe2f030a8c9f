"""Fixtures shared by the test modules."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small workloads: one thread avoids OpenMP oversubscription (10x slower) on busy machines and keeps
    floating-point sums in one order. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    Commands run in-process take their default thread count from OMP_NUM_THREADS, set to 1 here too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def library_messages_on_stderr() -> Iterator[None]:
    """The library logs (recon3d.console); show its messages on stderr as the command line does, so tests
    read warnings with capsys as a user reads them in a terminal."""
    from recon3d.console import stderr_logging

    with stderr_logging():
        yield
