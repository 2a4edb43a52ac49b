"""The compiled blended ranking returns what core.blend's numpy ranking returns: same rows,
same order, same scores, ties included, with exclusions and filters, every component on or
off. Integer-valued tables, trends, votes and strengths keep every sum exact, so a
difference is a search error, not rounding."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.blend import (
    BlendTable,
    BlendWeights,
    RankingSignals,
    UserHistory,
    blended_scores,
    blended_top_k,
)
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
