"""Batch validation of incoming events agrees with event-by-event validation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import StoredEvent
from shelfrank.server.requests import (
    MAX_FUTURE_MS,
    IncomingEvent,
    validate_event,
    validate_events,
)

NOW = 1_800_000_000_000
ids = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(["a", "user-1", "item 2", "x" * 64, "\u00e9" * 64, "\u4e00" * 70]),
    st.text(st.characters(max_codepoint=40), max_size=3),  # control characters
)
events = st.builds(
    IncomingEvent,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    event_type=st.integers(-1, 7),
    timestamp_ms=st.one_of(
        st.just(0), st.integers(-5, NOW + MAX_FUTURE_MS + 5), st.just(NOW + MAX_FUTURE_MS + 1)
    ),
    session_id=st.one_of(st.just(""), ids),
    query=st.text(max_size=1030) | st.just("q" * 1025) | st.just("red\x00shoes"),
    recommendation_id=st.one_of(st.just(""), ids, st.just("r" * 129)),
    position=st.integers(-2, 5) | st.sampled_from([2**31 - 1, 2**31]),
)
clean_events = st.builds(
    IncomingEvent,
    event_id=st.text("abc-", min_size=1, max_size=10),
    user_id=st.text("uvw", min_size=1, max_size=10),
    item_id=st.text("ijk", min_size=1, max_size=10),
    event_type=st.integers(1, 5),
    timestamp_ms=st.integers(0, NOW),
    session_id=st.sampled_from(["", "s1"]),
    query=st.sampled_from(["", "red shoes"]),
    recommendation_id=st.sampled_from(["", "r-1", "0f" * 16]),
    position=st.integers(0, 10),
)


def one_by_one(batch: list[IncomingEvent]) -> tuple[list[StoredEvent], list[tuple[int, str]]]:
    valid, errors = [], []
    for index, event in enumerate(batch):
        try:
            valid.append(validate_event(event, NOW))
        except InvalidInputError as exc:
            errors.append((index, str(exc)))
    return valid, errors


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=8))
def test_batch_validation_equals_event_by_event(batch: list[IncomingEvent]) -> None:
    assert validate_events(batch, NOW) == one_by_one(batch)


@settings(max_examples=100, deadline=None)
@given(st.lists(clean_events, min_size=1, max_size=20))
def test_clean_batches_take_the_fast_path_with_the_same_result(batch: list[IncomingEvent]) -> None:
    valid, errors = validate_events(batch, NOW)
    assert errors == []
    assert valid == one_by_one(batch)[0]
    assert all(e.timestamp_ms == (b.timestamp_ms or NOW) for e, b in zip(valid, batch, strict=True))


def test_a_query_with_nul_is_refused_naming_the_field() -> None:
    """PostgreSQL's text cannot hold NUL: stored, such a query would fail the whole group
    commit (every concurrent batch with it) on one store and not on the other."""
    event = IncomingEvent("e1", "u1", "i1", 4, NOW, "", "red\x00shoes", "", 0)
    ok = event._replace(event_id="e2", query="red shoes\tfor\nwinter")  # other controls: free text
    valid, errors = validate_events([event, ok], NOW)
    assert errors == [(0, "query: must not contain the NUL character")]
    assert [stored.event_id for stored in valid] == ["e2"]


def test_a_position_beyond_the_int32_range_is_refused_naming_the_field() -> None:
    event = IncomingEvent("e1", "u1", "i1", 1, NOW, "", "", "r-1", 2**31)
    valid, errors = validate_events([event, event._replace(event_id="e2", position=2**31 - 1)], NOW)
    assert errors == [(0, f"position: must be between 0 and {2**31 - 1}, got {2**31}")]
    assert [stored.position for stored in valid] == [2**31 - 1]
