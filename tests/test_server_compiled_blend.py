"""The compiled blended ranking returns what core.blend's numpy ranking returns: same rows,
same order, same scores, ties included, with exclusions and filters, every component on or
off. Integer-valued tables, trends, votes and strengths keep every sum exact, so a
difference is a search error, not rounding."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.blend import (
    BlendTable,
    BlendWeights,
    ItemNeighbours,
    RankingSignals,
    UserHistory,
    blended_scores,
    blended_top_k,
)
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.ids import IdMap
from shelfrank.core.pruned_scan import PrunedScan
from shelfrank.core.scoring import ScoringTable, top_k
from shelfrank.server.compiled_blend import COMPILED_KERNEL
from tests.test_blend import _neighbours
from tests.test_core_pruned_scan import integer_table


def _case(
    seed: int, n: int, leaf_size: int, per_row: int, mf_scale: float = 2.0
) -> tuple[ScoringTable, ScoringTable, RankingSignals, np.random.Generator] | None:
    vectors, biases = integer_table(seed, n, 16, 3, 1)
    scan = PrunedScan.build(vectors, biases, energy=0.9, leaf_size=leaf_size)
    if scan is None:
        return None
    ids = IdMap([f"i{j}" for j in range(n)])
    compiled = ScoringTable(ids, vectors, biases, pruned=scan, kernel=COMPILED_KERNEL)
    plain = ScoringTable(ids, vectors, biases, pruned=False)
    rng = np.random.default_rng(seed + 7)
    signals = RankingSignals(
        trend=rng.integers(0, 6, size=n).astype(np.float32),
        repeat_rate=rng.integers(0, 3, size=n).astype(np.float32) / 2,
        neighbours=_neighbours(rng, n, per_row),
        blend=BlendTable(),
        # A power of two keeps the scaled model score exact; a large one makes the model's
        # part as small as the others, so the sparse terms decide the order.
        mf_scale=mf_scale,
        segment_trend=_neighbours(rng, n, 3 * per_row, rows=4),
    )
    return compiled, plain, signals, rng


def _history(rng: np.random.Generator, n: int, length: int) -> UserHistory:
    rows = np.unique(rng.integers(0, n, size=length)).astype(np.int64)
    return UserHistory(
        rows,
        rng.integers(-1, 4, size=rows.size).astype(np.float32),
        rng.integers(-1, 3, size=rows.size).astype(np.float32),
        np.unique(rng.integers(0, 6, size=rng.integers(0, 3))).astype(np.int64),
    )


@settings(max_examples=250, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([1, 7, 300, 2000]),
    k=st.integers(1, 30),
    weights=st.tuples(
        st.sampled_from([0.5, 1.0, 4.0]),
        *(st.sampled_from([0.0, 0.5, 1.0, 2.0, 8.0]) for _ in range(4)),
    ),
    length=st.integers(0, 40),
    per_row=st.sampled_from([1, 4, 30]),
    leaf_size=st.sampled_from([1, 8, 64]),
    excluded=st.integers(0, 60),
    filtered=st.booleans(),
    user_bias=st.sampled_from([0.0, 3.0, -5.0]),
    mf_scale=st.sampled_from([2.0, 256.0, 4096.0]),
)
def test_compiled_blend_equals_the_numpy_blend(
    seed: int,
    n: int,
    k: int,
    weights: tuple[float, float, float, float, float],
    length: int,
    per_row: int,
    leaf_size: int,
    excluded: int,
    filtered: bool,
    user_bias: float,
    mf_scale: float,
) -> None:
    case = _case(seed, n, leaf_size, per_row, mf_scale)
    if case is None:
        return  # not low-rank: such a table is never searched this way
    compiled, plain, signals, rng = case
    history = _history(rng, n, length)
    vector = rng.integers(-3, 4, size=16).astype(np.float32)
    blend = BlendWeights(*weights)
    exclude = np.unique(rng.integers(0, n, size=excluded)).astype(np.int64)
    allowed = rng.random(n) < 0.7 if filtered else None
    if allowed is not None and np.count_nonzero(allowed) <= n // 8:
        allowed = None  # so few rows are ranked with numpy: nothing compiled to compare
    got = COMPILED_KERNEL.blended_top_k(
        compiled, signals, vector, user_bias, history, blend, k, exclude=exclude, allowed=allowed
    )
    assert got is not None
    # The same history in another object: each ranking records what it summed on its own.
    same = UserHistory(history.rows, history.strength, history.repeat, history.tokens)
    want = blended_top_k(
        plain, signals, vector, user_bias, same, blend, k, exclude=exclude, allowed=allowed
    )
    assert got.indices.tolist() == want.indices.tolist()
    assert got.scores.tolist() == want.scores.tolist()
    # Both record the item-to-item votes' peak for the request's explanation, equally.
    assert history.recalled(signals.neighbours) == same.recalled(signals.neighbours)
    # The full scan of the blend agrees too (so numpy's fast path is not the only witness).
    full = blended_scores(plain, signals, vector, user_bias, history, blend)
    if allowed is not None:
        full[~allowed] = -np.inf
    assert got.indices.tolist() == top_k(full, k, exclude=exclude).indices.tolist()
    # And core's blended_top_k hands a table with the kernel to it.
    through = blended_top_k(
        compiled, signals, vector, user_bias, history, blend, k, exclude=exclude, allowed=allowed
    )
    assert through.indices.tolist() == want.indices.tolist()


def test_the_scratch_stays_clean_across_calls_and_threads() -> None:
    case = _case(3, 2000, 8, 30, 256.0)
    assert case is not None
    compiled, plain, signals, rng = case
    blend = BlendWeights(1.0, 0.5, 2.0, 1.0, 1.0)
    queries = [
        (rng.integers(-3, 4, size=16).astype(np.float32), _history(rng, 2000, 40))
        for _ in range(60)
    ]
    want = [
        blended_top_k(plain, signals, vector, 0.0, history, blend, 20).indices.tolist()
        for vector, history in queries
    ]

    def ranked(index: int) -> list[int]:
        vector, history = queries[index % len(queries)]
        found = COMPILED_KERNEL.blended_top_k(compiled, signals, vector, 0.0, history, blend, 20)
        assert found is not None
        return list(found.indices.tolist())

    # Sequentially (a history's marks must not leak into the next call), then from four
    # threads at once (each call holds its own scratch while the kernel runs without the
    # GIL; more calls than the pool keeps make their own).
    assert [ranked(i) for i in range(len(queries))] == want
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ranked, range(4 * len(queries)))) == want * 4


def test_where_the_kernel_does_not_apply_numpy_ranks() -> None:
    case = _case(5, 300, 8, 4)
    assert case is not None
    compiled, plain, signals, rng = case
    history = _history(rng, 300, 10)
    vector = rng.integers(-3, 4, size=16).astype(np.float32)
    no_model = BlendWeights(0.0, 1.0, 1.0, 1.0, 0.0)
    kernel = COMPILED_KERNEL.blended_top_k
    assert kernel(compiled, signals, vector, 0.0, history, no_model, 5) is None
    assert kernel(compiled, signals, None, 0.0, history, no_model, 5) is None
    few = np.zeros(300, np.bool_)
    few[:20] = True
    blend = BlendWeights(1.0, 1.0, 1.0, 1.0, 1.0)
    assert kernel(compiled, signals, vector, 0.0, history, blend, 5, allowed=few) is None
    for weights, mask in ((no_model, None), (blend, few)):
        got = blended_top_k(compiled, signals, vector, 0.0, history, weights, 5, allowed=mask)
        want = blended_top_k(plain, signals, vector, 0.0, history, weights, 5, allowed=mask)
        assert got.indices.tolist() == want.indices.tolist()


def test_the_pool_lends_clean_tables_and_keeps_at_most_its_bound() -> None:
    from shelfrank.server.compiled_blend import _ScratchPool

    pool = _ScratchPool(2)
    lent = [pool.take(50) for _ in range(4)]  # more calls at once than the pool keeps
    assert len({id(s) for s in lent}) == 4
    for scratch in lent:
        pool.give_back(scratch)
    again = [pool.take(50) for _ in range(3)]
    assert sum(any(s is t for t in lent) for s in again) == 2  # two were kept, one is new
    resized = pool.take(80)  # another catalogue size: a table of its own
    assert resized.items == 80
    assert resized.combined.size == 80


def test_rows_outside_the_catalogue_are_refused_by_both_paths() -> None:
    case = _case(9, 300, 8, 4)
    assert case is not None
    compiled, plain, signals, rng = case
    vector = rng.integers(-3, 4, size=16).astype(np.float32)
    blend = BlendWeights(1.0, 1.0, 1.0, 1.0, 1.0)
    good = _history(rng, 300, 10)
    outside = UserHistory(np.array([3, 300]), np.ones(2, np.float32), np.ones(2, np.float32))
    bad_token = good.with_tokens(np.array([-1]))
    requests: list[tuple[UserHistory, dict[str, object], str]] = [
        # numpy would exclude row 97 for -203; the kernel would ignore it
        (good, {"exclude": np.array([-203])}, "exclude"),
        (good, {"exclude": np.array([305])}, "exclude"),
        # the kernel, which does not check bounds, would read past a short mask
        (good, {"allowed": np.ones(250, np.bool_)}, "allowed"),
        (outside, {}, "history"),
        (bad_token, {}, "history"),
    ]
    for table in (compiled, plain):
        for history, extra, field in requests:
            with pytest.raises(InvalidInputError, match=field):
                blended_top_k(table, signals, vector, 0.0, history, blend, 5, **extra)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="exclude"):
        COMPILED_KERNEL.blended_top_k(
            compiled, signals, vector, 0.0, good, blend, 5, exclude=np.array([305])
        )


def test_a_k_beyond_the_catalogue_ranks_it_all_and_leaves_the_scratch_clean() -> None:
    case = _case(4, 300, 8, 4, 256.0)
    assert case is not None
    compiled, plain, signals, rng = case
    blend = BlendWeights(1.0, 0.5, 2.0, 1.0, 1.0)
    queries = [(rng.integers(-3, 4, size=16).astype(np.float32), _history(rng, 300, 20))]
    queries.append((rng.integers(-3, 4, size=16).astype(np.float32), _history(rng, 300, 20)))
    huge = 2**60  # the kernel sized its heap by k and raised after summing into its scratch
    for vector, history in queries:
        got = blended_top_k(compiled, signals, vector, 0.0, history, blend, huge)
        want = blended_top_k(plain, signals, vector, 0.0, history, blend, huge)
        assert got.indices.tolist() == want.indices.tolist()
        assert len(got) == 300
        small = COMPILED_KERNEL.blended_top_k(compiled, signals, vector, 0.0, history, blend, 10)
        assert small is not None
        assert small.indices.tolist() == want.indices[:10].tolist()


def test_signals_that_would_rank_differently_on_the_two_paths_are_refused() -> None:
    rng = np.random.default_rng(0)
    neighbours = _neighbours(rng, 20, 3)
    weights = neighbours.weights.copy()
    weights[0] = np.nan  # numpy: the whole term 0; the kernel: that one vote dropped
    with pytest.raises(InvalidInputError, match="finite"):
        ItemNeighbours(neighbours.indptr, neighbours.indices, weights)
    for rate in (np.nan, -0.5):
        repeat_rate = np.zeros(20, np.float32)
        repeat_rate[3] = rate
        with pytest.raises(InvalidInputError, match="repeat_rate"):
            RankingSignals(np.ones(20, np.float32), repeat_rate, neighbours, BlendTable())


def test_a_blend_table_whose_weights_are_all_zero_is_refused() -> None:
    # Every score 0 would give each shopper the catalogue's first k rows.
    zero = dict.fromkeys(("mf", "trend", "item", "repeat", "segment"), 0.0)
    with pytest.raises(InvalidInputError, match="trained/new"):
        BlendTable.from_json({"trained": {"new": zero}})
    assert BlendTable.from_json({"trained": {"new": {**zero, "item": 1.0}}}).get(
        "trained", "new"
    ) == BlendWeights(mf=0.0, item=1.0)
