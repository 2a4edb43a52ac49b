"""Attribution of events to recommendation responses: a scripted scenario with known
answers, and random data against a deliberately naive reimplementation of the rule."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.feedback.attribution import (
    CLOCK_SKEW_MS,
    DEFAULT_ATTRIBUTION_WINDOW_MS,
    REASONS,
    AttributedEvent,
    _WindowIndex,
    attribute,
)
from shelfrank.server.storage import Impression, ImpressionKind

SERVED, SHOWN = ImpressionKind.SERVED, ImpressionKind.SHOWN
VIEW, CART, BUY = EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE
DISMISS, SEARCH = EventType.DISMISS, EventType.SEARCH
T0 = 1_800_000_000_000
MINUTE = 60_000
HOUR = 3_600_000


def at(n: int) -> int:
    """The time of response n: one an hour."""
    return T0 + n * HOUR


def impression(
    rid: str,
    user: str,
    time_ms: int,
    items: Sequence[str],
    kind: ImpressionKind = SERVED,
    *,
    model_version: str = "v1",
    variant: str = "a",
) -> Impression:
    return Impression(
        recommendation_id=rid,
        kind=kind,
        user_id=user,
        time_ms=time_ms,
        surface="recommend",
        experiment="home",
        variant=variant,
        model_version=model_version,
        item_ids=tuple(items),
    )


def event(
    event_id: str,
    user: str,
    item: str,
    kind: EventType,
    time_ms: int,
    rid: str = "",
    position: int = 0,
) -> StoredEvent:
    return StoredEvent(
        event_id, user, item, kind, time_ms, recommendation_id=rid, position=position
    )


def scenario() -> tuple[list[Impression], list[StoredEvent]]:
    """20 responses r01..r20, each of items i<n>a, i<n>b, i<n>c and "shared": r01-r04 to
    u1, r05-r08 to u2, r09-r12 to u3, r13-r16 to u4, r17-r19 to u5, r20 anonymous. r03's
    SHOWN record narrows it to i03a, i03b; r19 was only SHOWN (ranked on a device)."""
    users = ["u1"] * 4 + ["u2"] * 4 + ["u3"] * 4 + ["u4"] * 4 + ["u5"] * 3 + [""]
    impressions = [
        impression(f"r{n:02d}", users[n - 1], at(n), [f"i{n:02d}{x}" for x in "abc"] + ["shared"])
        for n in range(1, 21)
        if n != 19
    ]
    impressions.append(impression("r03", "u1", at(3) + 2000, ["i03a", "i03b"], SHOWN,
                                  model_version="device"))  # fmt: skip
    impressions.append(impression("r19", "u5", at(19), ["i19a", "i19b"], SHOWN))
    events = [
        # with a recommendation id
        event("e01", "u1", "i01a", VIEW, at(1) + 5 * MINUTE, "r01"),
        event("e02", "u1", "i01b", CART, at(1) + 10 * MINUTE, "r01", position=7),
        event("e03", "u1", "i01b", BUY, at(1) + 20 * MINUTE, "r01"),
        event("e04", "u1", "i03c", VIEW, at(3) + MINUTE, "r03"),  # not in the SHOWN list
        event("e05", "u1", "i03a", VIEW, at(3) + MINUTE, "r03"),
        event("e06", "u2", "i05a", VIEW, at(5) + 25 * HOUR, "r05"),  # after the window
        event("e07", "u2", "i05a", VIEW, at(5) + MINUTE, "r99"),  # unknown id
        event("e08", "u3", "i05a", VIEW, at(5) + MINUTE, "r05"),  # r05 is u2's
        event("e09", "u2", "i06c", DISMISS, at(6) + MINUTE, "r06"),
        event("e10", "u2", "i07a", VIEW, at(7) - 30_000, "r07"),  # clock skew: fine
        event("e11", "u2", "i07b", VIEW, at(7) - 2 * MINUTE, "r07"),  # too early
        event("e12", "u9", "i20a", VIEW, at(20) + MINUTE, "r20"),  # anonymous: any user
        event("e13", "u1", "i01a", SEARCH, at(1) + MINUTE, "r01"),  # never counts
        event("e01", "u1", "i01a", VIEW, at(1) + 5 * MINUTE, "r01"),  # e01 again
        event("e15", "u5", "i19b", VIEW, at(19) + MINUTE, "r19"),  # SHOWN only
        event("e26", "u4", "i14c", BUY, at(14) + HOUR, "r14"),
        event("e27", "u4", "i14c", VIEW, at(14) + MINUTE, "r14"),
        event("e28", "u4", "i14a", VIEW, at(14) + 2 * MINUTE, "r14"),
        # without: the window rule
        event("e16", "u3", "i09a", VIEW, at(9) + HOUR),
        event("e17", "u3", "shared", CART, at(11) + 30 * MINUTE),  # latest before: r11
        event("e18", "u3", "i10b", BUY, at(10) + 23 * HOUR),  # inside 24 h
        event("e19", "u4", "i13a", VIEW, at(13) + 25 * HOUR),  # after the window
        event("e20", "u4", "i13a", VIEW, at(13) - 10_000),  # before the response
        event("e21", "u6", "i01a", VIEW, at(1) + MINUTE),  # a user never shown anything
        event("e22", "u1", "i03c", VIEW, at(3) + MINUTE),  # r03 was narrowed: no i03c
        event("e23", "u1", "shared", VIEW, at(3) + MINUTE),  # nor "shared": r02 then
        event("e24", "u5", "i17a", DISMISS, at(17) + 2 * HOUR),
        event("e25", "u5", "i20a", VIEW, at(20) + MINUTE),  # r20 is anonymous
    ]
    return impressions, events


def test_scripted_scenario() -> None:
    impressions, events = scenario()
    result = attribute(impressions, events)
    counts = {
        rid: (o.clicks, o.carts, o.purchases, o.dismissals)
        for rid, o in result.outcomes.items()
        if o.clicks or o.carts or o.purchases or o.dismissals
    }
    assert counts == {
        "r01": (1, 1, 1, 0),
        "r02": (1, 0, 0, 0),
        "r03": (1, 0, 0, 0),
        "r06": (0, 0, 0, 1),
        "r07": (1, 0, 0, 0),
        "r09": (1, 0, 0, 0),
        "r10": (0, 0, 1, 0),
        "r11": (0, 1, 0, 0),
        "r14": (2, 0, 1, 0),
        "r17": (0, 0, 0, 1),
        "r19": (1, 0, 0, 0),
        "r20": (1, 0, 0, 0),
    }
    assert sorted(result.outcomes) == [f"r{n:02d}" for n in range(1, 21)]
    assert dict(result.unattributed) == {
        "unknown_recommendation": 1,
        "other_user": 1,
        "item_not_in_response": 1,
        "expired": 2,
        "no_impression": 5,
    }
    assert result.attributed == 16 == len(result.events)
    by_id = {e.event_id: e for e in result.events}
    assert by_id["e01"] == AttributedEvent("e01", "r01", VIEW, 1, "id")
    assert by_id["e02"].position == 7  # the event's own position wins
    assert by_id["e05"] == AttributedEvent("e05", "r03", VIEW, 1, "id")
    assert by_id["e16"] == AttributedEvent("e16", "r09", VIEW, 1, "window")
    assert by_id["e17"] == AttributedEvent("e17", "r11", CART, 4, "window")
    assert by_id["e23"] == AttributedEvent("e23", "r02", VIEW, 4, "window")
    assert by_id["e12"].recommendation_id == "r20"
    assert "e13" not in by_id


def test_effective_impression() -> None:
    impressions, events = scenario()
    outcomes = attribute(impressions, events).outcomes
    narrowed = outcomes["r03"].impression
    assert narrowed.item_ids == ("i03a", "i03b")  # the SHOWN list
    assert narrowed.kind is SHOWN
    assert narrowed.time_ms == at(3)  # the rest from the SERVED record
    assert narrowed.model_version == "v1"
    assert outcomes["r19"].impression.kind is SHOWN
    assert outcomes["r01"].impression.kind is SERVED
    # of two records of one id and kind, the first counts (as in the store)
    again = impression("r01", "u1", at(1), ["other"])
    assert attribute([*impressions, again], []).outcomes["r01"].impression.item_ids[0] == "i01a"


def test_window_and_skew_bounds() -> None:
    window = 10 * MINUTE
    impressions = [impression("r", "u", T0, ["x"])]
    events = [
        event("a", "u", "x", VIEW, T0 - CLOCK_SKEW_MS, "r"),  # earliest by id
        event("b", "u", "x", VIEW, T0 - CLOCK_SKEW_MS - 1, "r"),
        event("c", "u", "x", VIEW, T0 + window, "r"),  # latest by id
        event("d", "u", "x", VIEW, T0 + window + 1, "r"),
        event("e", "u", "x", VIEW, T0),  # earliest by window
        event("f", "u", "x", VIEW, T0 - 1),
        event("g", "u", "x", VIEW, T0 + window),
        event("h", "u", "x", VIEW, T0 + window + 1),
    ]
    result = attribute(impressions, events, window_ms=window)
    assert sorted(e.event_id for e in result.events) == ["a", "c", "e", "g"]
    assert result.unattributed["expired"] == 2
    assert result.unattributed["no_impression"] == 2


def test_default_window_and_arguments() -> None:
    assert DEFAULT_ATTRIBUTION_WINDOW_MS == 24 * HOUR
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidInputError, match="window_ms"):
            attribute([], [], window_ms=bad)  # type: ignore[arg-type]
    empty = attribute([], [])
    assert empty.outcomes == {}
    assert dict(empty.unattributed) == dict.fromkeys(REASONS, 0)


def test_without_details_counts_the_same() -> None:
    impressions, events = scenario()
    full = attribute(impressions, events)
    counted = attribute(impressions, events, details=False)
    assert counted.events == ()
    assert counted.attributed == full.attributed
    assert counted.outcomes == full.outcomes
    assert counted.unattributed == full.unattributed


# ---------------------------------------------------------------- against a naive version


COUNTED = {VIEW: 0, CART: 1, BUY: 2, DISMISS: 3}


def naive(
    impressions: Sequence[Impression], events: Sequence[StoredEvent], window: int
) -> tuple[dict[str, list[int]], Counter[str], list[tuple[str, str, int, str]]]:
    """The rule read literally: every event against every impression."""
    first: dict[tuple[str, ImpressionKind], Impression] = {}
    for imp in impressions:
        first.setdefault((imp.recommendation_id, imp.kind), imp)
    effective: dict[str, Impression] = {}
    for rid in {imp.recommendation_id for imp in impressions}:
        served, shown = first.get((rid, SERVED)), first.get((rid, SHOWN))
        base = served if served is not None else shown
        assert base is not None
        items = shown.item_ids if shown is not None else base.item_ids
        effective[rid] = Impression(
            recommendation_id=rid,
            kind=SHOWN if shown is not None else SERVED,
            user_id=base.user_id,
            time_ms=base.time_ms,
            surface=base.surface,
            experiment=base.experiment,
            variant=base.variant,
            model_version=base.model_version,
            item_ids=items,
        )
    counts = {rid: [0, 0, 0, 0] for rid in effective}
    reasons: Counter[str] = Counter()
    attributed: list[tuple[str, str, int, str]] = []
    seen: set[str] = set()
    for ev in events:
        if ev.event_type not in COUNTED:
            continue
        if ev.event_id in seen:  # (an event without an id cannot be recognised again)
            continue
        if ev.event_id:
            seen.add(ev.event_id)
        if ev.recommendation_id:
            found = effective.get(ev.recommendation_id)
            if found is None:
                reasons["unknown_recommendation"] += 1
                continue
            if found.user_id not in ("", ev.user_id):
                reasons["other_user"] += 1
                continue
            if ev.item_id not in found.item_ids:
                reasons["item_not_in_response"] += 1
                continue
            if not found.time_ms - 60_000 <= ev.timestamp_ms <= found.time_ms + window:
                reasons["expired"] += 1
                continue
            chosen, by = found, "id"
        else:
            candidates = [
                imp
                for imp in effective.values()
                if imp.user_id != ""
                and imp.user_id == ev.user_id
                and ev.item_id in imp.item_ids
                and imp.time_ms <= ev.timestamp_ms <= imp.time_ms + window
            ]
            if not candidates:
                reasons["no_impression"] += 1
                continue
            chosen = max(candidates, key=lambda i: (i.time_ms, i.recommendation_id))
            by = "window"
        counts[chosen.recommendation_id][COUNTED[ev.event_type]] += 1
        position = ev.position if ev.position > 0 else chosen.item_ids.index(ev.item_id) + 1
        attributed.append((ev.event_id, chosen.recommendation_id, position, by))
    return counts, reasons, attributed


USERS = st.sampled_from(["", "u1", "u2", "u3"])
ITEMS = st.sampled_from(["a", "b", "c", "d", "e"])
TIMES = st.integers(0, 12).map(lambda n: n * 30_000)  # 0..6 minutes, 30 s apart
IMPRESSIONS = st.lists(
    st.builds(
        impression,
        rid=st.sampled_from(["r1", "r2", "r3", "r4", "r5", "r6"]),
        user=USERS,
        time_ms=TIMES,
        items=st.lists(ITEMS, min_size=1, max_size=4, unique=True),
        kind=st.sampled_from([SERVED, SHOWN]),
    ),
    max_size=12,
)
EVENTS = st.lists(
    st.builds(
        event,
        event_id=st.sampled_from([f"e{n}" for n in range(30)]) | st.just(""),
        user=USERS,
        item=ITEMS,
        kind=st.sampled_from(list(EventType)),
        time_ms=TIMES,
        rid=st.sampled_from(["", "", "r1", "r2", "r3", "r7"]),
        position=st.sampled_from([0, 0, 2]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    IMPRESSIONS,
    EVENTS,
    st.sampled_from([0, 30_000, 90_000, 240_000]),
    st.sampled_from([0, 256]),
)
def test_matches_naive(
    impressions: list[Impression], events: list[StoredEvent], window: int, heavy: int
) -> None:
    """heavy 0 sends every window lookup through the per-user item index."""
    with patch.object(_WindowIndex, "HEAVY", heavy):
        result = attribute(impressions, events, window_ms=window)
    counts, reasons, attributed = naive(impressions, events, window)
    assert {
        rid: [o.clicks, o.carts, o.purchases, o.dismissals] for rid, o in result.outcomes.items()
    } == counts
    assert {k: v for k, v in result.unattributed.items() if v} == dict(reasons)
    assert [(e.event_id, e.recommendation_id, e.position, e.by) for e in result.events] == (
        attributed
    )


# ---------------------------------------------------------------- scale


@pytest.mark.slow
def test_a_million_events_are_all_attributed() -> None:
    """Scale (about 4 s on a shared 2-core machine; tests do not time things)."""
    rng = random.Random(1)
    items = [f"i{n}" for n in range(20_000)]
    impressions = [
        impression(f"r{n:08d}", f"u{rng.randrange(50_000)}", T0 + n * 10_000, rng.sample(items, 10))
        for n in range(200_000)
    ]
    events = []
    for n in range(1_000_000):
        shown = impressions[rng.randrange(len(impressions))]
        rid = shown.recommendation_id if n % 2 else ""
        events.append(
            event(
                f"e{n}",
                shown.user_id,
                rng.choice(shown.item_ids),
                VIEW,
                shown.time_ms + rng.randrange(HOUR),
                rid,
            )
        )
    result = attribute(impressions, events, details=False)
    assert result.attributed == 1_000_000
