"""Blended ranking (:func:`shelfrank.core.blend.blended_top_k`) in one compiled call
(server only).

Why: the numpy blend searches the model's top ``k + margin``, sums the item-to-item votes
of every history item with a sort, and scores the candidates, a few dozen numpy calls
that hold the GIL; at 100k items it cost four times a plain Recommend. Here the sparse
terms are summed in a scratch table lent to the call, and one branch-and-bound search over the
pruned scan's leaves (:mod:`shelfrank.server.compiled_search`) finds the exact blended top
k directly, releasing the GIL throughout:

- an item outside the sparse terms' support scores ``a (v . u + b_i + b_u) + t trend_i``,
  bounded per leaf by ``a (leaf bound + b_u) + t (largest trend in the leaf)`` and per
  item by its own projection bound;
- an item with a positive sparse value is scored apart (bounded by its leaf's bound plus
  that value), so the leaf bounds need no sparse term; one with a negative value is
  scored in its leaf and only loses by it.

Nothing is approximate (every bound carries a float32 rounding slack); rows equal the
numpy blend's, ties broken by the lower row (property-tested on integer tables). On real
tables the model's dot product is summed in float64 here and in float32 by BLAS in numpy
(Rank's `blended_scores_at`): scores agree to about 1e-6, and items that close may
swap places between Recommend and Rank.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import (
    MODES,
    BlendWeights,
    RankingSignals,
    UserHistory,
    _unit,
    check_request,
)
from shelfrank.core.pruned_scan import SEED_LEAVES, PrunedScan
from shelfrank.core.scoring import ScoringTable, TopK
from shelfrank.server.compiled_explain import (
    add_history_votes,
    explained_parts,
    member_votes,
    summary_columns,
    token_credits,
)
from shelfrank.server.compiled_search import (
    _NO_MASK,
    _NO_ROWS,
    CompiledPrunedSearch,
    _best_leaves,
    _excluded,
    _offer,
    _query_bounds,
)
from shelfrank.server.compiled_search import _jit as _fast_jit

if TYPE_CHECKING:
    from shelfrank.core.serving import ServingModel

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Relative float32 rounding of the blended score (a product, a sum and a sum of float32
# values, each within 2^-24): far below this.
_ROUNDING = 2e-6


def _part_votes(
    indptr: Any,
    indices: Any,
    weights: Any,
    rows: Any,
    strengths: Any,
    acc: Any,
    in_part: Any,
    part_rows: Any,
) -> int:
    """Sums ``strength_h * weight`` per target over the CSR rows ``rows`` into ``acc``
    (float64, in the order numpy sums them); returns how many targets got a vote."""
    count = 0
    for i in range(rows.size):
        row = rows[i]
        strength = strengths[i]
        for j in range(indptr[row], indptr[row + 1]):
            target = indices[j]
            vote = weights[j] * strength  # float32, as numpy multiplies them
            if in_part[target] == 0:
                in_part[target] = 1
                acc[target] = 0.0
                part_rows[count] = target
                count += 1
            acc[target] += vote
    return count


def _add_part(
    acc: Any,
    in_part: Any,
    part_rows: Any,
    count: int,
    weight: Any,
    combined: Any,
    in_any: Any,
    touched: Any,
    size: int,
) -> tuple[int, Any]:
    """Adds ``weight * votes / max |votes|`` (float32, as core.blend._unit scales a term) to
    ``combined``; clears the part's marks; returns how many rows ``combined`` holds and
    the peak."""
    peak = np.float32(0.0)
    for i in range(count):
        value = abs(np.float32(acc[part_rows[i]]))
        if value > peak:
            peak = value
    for i in range(count):
        row = part_rows[i]
        in_part[row] = 0
        unit = np.float32(acc[row]) / peak if peak > 0 else np.float32(0.0)
        if in_any[row] == 0:
            in_any[row] = 1
            combined[row] = 0.0
            touched[size] = row
            size += 1
        combined[row] += weight * unit
    return size, peak


def _dot(vectors: Any, row: int, user: Any) -> float:
    total = 0.0
    for c in range(user.size):
        total += vectors[row, c] * user[c]
    return total


def _item_bound(
    projected: Any,
    item_residual: Any,
    position: int,
    query_projection: Any,
    query_residual: float,
    slack: float,
) -> float:
    """The item's bound on ``v . u + b`` (as compiled_search's leaf scan bounds it)."""
    bound = item_residual[position] * query_residual + slack
    for c in range(query_projection.size):
        bound += projected[position, c] * query_projection[c]
    return float(bound)


def _blended_score(
    row: int,
    vectors: Any,
    biases: Any,
    user: Any,
    user_bias: Any,
    mf_weight: Any,
    trend_weight: Any,
    trend: Any,
    sparse: Any,
) -> Any:
    """``mf_weight * (v . u + b_i + b_u) + trend_weight * trend + sparse`` in float32, each
    step rounded as the numpy blend rounds it."""
    model = np.float32(np.float32(_dot(vectors, row, user) + biases[row]) + user_bias)
    return np.float32(np.float32(mf_weight * model) + trend_weight * trend[row]) + sparse


def _score_and_offer(
    row: int,
    sparse: Any,
    excluded: Any,
    vectors: Any,
    biases: Any,
    user: Any,
    user_bias: Any,
    mf_weight: Any,
    trend_weight: Any,
    trend: Any,
    heap_scores: Any,
    heap_rows: Any,
    heap: int,
    k: int,
) -> int:
    """Scores ``row`` unless excluded and offers it to the heap; returns the heap's size."""
    if _excluded(excluded, row):
        return heap
    score = _blended_score(
        row, vectors, biases, user, user_bias, mf_weight, trend_weight, trend, sparse
    )
    if math.isfinite(score):
        heap = _offer(heap_scores, heap_rows, heap, k, score, row)
    return heap


