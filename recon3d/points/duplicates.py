"""Rows that repeat an earlier row exactly: duplicate points (a scanner's invalid returns written at the
origin, merged scans) and duplicate faces.

Neighbour queries degenerate on them: a k-d tree cannot split a cell of identical points, so a few
hundred thousand copies of one point turn every query near them into a scan of all of them. They are
collapsed before any neighbour query or labelling, keeping the first occurrence of each row in the
original order, so data without duplicates is left exactly as it was.
"""

from __future__ import annotations

import numpy as np

#: Odd 64-bit multipliers mixing the three coordinates' bits into one sort key.
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def first_occurrences(rows: np.ndarray) -> np.ndarray | None:
    """Sorted indices of the first occurrence of every distinct row of ``rows`` (N, K), or None when no
    row repeats an earlier one. Floats compare by value (0.0 equals −0.0); NaN never repeats.

    One sort of a 64-bit hash per row finds the candidates; only rows that share a hash are compared
    exactly, so a scan without duplicates costs one argsort.
    """
    rows = np.asarray(rows)
    n = len(rows)
    if n < 2:
        return None
    if rows.dtype.kind == "f":
        bits = np.ascontiguousarray(rows.astype(np.float64) + 0.0).view(np.uint64)  # + 0.0: −0.0 → 0.0
    else:
        bits = np.ascontiguousarray(rows.astype(np.int64)).view(np.uint64)
    key = np.zeros(n, dtype=np.uint64)
    for column in range(bits.shape[1]):
        key ^= bits[:, column] * _MIX[column % len(_MIX)] + np.uint64(column)
    sorted_key = np.sort(key)
    if not (sorted_key[1:] == sorted_key[:-1]).any():
        return None
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    shared = np.zeros(n, dtype=bool)
    same = sorted_key[1:] == sorted_key[:-1]
    shared[1:] |= same
    shared[:-1] |= same
    candidates = np.sort(order[shared])
    # Exact comparison among the candidates: sort by value (columns, then original index), so the first
    # row of each run of equal rows is the earliest one.
    values = rows[candidates]
    exact = np.lexsort((candidates, *values.T[::-1]))
    ordered = values[exact]
    repeat = np.zeros(len(candidates), dtype=bool)
    repeat[1:] = (ordered[1:] == ordered[:-1]).all(axis=1)
    if not repeat.any():
        return None
    drop = np.zeros(n, dtype=bool)
    drop[candidates[exact[repeat]]] = True
    return np.flatnonzero(~drop)
