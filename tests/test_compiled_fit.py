"""The compiled training loops (server/compiled_fit.py) against plain numpy definitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.blend import COMPONENTS, ItemNeighbours
from shelfrank.core.errors import InvalidInputError
from shelfrank.server.blend_fit import (
    ROUNDS,
    WEIGHT_GRID,
    Candidates,
    bagged_search_weights,
    mean_ndcg,
    search_weights,
)
from shelfrank.server.compiled_fit import VoteSummer, blended_ndcg, top_per_row, top_shrunk_cosine

K = 10
DISCOUNTS = 1.0 / np.log2(np.arange(2, K + 2))


def _reference_ndcg(
    values: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    lengths: npt.NDArray[np.int64],
    relevant: npt.NDArray[np.bool_],
    ideal: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    scores = np.zeros((values.shape[0], values.shape[2]), np.float32)
    for component in range(weights.size):  # float32, in component order
        scores += values[:, component, :] * weights[component]
    out = np.zeros(values.shape[0])
    for case in range(values.shape[0]):
        positions = np.arange(lengths[case])
        # Full order: score descending, then position.
        order = positions[np.lexsort((positions, -scores[case, positions]))][:K]
        out[case] = float(DISCOUNTS[: order.size] @ relevant[case, order]) / ideal[case]
    return out


@st.composite
def candidate_lists(draw: st.DrawFn) -> tuple[npt.NDArray[Any], ...]:
    lists = draw(st.integers(1, 6))
    width = draw(st.integers(1, 30))
    components = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Few distinct values and weights, so ties are common.
    values = (rng.integers(-3, 4, (lists, components, width)) / 2).astype(np.float32)
    trials = draw(st.integers(1, 4))
    weights = rng.choice([0.0, 0.05, 0.5, 1.0, 2.0], (trials, components)).astype(np.float32)
    lengths = rng.integers(0, width + 1, lists).astype(np.int64)
    relevant = rng.random((lists, width)) < 0.3
    ideal = rng.uniform(0.5, 4.0, lists)
    return values, weights, lengths, relevant, ideal


@settings(max_examples=200, deadline=None)
@given(candidate_lists())
def test_blended_ndcg_ranks_by_float32_score_then_position(
    lists: tuple[npt.NDArray[Any], ...],
) -> None:
    values, weights, lengths, relevant, ideal = lists
    found = blended_ndcg(values, weights, lengths, relevant, DISCOUNTS, ideal)
    assert found.shape == (weights.shape[0], values.shape[0])
    for trial, trial_weights in enumerate(weights):
        np.testing.assert_array_equal(
            found[trial], _reference_ndcg(values, trial_weights, lengths, relevant, ideal)
        )


def _reference_top(matrix: sp.csr_matrix, top_n: int) -> list[list[tuple[int, float]]]:
    rows = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        cols, values = matrix.indices[start:end], matrix.data[start:end]
        order = np.lexsort((cols, -values))[:top_n]
        rows.append(sorted((int(cols[i]), float(np.float32(values[i]))) for i in order))
    return rows


def _rows(
    indptr: npt.NDArray[np.int64], indices: npt.NDArray[np.int64], weights: npt.NDArray[np.float32]
) -> list[list[tuple[int, float]]]:
    return [
        sorted(
            (int(c), float(w))
            for c, w in zip(
                indices[indptr[r] : indptr[r + 1]], weights[indptr[r] : indptr[r + 1]], strict=True
            )
        )
        for r in range(indptr.size - 1)
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(1, 12),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float32, np.float64]),
)
def test_top_per_row_keeps_the_best_entries_with_ties_to_the_lower_column(
    n_rows: int, n_cols: int, top_n: int, seed: int, dtype: type
) -> None:
    rng = np.random.default_rng(seed)
    dense: npt.NDArray[Any] = rng.integers(-2, 3, (n_rows, n_cols)).astype(dtype) * (
        rng.random((n_rows, n_cols)) < 0.7
    )
    matrix = sp.csr_matrix(dense)
    # Unsorted columns within rows, as a sparse product leaves them.
    permuted = matrix.copy()
    for row in range(n_rows):
        start, end = permuted.indptr[row], permuted.indptr[row + 1]
        order = rng.permutation(end - start)
        permuted.indices[start:end] = permuted.indices[start:end][order]
        permuted.data[start:end] = permuted.data[start:end][order]
    indptr, indices, weights = top_per_row(permuted.indptr, permuted.indices, permuted.data, top_n)
    assert weights.dtype == np.float32
    assert _rows(indptr, indices, weights) == _reference_top(matrix, top_n)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 10), st.integers(1, 8), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_shrunk_cosine_equals_its_numpy_definition(
    n_users: int, n_items: int, top_n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = sp.csc_matrix((rng.random((n_users, n_items)) < 0.4).astype(np.float32))
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
    co = sp.csr_matrix(x.T @ x)
    indptr, indices, weights = top_shrunk_cosine(co, counts, 10.0, top_n)
    dense = co.toarray().astype(np.float64)
    np.fill_diagonal(dense, 0.0)
    cosine = (dense / (np.sqrt(np.outer(counts, counts)) + 10.0)).astype(np.float32)
    expected = sp.csr_matrix(np.where(dense > 0, cosine, 0.0))
    expected.eliminate_zeros()
    assert _rows(indptr, indices, weights) == _reference_top(expected, top_n)


def test_a_cut_below_one_entry_is_refused() -> None:
    empty = np.zeros(2, np.int64)
    with pytest.raises(InvalidInputError, match="top_n"):
        top_per_row(empty, np.empty(0, np.int64), np.empty(0, np.float32), 0)
    with pytest.raises(InvalidInputError, match="top_n"):
        top_shrunk_cosine(sp.csr_matrix(np.zeros((1, 1), np.float32)), np.ones(1), 10.0, 0)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(1, 15), st.integers(0, 2**32 - 1))
def test_summed_votes_equal_the_neighbour_tables_own_and_leave_the_scratch_clean(
    n_rows: int, n_items: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n_rows, n_items)) * (rng.random((n_rows, n_items)) < 0.5)
    matrix = sp.csr_matrix(dense.astype(np.float32))
    neighbours = ItemNeighbours(
        matrix.indptr.astype(np.int64),
        matrix.indices.astype(np.int64),
        matrix.data.astype(np.float32),
        items=n_items,
    )
    summer = VoteSummer()
    for _ in range(3):  # the same scratch, call after call
        size = int(rng.integers(0, n_rows + 1))
        rows = np.sort(rng.choice(n_rows, size=size, replace=False)).astype(np.int64)
        strengths = rng.uniform(0, 2, size).astype(np.float32)
        expected_rows, expected_votes = neighbours.scores(rows, strengths)
        found_rows, found_votes = summer.scores(neighbours, rows, strengths)
        np.testing.assert_array_equal(found_rows, expected_rows)
        # Small tables take numpy's sequential (bincount) path: the sums are the same.
        np.testing.assert_array_equal(found_votes, expected_votes)


def _one_by_one(candidates: Candidates, usable: tuple[bool, ...]) -> tuple[Any, float]:
    """The coordinate ascent as it was written before trials were batched."""
    weights = np.zeros(len(COMPONENTS), np.float32)
    weights[0 if usable[0] else 1] = 1.0
    best = mean_ndcg(candidates, weights)
    for _ in range(ROUNDS):
        improved = False
        for component in range(len(COMPONENTS)):
            if not usable[component]:
                continue
            for value in WEIGHT_GRID:
                if component == 0 and value == 0:
                    continue
                trial = weights.copy()
                trial[component] = value
                if not trial.any():
                    continue
                score = mean_ndcg(candidates, trial)
                if score > best + 1e-9:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return weights, best


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 12), st.integers(0, 2**32 - 1), st.lists(st.booleans(), min_size=4, max_size=4)
)
def test_batched_weight_search_equals_the_one_by_one_ascent(
    cases: int, seed: int, usable_rest: list[bool]
) -> None:
    candidates = _random_candidates(np.random.default_rng(seed), cases)
    usable = (True, *usable_rest)
    weights, best = search_weights(candidates, usable)
    expected_weights, expected_best = _one_by_one(candidates, usable)
    np.testing.assert_array_equal(weights, expected_weights)
    assert best == expected_best


def _random_candidates(rng: np.random.Generator, cases: int) -> Candidates:
    candidates = Candidates([], [], [], [])
    for _ in range(cases):
        size = int(rng.integers(1, 25))
        candidates.rows.append(np.arange(size, dtype=np.int64))
        candidates.values.append(
            (rng.integers(0, 5, (len(COMPONENTS), size)) / 4).astype(np.float32)
        )
        relevant = rng.random(size) < 0.25
        candidates.relevant.append(relevant)
        candidates.relevant_count.append(max(1, int(relevant.sum())))
    return candidates


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 12), st.integers(0, 2**32 - 1), st.lists(st.booleans(), min_size=4, max_size=4)
)
def test_bagged_weights_are_the_mean_of_the_resamples_fits(
    cases: int, seed: int, usable_rest: list[bool]
) -> None:
    candidates = _random_candidates(np.random.default_rng(seed), cases)
    usable = (True, *usable_rest)
    bagged = bagged_search_weights(candidates, usable, bags=5, seed=seed)
    # The same resamples, fitted one by one.
    rng = np.random.default_rng(seed)
    total = np.zeros(len(COMPONENTS))
    for _ in range(5):
        pick = rng.integers(0, cases, cases)
        resample = Candidates(
            [candidates.rows[i] for i in pick],
            [candidates.values[i] for i in pick],
            [candidates.relevant[i] for i in pick],
            [candidates.relevant_count[i] for i in pick],
        )
        weights, _ = _one_by_one(resample, usable)
        total += weights / weights.sum()
    np.testing.assert_allclose(bagged, total / total.max(), rtol=1e-6)
    assert bagged.max() == 1.0
    assert bagged.min() >= 0
    assert not bagged[[not u for u in usable]].any()  # unusable components stay out
    np.testing.assert_array_equal(bagged, bagged_search_weights(candidates, usable, 5, seed))


def test_bagging_shoppers_who_all_agree_gives_the_plain_fit() -> None:
    # Every resample of identical shoppers is the same set: one fit, scaled to a largest 1.
    one = _random_candidates(np.random.default_rng(3), 1)
    candidates = Candidates(one.rows * 9, one.values * 9, one.relevant * 9, one.relevant_count * 9)
    usable = (True,) * len(COMPONENTS)
    plain, _ = search_weights(candidates, usable)
    bagged = bagged_search_weights(candidates, usable, bags=7, seed=0)
    np.testing.assert_allclose(bagged, plain / plain.max(), rtol=1e-6)
