"""torch.distributed for recon3d: which rank this process is, the process group, and the few
collectives the commands need. Launch with ``torchrun`` (elastic rendezvous); a plain process is
rank 0 of 1 and none of this does anything.

Two uses (issue: past one GPU): many inputs shared out by rank (:mod:`recon3d.batch`; the group only
gathers the summary), and data-parallel training of one scene (each rank draws its own rays, the
gradients are averaged before every optimiser step, DDP's rule; :func:`average_gradients`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist

from recon3d.errors import Recon3dError

#: A gloo group beside an NCCL default group, for small decisions on CPU numbers (no GPU sync).
_control: Any = None
#: Inside :func:`alone`: this process works by itself (its own input of many), whatever the group.
_alone = False
#: Whether this process joined a process group (then :func:`exit_if_joined` ends it).
_joined = False


@dataclass(frozen=True)
class Ranks:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes shared outputs and prints summaries."""
        return self.rank == 0


def ranks_from_env() -> Ranks:
    """The ranks torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); rank 0 of 1 without them."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise Recon3dError(f"RANK / WORLD_SIZE / LOCAL_RANK: not integers ({exc})") from exc
    if world < 1 or not 0 <= rank < world:
        raise Recon3dError(f"RANK {rank} of WORLD_SIZE {world}: not a valid rank")
    return Ranks(rank, world, local)


def setup(backend: str | None = None, timeout_minutes: float = 30.0) -> Ranks:
    """Join the process group torchrun describes (once per process); rank 0 of 1 outside torchrun.

    ``backend``: ``nccl`` for tensors on GPUs, ``gloo`` for CPU tensors and Python objects; by default
    NCCL where every rank has a GPU, else gloo.
    """
    ranks = ranks_from_env()
    if not ranks.distributed or dist.is_initialized():
        return ranks
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank % max(torch.cuda.device_count(), 1))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    global _control, _joined
    _joined = True
    _control = dist.new_group(backend="gloo") if backend != "gloo" else None
    return ranks


def exit_if_joined(code: int) -> None:
    """End a process that joined a process group at once with exit ``code`` (stdio flushed): the interpreter's
    and C++'s teardown are skipped, where torch's gloo backend now and then aborts a rank that has finished
    and left its group ("terminate called without an active exception", exit -6 instead of 0). Nothing
    happens in a process that never joined one."""
    if not _joined:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def teardown(wait: bool = False) -> None:
    """Leave the process group (a no-op when none was joined). ``wait``: first wait until every rank is
    leaving too, so no rank tears its group down while another still uses or writes; a failed barrier (a
    rank died) is not an error here."""
    global _control
    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            try:
                dist.barrier(group=_control)
            except RuntimeError:
                pass  # a rank failed or left; its own error is the one to report
        dist.destroy_process_group()
    _control = None


@contextlib.contextmanager
def leaving_together() -> Iterator[None]:
    """Run the block, then leave the process group: once every rank has finished its block when it ends
    normally (a ``return`` included), at once when it raises (the other ranks may never come)."""
    try:
        yield
    except BaseException:
        teardown(wait=False)
        raise
    teardown(wait=True)


def rank_device(ranks: Ranks, requested: torch.device) -> torch.device:
    """The GPU of this rank on its machine (cuda:LOCAL_RANK) when ``requested`` is CUDA, made the current
    device (kernels launch there); else as asked."""
    if requested.type != "cuda" or not ranks.distributed or requested.index is not None:
        return requested
    device = torch.device("cuda", ranks.local_rank % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(device)
    return device


def active() -> bool:
    """Whether this process is one of several in a process group (and not working :func:`alone`)."""
    return not _alone and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Work as a process of one while inside: :func:`active` is False and :func:`leader` True, so a fit
    of one of many inputs (each rank its own) neither averages gradients nor agrees with the other ranks,
    and writes its own output. The process group stays; :func:`gather` and :func:`barrier` outside use it."""
    global _alone
    previous, _alone = _alone, True
    try:
        yield
    finally:
        _alone = previous


def leader() -> bool:
    """Whether this process writes shared outputs: rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank ([obj] when not distributed)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_control)  # pickled objects: through gloo beside NCCL
    return out


def barrier() -> None:
    """Wait until every rank is here (nothing when not distributed)."""
    if active():
        dist.barrier(group=_control)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the ranks, in one all-reduce of one flat buffer
    (DDP's rule). A parameter without a gradient on this rank counts as zero, so every rank sends
    the same buffer shape."""
    if not active():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
        offset += n


def agree(seconds: float, stop: bool) -> tuple[float, bool]:
    """The largest elapsed time and whether any rank was asked to stop, the same on every rank (so the
    time budget, the learning-rate schedule and an interrupt end every rank's loop at the same step)."""
    if not active():
        return seconds, stop
    values = torch.tensor([float(seconds), 1.0 if stop else 0.0], dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control)
    return float(values[0]), bool(values[1] > 0)


def mean_over_ranks(value: float) -> float:
    """The mean of a number over the ranks (the value itself when not distributed)."""
    if not active():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor, group=_control)
    return float(tensor.item()) / dist.get_world_size()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (every rank then starts from the same field)."""
    if not active():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)
