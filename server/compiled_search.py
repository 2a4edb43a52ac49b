"""The exact pruned search of :mod:`shelfrank.core.pruned_scan`, compiled (server only).

Why: the numpy search is a few dozen numpy calls per request. Under concurrent requests
the server is bound by the GIL (one core's worth of Python on this 2-core machine), and
those calls held it for most of a Recommend (benchmarks/RESULTS.md). This kernel does the
same search in one numba call that releases the GIL throughout, so a search runs beside
other requests' Python instead of queueing for the interpreter.

Same bounds, same arrays, same slack as :class:`PrunedScan`, searched as branch and bound:
the leaves with the best bounds are scored first to fill a k-best heap, then every other
leaf and item is skipped when its bound is below the heap's worst score. An item is
skipped only when it cannot enter the top k (a bound equal to the worst score is still
scored, so ties break by the lower row exactly as in a full scan). Results equal
``ScoringTable.recommend`` without the kernel (property-tested on integer tables).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.pruned_scan import SEED_LEAVES, SLACK, PrunedScan
from shelfrank.core.scoring import ScoringTable, TopK

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _worse(score_a: Any, row_a: int, score_b: Any, row_b: int) -> bool:
    """Whether (score_a, row_a) ranks below (score_b, row_b): lower score, or a tie and a
    higher row."""
    return score_a < score_b or (score_a == score_b and row_a > row_b)


def _sift_down(scores: Any, rows: Any, size: int, at: int) -> None:
    """Restore the heap (worst entry at the root) below ``at``."""
    while True:
        left = 2 * at + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(scores[right], rows[right], scores[left], rows[left]):
            child = right
        if not _worse(scores[child], rows[child], scores[at], rows[at]):
            return
        scores[at], scores[child] = scores[child], scores[at]
        rows[at], rows[child] = rows[child], rows[at]
        at = child


def _offer(scores: Any, rows: Any, size: int, k: int, score: Any, row: int) -> int:
    """Put (score, row) in the k-best heap if it belongs there; returns the new size."""
    if size < k:
        at = size
        scores[at], rows[at] = score, row
        while at > 0:  # sift up: the root stays the worst entry
            parent = (at - 1) // 2
            if not _worse(scores[at], rows[at], scores[parent], rows[parent]):
                break
            scores[at], scores[parent] = scores[parent], scores[at]
            rows[at], rows[parent] = rows[parent], rows[at]
            at = parent
        return size + 1
    if _worse(scores[0], rows[0], score, row):
        scores[0], rows[0] = score, row
        _sift_down(scores, rows, size, 0)
    return size


def _excluded(sorted_rows: Any, row: int) -> bool:
    if sorted_rows.size == 0:
        return False
    at = np.searchsorted(sorted_rows, row)
    return bool(at < sorted_rows.size and sorted_rows[at] == row)


def _score_leaf(
    leaf: int,
    offsets: Any,
    order: Any,
    projected: Any,
    item_residual: Any,
    vectors: Any,
    biases: Any,
    user: Any,
    query_projection: Any,
    query_residual: float,
    slack: float,
    excluded: Any,
    allowed: Any,
    filtered: bool,
    heap_scores: Any,
    heap_rows: Any,
    size: int,
    k: int,
) -> int:
    """Offer every item of ``leaf`` that can enter the heap; returns the heap's size."""
    rank = query_projection.size
    dim = user.size
    for position in range(offsets[leaf], offsets[leaf + 1]):
        row = order[position]
        if filtered and not allowed[row]:
            continue
        if size == k:
            bound = item_residual[position] * query_residual + slack
            for c in range(rank):
                bound += projected[position, c] * query_projection[c]
            if bound < heap_scores[0]:
                continue
        if _excluded(excluded, row):
            continue
        total = 0.0
        for c in range(dim):
            total += vectors[row, c] * user[c]
        score = np.float32(total + biases[row])
        if not math.isfinite(score):
            continue
        size = _offer(heap_scores, heap_rows, size, k, score, row)
    return size


def _query_bounds(
    basis: Any, bound_columns: Any, max_norm: float, user: Any
) -> tuple[Any, float, float, float, Any]:
    """The query [u, 1]: its projection, the norm of its residual, the rounding slack, its
    norm, and the bound of every leaf on ``v . u + b``."""
    dim = user.size
    rank = basis.shape[1]
    leaves = bound_columns.shape[1]
    query_projection = np.zeros(rank, np.float64)
    for j in range(rank):
        total = float(basis[dim, j])
        for c in range(dim):
            total += basis[c, j] * user[c]
        query_projection[j] = total
    residual_sq = 0.0
    norm_sq = 0.0
    for c in range(dim + 1):
        value = float(user[c]) if c < dim else 1.0
        norm_sq += value * value
        rebuilt = 0.0
        for j in range(rank):
            rebuilt += basis[c, j] * query_projection[j]
        residual_sq += (value - rebuilt) * (value - rebuilt)
    query_residual = math.sqrt(residual_sq)
    query_norm = math.sqrt(norm_sq)
    slack = SLACK * max_norm * query_norm
    # Leaf bounds: [high | low | residual | 1] . [max(p, 0) | min(p, 0) | |q_perp| | slack].
    bound_query = np.empty(2 * rank + 2, np.float64)
    for j in range(rank):
        bound_query[j] = max(query_projection[j], 0.0)
        bound_query[rank + j] = min(query_projection[j], 0.0)
    bound_query[2 * rank] = query_residual
    bound_query[2 * rank + 1] = slack
    # Column by column: the inner loop runs over contiguous leaves and vectorises.
    bounds = np.zeros(leaves, np.float64)
    for j in range(2 * rank + 2):
        weight = bound_query[j]
        column = bound_columns[j]
        for leaf in range(leaves):
            bounds[leaf] += column[leaf] * weight
    return query_projection, query_residual, slack, query_norm, bounds


