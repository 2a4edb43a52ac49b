"""A report over a time range, from a real SQLite store: the responses served in the
range and the events attributed to them, exactly as attribution over all time would
count them (an impression just before the range, one just after it, clock skew at its
start); and a range reaching the end of time does not overflow the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.feedback.loop import FeedbackLoop
from shelfrank.server.storage import EventStore, Impression, ImpressionKind
from shelfrank.server.stores import open_store

T = 1_796_083_200_000  # 2026-12-01T00:00:00Z: the range is [T, T + 10 h)
MINUTE = 60_000
HOUR = 60 * MINUTE
VIEW = EventType.VIEW


def served(rid: str, user: str, time_ms: int, items: tuple[str, ...]) -> Impression:
    return Impression(
        recommendation_id=rid,
        kind=ImpressionKind.SERVED,
        user_id=user,
        time_ms=time_ms,
        surface="recommend",
        experiment="",
        variant="",
        model_version="v1",
        item_ids=items,
    )


def view(event_id: str, user: str, item: str, time_ms: int, rid: str = "") -> StoredEvent:
    return StoredEvent(event_id, user, item, VIEW, time_ms, recommendation_id=rid)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    opened = open_store(tmp_path / "state")
    opened.record_impressions(
        [
            served("r-before", "u1", T - 30 * MINUTE, ("a",)),
            served("r-first", "u4", T + 10_000, ("d",)),
            served("r-in", "u2", T + HOUR, ("b",)),
            served("r-late", "u3", T + 9 * HOUR + 50 * MINUTE, ("c",)),
            served("r-after", "u3", T + 10 * HOUR + 10 * MINUTE, ("c",)),
        ]
    )
    opened.append_events(
        [
            view("e1", "u1", "a", T + 5 * MINUTE, "r-before"),  # for r-before: not in range
            view("e7", "u4", "d", T - 20_000, "r-first"),  # before the range: clock skew
            view("e2", "u2", "b", T + HOUR + 30 * MINUTE),  # window rule: r-in
            view("e4", "u3", "c", T + 9 * HOUR + 55 * MINUTE, "r-late"),
            view("e3", "u3", "c", T + 10 * HOUR + 20 * MINUTE),  # latest: r-after, not r-late
            view("e6", "u9", "zz", T + 2 * HOUR),  # no impression, in range
            view("e5", "u9", "zz", T + 11 * HOUR),  # no impression, after the range
        ]
    )
    yield opened
    opened.close()


def test_a_range_counts_its_responses_as_attribution_over_all_time_does(
    store: EventStore,
) -> None:
    loop = FeedbackLoop(store, record=False, window_ms=HOUR)
    report = loop.report(from_ms=T, to_ms=T + 10 * HOUR)
    (surface,) = report.traffic
    assert surface.metrics.impressions == 3  # r-first, r-in, r-late
    assert surface.metrics.clicks == 3  # e7, e2, e4
    assert report.attributed == 3
    assert report.unattributed["no_impression"] == 1  # e6 only: e5 is after the range
    assert report.unattributed["unknown_recommendation"] == 0  # e1 found r-before
    assert sum(report.unattributed.values()) == 1
    everything = loop.report()
    assert everything.traffic[0].metrics.impressions == 5
    assert everything.traffic[0].metrics.clicks == 5  # e1, e7, e2, e4, e3
    assert everything.unattributed["no_impression"] == 2


def test_a_range_to_the_end_of_time_does_not_overflow(store: EventStore) -> None:
    loop = FeedbackLoop(store, record=False, window_ms=HOUR)
    report = loop.report(from_ms=0, to_ms=2**63 - 1)
    assert report.traffic[0].metrics.impressions == 5
