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


def _counts(report: object) -> dict[str, tuple[int, int]]:
    groups = {
        f"{e.name}/{v.name}": (v.metrics.impressions, v.metrics.clicks)
        for e in report.experiments  # type: ignore[attr-defined]
        for v in e.variants
    }
    groups |= {s.name: (s.metrics.impressions, s.metrics.clicks) for s in report.traffic}  # type: ignore[attr-defined]
    return {name: counts for name, counts in groups.items() if counts != (0, 0)}


def test_a_response_shown_days_after_it_was_served_is_counted_once_in_its_range(
    tmp_path: Path,
) -> None:
    # A SHOWN record carries the time its caller sent: here three days after the SERVED
    # one, so a range read by time holds only one half of the response.
    day = 24 * HOUR
    store = open_store(tmp_path / "state")
    try:
        store.record_impressions(
            [
                Impression(
                    recommendation_id="r1",
                    kind=ImpressionKind.SERVED,
                    user_id="u1",
                    time_ms=T,
                    surface="recommend",
                    experiment="home",
                    variant="a",
                    model_version="v1",
                    item_ids=("a", "b", "c"),
                )
            ]
        )
        store.record_impressions(
            [
                Impression(
                    recommendation_id="r1",
                    kind=ImpressionKind.SHOWN,
                    user_id="u1",
                    time_ms=T + 3 * day,
                    surface="device",
                    experiment="",
                    variant="",
                    model_version="v1",
                    item_ids=("a",),
                )
            ]
        )
        store.append_events(
            [
                view("e1", "u1", "a", T + 3 * day + MINUTE, "r1"),  # shown, but expired
                view("e2", "u1", "b", T + 5 * MINUTE, "r1"),  # never shown: not a click
            ]
        )
        loop = FeedbackLoop(store, record=False)
        everything = loop.report()
        ranges = [loop.report(from_ms=T + n * day, to_ms=T + (n + 1) * day) for n in range(4)]
        assert _counts(everything) == {"home/a": (1, 0)}
        assert [_counts(r) for r in ranges] == [{"home/a": (1, 0)}, {}, {}, {}]
        # Unattributed events are counted in the range of their own time: together as over
        # all time (the click on an item never shown, and the late one).
        summed: dict[str, int] = {}
        for report in ranges:
            for reason, count in report.unattributed.items():
                summed[reason] = summed.get(reason, 0) + count
        assert {k: v for k, v in summed.items() if v} == {
            k: v for k, v in everything.unattributed.items() if v
        }
    finally:
        store.close()


def test_an_event_answering_a_response_served_before_the_range_is_expired_not_unknown(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "state")
    try:
        store.record_impressions([served("r-old", "u1", T - 48 * HOUR, ("a",))])
        store.append_events([view("e1", "u1", "a", T + HOUR, "r-old")])
        loop = FeedbackLoop(store, record=False)
        reasons = [
            {k: v for k, v in report.unattributed.items() if v}
            for report in (loop.report(), loop.report(from_ms=T, to_ms=T + 10 * HOUR))
        ]
        assert reasons == [{"expired": 1}, {"expired": 1}]
    finally:
        store.close()
