from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shelfrank.core.ids import IdMap, validate_id
from shelfrank.core.scoring import ScoringTable, top_k
from shelfrank.core.strings import decode_strings, encode_strings

scores_strategy = hnp.arrays(
    np.float32,
    st.integers(1, 60),
    elements=st.floats(-100, 100, width=32),
)


def brute_force(
    scores: np.ndarray, k: int, exclude: set[int], candidates: set[int] | None
) -> list[int]:
    rows = [
        i
        for i in range(scores.size)
        if i not in exclude and (candidates is None or i in candidates)
    ]
    rows.sort(key=lambda i: (-float(scores[i]), i))
    return rows[:k]


@settings(max_examples=200, deadline=None)
@given(scores_strategy, st.integers(1, 70), st.data())
def test_top_k_matches_brute_force(scores: np.ndarray, k: int, data: st.DataObject) -> None:
    n = scores.size
    exclude = data.draw(st.sets(st.integers(0, n - 1)))
    candidates = data.draw(st.none() | st.sets(st.integers(0, n - 1)))
    result = top_k(
        scores,
        k,
        exclude=np.array(sorted(exclude), dtype=np.int64),
        candidates=None if candidates is None else np.array(sorted(candidates), dtype=np.int64),
    )
    assert result.indices.tolist() == brute_force(scores, k, exclude, candidates)
    assert np.array_equal(result.scores, scores[result.indices])


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.integers(1, 40),
        elements=st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -2.5, 3.0]),
    ),
    st.integers(1, 45),
)
def test_top_k_skips_non_finite_scores_and_breaks_ties_by_row(scores: np.ndarray, k: int) -> None:
    finite = [i for i in range(scores.size) if np.isfinite(scores[i])]
    want = sorted(finite, key=lambda i: (-float(scores[i]), i))[:k]
    assert top_k(scores, k).indices.tolist() == want


def test_top_k_rejects_non_positive_k() -> None:
    with pytest.raises(ValueError, match="k: must be positive"):
        top_k(np.zeros(3, np.float32), 0)


def test_scoring_table_recommend_with_candidates_and_exclusions() -> None:
    ids = IdMap(["a", "b", "c", "d"])
    vectors = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    table = ScoringTable(ids, vectors, np.array([0, 0, 0.5, 0], np.float32))
    user = np.array([1.0, 0.0], np.float32)
    assert table.recommend(user, 0.0, 2).indices.tolist() == [2, 0]
    picked = table.recommend(user, 0.0, 5, exclude=np.array([2]), candidates=np.array([3, 2, 1]))
    assert picked.indices.tolist() == [1, 3]


def test_scoring_table_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="item table rows disagree"):
        ScoringTable(IdMap(["a"]), np.zeros((2, 3), np.float32), np.zeros(2, np.float32))


@given(st.lists(st.text(max_size=20)))
def test_string_table_round_trip(values: list[str]) -> None:
    blob, offsets = encode_strings(values)
    assert decode_strings(blob, offsets) == values


def test_string_table_rejects_bad_offsets() -> None:
    blob, offsets = encode_strings(["ab", "c"])
    offsets[1] = 10
    with pytest.raises(ValueError, match="offsets"):
        decode_strings(blob, offsets)


def test_id_map_is_append_only_and_validates() -> None:
    ids = IdMap(["x", "y"])
    assert ids.add("z") == 2
    assert ids.add("x") == 0
    assert ids.indices(["z", "missing", "y"]) == [2, 1]
    with pytest.raises(ValueError, match="duplicate id"):
        IdMap(["a", "a"])
    with pytest.raises(ValueError, match="user_id: must not be empty"):
        validate_id("", "user_id")
    with pytest.raises(ValueError, match="longer than 256 bytes"):
        validate_id("é" * 129, "item_id")
    with pytest.raises(ValueError, match="item_id: must not contain control characters"):
        validate_id("a\x00b", "item_id")
