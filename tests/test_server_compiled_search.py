"""The compiled pruned search returns exactly what a full scan returns: same rows, same
order, same scores, ties included, with exclusions and filters. Integer-valued tables make
every score exact in float32, so any difference is a search error, not rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.ids import IdMap
from shelfrank.core.pruned_scan import PrunedScan
from shelfrank.core.scoring import ScoringTable
from shelfrank.server.ann import AnnConfig, SearchPolicy
from shelfrank.server.compiled_blend import COMPILED_KERNEL
from shelfrank.server.compiled_search import COMPILED_SEARCH
from shelfrank.server.registry import load_state
from tests.test_core_pruned_scan import integer_table


def compiled_table(
    vectors: np.ndarray, biases: np.ndarray, scan: PrunedScan, names: list[str] | None = None
) -> ScoringTable:
    ids = IdMap(names or [f"i{j}" for j in range(vectors.shape[0])])
    return ScoringTable(ids, vectors, biases, pruned=scan, kernel=COMPILED_SEARCH)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    k=st.integers(1, 40),
    noise=st.integers(0, 2),
    energy=st.sampled_from([0.6, 0.9, 0.999]),
    leaf_size=st.sampled_from([1, 2, 8, 64]),
    user_bias=st.sampled_from([0.0, 2.0, -7.0]),
    data=st.data(),
)
def test_compiled_search_equals_full_scan(
    seed: int,
    n: int,
    k: int,
    noise: int,
    energy: float,
    leaf_size: int,
    user_bias: float,
    data: st.DataObject,
) -> None:
    vectors, biases = integer_table(seed, n, 16, 3, noise)
    scan = PrunedScan.build(vectors, biases, energy=energy, leaf_size=leaf_size)
    if scan is None:
        return  # not low-rank at this energy: such a table is never searched this way
    ids = IdMap([f"i{j}" for j in range(n)])
    full = ScoringTable(ids, vectors, biases, pruned=False)
    compiled = compiled_table(vectors, biases, scan)
    rng = np.random.default_rng(seed + 1)
    user = rng.integers(-3, 4, 16).astype(np.float32)
    exclude = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=50)), np.int64)
    masked = data.draw(st.booleans())
    mask = rng.random(n) < data.draw(st.sampled_from([0.2, 0.6, 1.0])) if masked else None
    want = full.recommend(user, user_bias, k, exclude=exclude, allowed=mask)
    got = COMPILED_SEARCH.top_k(
        scan, vectors, biases, user, user_bias, k, exclude=exclude, allowed=mask
    )
    assert got.indices.tolist() == want.indices.tolist()
    assert got.scores.tolist() == want.scores.tolist()
    # And through the table, which decides when the pruned search pays off.
    through = compiled.recommend(user, user_bias, k, exclude=exclude, allowed=mask)
    assert through.indices.tolist() == want.indices.tolist()


def test_the_table_uses_the_kernel_and_keeps_it_when_rows_are_appended() -> None:
    vectors, biases = integer_table(11, 4000, 16, 3, 1)
    scan = PrunedScan.build(vectors, biases)
    assert scan is not None
    calls: list[int] = []

    class Counting:
        def top_k(self, *args: object, **kwargs: object) -> object:
            calls.append(1)
            return COMPILED_SEARCH.top_k(*args, **kwargs)  # type: ignore[arg-type]

    counting = Counting()
    table = ScoringTable(
        IdMap([f"i{j}" for j in range(4000)]), vectors, biases, pruned=scan, kernel=counting
    )
    user = np.ones(16, np.float32)
    table.recommend(user, 0.0, 5)
    assert calls == [1]
    star = np.full((1, 16), 50.0, np.float32)
    grown = table.with_rows_appended(
        IdMap([*table.item_ids.ids, "star"]), star, np.array([9.0], np.float32)
    )
    assert grown.kernel is counting
    best = grown.recommend(user, 0.0, 5)
    assert calls == [1, 1]
    assert grown.item_ids.id_of(int(best.indices[0])) == "star"


def test_non_finite_scores_are_never_recommended() -> None:
    vectors, biases = integer_table(5, 2000, 16, 3, 0)
    scan = PrunedScan.build(vectors, biases)
    assert scan is not None
    vectors[3] = np.nan  # after the build: a scan cannot be built over non-finite rows
    biases[7] = np.inf
    full = ScoringTable(IdMap([f"i{j}" for j in range(2000)]), vectors, biases, pruned=False)
    user = np.ones(16, np.float32)
    got = COMPILED_SEARCH.top_k(scan, vectors, biases, user, 0.0, 2000)
    want = full.recommend(user, 0.0, 2000)
    assert 3 not in got.indices
    assert 7 not in got.indices
    assert got.indices.tolist() == want.indices.tolist()


def _prepared_with_and_without_kernel(seed: int, items: int) -> tuple[ScoringTable, ScoringTable]:
    """The same table prepared by the default search policy and by a numpy-only one."""
    vectors, biases = integer_table(seed, items, 16, 3, 0)
    ids = IdMap([f"i{j}" for j in range(items)])
    default, numpy_only = (ScoringTable(ids, vectors, biases) for _ in range(2))
    SearchPolicy().prepare(default)
    SearchPolicy(compiled=False).prepare(numpy_only)
    assert default.kernel is COMPILED_KERNEL
    assert default.pruned is not None
    assert numpy_only.kernel is None
    return default, numpy_only


def _same_top(default: ScoringTable, numpy_only: ScoringTable, seed: int, step: int) -> None:
    user = np.random.default_rng(seed).normal(size=16).astype(np.float32)
    exclude = np.arange(0, len(default), step, dtype=np.int64)
    a = default.recommend(user, 0.5, 20, exclude=exclude)
    b = numpy_only.recommend(user, 0.5, 20, exclude=exclude)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_the_search_policy_attaches_the_kernel_unless_told_not_to() -> None:
    default, numpy_only = _prepared_with_and_without_kernel(2, 25_000)
    _same_top(default, numpy_only, 0, 3)


def test_a_small_catalogue_gets_a_pruned_scan_for_the_kernel_only() -> None:
    # Below PRUNE_MIN_ITEMS the numpy search scans everything; the compiled kernel searches
    # a pruned scan at any size, so the policy builds one when it attaches the kernel.
    assert (
        ScoringTable(
            IdMap(["a", "b"]), np.eye(2, 16, dtype=np.float32), np.zeros(2, np.float32)
        ).pruned
        is None
    )
    default, numpy_only = _prepared_with_and_without_kernel(4, 1_500)
    assert numpy_only.pruned is None
    grown = default.with_rows_appended(
        IdMap([*default.item_ids.ids, "new"]), np.ones((1, 16), np.float32), np.zeros(1, np.float32)
    )
    assert grown.pruned is not None
    assert grown.pruned.items == 1_501
    _same_top(default, numpy_only, 1, 5)


def test_shapes_the_kernel_would_read_past_are_refused() -> None:
    vectors, biases = integer_table(4, 3000, 16, 3, 0)
    scan = PrunedScan.build(vectors, biases)
    assert scan is not None
    user = np.ones(16, np.float32)
    with pytest.raises(ValueError, match="allowed: expected a mask of 3000 rows"):
        COMPILED_SEARCH.top_k(scan, vectors, biases, user, 0.0, 5, allowed=np.ones(10, bool))
    with pytest.raises(ValueError, match="user_vector: expected shape"):
        COMPILED_SEARCH.top_k(scan, vectors, biases, np.ones(8, np.float32), 0.0, 5)
    with pytest.raises(ValueError, match="scan covers 3000 rows"):
        COMPILED_SEARCH.top_k(scan, vectors[:100], biases[:100], user, 0.0, 5)
    with pytest.raises(ValueError, match="k: must be positive"):
        COMPILED_SEARCH.top_k(scan, vectors, biases, user, 0.0, 0)


def test_a_catalogue_upsert_keeps_the_tables_search_structures(toy_model_dir: Path) -> None:
    state = load_state(toy_model_dir, SearchPolicy(mode="ann", ann=AnnConfig(build_threads=1)))
    table = state.model.items
    assert table.kernel is COMPILED_KERNEL
    assert table.approximate is not None
    grown = state.with_items({"brand-new": ["genre:new"]})
    new_table = grown.model.items
    assert new_table.kernel is COMPILED_KERNEL
    assert new_table.approximate is table.approximate  # rows appended: scored exactly
    assert len(new_table) == len(table) + 1
    assert "brand-new" in new_table.item_ids
    # Only tokens changed: the table (vectors, index) is the same one.
    first = table.item_ids.id_of(0)
    assert grown.with_items({first: ["genre:new"]}).model.items is new_table
