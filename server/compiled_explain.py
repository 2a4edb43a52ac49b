"""The numeric work of an explanation in three compiled calls (server only).

:func:`shelfrank.core.explain.explain_scores` is exact but made of some eighty small numpy
calls for ten items, which cost more than the arithmetic. The server runs three of its
steps here (``core.explain`` looks them up on the scoring table's kernel):

- ``add_history_votes``: each history item's item-to-item vote for each explained item,
  the same arithmetic in the same order as numpy (bit-identical);
- ``token_credits``: each (item, feature token) pair's credit and each item's own;
  dot products summed in order rather than by BLAS (equal to ~1e-16);
- ``summary_columns``: each item's largest parts, the rest, the largest history parts,
  ties to the lower column as in numpy; the rest summed in order (~1e-16).

``tests/test_compiled_explain.py`` compares each with the numpy original.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

# Chosen columns and values, rests, strongest history columns and values (per item).
Summary = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
]


def _add_history_votes(
    voters_indptr: npt.NDArray[np.int64],
    voters_indices: npt.NDArray[np.int64],
    voters_weights: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    history_rows: npt.NDArray[np.int64],
    history_columns: npt.NDArray[np.int64],
    strength: npt.NDArray[np.float32],
    weight: float,
    peak: float,
    out: npt.NDArray[np.float64],
) -> None:
    """``out[p, history_columns[h]] += weight * w * strength[h] / peak`` for every voter
    ``history_rows[h]`` of ``rows[p]`` with weight ``w``. Both the history rows and each
    item's voters are ascending (``ItemNeighbours.voters``), so one merge of the two
    finds the voters in the history."""
    size = history_rows.size
    for position in range(rows.size):
        row = rows[position]
        at = 0
        for entry in range(voters_indptr[row], voters_indptr[row + 1]):
            voter = voters_indices[entry]
            while at < size and history_rows[at] < voter:
                at += 1
            if at == size:
                break
            if history_rows[at] == voter:
                value = weight * np.float64(voters_weights[entry]) * np.float64(strength[at])
                out[position, history_columns[at]] += value / peak


def _token_credits(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    embeddings: npt.NDArray[np.float32],
    unit: bool,
    unit_weight: float,
    identity_weight: float,
    item_vectors: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    vector: npt.NDArray[np.float64],
    half_factor: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    total = 0
    for position in range(rows.size):
        total += indptr[rows[position] + 1] - indptr[rows[position]]
    columns = np.empty(total, np.int64)
    credit = np.zeros((rows.size, total))
    own = np.empty(rows.size)
    dims = vector.size
    rest = np.empty(dims)
    entry = 0
    for position in range(rows.size):
        row = rows[position]
        start, end = indptr[row], indptr[row + 1]
        weight = unit_weight if unit else 1.0 / (identity_weight + (end - start))
        for k in range(dims):
            rest[k] = np.float64(item_vectors[row, k])
        for at in range(start, end):
            token = indices[at]
            columns[entry] = token
            dot = 0.0
            for k in range(dims):
                part = weight * np.float64(embeddings[token, k])
                rest[k] -= part
                dot += part * vector[k]
            credit[position, entry] = half_factor * dot
            entry += 1
        dot = 0.0
        for k in range(dims):
            dot += rest[k] * vector[k]
        own[position] = half_factor * dot
    return columns, credit, own


def _summary_columns(
    values: npt.NDArray[np.float64], offset: int, count: int, supporters: int
) -> Summary:
    items, width = values.shape
    largest = np.empty((items, count), np.int64)
    chosen = np.empty((items, count))
    rests = np.empty(items)
    strongest = np.empty((items, supporters), np.int64)
    strongest_values = np.empty((items, supporters))
    for position in range(items):
        # Insertion into the kept columns, largest first: a later column must be strictly
        # larger to pass an earlier one (ties to the lower column).
        kept = 0
        for column in range(width):
            size = abs(values[position, column])
            if kept == count and (count == 0 or size <= abs(chosen[position, count - 1])):
                continue
            at = kept if kept < count else count - 1
            while at > 0 and size > abs(chosen[position, at - 1]):
                largest[position, at] = largest[position, at - 1]
                chosen[position, at] = chosen[position, at - 1]
                at -= 1
            largest[position, at] = column
            chosen[position, at] = values[position, column]
            if kept < count:
                kept += 1
        total = 0.0
        for column in range(width):
            total += values[position, column]
        for at in range(count):
            total -= chosen[position, at]
        rests[position] = total
        kept = 0
        for column in range(width - offset):
            value = values[position, offset + column]
            if kept == supporters and (
                supporters == 0 or value <= strongest_values[position, supporters - 1]
            ):
                continue
            at = kept if kept < supporters else supporters - 1
            while at > 0 and value > strongest_values[position, at - 1]:
                strongest[position, at] = strongest[position, at - 1]
                strongest_values[position, at] = strongest_values[position, at - 1]
                at -= 1
            strongest[position, at] = column
            strongest_values[position, at] = value
            if kept < supporters:
                kept += 1
    return largest, chosen, rests, strongest, strongest_values


# No fastmath: the sums must round as written.
_jit = numba.njit(nogil=True, cache=True)
# What ``core.explain._add_votes`` looks up on the table's kernel.
add_history_votes: Any = _jit(_add_history_votes)
_credits_kernel: Any = _jit(_token_credits)
_summary_kernel: Any = _jit(_summary_columns)


def token_credits(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    embeddings: npt.NDArray[np.float32],
    unit_weight: float | None,
    identity_weight: float,
    item_vectors: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    vector: npt.NDArray[np.float64],
    half_factor: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """:func:`shelfrank.core.explain.token_credits`, compiled."""
    found: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]
    found = _credits_kernel(
        indptr,
        indices,
        embeddings,
        unit_weight is not None,
        1.0 if unit_weight is None else float(unit_weight),
        float(identity_weight),
        item_vectors,
        np.ascontiguousarray(rows, np.int64),
        np.ascontiguousarray(vector, np.float64),
        float(half_factor),
    )
    return found


def summary_columns(
    values: npt.NDArray[np.float64], offset: int, count: int, supporters: int
) -> Summary:
    """:func:`shelfrank.core.explain.summary_columns`, compiled."""
    found: Summary
    found = _summary_kernel(
        np.ascontiguousarray(values, np.float64), int(offset), int(count), int(supporters)
    )
    return found


__all__ = ["add_history_votes", "summary_columns", "token_credits"]