def _blended_top_k(
    basis: Any,
    bound_columns: Any,
    offsets: Any,
    order: Any,
    projected: Any,
    item_residual: Any,
    max_norm: float,
    leaf_of: Any,
    position_of: Any,
    leaf_trend: Any,
    vectors: Any,
    biases: Any,
    user: Any,
    user_bias: Any,
    mf_weight: Any,
    trend_weight: Any,
    trend: Any,
    votes_indptr: Any,
    votes_indices: Any,
    votes_weights: Any,
    history_rows: Any,
    history_strength: Any,
    item_weight: Any,
    repeat_rows: Any,
    repeat_values: Any,
    segment_indptr: Any,
    segment_indices: Any,
    segment_weights: Any,
    tokens: Any,
    segment_weight: Any,
    acc: Any,
    in_part: Any,
    part_rows: Any,
    combined: Any,
    in_any: Any,
    touched: Any,
    k: int,
    exclude: Any,
    allowed: Any,
    filtered: bool,
) -> tuple[Any, Any, Any, Any]:
    # 1. The sparse terms, in core.blend.sparse_scores' order: item-to-item, repeat, segment.
    size = 0
    item_peak = np.float32(-1.0)  # -1: no item-to-item term
    segment_peak = np.float32(-1.0)  # -1: no segment term
    if item_weight > 0 and history_rows.size:
        count = _part_votes(
            votes_indptr, votes_indices, votes_weights, history_rows, history_strength,
            acc, in_part, part_rows,
        )  # fmt: skip
        size, item_peak = _add_part(
            acc, in_part, part_rows, count, item_weight, combined, in_any, touched, size
        )
    for i in range(repeat_rows.size):  # already weighted and scaled
        row = repeat_rows[i]
        if in_any[row] == 0:
            in_any[row] = 1
            combined[row] = 0.0
            touched[size] = row
            size += 1
        combined[row] += repeat_values[i]
    if segment_weight > 0 and tokens.size:
        ones = np.ones(tokens.size, np.float32)
        count = _part_votes(
            segment_indptr, segment_indices, segment_weights, tokens, ones,
            acc, in_part, part_rows,
        )  # fmt: skip
        size, segment_peak = _add_part(
            acc, in_part, part_rows, count, segment_weight, combined, in_any, touched, size
        )
    # 2. Bounds: per leaf on the dense part; the rounding slack of the blended sum.
    leaves = bound_columns.shape[1]
    query_projection, query_residual, slack, query_norm, bounds = _query_bounds(
        basis, bound_columns, max_norm, user
    )
    ub = float(user_bias)
    a = float(mf_weight)
    t = float(trend_weight)
    blend_slack = _ROUNDING * (a * (max_norm * query_norm + abs(ub)) + t) + 1e-30
    leaf_bounds = np.empty(leaves, np.float64)
    for leaf in range(leaves):
        leaf_bounds[leaf] = a * (bounds[leaf] + ub) + t * leaf_trend[leaf] + blend_slack
    excluded = np.unique(exclude)
    heap_scores = np.empty(k, np.float32)
    heap_rows = np.empty(k, np.int64)
    heap = 0
    done = np.zeros(leaves, np.bool_)
    seeds = _best_leaves(leaf_bounds, SEED_LEAVES)
    best_leaf = leaf_bounds.max() if leaves else 0.0
    # 3. The best-bounded leaves fill the heap; then the items with a positive sparse
    # value; then every leaf that can still reach the heap.
    for phase in range(3):
        if phase == 1:
            for i in range(size):
                row = touched[i]
                sparse = np.float32(combined[row])
                if sparse <= 0 or (filtered and not allowed[row]):
                    continue
                if heap == k:
                    # The best leaf's bound first (no lookup), its leaf's, then its own.
                    if best_leaf + sparse * (1.0 + _ROUNDING) < heap_scores[0]:
                        continue
                    leaf = leaf_of[row]
                    rest = t * trend[row] + sparse * (1.0 + _ROUNDING) + blend_slack
                    dense = leaf_bounds[leaf] - t * leaf_trend[leaf] - blend_slack
                    if dense + rest < heap_scores[0]:
                        continue
                    bound = _item_bound(
                        projected, item_residual, position_of[row], query_projection,
                        query_residual, slack,
                    )  # fmt: skip
                    if a * (bound + ub) + rest < heap_scores[0]:
                        continue
                heap = _score_and_offer(
                    row, sparse, excluded, vectors, biases, user, user_bias, mf_weight,
                    trend_weight, trend, heap_scores, heap_rows, heap, k,
                )  # fmt: skip
            continue
        candidates = seeds if phase == 0 else np.arange(leaves)
        for leaf in candidates:
            if done[leaf] or (heap == k and leaf_bounds[leaf] < heap_scores[0]):
                continue
            done[leaf] = True
            for position in range(offsets[leaf], offsets[leaf + 1]):
                row = order[position]
                if filtered and not allowed[row]:
                    continue
                sparse = np.float32(0.0)
                if in_any[row]:
                    sparse = np.float32(combined[row])
                    if sparse > 0:
                        continue  # scored apart
                if heap == k:
                    bound = _item_bound(
                        projected, item_residual, position, query_projection, query_residual,
                        slack,
                    )  # fmt: skip
                    bound = a * (bound + ub) + t * trend[row] + blend_slack
                    if bound < heap_scores[0]:
                        continue
                heap = _score_and_offer(
                    row, sparse, excluded, vectors, biases, user, user_bias, mf_weight,
                    trend_weight, trend, heap_scores, heap_rows, heap, k,
                )  # fmt: skip
    for i in range(size):  # the scratch is clean for the next call
        in_any[touched[i]] = 0
    # Best first, ties by the lower row, as core.scoring.top_k ranks them.
    rows = heap_rows[:heap].copy()
    scores = heap_scores[:heap].copy()
    by_row = np.argsort(rows)
    rows, scores = rows[by_row], scores[by_row]
    best = np.argsort(-scores, kind="mergesort")
    return rows[best], scores[best], item_peak, segment_peak


