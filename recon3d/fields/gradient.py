"""The one autograd gradient of a scalar field with respect to its input points."""

from __future__ import annotations

from typing import Callable

import torch


def autograd_gradient(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """f(x) (N,) and ∂f/∂x (N, 3) by autograd; the gradient is None when f does not depend
    differentiably on x (a field evaluated under no_grad, a lookup table).

    ``create_graph=True`` keeps the gradient differentiable, for losses on ∇f (the eikonal term).
    A point set that already requires grad is differentiated as it is, so the caller's graph through
    x stays connected.
    """
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        values = fn(x).reshape(-1)
        if not values.requires_grad:
            return values, None
        (grad,) = torch.autograd.grad(values.sum(), x, create_graph=create_graph, allow_unused=True)
    return values, grad
