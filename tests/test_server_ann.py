"""Approximate candidates (faiss HNSW): filters and exclusions still hold exactly, recall is
high, rows appended after the build are found, and the policy picks the right search."""

from __future__ import annotations

import numpy as np
import pytest

from shelfrank.core.ids import IdMap
from shelfrank.core.scoring import ScoringTable
from shelfrank.server.ann import AnnConfig, FaissItemIndex, SearchPolicy


def low_rank_table(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 4)) @ rng.normal(size=(4, 16)) + 0.1 * rng.normal(size=(n, 16))
    return vectors.astype(np.float32), rng.normal(0, 0.3, n).astype(np.float32)


@pytest.fixture(scope="module")
def tables() -> tuple[ScoringTable, ScoringTable, np.ndarray]:
    vectors, biases = low_rank_table(6000)
    ids = IdMap([f"i{j}" for j in range(len(vectors))])
    exact = ScoringTable(ids, vectors, biases, pruned=False)
    approximate = ScoringTable(ids, vectors, biases, pruned=False)
    SearchPolicy(mode="ann", ann=AnnConfig(build_threads=1)).prepare(approximate)
    users = np.random.default_rng(1).normal(size=(60, 16)).astype(np.float32)
    return exact, approximate, users


def test_recall_is_high_and_exclusions_and_filters_hold_exactly(
    tables: tuple[ScoringTable, ScoringTable, np.ndarray],
) -> None:
    exact, approximate, users = tables
    assert approximate.approximate is not None
    rng = np.random.default_rng(2)
    overlaps = []
    for user in users:
        exclude = rng.choice(len(exact), 30, replace=False).astype(np.int64)
        allowed = np.flatnonzero(rng.random(len(exact)) < 0.3).astype(np.int64)
        want = exact.recommend(user, 0.5, 10, exclude=exclude, candidates=allowed)
        got = approximate.recommend(user, 0.5, 10, exclude=exclude, candidates=allowed)
        assert got.indices.size == 10
        assert not np.isin(got.indices, exclude).any()
        assert np.isin(got.indices, allowed).all()
        # Scores are exact for whatever was found.
        np.testing.assert_allclose(
            got.scores, exact.scores(user, 0.5, rows=got.indices), rtol=1e-5, atol=1e-5
        )
        overlaps.append(len(set(got.indices.tolist()) & set(want.indices.tolist())) / 10)
    assert np.mean(overlaps) >= 0.95


def test_a_filter_the_index_cannot_fill_falls_back_to_exact(
    tables: tuple[ScoringTable, ScoringTable, np.ndarray],
) -> None:
    exact, approximate, users = tables
    # Exclude all but 5 of the allowed rows: the index cannot return 10, the answer is exact.
    allowed = np.arange(0, len(exact), 7, dtype=np.int64)
    exclude = allowed[5:]
    want = exact.recommend(users[0], 0.0, 10, exclude=exclude, candidates=allowed)
    got = approximate.recommend(users[0], 0.0, 10, exclude=exclude, candidates=allowed)
    assert (
        got.indices.tolist()
        == want.indices.tolist()
        == allowed[:5][
            np.argsort(-exact.scores(users[0], 0.0, rows=allowed[:5]), kind="stable")
        ].tolist()
    )


def test_rows_appended_after_the_build_are_scored(
    tables: tuple[ScoringTable, ScoringTable, np.ndarray],
) -> None:
    _, approximate, users = tables
    ids = approximate.item_ids.copy()
    ids.add("new")
    star = (users[0] * 10)[None, :].astype(np.float32)
    grown = approximate.with_rows_appended(ids, star, np.array([5.0], np.float32))
    assert grown.approximate is approximate.approximate
    assert grown.recommend(users[0], 0.0, 3).indices[0] == len(approximate)


def test_the_policy_chooses_approximate_only_where_exact_is_slow() -> None:
    auto = SearchPolicy()
    assert not auto.wants_index(100_000, prunable=False)
    assert not auto.wants_index(2_000_000, prunable=True)
    assert auto.wants_index(2_000_000, prunable=False)
    assert SearchPolicy(mode="ann").wants_index(10, prunable=True)
    assert not SearchPolicy(mode="exact").wants_index(10**8, prunable=False)
    with pytest.raises(ValueError, match="search: must be one of"):
        SearchPolicy(mode="fast")
    with pytest.raises(ValueError, match="ef_search"):
        AnnConfig(ef_search=0)


def test_the_index_covers_its_rows_only() -> None:
    vectors, biases = low_rank_table(100)
    index = FaissItemIndex(vectors, biases, AnnConfig(build_threads=1))
    assert index.items == 100
    with pytest.raises(ValueError, match="covers 100 rows, table has 50"):
        ScoringTable(
            IdMap([f"i{j}" for j in range(50)]), vectors[:50], biases[:50], approximate=index
        )