# No fastmath here: the blended sum must round as numpy's does (no fused multiply-add).
_exact_jit = numba.njit(nogil=True, cache=True)
_part_votes = _exact_jit(_part_votes)
_add_part = _exact_jit(_add_part)
# Dot products and bounds may reassociate (their slack covers it; compiled_search's jit);
# the blend may not.
_dot = _fast_jit(_dot)
_item_bound = _fast_jit(_item_bound)
_blended_score = _exact_jit(_blended_score)
_score_and_offer = _exact_jit(_score_and_offer)
_kernel: Any = _exact_jit(_blended_top_k)

_NO_FLOATS = np.empty(0, np.float32)
_NO_INDPTR = np.zeros(1, np.int64)


class _Scratch:
    """Tables of the catalogue's size, left clean by every call. The kernel releases the
    GIL, so a call holds one alone (see :class:`_ScratchPool`)."""

    def __init__(self, items: int) -> None:
        self.acc = np.zeros(items, np.float64)
        self.in_part = np.zeros(items, np.int8)
        self.part_rows = np.zeros(items, np.int64)
        self.combined = np.zeros(items, np.float64)
        self.in_any = np.zeros(items, np.int8)
        self.touched = np.zeros(items, np.int64)
        self.items = items


class _ScratchPool:
    """Scratches lent to one call at a time. At most ``kept`` (the cores: no more kernels
    run at once) stay between calls, so 16 request threads do not keep 16 tables of 34
    bytes per item; a call finding none free makes one, dropped after if enough are kept."""

    def __init__(self, kept: int) -> None:
        self._free: queue.SimpleQueue[_Scratch] = queue.SimpleQueue()
        self._kept = kept

    def take(self, items: int) -> _Scratch:
        try:
            scratch = self._free.get_nowait()
        except queue.Empty:
            return _Scratch(items)
        return scratch if scratch.items == items else _Scratch(items)

    def give_back(self, scratch: _Scratch) -> None:
        if self._free.qsize() < self._kept:
            self._free.put(scratch)


