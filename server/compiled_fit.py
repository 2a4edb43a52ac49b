"""Training-time loops compiled with numba (server only).

Why: fitting the blend evaluates NDCG@10 of a few thousand candidate lists for every trial
weight (about 5,000 evaluations per training), and the item-to-item neighbours keep the
best few hundred entries of each of up to 100k sparse rows. In numpy both are a call per
list or per row (``argpartition`` then ``lexsort``); here each is one loop. NDCG ranks by
score, then the lower position; a row keeps its best entries by weight, then the lower
column (ties at the cut decided, where ``argpartition`` left them to chance), in no
particular order within the row (nothing reads them in order); votes are the same float32
products summed in float64 (``tests/test_compiled_fit.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import ItemNeighbours
from shelfrank.core.errors import InvalidInputError
from shelfrank.server.compiled_blend import _part_votes

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _ranks_before(score_a: Any, index_a: int, score_b: Any, index_b: int) -> bool:
    """Whether (score_a, index_a) ranks before (score_b, index_b): a higher score, or a tie
    and a lower index."""
    return score_a > score_b or (score_a == score_b and index_a < index_b)


def _insert(best_scores: Any, best_index: Any, size: int, k: int, score: Any, index: int) -> int:
    """Insert (score, index) into the sorted k-best lists if it belongs there; returns the
    new size."""
    if size == k and not _ranks_before(score, index, best_scores[k - 1], best_index[k - 1]):
        return size
    at = size if size < k else k - 1
    while at > 0 and _ranks_before(score, index, best_scores[at - 1], best_index[at - 1]):
        if at < k:
            best_scores[at] = best_scores[at - 1]
            best_index[at] = best_index[at - 1]
        at -= 1
    best_scores[at] = score
    best_index[at] = index
    return size + 1 if size < k else size


def _blended_ndcg(
    values: Any, weights: Any, lengths: Any, relevant: Any, discounts: Any, ideal: Any
) -> Any:  # pragma: no cover - compiled
    lists, components, width = values.shape
    trials = weights.shape[0]
    k = discounts.size
    out = np.zeros((trials, lists), np.float64)
    best_scores = np.empty(k, np.float32)
    best_index = np.empty(k, np.int64)
    scores = np.empty(width, np.float32)
    for case in range(lists):  # a case's values stay in cache across the trials
        length = lengths[case]
        for trial in range(trials):
            scores[:length] = 0.0
            for component in range(components):  # entries inner: the sums vectorise
                weight = weights[trial, component]
                for at in range(length):
                    scores[at] += values[case, component, at] * weight
            size = 0
            for at in range(length):
                score = scores[at]
                if score != score:
                    continue  # NaN: never ranked (a diverged model), as numpy ranks it last
                if size < k or score > best_scores[k - 1]:  # a tie keeps the earlier entry
                    size = _insert(best_scores, best_index, size, k, score, at)
            gain = 0.0
            for position in range(size):
                if relevant[case, best_index[position]]:
                    gain += discounts[position]
            out[trial, case] = gain / ideal[case]
    return out


def _select_best(values: Any, columns: Any, count: int, top_n: int) -> int:  # pragma: no cover
    """Move the ``top_n`` best (value descending, then column) of the first ``count`` pairs
    to the front, in no particular order (a quickselect: linear, in place); returns how
    many there are. Columns are distinct within a row, so the order is strict."""
    if count <= top_n:
        return count
    low, high, target = 0, count - 1, top_n - 1
    while low < high:
        middle = (low + high) // 2
        pivot_value, pivot_column = values[middle], columns[middle]
        i, j = low, high
        while i <= j:
            while _ranks_before(values[i], columns[i], pivot_value, pivot_column):
                i += 1
            while _ranks_before(pivot_value, pivot_column, values[j], columns[j]):
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                columns[i], columns[j] = columns[j], columns[i]
                i += 1
                j -= 1
        if target <= j:
            high = j
        elif target >= i:
            low = i
        else:
            break
    return top_n


def _copy_out(
    values: Any, columns: Any, count: int, out_values: Any, out_columns: Any, start: int
) -> None:  # pragma: no cover - compiled
    for at in range(count):
        out_values[start + at] = values[at]
        out_columns[start + at] = columns[at]


def _top_per_row(
    indptr: Any, indices: Any, data: Any, top_n: int
) -> tuple[Any, Any, Any]:  # pragma: no cover - compiled
    rows = indptr.size - 1
    out_indptr = np.zeros(rows + 1, np.int64)
    longest = 0
    for row in range(rows):
        length = indptr[row + 1] - indptr[row]
        longest = max(longest, length)
        out_indptr[row + 1] = out_indptr[row] + min(top_n, length)
    out_indices = np.empty(out_indptr[rows], np.int64)
    out_weights = np.empty(out_indptr[rows], data.dtype)
    values = np.empty(longest, data.dtype)
    columns = np.empty(longest, np.int64)
    for row in range(rows):
        count = 0
        for at in range(indptr[row], indptr[row + 1]):
            values[count], columns[count] = data[at], indices[at]
            count += 1
        kept = _select_best(values, columns, count, top_n)
        _copy_out(values, columns, kept, out_weights, out_indices, out_indptr[row])
    return out_indptr, out_indices, out_weights


def _top_shrunk_cosine(
    indptr: Any, indices: Any, co_counts: Any, counts: Any, shrink: float, top_n: int
) -> tuple[Any, Any, Any]:  # pragma: no cover - compiled
    rows = indptr.size - 1
    longest = 0
    out_indptr = np.zeros(rows + 1, np.int64)
    for row in range(rows):  # sizes first: the output is allocated once, exactly
        longest = max(longest, indptr[row + 1] - indptr[row])
        count = 0
        for at in range(indptr[row], indptr[row + 1]):
            if indices[at] != row and co_counts[at] != 0:
                count += 1
        out_indptr[row + 1] = out_indptr[row] + min(count, top_n)
    kept_index = np.empty(out_indptr[rows], np.int64)
    kept_weights = np.empty(out_indptr[rows], np.float32)
    values = np.empty(longest, np.float32)
    columns = np.empty(longest, np.int64)
    for row in range(rows):
        count = 0
        for at in range(indptr[row], indptr[row + 1]):
            column = indices[at]
            if column == row or co_counts[at] == 0:
                continue
            values[count] = co_counts[at] / (math.sqrt(counts[row] * counts[column]) + shrink)
            columns[count] = column
            count += 1
        kept = _select_best(values, columns, count, top_n)
        _copy_out(values, columns, kept, kept_weights, kept_index, out_indptr[row])
    return out_indptr, kept_index, kept_weights


def _summed_votes(
    indptr: Any,
    indices: Any,
    weights: Any,
    rows: Any,
    strengths: Any,
    acc: Any,
    in_part: Any,
    part_rows: Any,
) -> tuple[Any, Any]:  # pragma: no cover - compiled
    # The serving kernel's summing (float32 products, float64 sums in history order).
    count = _part_votes(indptr, indices, weights, rows, strengths, acc, in_part, part_rows)
    items = np.sort(part_rows[:count])
    votes = np.empty(count, np.float32)
    for at in range(count):
        item = items[at]
        votes[at] = acc[item]
        in_part[item] = 0  # marks cleared behind; a sum restarts at its first vote
    return items, votes


_jit = numba.njit(nogil=True, cache=True)
_ranks_before = _jit(_ranks_before)
_insert = _jit(_insert)
_select_best = _jit(_select_best)
_copy_out = _jit(_copy_out)
_ndcg_kernel: Any = _jit(_blended_ndcg)
_top_kernel: Any = _jit(_top_per_row)
_cosine_kernel: Any = _jit(_top_shrunk_cosine)
_votes_kernel: Any = _jit(_summed_votes)


def blended_ndcg(
    values: FloatArray,
    weights: FloatArray,
    lengths: IndexArray,
    relevant: BoolArray,
    discounts: npt.NDArray[np.float64],
    ideal: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """NDCG@k (``k = discounts.size``) of each list of ``values`` (lists x components x
    width, the first ``lengths[i]`` entries of list i real) under each row of ``weights``
    (trials x components), as (trials x lists): a score is summed in float32 in component
    order; entries rank by score, then by the lower position; the discounted hits over
    ``ideal``. Trials share one pass over the values."""
    result: npt.NDArray[np.float64] = _ndcg_kernel(
        np.ascontiguousarray(values, dtype=np.float32),
        np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float32),
        np.ascontiguousarray(lengths, dtype=np.int64),
        np.ascontiguousarray(relevant),
        np.ascontiguousarray(discounts, dtype=np.float64),
        np.ascontiguousarray(ideal, dtype=np.float64),
    )
    return result


def top_per_row(
    indptr: npt.NDArray[np.integer],
    indices: npt.NDArray[np.integer],
    data: npt.NDArray[np.floating],
    top_n: int,
) -> tuple[IndexArray, IndexArray, FloatArray]:
    """The ``top_n`` largest entries of each CSR row as (indptr, columns, weights): by
    weight (compared in its own precision), ties at the cut to the lower columns; unordered
    within a row. Weights are returned as float32."""
    if top_n < 1:
        raise InvalidInputError(f"top_n: must be >= 1, got {top_n}")
    precise = data.dtype == np.float32 or data.dtype == np.float64
    out_indptr, out_indices, weights = _top_kernel(
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(indices, dtype=np.int64),
        np.ascontiguousarray(data if precise else data.astype(np.float64)),
        int(top_n),
    )
    return out_indptr, out_indices, weights.astype(np.float32, copy=False)


def top_shrunk_cosine(
    co_occurrence: Any, counts: npt.NDArray[np.float64], shrink: float, top_n: int
) -> tuple[IndexArray, IndexArray, FloatArray]:
    """Per row of the item co-occurrence counts (CSR), the ``top_n`` other items by shrunk
    cosine ``c_ij / (sqrt(n_i n_j) + shrink)`` (float32), chosen as :func:`top_per_row`
    chooses them; the diagonal and zero counts are skipped."""
    if top_n < 1:
        raise InvalidInputError(f"top_n: must be >= 1, got {top_n}")
    out: tuple[IndexArray, IndexArray, FloatArray] = _cosine_kernel(
        np.ascontiguousarray(co_occurrence.indptr, dtype=np.int64),
        np.ascontiguousarray(co_occurrence.indices),
        np.ascontiguousarray(co_occurrence.data),
        np.ascontiguousarray(counts, dtype=np.float64),
        float(shrink),
        int(top_n),
    )
    return out


class VoteSummer:
    """Sums item-to-item votes as :meth:`ItemNeighbours.scores` does (the same float32
    products, summed in float64 in history order) with the serving kernel's summing
    (server/compiled_blend.py) on a dense scratch left clean; not thread-safe (one per
    fit)."""

    def __init__(self) -> None:
        self._acc = np.zeros(0, np.float64)
        self._in_part = np.zeros(0, np.int8)
        self._part_rows = np.zeros(0, np.int64)

    def scores(
        self, neighbours: ItemNeighbours, rows: IndexArray, strengths: FloatArray
    ) -> tuple[IndexArray, FloatArray]:
        """The items voted for by history ``rows`` (ascending) and their summed votes."""
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= neighbours.rows):
            raise InvalidInputError(f"rows: outside the {neighbours.rows} neighbour rows")
        if self._acc.size < neighbours.items:
            self._acc = np.zeros(neighbours.items, np.float64)
            self._in_part = np.zeros(neighbours.items, np.int8)
            self._part_rows = np.zeros(neighbours.items, np.int64)
        out: tuple[IndexArray, FloatArray] = _votes_kernel(
            neighbours.indptr,
            neighbours.indices,
            neighbours.weights,
            np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(strengths, dtype=np.float32),
            self._acc,
            self._in_part,
            self._part_rows,
        )
        return out


__all__ = ["VoteSummer", "blended_ndcg", "top_per_row", "top_shrunk_cosine"]