def _best_leaves(bounds: Any, count: int) -> Any:
    """The ``count`` leaves with the highest bounds (a small selection, no full sort)."""
    leaves = bounds.size
    seeds = min(count, leaves)
    seed_leaf = np.empty(seeds, np.int64)
    seed_bound = np.empty(seeds, np.float64)
    for leaf in range(seeds):
        seed_leaf[leaf], seed_bound[leaf] = leaf, bounds[leaf]
    if seeds == 0:
        return seed_leaf
    weakest = int(np.argmin(seed_bound))
    for leaf in range(seeds, leaves):
        if bounds[leaf] > seed_bound[weakest]:
            seed_leaf[weakest], seed_bound[weakest] = leaf, bounds[leaf]
            weakest = int(np.argmin(seed_bound))
    return seed_leaf


def _pruned_top_k(
    basis: Any,
    bound_columns: Any,
    offsets: Any,
    order: Any,
    projected: Any,
    item_residual: Any,
    max_norm: float,
    vectors: Any,
    biases: Any,
    user: Any,
    user_bias: float,
    k: int,
    exclude: Any,
    allowed: Any,
    filtered: bool,
) -> tuple[Any, Any]:
    leaves = bound_columns.shape[1]
    query_projection, query_residual, slack, _, bounds = _query_bounds(
        basis, bound_columns, max_norm, user
    )
    excluded = np.unique(exclude)
    heap_scores = np.empty(k, np.float32)
    heap_rows = np.empty(k, np.int64)
    size = 0
    # Seeds: the leaves with the highest bounds, as many as the numpy search starts from.
    seed_leaf = _best_leaves(bounds, SEED_LEAVES)
    # The seeds first, then every leaf whose bound reaches the heap's worst score.
    done = np.zeros(leaves, np.bool_)
    for leaf in np.concatenate((seed_leaf, np.arange(leaves))):
        if done[leaf] or (size == k and bounds[leaf] < heap_scores[0]):
            continue
        done[leaf] = True
        size = _score_leaf(
            leaf, offsets, order, projected, item_residual, vectors, biases, user,
            query_projection, query_residual, slack, excluded, allowed, filtered,
            heap_scores, heap_rows, size, k,
        )  # fmt: skip
    # Best first, as top_k ranks them: by score with the user's bias (float32), then row.
    rows = heap_rows[:size].copy()
    scores = heap_scores[:size] + np.float32(user_bias)
    by_row = np.argsort(rows)
    rows, scores = rows[by_row], scores[by_row]
    best = np.argsort(-scores, kind="mergesort")
    return rows[best], scores[best]


_jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
_worse = _jit(_worse)
_sift_down = _jit(_sift_down)
_offer = _jit(_offer)
_excluded = _jit(_excluded)
_score_leaf = _jit(_score_leaf)
_query_bounds = _jit(_query_bounds)
_best_leaves = _jit(_best_leaves)
_kernel: Any = _jit(_pruned_top_k)

_NO_ROWS = np.empty(0, np.int64)
_NO_MASK = np.empty(0, np.bool_)


class CompiledPrunedSearch:
    """Runs a table's :class:`PrunedScan` in the compiled kernel; implements
    ``core.scoring.PrunedKernel``. Stateless: one instance serves every table. Rows equal
    the numpy search's; scores are summed in float64 before rounding to float32, so they
    may differ from a BLAS float32 product in the last bit."""

    def top_k(
        self,
        scan: PrunedScan,
        vectors: FloatArray,
        biases: FloatArray,
        user_vector: FloatArray,
        user_bias: float,
        k: int,
        *,
        exclude: IndexArray | None = None,
        allowed: BoolArray | None = None,
    ) -> TopK:
        # The kernel does not check bounds: every shape it indexes by is checked here.
        if k <= 0:
            raise InvalidInputError(f"k: must be positive, got {k}")
        items, dim = vectors.shape
        if scan.items != items or biases.shape != (items,):
            raise InvalidInputError(
                f"scan covers {scan.items} rows; vectors {vectors.shape}, biases {biases.shape}"
            )
        if user_vector.shape != (dim,) or scan.basis.shape[0] != dim + 1:
            raise InvalidInputError(
                f"user_vector: expected shape ({dim},), got {user_vector.shape}"
            )
        if allowed is not None and allowed.shape != (items,):
            raise InvalidInputError(
                f"allowed: expected a mask of {items} rows, got {allowed.shape}"
            )
        rows, scores = _kernel(
            scan.basis,
            scan.bound_matrix.T,  # (2 rank + 2, leaves), C-contiguous
            scan.offsets,
            scan.order,
            scan.projected,
            scan.item_residual,
            float(scan.max_norm),
            vectors,
            biases,
            np.ascontiguousarray(user_vector, dtype=np.float32),
            float(user_bias),
            int(k),
            _NO_ROWS if exclude is None else exclude.astype(np.int64, copy=False),
            _NO_MASK if allowed is None else allowed,
            allowed is not None,
        )
        return TopK(rows, scores)

    def warm_up(self, table: ScoringTable) -> None:
        """Compile (or load the cached machine code) before the table serves: the first
        compile takes seconds."""
        if table.pruned is not None:
            self.top_k(
                table.pruned,
                table.item_vectors,
                table.item_biases,
                np.zeros(table.dim, np.float32),
                0.0,
                1,
            )


COMPILED_SEARCH = CompiledPrunedSearch()

__all__ = ["COMPILED_SEARCH", "CompiledPrunedSearch"]