class CompiledSearch(CompiledPrunedSearch):
    """The compiled pruned search, and :func:`shelfrank.core.blend.blended_top_k` in the
    compiled kernel where the table has a pruned scan (``core.blend.BlendedKernel``). One
    instance serves every table: per-(scan, trend) leaf tables are cached, scratch tables
    are lent from a pool."""

    # Explanations' numeric steps (core.explain looks these up on the table's kernel).
    add_history_votes = staticmethod(add_history_votes)
    explained_parts = staticmethod(explained_parts)
    member_votes = staticmethod(member_votes)
    token_credits = staticmethod(token_credits)
    summary_columns = staticmethod(summary_columns)

    def __init__(self) -> None:
        self._scratches = _ScratchPool(max(2, os.cpu_count() or 2))
        self._leaves: dict[tuple[int, int], tuple[PrunedScan, FloatArray, Any]] = {}
        self._lock = threading.Lock()

    def warm_up_ranking(self, model: ServingModel) -> None:
        """Compile (or load the cached machine code of) the blended search and the
        explanations before ``model`` serves, as :meth:`warm_up` does for the plain search:
        compiling cold takes seconds (5 s for MovieLens' model on the 2-core machine of
        benchmarks/RESULTS.md), more than a caller's deadline. One ranking of the first
        trained user with every component on gives the search the argument types it serves
        with (where the table has a pruned scan to search); explaining the user's top items
        in one call, step by step (the way of tables too large to keep transposed, and of a
        user whose segment table is) and for an anonymous user compiles the explanations'
        kernels, whose argument types do not depend on the user or the weights."""
        from shelfrank.core.explain import explain_scores

        signals = model.signals
        items = model.items
        if items.kernel is not self or not len(model.user_ids):
            return  # not this kernel's table, or no one to rank for (a model before events)
        user_id = model.user_ids.ids[0]
        user = model.user_vector(user_id)
        if signals is not None and items.pruned is not None:
            everything = BlendWeights(mf=1.0, trend=1.0, item=1.0, repeat=1.0, segment=1.0)
            self.blended_top_k(
                items, signals, user.vector, user.bias, user.history, everything, 1,
                exclude=model.item_rows([]),
            )  # fmt: skip
        anonymous = model.user_vector("", use_trained=False)
        for mode in MODES:
            for explained_id, explained in ((user_id, user), ("", anonymous)):
                top = model.rank(explained, 10, mode=mode)
                for stepwise in (False, True):
                    explain_scores(
                        model,
                        explained_id,
                        explained,
                        top.indices,
                        top.scores,
                        mode=mode,
                        stepwise=stepwise,
                    )

    def _leaf_tables(
        self, scan: PrunedScan, trend: FloatArray
    ) -> tuple[IndexArray, IndexArray, npt.NDArray[np.float64]]:
        """Each row's leaf and leaf-order position, and the largest trend in each leaf
        (cached per scan and trend)."""
        key = (id(scan), id(trend))
        found = self._leaves.get(key)
        if found is not None and found[0] is scan and found[1] is trend:
            cached: tuple[IndexArray, IndexArray, npt.NDArray[np.float64]] = found[2]
            return cached
        sizes = np.diff(scan.offsets)
        leaf_of = np.empty(scan.items, np.int64)
        leaf_of[scan.order] = np.repeat(np.arange(sizes.size), sizes)
        position_of = np.empty(scan.items, np.int64)
        position_of[scan.order] = np.arange(scan.items)
        leaf_trend = np.zeros(sizes.size, np.float64)
        filled = sizes > 0  # the next filled leaf's start ends a segment
        if filled.any():
            in_order = trend[scan.order].astype(np.float64)
            leaf_trend[filled] = np.maximum.reduceat(in_order, scan.offsets[:-1][filled])
        tables = (leaf_of, position_of, leaf_trend)
        with self._lock:
            if len(self._leaves) >= 8:  # models and catalogues replaced since: forget them
                self._leaves.clear()
            self._leaves[key] = (scan, trend, tables)
        return tables

    def blended_top_k(
        self,
        items: ScoringTable,
        signals: RankingSignals,
        vector: FloatArray | None,
        bias: float,
        history: UserHistory,
        weights: BlendWeights,
        k: int,
        *,
        exclude: IndexArray | None = None,
        allowed: BoolArray | None = None,
    ) -> TopK | None:
        """The exact blended top k, or None where this kernel does not apply (no pruned
        scan, an approximate index, no model vector, few allowed rows): the caller then
        ranks with numpy."""
        scan = items.pruned
        n = len(items)
        if (
            scan is None
            or items.approximate is not None
            or vector is None
            or weights.mf <= 0
            or scan.items != n
            or signals.items != n
            or vector.shape != (items.dim,)
            or k <= 0
            or (allowed is not None and int(np.count_nonzero(allowed)) <= n // 8)
        ):
            return None
        check_request(n, history, exclude, allowed)  # the kernel does not check bounds
        k = min(k, n)  # the kernel's heap is sized by k
        leaf_of, position_of, leaf_trend = self._leaf_tables(scan, signals.trend_unit)
        scratch = self._scratches.take(n)
        # The repeat term is a few history rows: scaled here exactly as core.blend does.
        repeat_rows, repeat_values = _NO_ROWS, _NO_FLOATS
        if weights.repeat > 0 and history.rows.size:
            repeat = np.maximum(history.repeat, 0) * signals.repeat_rate[history.rows]
            positive = repeat > 0
            repeat_rows = history.rows[positive].astype(np.int64)
            repeat_values = (weights.repeat * _unit(repeat[positive])).astype(np.float32)
        segment = signals.segment_trend
        tokens = _NO_ROWS
        if weights.segment > 0 and segment is not None and history.tokens.size:
            tokens = history.tokens[history.tokens < segment.rows].astype(np.int64)
        rows, scores, item_peak, segment_peak = self._run(
            scan, leaf_of, position_of, leaf_trend, items, vector, bias, weights,
            signals, history, repeat_rows, repeat_values, tokens, scratch, k,
            exclude, allowed,
        )  # fmt: skip
        # Given back only after a clean run: one that raised may have left marks set, and
        # the next call would add to stale sums.
        self._scratches.give_back(scratch)
        # For this request's explanation, as the numpy blend records them.
        if item_peak >= 0:
            history.remember(signals.neighbours, item_peak)
        if segment is not None and segment_peak >= 0:
            history.remember(segment, segment_peak)
        return TopK(rows, scores)

    @staticmethod
    def _run(
        scan: PrunedScan,
        leaf_of: IndexArray,
        position_of: IndexArray,
        leaf_trend: npt.NDArray[np.float64],
        items: ScoringTable,
        vector: FloatArray,
        bias: float,
        weights: BlendWeights,
        signals: RankingSignals,
        history: UserHistory,
        repeat_rows: IndexArray,
        repeat_values: FloatArray,
        tokens: IndexArray,
        scratch: _Scratch,
        k: int,
        exclude: IndexArray | None,
        allowed: BoolArray | None,
    ) -> tuple[IndexArray, FloatArray, float, float]:
        segment = signals.segment_trend
        neighbours = signals.neighbours
        rows, scores, item_peak, segment_peak = _kernel(
            scan.basis,
            scan.bound_matrix.T,
            scan.offsets,
            scan.order,
            scan.projected,
            scan.item_residual,
            float(scan.max_norm),
            leaf_of,
            position_of,
            leaf_trend,
            items.item_vectors,
            items.item_biases,
            np.ascontiguousarray(vector, dtype=np.float32),
            np.float32(bias),
            np.float32(weights.mf / signals.mf_scale),
            np.float32(weights.trend),
            signals.trend_unit,
            neighbours.indptr,
            neighbours.indices,
            neighbours.weights,
            history.rows.astype(np.int64, copy=False),
            np.maximum(history.strength, 0).astype(np.float32),
            np.float32(weights.item),
            repeat_rows,
            repeat_values,
            _NO_INDPTR if segment is None else segment.indptr,
            _NO_ROWS if segment is None else segment.indices,
            _NO_FLOATS if segment is None else segment.weights,
            tokens,
            np.float32(weights.segment),
            scratch.acc,
            scratch.in_part,
            scratch.part_rows,
            scratch.combined,
            scratch.in_any,
            scratch.touched,
            int(k),
            _NO_ROWS if exclude is None else exclude.astype(np.int64, copy=False),
            _NO_MASK if allowed is None else allowed,
            allowed is not None,
        )
        return rows, scores, float(item_peak), float(segment_peak)


COMPILED_KERNEL = CompiledSearch()

__all__ = ["COMPILED_KERNEL", "CompiledSearch"]
