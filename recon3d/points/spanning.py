"""Signs propagated along a minimum spanning forest, in torch on any device (Borůvka 1926).

Hoppe et al. (1992) orient normals by walking a minimum spanning tree of the neighbour graph and flipping
each normal to agree with its parent. The sign a node ends up with relative to its tree's root is the
product of the edge flips along the tree path, so it can be computed without walking: Borůvka's rounds
merge components along their cheapest outgoing edges, and each merge records the parity of the merged
root relative to the new one (pointer jumping composes parities as it shortens the chains). Every round
is a few passes over the remaining edges, about log₂ n rounds in all: on a GPU this replaces SciPy's
Kruskal (a sort and a sequential union-find) and a breadth-first walk on the CPU.
"""

from __future__ import annotations

import torch


def spanning_forest_signs(n: int, u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor,
                          flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each node's tree in the minimum spanning forest and its sign relative to that tree's root.

    ``u``, ``v`` (E,) int64: the ends of undirected edges (no self loops), ``weight`` (E,) their costs,
    ``flip`` (E,) bool: True where the two ends' signs differ. Equal weights are ordered by edge index, so
    the forest is unique and, for distinct weights, every minimum spanning forest's. Returns ``root``
    (n,) int64 (one node per tree, the tree's label) and ``parity`` (n,) bool (True: the node's sign is
    the opposite of its root's).
    """
    device = u.device
    count = int(u.numel())
    rank = torch.empty(count, dtype=torch.int64, device=device)
    rank[torch.argsort(weight, stable=True)] = torch.arange(count, device=device)
    root = torch.arange(n, device=device)
    parity = torch.zeros(n, dtype=torch.bool, device=device)
    position = torch.full((count,), -1, dtype=torch.int64, device=device)
    while True:
        ru, rv = root[u], root[v]
        cross = ru != rv
        if not bool(cross.any()):
            break
        u, v, rank, flip, ru, rv = u[cross], v[cross], rank[cross], flip[cross], ru[cross], rv[cross]
        best = torch.full((n,), count, dtype=torch.int64, device=device)
        best.scatter_reduce_(0, ru, rank, "amin")
        best.scatter_reduce_(0, rv, rank, "amin")
        hooked = torch.nonzero(best < count).squeeze(1)  # every tree with an edge out of it
        position[rank] = torch.arange(rank.numel(), device=device)
        edge = position[best[hooked]]
        from_u = ru[edge] == hooked
        near, far = torch.where(from_u, u[edge], v[edge]), torch.where(from_u, v[edge], u[edge])
        parent = torch.arange(n, device=device)
        link = torch.zeros(n, dtype=torch.bool, device=device)
        parent[hooked] = root[far]
        link[hooked] = parity[near] ^ flip[edge] ^ parity[far]
        # Two trees that chose the same edge point at each other: the smaller label becomes the root.
        mutual = (parent[parent[hooked]] == hooked) & (hooked < parent[hooked])
        parent[hooked[mutual]] = hooked[mutual]
        link[hooked[mutual]] = False
        parent, link = jump_to_roots(parent, link)
        parity = parity ^ link[root]
        root = parent[root]
    return root, parity


def jump_to_roots(parent: torch.Tensor, link: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pointer jumping: ``parent`` (n,) int64 of a forest (roots point at themselves) → each node's root, in
    about log₂(depth) passes; ``link`` (n,) bool, the parity of each node to its parent, composes into its
    parity to the root on the way (None: no parities)."""
    while True:
        grand = parent[parent]
        if torch.equal(grand, parent):
            return parent, link
        if link is not None:
            link = link ^ link[parent]
        parent = grand
