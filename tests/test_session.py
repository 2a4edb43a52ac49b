"""The on-device session model: decay, weights, dismissals, diversity, validation."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.events import EventType
from shelfrank.core.session import (
    Reranked,
    SessionConfig,
    SessionEvent,
    rerank,
    session_vector,
)

VIEW, PURCHASE, DISMISS = EventType.VIEW, EventType.PURCHASE, EventType.DISMISS
# Only the decay under test: no recency-by-position, no time fade.
FLAT = SessionConfig(half_life_seconds=math.inf, half_life_events=math.inf)


def axes(n: int, dim: int | None = None) -> np.ndarray:
    """Item i is the i-th unit axis (scaled, to show that norms do not matter)."""
    vectors = np.zeros((n, dim or n), dtype=np.float32)
    vectors[np.arange(n), np.arange(n)] = np.arange(1, n + 1)
    return vectors


def test_no_events_is_the_zero_vector_and_the_base_order() -> None:
    vectors = axes(4)
    assert not session_vector([], vectors, 0.0).any()
    base = np.array([0.5, 2.0, 2.0, -1.0], dtype=np.float32)
    result = rerank([3, 1, 2, 0], base, vectors, [], 0.0)
    # ties keep the given order
    assert result.rows.tolist() == [1, 2, 3, 0]


def test_time_decay_halves_per_half_life_and_fades_the_whole_session() -> None:
    vectors = axes(2)
    config = replace(FLAT, half_life_seconds=600.0)
    events = [SessionEvent(0, VIEW, 0.0), SessionEvent(1, VIEW, 600.0)]
    # the denominator carries no time decay: both events are 10 minutes older at 1200
    np.testing.assert_allclose(session_vector(events, vectors, 600.0, config), [0.25, 0.5])
    np.testing.assert_allclose(session_vector(events, vectors, 1200.0, config), [0.125, 0.25])
    stale = session_vector(events, vectors, 600.0 + 600.0 * 200, config)
    assert np.abs(stale).max() < 1e-30


def test_recency_counts_distinct_timestamps_so_bunched_events_weigh_alike() -> None:
    vectors = axes(3)
    config = replace(FLAT, half_life_events=1.0)
    events = [SessionEvent(0, VIEW, 5.0), SessionEvent(1, VIEW, 5.0), SessionEvent(2, VIEW, 9.0)]
    summary = session_vector(events, vectors, 9.0, config)
    np.testing.assert_allclose(summary, np.array([0.5, 0.5, 1.0]) / 2.0)
    swapped = session_vector([events[1], events[0], events[2]], vectors, 9.0, config)
    np.testing.assert_array_equal(summary, swapped)


def test_future_events_count_as_now() -> None:
    vectors = axes(2)
    config = replace(FLAT, half_life_seconds=60.0)
    ahead = session_vector([SessionEvent(0, VIEW, 100.0)], vectors, 40.0, config)
    np.testing.assert_allclose(ahead, [1.0, 0.0])


def test_event_type_weights() -> None:
    vectors = axes(2)
    config = replace(FLAT, view_weight=0.25, purchase_weight=1.0)
    events = [SessionEvent(0, VIEW, 0.0), SessionEvent(1, PURCHASE, 0.0)]
    np.testing.assert_allclose(session_vector(events, vectors, 0.0, config), [0.2, 0.8])
    assert config.event_weights[VIEW] == 0.25
    assert set(config.event_weights) == set(EventType)
    ignored = replace(config, view_weight=0.0)
    assert not session_vector(events[:1], vectors, 0.0, ignored).any()


def test_only_the_latest_max_events_count() -> None:
    vectors = axes(3)
    events = [SessionEvent(row, VIEW, float(row)) for row in range(3)]
    summary = session_vector(events, vectors, 2.0, replace(FLAT, max_events=1))
    np.testing.assert_allclose(summary, [0.0, 0.0, 1.0])


def test_session_pulls_similar_items_up() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    base = np.array([0.0, 0.1, 0.3, 0.2], dtype=np.float32)
    assert rerank(range(4), base, vectors, [], 0.0).rows.tolist() == [2, 3, 1, 0]
    viewed = [SessionEvent(0, VIEW, 0.0)]
    assert rerank([1, 2, 3], base[1:], vectors, viewed, 0.0).rows.tolist() == [1, 2, 3]


def test_dismiss_pushes_similar_items_down() -> None:
    vectors = np.array([[1, 0], [0.95, 0.05], [0, 1], [0.7, 0.7]], dtype=np.float32)
    base = np.array([3.0, 2.0, 1.0], dtype=np.float32)  # rows 1, 3, 2
    rows = [1, 3, 2]
    config = replace(FLAT, strength=5.0)
    before = rerank(rows, base, vectors, [], 0.0, config)
    after = rerank(rows, base, vectors, [SessionEvent(0, DISMISS, 0.0)], 0.0, config)
    assert before.rows.tolist() == [1, 3, 2]
    assert after.rows.tolist() == [2, 3, 1]
    score = dict(zip(after.rows.tolist(), after.scores.tolist(), strict=True))
    unpushed = dict(zip(before.rows.tolist(), before.scores.tolist(), strict=True))
    assert score[1] < unpushed[1]
    assert score[3] < unpushed[3]
    assert score[2] == pytest.approx(unpushed[2])  # orthogonal to the dismissed item


def test_strength_zero_keeps_the_base_order() -> None:
    vectors = axes(3)
    events = [SessionEvent(2, PURCHASE, 0.0)]
    result = rerank([0, 1, 2], [3.0, 2.0, 1.0], vectors, events, 0.0, replace(FLAT, strength=0))
    assert result.rows.tolist() == [0, 1, 2]


def near_duplicates() -> tuple[np.ndarray, np.ndarray]:
    """Rows 0-2 are near-copies of one item, row 3 is different and scores a bit less."""
    vectors = np.array(
        [[1.0, 0.0], [0.99, 0.01], [0.98, 0.02], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32
    )
    return vectors, np.array([1.0, 0.99, 0.98, 0.9, 0.0], dtype=np.float32)


def test_diversity_penalty_reorders_when_on_and_not_when_off() -> None:
    vectors, base = near_duplicates()
    rows = np.arange(5)
    off = rerank(rows, base, vectors, [], 0.0, replace(FLAT, diversity=0.0))
    assert off.rows.tolist() == [0, 1, 2, 3, 4]
    on = rerank(rows, base, vectors, [], 0.0, replace(FLAT, diversity=1.0, diversity_depth=3))
    assert on.rows[:2].tolist() == [0, 3]  # the different item moves up past the copies
    assert sorted(on.rows.tolist()) == [0, 1, 2, 3, 4]
    # the scores are the blended scores of the rows shown, not MMR values
    by_row = dict(zip(on.rows.tolist(), on.scores.tolist(), strict=True))
    assert by_row == dict(zip(off.rows.tolist(), off.scores.tolist(), strict=True))


def test_diversity_depth_bounds_the_reordered_prefix() -> None:
    vectors, base = near_duplicates()
    config = replace(FLAT, diversity=1.0, diversity_depth=1)
    assert rerank(np.arange(5), base, vectors, [], 0.0, config).rows.tolist() == [0, 1, 2, 3, 4]


def test_determinism_and_inputs_untouched() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    rows = rng.choice(300, size=120, replace=False)
    base = rng.normal(size=120).astype(np.float32)
    kinds = list(EventType)
    events = [SessionEvent(int(r), kinds[i % 5], 100.0 + i) for i, r in enumerate(rows[:9])]
    copies = (vectors.copy(), rows.copy(), base.copy())
    config = SessionConfig(diversity=0.3)
    first = rerank(rows, base, vectors, events, 120.0, config)
    second = rerank(rows, base, vectors, events, 120.0, config)
    np.testing.assert_array_equal(first.rows, second.rows)
    np.testing.assert_array_equal(first.scores, second.scores)
    for original, copy in zip((vectors, rows, base), copies, strict=True):
        np.testing.assert_array_equal(original, copy)
    assert first.rows.dtype == np.int64
    assert first.scores.dtype == np.float32


def test_zero_item_vector_is_neutral() -> None:
    vectors = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert not session_vector([SessionEvent(0, VIEW, 0.0)], vectors, 0.0).any()
    result = rerank([0, 1], [1.0, 0.0], vectors, [SessionEvent(1, VIEW, 0.0)], 0.0, FLAT)
    assert np.isfinite(result.scores).all()


def test_empty_candidates() -> None:
    result = rerank([], [], axes(2), [SessionEvent(0, VIEW, 0.0)], 0.0)
    assert isinstance(result, Reranked)
    assert result.rows.size == 0
    assert result.scores.size == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"half_life_seconds": 0.0}, "half_life_seconds"),
        ({"half_life_seconds": math.nan}, "half_life_seconds"),
        ({"half_life_events": -1.0}, "half_life_events"),
        ({"half_life_events": "2"}, "half_life_events"),
        ({"strength": -0.1}, "strength"),
        ({"strength": math.inf}, "strength"),
        ({"diversity": -1.0}, "diversity"),
        ({"diversity_depth": 0}, "diversity_depth"),
        ({"diversity_depth": 2.5}, "diversity_depth"),
        ({"max_events": True}, "max_events"),
        ({"view_weight": -0.5}, "view_weight"),
        ({"purchase_weight": math.nan}, "purchase_weight"),
        ({"add_to_cart_weight": True}, "add_to_cart_weight"),
        ({"dismiss_weight": 0.5}, "dismiss_weight"),
    ],
)
def test_config_validation_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        SessionConfig(**changes)


def test_config_accepts_inf_half_lives_and_zero_strength() -> None:
    config = SessionConfig(half_life_seconds=math.inf, half_life_events=math.inf, strength=0)
    assert config.strength == 0


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ((-1, VIEW, 0.0), "row"),
        ((1.5, VIEW, 0.0), "row"),
        ((1, 1, 0.0), "event_type"),
        ((1, VIEW, math.nan), "timestamp"),
    ],
)
def test_event_validation(arguments: tuple[Any, Any, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        SessionEvent(*arguments)


def test_rerank_rejects_bad_input() -> None:
    vectors = axes(3)
    with pytest.raises(ValueError, match=r"^base_scores:"):
        rerank([0, 1], [1.0], vectors, [], 0.0)
    with pytest.raises(ValueError, match=r"^base_scores:"):
        rerank([0, 1], [1.0, -math.inf], vectors, [], 0.0)
    with pytest.raises(ValueError, match=r"^candidate_rows:"):
        rerank([0, 3], [1.0, 2.0], vectors, [], 0.0)
    with pytest.raises(ValueError, match=r"^candidate_rows:"):
        rerank([-1, 0], [1.0, 2.0], vectors, [], 0.0)
    with pytest.raises(ValueError, match=r"^events:"):
        rerank([0, 1], [1.0, 2.0], vectors, [SessionEvent(7, VIEW, 0.0)], 0.0)
    with pytest.raises(ValueError, match=r"^now:"):
        rerank([0, 1], [1.0, 2.0], vectors, [SessionEvent(0, VIEW, 0.0)], math.nan)


N_ITEMS = 40


@settings(max_examples=150, deadline=None)
@given(
    candidates=st.lists(st.integers(0, N_ITEMS - 1), min_size=0, max_size=30),
    base_seed=st.integers(0, 2**16),
    events=st.lists(
        st.tuples(
            st.integers(0, N_ITEMS - 1),
            st.sampled_from(list(EventType)),
            st.floats(0, 1e4, allow_nan=False),
        ),
        max_size=12,
    ),
    strength=st.floats(0, 50, allow_nan=False),
    diversity=st.floats(0, 3, allow_nan=False),
    depth=st.integers(1, 12),
)
def test_rerank_returns_a_permutation_of_the_candidates(
    candidates: list[int],
    base_seed: int,
    events: list[tuple[int, EventType, float]],
    strength: float,
    diversity: float,
    depth: int,
) -> None:
    rng = np.random.default_rng(base_seed)
    vectors = rng.normal(size=(N_ITEMS, 6)).astype(np.float32)
    vectors[0] = 0.0  # a zero vector among them
    base = rng.normal(size=len(candidates)).astype(np.float32)
    if len(candidates) > 2:
        base[1] = base[0]  # a tie
    session = [SessionEvent(row, kind, stamp) for row, kind, stamp in events]
    config = SessionConfig(strength=strength, diversity=diversity, diversity_depth=depth)
    result = rerank(candidates, base, vectors, session, 1e4, config)
    assert sorted(result.rows.tolist()) == sorted(candidates)
    assert result.scores.shape == result.rows.shape
    assert np.isfinite(result.scores).all()
    summary = session_vector(session, vectors, 1e4, config)
    assert np.linalg.norm(summary) <= 1.0 + 1e-5
    if diversity == 0:
        assert np.all(np.diff(result.scores) <= 0)
