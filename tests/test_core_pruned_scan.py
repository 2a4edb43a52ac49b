"""The pruned scan returns exactly what a full scan returns: same rows, same order, ties
included. Integer-valued tables make every score exact in float32, so any difference
would be a pruning error, not rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.ids import IdMap
from shelfrank.core.pruned_scan import PrunedScan
from shelfrank.core.scoring import PRUNE_MIN_ITEMS, ScoringTable


def integer_table(
    seed: int, n: int, dim: int, rank: int, noise: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = rng.integers(-3, 4, (n, rank))
    right = rng.integers(-2, 3, (rank, dim))
    vectors = left @ right * 4 + rng.integers(-noise, noise + 1, (n, dim))
    biases = rng.integers(-5, 6, n)
    # Duplicated rows create exact ties that must be broken by the lower row.
    duplicates = rng.choice(n, size=max(1, n // 10), replace=False)
    vectors[duplicates] = vectors[duplicates[0]]
    biases[duplicates] = biases[duplicates[0]]
    return vectors.astype(np.float32), biases.astype(np.float32)


def tables(
    vectors: np.ndarray, biases: np.ndarray, energy: float, leaf_size: int
) -> tuple[ScoringTable, ...]:
    ids = IdMap([f"i{j}" for j in range(vectors.shape[0])])
    scan = PrunedScan.build(vectors, biases, energy=energy, leaf_size=leaf_size)
    if scan is None:
        raise ValueError("test table is not low-rank enough to prune")
    return (
        ScoringTable(ids, vectors, biases, pruned=False),
        ScoringTable(ids, vectors, biases, pruned=scan),
    )


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    k=st.integers(1, 40),
    noise=st.integers(0, 2),
    energy=st.sampled_from([0.6, 0.9, 0.999]),
    # Small leaves make many leaves: the search then runs past its first ordered prefix.
    leaf_size=st.sampled_from([2, 8, 64]),
    data=st.data(),
)
def test_pruned_scan_equals_full_scan(
    seed: int,
    n: int,
    k: int,
    noise: int,
    energy: float,
    leaf_size: int,
    data: st.DataObject,
) -> None:
    vectors, biases = integer_table(seed, n, 16, 3, noise)
    scan = PrunedScan.build(vectors, biases, energy=energy)
    if scan is None:
        return  # not low-rank at this energy: the table would scan fully, nothing to compare
    full, pruned = tables(vectors, biases, energy, leaf_size)
    rng = np.random.default_rng(seed + 1)
    user = rng.integers(-3, 4, 16).astype(np.float32)
    exclude = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=50)), np.int64)
    candidates = data.draw(st.none() | st.lists(st.integers(0, n - 1), min_size=1))
    cand = None if candidates is None else np.array(candidates, np.int64)
    if cand is not None and cand.size <= n // 8:
        cand = np.concatenate([cand, np.arange(0, n, 2)])  # big enough to take the pruned path
    want = full.recommend(user, 2.0, k, exclude=exclude, candidates=cand)
    got = pruned.recommend(user, 2.0, k, exclude=exclude, candidates=cand)
    assert got.indices.tolist() == want.indices.tolist()
    assert got.scores.tolist() == want.scores.tolist()
    if cand is not None:  # the same restriction given as a mask
        mask = np.zeros(n, np.bool_)
        mask[cand] = True
        for table in (full, pruned):
            masked = table.recommend(user, 2.0, k, exclude=exclude, allowed=mask)
            assert masked.indices.tolist() == want.indices.tolist()


def test_few_rows_are_scored_on_a_low_rank_table() -> None:
    vectors, biases = integer_table(7, 20_000, 32, 4, 0)
    scan = PrunedScan.build(vectors, biases)
    assert scan is not None
    assert scan.rank <= 5
    user = np.random.default_rng(3).normal(size=32).astype(np.float32)
    rows, scores = scan.top_candidates(vectors, biases, user, 10)
    assert 10 <= rows.size < 2_000
    np.testing.assert_allclose(scores, vectors[rows] @ user + biases[rows], rtol=1e-6)


def test_full_rank_tables_are_not_pruned() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(PRUNE_MIN_ITEMS, 16)).astype(np.float32)
    biases = rng.normal(size=PRUNE_MIN_ITEMS).astype(np.float32)
    assert PrunedScan.build(vectors, biases) is None
    table = ScoringTable(IdMap([f"i{j}" for j in range(PRUNE_MIN_ITEMS)]), vectors, biases)
    assert table.pruned is None


def test_large_low_rank_tables_prune_by_default_and_extend_on_append() -> None:
    vectors, biases = integer_table(1, PRUNE_MIN_ITEMS, 16, 3, 0)
    ids = IdMap([f"i{j}" for j in range(PRUNE_MIN_ITEMS)])
    table = ScoringTable(ids, vectors, biases)
    assert table.pruned is not None
    more_ids = ids.copy()
    for name in ("new-a", "new-b"):
        more_ids.add(name)
    # Appended rows point away from the basis; the bound must still hold for them.
    extra = np.full((2, 16), 40.0, np.float32)
    grown = table.with_rows_appended(more_ids, extra, np.array([100.0, 90.0], np.float32))
    assert grown.pruned is not None
    assert grown.pruned.basis is table.pruned.basis
    assert grown.pruned.items == PRUNE_MIN_ITEMS + 2
    user = np.ones(16, np.float32)
    best = grown.recommend(user, 0.0, 3)
    full = ScoringTable(more_ids, grown.item_vectors, grown.item_biases, pruned=False).recommend(
        user, 0.0, 3
    )
    assert best.indices.tolist() == full.indices.tolist()
    assert best.indices[:2].tolist() == [PRUNE_MIN_ITEMS, PRUNE_MIN_ITEMS + 1]


def test_settings_are_validated_and_an_empty_table_is_not_pruned() -> None:
    zeros, none = np.zeros((3, 2), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="energy"):
        PrunedScan.build(zeros, none, energy=0.0)
    with pytest.raises(ValueError, match="leaf_size"):
        PrunedScan.build(zeros, none, leaf_size=0)
    assert PrunedScan.build(zeros, none) is None


def test_a_prebuilt_scan_must_cover_the_table() -> None:
    vectors, biases = integer_table(2, 100, 16, 3, 0)
    scan = PrunedScan.build(vectors[:50], biases[:50])
    assert scan is not None
    with pytest.raises(ValueError, match="covers 50 rows"):
        ScoringTable(IdMap([f"i{j}" for j in range(100)]), vectors, biases, pruned=scan)


def test_candidates_and_a_mask_are_not_given_together() -> None:
    vectors, biases = integer_table(2, 10, 16, 3, 0)
    table = ScoringTable(IdMap([f"i{j}" for j in range(10)]), vectors, biases)
    with pytest.raises(ValueError, match="at most one"):
        table.recommend(
            np.ones(16, np.float32), 0.0, 3, candidates=np.arange(3), allowed=np.ones(10, bool)
        )
