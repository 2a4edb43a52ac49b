"""Blended ranking (core/blend.py): the fast top k equals a full scan of the blend, and the
item-to-item scorers compute what their papers say."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.blend import (
    BlendTable,
    BlendWeights,
    ItemNeighbours,
    RankingSignals,
    UserHistory,
    blended_scores,
    blended_scores_at,
    blended_top_k,
)
from shelfrank.core.ids import IdMap
from shelfrank.core.scoring import ScoringTable, top_k
from shelfrank.server.item_item import ease_neighbours, ease_weights, knn_neighbours


def _table(rng: np.random.Generator, n: int, dim: int) -> ScoringTable:
    # Small integers keep every sum exact in float32, so ties are real ties.
    vectors = rng.integers(-3, 4, size=(n, dim)).astype(np.float32)
    biases = rng.integers(-2, 3, size=n).astype(np.float32)
    return ScoringTable(IdMap(f"i{j}" for j in range(n)), vectors, biases)


def _neighbours(
    rng: np.random.Generator, n: int, per_row: int, rows: int | None = None
) -> ItemNeighbours:
    """Random rows of item weights, negative ones too (EASE has them)."""
    indptr = [0]
    indices: list[int] = []
    weights: list[float] = []
    for _ in range(n if rows is None else rows):
        cols = rng.choice(n, size=min(per_row, n), replace=False)
        indices += cols.tolist()
        weights += rng.choice([-2.0, -1.0, 1.0, 2.0, 3.0, 4.0], size=cols.size).tolist()
        indptr.append(len(indices))
    return ItemNeighbours(
        np.array(indptr, np.int64),
        np.array(indices, np.int64),
        np.array(weights, np.float32),
        items=n,
    )


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 80),
    k=st.integers(1, 12),
    weights=st.tuples(*(st.sampled_from([0.0, 0.5, 1.0, 2.0, 8.0]) for _ in range(5))),
    with_vector=st.booleans(),
    excluded=st.integers(0, 20),
    filtered=st.booleans(),
    sparse_candidates=st.integers(1, 12),
)
def test_fast_top_k_equals_a_full_scan_of_the_blend(
    seed: int,
    n: int,
    k: int,
    weights: tuple[float, float, float, float, float],
    with_vector: bool,
    excluded: int,
    filtered: bool,
    sparse_candidates: int,
) -> None:
    rng = np.random.default_rng(seed)
    table = _table(rng, n, 4)
    signals = RankingSignals(
        trend=rng.integers(0, 6, size=n).astype(np.float32),
        repeat_rate=rng.integers(0, 3, size=n).astype(np.float32) / 2,
        neighbours=_neighbours(rng, n, 3),
        blend=BlendTable(),
        mf_scale=2.0,
        segment_trend=_neighbours(rng, n, 4, rows=3),
    )
    rows = np.unique(rng.integers(0, n, size=rng.integers(0, 12)))
    history = UserHistory(
        rows.astype(np.int64),
        rng.integers(1, 4, size=rows.size).astype(np.float32),
        rng.integers(0, 3, size=rows.size).astype(np.float32),
        np.unique(rng.integers(0, 4, size=rng.integers(0, 3))).astype(np.int64),
    )
    vector = rng.integers(-2, 3, size=4).astype(np.float32) if with_vector else None
    blend = BlendWeights(*weights)
    exclude = np.unique(rng.integers(0, n, size=excluded)).astype(np.int64)
    allowed = rng.random(n) < 0.6 if filtered else None

    fast = blended_top_k(
        table,
        signals,
        vector,
        1.0,
        history,
        blend,
        k,
        exclude=exclude,
        allowed=allowed,
        sparse_candidates=sparse_candidates,
    )
    full = blended_scores(table, signals, vector, 1.0, history, blend)
    some = np.unique(rng.integers(0, n, size=rng.integers(0, 10))).astype(np.int64)
    np.testing.assert_allclose(
        blended_scores_at(table, signals, vector, 1.0, history, blend, some), full[some]
    )
    if allowed is not None:
        full[~allowed] = -np.inf
    reference = top_k(full, k, exclude=exclude)
    np.testing.assert_array_equal(fast.indices, reference.indices)
    np.testing.assert_allclose(fast.scores, reference.scores, rtol=1e-6)


def test_blended_scores_are_the_documented_sum() -> None:
    table = ScoringTable(
        IdMap(["a", "b", "c"]),
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32),
        np.array([0.0, 0.5, 0.0], np.float32),
    )
    neighbours = ItemNeighbours(
        np.array([0, 2, 2, 3]), np.array([1, 2, 1]), np.array([2.0, 1.0, 4.0], np.float32)
    )
    signals = RankingSignals(
        trend=np.array([4.0, 2.0, 0.0], np.float32),
        repeat_rate=np.array([0.5, 0.0, 1.0], np.float32),
        neighbours=neighbours,
        blend=BlendTable(),
        mf_scale=2.0,
    )
    history = UserHistory(
        np.array([0, 2]), np.array([1.0, 0.5], np.float32), np.array([3.0, 1.0], np.float32)
    )
    weights = BlendWeights(mf=1.0, trend=2.0, item=3.0, repeat=4.0)
    scores = blended_scores(table, signals, np.array([1.0, 2.0], np.float32), 0.0, history, weights)
    mf = np.array([1.0, 2.5, 3.0]) / 2.0
    trend = np.array([1.0, 0.5, 0.0])
    votes = np.array([0.0, 2.0 * 1.0 + 4.0 * 0.5, 1.0 * 1.0])  # rows 0 and 2 vote
    repeat = np.array([3.0 * 0.5, 0.0, 1.0 * 1.0])
    expected = mf + 2 * trend + 3 * votes / votes.max() + 4 * repeat / repeat.max()
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_weights_and_tables_round_trip_and_reject_bad_values() -> None:
    table = BlendTable({"trained": {"repeat": BlendWeights(0.5, 1.0, 2.0, 3.0)}})
    again = BlendTable.from_json(table.to_json())
    assert again.get("trained", "repeat") == BlendWeights(0.5, 1.0, 2.0, 3.0)
    assert again.get("features", "new") == BlendWeights()  # missing: the model alone
    with pytest.raises(ValueError, match="blend weight trend"):
        BlendWeights(trend=-1.0)
    with pytest.raises(ValueError, match="unknown segment"):
        BlendTable.from_json({"everyone": {}})
    with pytest.raises(ValueError, match="indices outside"):
        ItemNeighbours(np.array([0, 1]), np.array([3]), np.array([1.0], np.float32))


def test_history_merge_adds_strengths_per_item() -> None:
    history = UserHistory(
        np.array([1, 4]), np.array([1.0, 2.0], np.float32), np.array([1.0, 0.0], np.float32)
    )
    merged = history.merged(
        np.array([4, 2, 4]), np.array([0.5, 1.0, 0.25], np.float32), np.ones(3, np.float32)
    )
    np.testing.assert_array_equal(merged.rows, [1, 2, 4])
    np.testing.assert_allclose(merged.strength, [1.0, 1.0, 2.75])
    np.testing.assert_allclose(merged.repeat, [1.0, 1.0, 2.0])


def _interactions(seed: int, users: int = 40, items: int = 12) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, items)) < 0.3).astype(np.float64))


def test_ease_is_the_closed_form_and_neighbours_keep_its_largest_weights() -> None:
    x = _interactions(3)
    l2 = 5.0
    weights = ease_weights(x, l2)
    gram = (x.T @ x).toarray() + l2 * np.eye(x.shape[1])
    inverse = np.linalg.inv(gram)
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(weights, expected, atol=1e-12)
    # B minimises |X - XB|^2 + l2 |B|^2 with a zero diagonal: the residual's gradient
    # vanishes off the diagonal.
    gradient = -x.T @ (x - x @ weights) + l2 * weights
    off = ~np.eye(x.shape[1], dtype=bool)
    np.testing.assert_allclose(np.asarray(gradient)[off], 0.0, atol=1e-8)
    neighbours = ease_neighbours(x, l2, top_n=x.shape[1])
    dense = np.zeros_like(weights)
    for row in range(x.shape[1]):
        cols = neighbours.indices[neighbours.indptr[row] : neighbours.indptr[row + 1]]
        dense[row, cols] = neighbours.weights[neighbours.indptr[row] : neighbours.indptr[row + 1]]
    np.testing.assert_allclose(dense, weights, rtol=1e-6, atol=1e-7)
    # With fewer kept, each row keeps those largest in magnitude.
    few = ease_neighbours(x, l2, top_n=3)
    for row in range(x.shape[1]):
        kept = few.weights[few.indptr[row] : few.indptr[row + 1]]
        largest = np.sort(np.abs(weights[row]))[::-1][:3]
        np.testing.assert_allclose(np.sort(np.abs(kept))[::-1], largest, rtol=1e-6)


def test_knn_is_shrunk_cosine_with_the_best_neighbours_kept() -> None:
    x = _interactions(5)
    binary = x.toarray() > 0
    counts = binary.sum(axis=0).astype(float)
    co = binary.T.astype(float) @ binary.astype(float)
    np.fill_diagonal(co, 0.0)
    expected = co / (np.sqrt(np.outer(counts, counts)) + 10.0)
    neighbours = knn_neighbours(x, shrink=10.0, top_n=3)
    for row in range(x.shape[1]):
        cols = neighbours.indices[neighbours.indptr[row] : neighbours.indptr[row + 1]]
        values = neighbours.weights[neighbours.indptr[row] : neighbours.indptr[row + 1]]
        assert cols.size == min(3, int((expected[row] > 0).sum()))
        np.testing.assert_allclose(values, expected[row, cols], rtol=1e-5)
        best = np.sort(expected[row])[::-1][: cols.size]
        np.testing.assert_allclose(np.sort(values)[::-1], best, rtol=1e-5)
