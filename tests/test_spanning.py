"""Signs along a minimum spanning forest (recon3d.points.spanning) against SciPy's minimum spanning tree
walked breadth first, the way normals were oriented before (Hoppe et al. 1992)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

from recon3d.points.spanning import spanning_forest_signs


def reference_signs(n: int, u: np.ndarray, v: np.ndarray, weight: np.ndarray,
                    flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component labels, each node's sign relative to its component's first node) by walking SciPy's MST."""
    tree = minimum_spanning_tree(csr_matrix((weight, (u, v)), shape=(n, n)))
    tree = tree + tree.T
    _, labels = connected_components(tree, directed=False)
    flips = {(int(a), int(b)): bool(f) for a, b, f in zip(u, v, flip)}
    sign = np.zeros(n, dtype=bool)
    for label in np.unique(labels):
        start = int(np.flatnonzero(labels == label)[0])
        order, parent = breadth_first_order(tree, start, directed=False, return_predecessors=True)
        for node in order[1:]:
            up = int(parent[node])
            sign[node] = sign[up] ^ flips[(min(node, up), max(node, up))]
    return labels, sign


def random_graph(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, ...]:
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = a != b
    keys = np.unique(np.minimum(a, b)[keep] * n + np.maximum(a, b)[keep])
    u, v = keys // n, keys % n
    weight = rng.permutation(len(u)).astype(np.float64) + 1.0  # distinct: one minimum spanning forest
    return u, v, weight, rng.random(len(u)) < 0.5


@pytest.mark.parametrize("seed", range(6))
def test_signs_match_a_walk_of_scipys_spanning_tree(seed: int) -> None:
    """Random graphs with several components, isolated nodes and distinct weights: the same components, and
    within each the same sign relations (signs relative to a root differ by one flip per component at most)."""
    rng = np.random.default_rng(seed)
    for _ in range(8):
        n = int(rng.integers(1, 80))
        u, v, weight, flip = random_graph(rng, n, int(rng.integers(0, 2 * n + 1)))
        labels, sign = reference_signs(n, u, v, weight, flip)
        root, parity = spanning_forest_signs(n, *(torch.as_tensor(x) for x in (u, v, weight, flip)))
        root, parity = root.numpy(), parity.numpy()
        assert len(np.unique(root)) == len(np.unique(labels))
        for label in np.unique(labels):
            members = labels == label
            assert len(np.unique(root[members])) == 1
            relation = sign[members] ^ parity[members]
            assert (relation == relation[0]).all()
            assert not parity[root[members][0]]  # the root has its own sign


def test_the_cheapest_path_decides_a_cycle() -> None:
    """A triangle whose two cheap edges flip and whose expensive edge does not: the expensive edge is not
    in the tree, so nodes 0 and 2 end up with the same sign (two flips), against the expensive edge."""
    u, v = torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2])
    weight, flip = torch.tensor([0.1, 0.2, 0.9]), torch.tensor([True, True, False])
    root, parity = spanning_forest_signs(3, u, v, weight, flip)
    assert len(set(root.tolist())) == 1
    assert parity[0] != parity[1] and parity[0] == parity[2]
