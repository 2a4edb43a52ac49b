"""The item-to-item part of an explanation in one compiled call (server only).

:func:`shelfrank.core.explain.explain_scores` credits each history item with its vote for
each recommended item. In numpy that is a dozen calls over every voter of the list's
items (a few thousand entries: searched in the history, filtered, gathered, summed into
the parts matrix); here one loop does the same arithmetic in the same order, so the
explanation is bit-identical (``tests/test_compiled_explain.py`` compares them).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt


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
    ``history_rows[h]`` of ``rows[p]`` with weight ``w`` (history rows ascending)."""
    size = history_rows.size
    for position in range(rows.size):
        row = rows[position]
        for entry in range(voters_indptr[row], voters_indptr[row + 1]):
            voter = voters_indices[entry]
            low, high = 0, size
            while low < high:
                middle = (low + high) // 2
                if history_rows[middle] < voter:
                    low = middle + 1
                else:
                    high = middle
            if low < size and history_rows[low] == voter:
                value = weight * np.float64(voters_weights[entry]) * np.float64(strength[low])
                out[position, history_columns[low]] += value / peak


# No fastmath: the sums must round as numpy's do.
_kernel: Any = numba.njit(nogil=True, cache=True)(_add_history_votes)


def add_history_votes(
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
    """See :func:`_add_history_votes` (``core.explain.VotesKernel``)."""
    _kernel(
        voters_indptr,
        voters_indices,
        voters_weights,
        rows,
        history_rows,
        history_columns,
        strength,
        float(weight),
        float(peak),
        out,
    )


__all__ = ["add_history_votes"]
