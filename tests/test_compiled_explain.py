"""The compiled steps of an explanation (server/compiled_explain.py) agree with
core/explain.py's numpy ones: the item-to-item votes bit for bit, the token credits and
the summaries' sums to float rounding, every choice of part exactly (ties included), on
random inputs (end to end on a trained model: tests/test_explain_blend.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.blend import ItemNeighbours, UserHistory
from shelfrank.core.explain import _add_votes, _Parts, summary_columns, token_credits
from shelfrank.server import compiled_explain
from shelfrank.server.compiled_blend import COMPILED_KERNEL


@st.composite
def votes_case(draw: st.DrawFn) -> tuple[ItemNeighbours, UserHistory, np.ndarray, np.ndarray]:
    items = draw(st.integers(2, 30))
    # Items beyond these voting for nothing (the compiled votes look voters up in a table
    # over the catalogue when it is small next to the voters scanned, else merge).
    catalogue = items + draw(st.sampled_from([0, 2_000]))
    indptr, indices, weights = [0], [], []
    for _ in range(items):
        targets = draw(st.lists(st.integers(0, items - 1), unique=True, max_size=items))
        indices += targets
        weights += draw(st.lists(st.integers(-8, 8), min_size=len(targets), max_size=len(targets)))
        indptr.append(len(indices))
    indptr += [len(indices)] * (catalogue - items)
    neighbours = ItemNeighbours(
        np.array(indptr, np.int64),
        np.array(indices, np.int64),
        np.array(weights, np.float32) / np.float32(4),
    )
    history = np.array(sorted(draw(st.sets(st.integers(0, items - 1), min_size=1))), np.int64)
    strength = np.array(
        draw(st.lists(st.floats(-2, 3, width=32), min_size=history.size, max_size=history.size)),
        np.float32,
    )
    user = UserHistory(history, strength, np.zeros(history.size, np.float32))
    rows = np.array(draw(st.lists(st.integers(0, items - 1), unique=True, min_size=1)), np.int64)
    # Parts columns: the history plus other (folded) rows, as explain_scores builds them.
    extra = draw(st.sets(st.integers(0, items - 1), max_size=5))
    columns = np.union1d(history, np.array(sorted(extra), np.int64)).astype(np.int64)
    return neighbours, user, rows, columns


@settings(max_examples=200, deadline=None)
@given(votes_case(), st.floats(0.25, 4.0))
def test_compiled_votes_equal_the_numpy_votes(
    case: tuple[ItemNeighbours, UserHistory, np.ndarray, np.ndarray], weight: float
) -> None:
    neighbours, history, rows, columns = case
    member = np.zeros(neighbours.items, np.bool_)
    member[rows] = True
    order = np.argsort(rows)
    expected, compiled = _Parts(rows.size, columns), _Parts(rows.size, columns)
    _add_votes(expected, neighbours, history, weight, rows, member, order)
    _add_votes(compiled, neighbours, history, weight, rows, member, order, COMPILED_KERNEL)
    assert np.array_equal(compiled.history_values, expected.history_values)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 8),
    st.integers(0, 3),
    st.data(),
)
def test_compiled_summary_columns_equal_numpy_ties_included(
    items: int, named: int, history: int, top: int, supporters: int, data: st.DataObject
) -> None:
    width = named + history
    # Few distinct values, both signs and zeros: ties everywhere.
    cells = data.draw(
        st.lists(
            st.sampled_from([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0]),
            min_size=items * width,
            max_size=items * width,
        )
    )
    values = np.array(cells, np.float64).reshape(items, width)
    count, supporters = min(top, width), min(supporters, history)
    expected = summary_columns(values, named, count, supporters)
    found = compiled_explain.summary_columns(values, named, count, supporters)
    for index in (0, 1, 3, 4):  # columns and values chosen: exactly
        assert np.array_equal(found[index], expected[index])
    np.testing.assert_allclose(found[2], expected[2], rtol=0, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 8),
    st.booleans(),
    st.floats(0.5, 5.0),
    st.floats(-2.0, 2.0),
    st.data(),
)
def test_compiled_token_credits_equal_numpy(
    items: int, dims: int, unit: bool, identity: float, half_factor: float, data: st.DataObject
) -> None:
    vocabulary = data.draw(st.integers(1, 6))
    rows_tokens = [
        sorted(data.draw(st.sets(st.integers(0, vocabulary - 1), max_size=vocabulary)))
        for _ in range(items)
    ]
    indptr = np.cumsum([0] + [len(t) for t in rows_tokens]).astype(np.int64)
    indices = np.array([t for ts in rows_tokens for t in ts], np.int64)
    floats = st.floats(-3, 3, width=32)
    embeddings = np.array(
        data.draw(st.lists(floats, min_size=vocabulary * dims, max_size=vocabulary * dims)),
        np.float32,
    ).reshape(vocabulary, dims)
    vectors = np.array(
        data.draw(st.lists(floats, min_size=items * dims, max_size=items * dims)), np.float32
    ).reshape(items, dims)
    vector = np.array(data.draw(st.lists(floats, min_size=dims, max_size=dims)), np.float64)
    rows = np.array(
        data.draw(st.lists(st.integers(0, items - 1), unique=True, min_size=1)), np.int64
    )
    unit_weight = 1.0 if unit else None
    arguments = (
        indptr,
        indices,
        embeddings,
        unit_weight,
        identity,
        vectors,
        rows,
        vector,
        half_factor,
    )
    expected = token_credits(*arguments)
    found = compiled_explain.token_credits(*arguments)
    assert np.array_equal(found[0], expected[0])
    np.testing.assert_allclose(found[1], expected[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(found[2], expected[2], rtol=1e-12, atol=1e-12)
