"""A training step replayed as one CUDA graph: forward, backward and the optimiser's update.

Eager PyTorch launches each of a step's few hundred small kernels from Python, so a step of a tiny
network (instant-ngp's) takes longer on the host than on the GPU. A CUDA graph records the step's
kernels once and replays them with one launch (PyTorch's "whole network capture"). The step must then
have fixed shapes and read its inputs from fixed buffers, which the caller fills before each replay;
one graph is kept per shape key (e.g. a ray count). The optimiser is made capturable, with its
learning rate a device tensor that the loop fills each step (recon3d.fit.loop.set_learning_rate).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Hashable

import torch

from recon3d.device import join_warmups

Terms = dict[str, torch.Tensor]

#: Graphs kept at once; each holds its own memory pool, the least recently used is dropped beyond this.
MAX_GRAPHS = 6


def can_capture(device: torch.device) -> bool:
    """CUDA graphs need a CUDA device (and a torch built with them)."""
    return device.type == "cuda" and hasattr(torch.cuda, "CUDAGraph")


def fixed_step_mode(device: torch.device) -> str | None:
    """How the fixed-shape steps (fit-nerf on a grid, fit-sdf on points) run, from ``RECON3D_CUDA_GRAPHS``:
    ``"capture"`` on a CUDA device (unset or 1), None (0: the eager step), ``"eager"`` (``fixed``: the
    fixed-shape step without capturing it, on any device, for tests and debugging)."""
    value = os.environ.get("RECON3D_CUDA_GRAPHS", "1").strip().lower()
    if value == "fixed":
        return "eager"
    return "capture" if value != "0" and can_capture(device) else None


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Let ``optimizer.step()`` run inside a graph: capturable groups, learning rates as device tensors."""
    for group in optimizer.param_groups:
        device = group["params"][0].device
        group["capturable"] = True
        if not torch.is_tensor(group["lr"]):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)


class CapturedUpdates:
    """Replays ``forward() -> terms`` with ``terms["loss"].backward()`` and ``optimizer.step()`` as one
    graph per shape key; the terms returned are the graph's output tensors, valid until its next replay.

    ``forward`` may only read parameters, buffers and the caller's fixed input tensors, and must not
    synchronise with the host (no ``.item()``, no data-dependent shapes, no host-to-device copies).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int = 1) -> None:
        self.optimizer = optimizer
        self.warmup = int(warmup)
        self.graphs: OrderedDict[Hashable, tuple[torch.cuda.CUDAGraph, Terms]] = OrderedDict()
        self.captures = 0
        make_capturable(optimizer)

    def run(self, key: Hashable, forward: Callable[[], Terms]) -> Terms:
        """One training step: replay the graph of ``key``, capturing it first if it is new. Until the
        optimiser has its state, the step runs eagerly: Adam creates its moments on its first step, and
        created inside a capture they would be zeroed again by every replay."""
        if not self.optimizer_ready():
            return self.eager(forward)
        if key not in self.graphs:
            self.graphs[key] = self._capture(forward)
            while len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, terms = self.graphs[key]
        graph.replay()
        return terms

    def optimizer_ready(self) -> bool:
        """Whether the optimiser has stepped (and so holds its state for the parameters a step updates)."""
        return any(len(state) > 0 for state in self.optimizer.state.values())

    def eager(self, forward: Callable[[], Terms]) -> Terms:
        """One uncaptured step (:func:`eager_update`)."""
        return eager_update(self.optimizer, forward)

    def _capture(self, forward: Callable[[], Terms]) -> tuple[torch.cuda.CUDAGraph, Terms]:
        """Warm up on a side stream (lazy initialisation must not happen during capture), then record.
        The warm-up's gradients are discarded; capturing runs nothing, so no step is lost or repeated."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.optimizer.zero_grad(set_to_none=True)
                forward()["loss"].backward()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        join_warmups()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            terms = forward()
            terms["loss"].backward()
            self.optimizer.step()
        self.captures += 1
        return graph, detached(terms)


def eager_update(optimizer: torch.optim.Optimizer, forward: Callable[[], Terms]) -> Terms:
    """One uncaptured step: ``forward()``, the backward of its loss, ``optimizer.step()``; the terms detached."""
    optimizer.zero_grad(set_to_none=True)
    terms = forward()
    terms["loss"].backward()
    optimizer.step()
    return detached(terms)


def detached(terms: Terms) -> Terms:
    """The terms without their autograd graph: a graph kept alive past its step (by the loss a caller holds)
    keeps its gradient accumulators on that step's stream, which breaks the next capture."""
    return {name: value.detach() for name, value in terms.items()}
