"""Attribution of behaviour events to the recommendation responses that led to them.

The rule
========

1. **Effective impression.** A recommendation id may have a ``SERVED`` record (the server's
   response) and a ``SHOWN`` record (what the caller or device actually showed). Its
   effective impression takes the item list of the ``SHOWN`` record when one exists, else
   that of the ``SERVED`` one; experiment, variant, model version, surface, user and time
   come from the ``SERVED`` record when it exists, else from the ``SHOWN`` one. (Of
   several records of one id and kind, the first counts, as in the store.)
2. **Events that count**: ``VIEW`` (a click), ``ADD_TO_CART`` (a cart), ``PURCHASE`` (a
   purchase) and ``DISMISS`` (a dismissal). ``SEARCH`` never does, and is not counted
   as unattributed either.
3. **With a recommendation id**, an event is attributed to that response when (a) the
   response exists, (b) its user is the event's user (a response with user ``""``, an
   anonymous request, accepts any user), (c) the event's item is in its items and
   (d) ``impression time - 60 s <= event time <= impression time + window`` (the 60 s
   tolerate clock skew between the server and the devices). Otherwise it is not
   attributed, counted by the first failing condition as ``unknown_recommendation``,
   ``other_user``, ``item_not_in_response`` or ``expired`` (too early or too late). It is
   never attributed by rule 4 instead.
4. **Without a recommendation id**, an event is attributed to the latest effective
   impression to the same (non-empty) user that contains the item, with
   ``impression time <= event time <= impression time + window`` (of impressions at the
   same millisecond, the greatest recommendation id). If there is none it is not
   attributed (``no_impression``).
5. **Each event counts once**, for one response at most (an event id seen again is
   skipped; an event without an id cannot be recognised again). Its **position** is the
   event's ``position`` when it is > 0, else the item's 1-based index in the effective
   impression's list.

The window defaults to 24 hours (:data:`DEFAULT_ATTRIBUTION_WINDOW_MS`). Nothing here
raises for odd data: events that cannot be attributed are counted, not refused.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal, NamedTuple

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.storage import Impression, ImpressionKind

DEFAULT_ATTRIBUTION_WINDOW_MS = 24 * 3600 * 1000
CLOCK_SKEW_MS = 60 * 1000

REASONS = (
    "unknown_recommendation",
    "other_user",
    "item_not_in_response",
    "expired",
    "no_impression",
)
# Counter slot (clicks, carts, purchases, dismissals) by event type value: a tuple indexed
# by the int, as hashing an enum member runs Python code.
_COUNTED = {
    EventType.VIEW: 0,
    EventType.ADD_TO_CART: 1,
    EventType.PURCHASE: 2,
    EventType.DISMISS: 3,
}
_SLOTS: tuple[int | None, ...] = tuple(
    next((slot for kind, slot in _COUNTED.items() if kind == value), None)
    for value in range(max(EventType) + 1)
)
# The fields of a StoredEvent attribution reads, in one C call.
_EVENT_FIELDS = itemgetter(
    *(
        StoredEvent._fields.index(name)
        for name in (
            "event_id",
            "user_id",
            "item_id",
            "event_type",
            "timestamp_ms",
            "recommendation_id",
            "position",
        )
    )
)


class ResponseOutcome(NamedTuple):
    """One response (its effective impression: ``kind`` is that of the record whose item
    list it uses) and the events attributed to it."""

    impression: Impression
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    dismissals: int = 0


class AttributedEvent(NamedTuple):
    """An attributed event, for inspection: ``by`` says whether its recommendation id
    (``"id"``) or the window rule (``"window"``) attributed it. (A named tuple: there is
    one per attributed event.)"""

    event_id: str
    recommendation_id: str
    event_type: EventType
    position: int
    by: Literal["id", "window"]


@dataclass(frozen=True, kw_only=True)
class Attribution:
    """Every response's outcome by recommendation id, the events not attributed by reason
    (every reason of :data:`REASONS`, 0 included) and the attributed events."""

    outcomes: Mapping[str, ResponseOutcome]
    unattributed: Mapping[str, int]
    attributed: int  # events attributed
    events: tuple[AttributedEvent, ...]  # empty unless asked for (``details``)
    window_ms: int


def effective_impressions(impressions: Iterable[Impression]) -> dict[str, Impression]:
    """The effective impression of every recommendation id (rule 1 of the module
    docstring), in order of first appearance."""
    served: dict[str, Impression] = {}
    shown: dict[str, Impression] = {}
    order: dict[str, None] = {}
    for impression in impressions:
        rid = impression.recommendation_id
        records = shown if impression.kind is ImpressionKind.SHOWN else served
        if rid not in records:
            records[rid] = impression
            order[rid] = None
    effective: dict[str, Impression] = {}
    for rid in order:
        base = served.get(rid)
        narrowed = shown.get(rid)
        if base is None:
            effective[rid] = shown[rid]
        elif narrowed is None:
            effective[rid] = base
        else:
            effective[rid] = dataclasses.replace(
                base, kind=ImpressionKind.SHOWN, item_ids=narrowed.item_ids
            )
    return effective


class _WindowIndex:
    """The effective impressions of every (non-empty) user sorted by (time, recommendation
    id): a lookup walks back from the event's time through the user's impressions inside
    the window. A user with very many impressions gets an item -> impressions index
    instead (built on first use), so the walk never gets long."""

    HEAVY = 256  # impressions of one user above which an item index pays

    def __init__(self, effective: Mapping[str, Impression]) -> None:
        by_user: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}
        for rid, impression in effective.items():
            user = impression.user_id
            if user:
                entry = (impression.time_ms, rid, impression.item_ids)
                found = by_user.get(user)
                if found is None:
                    by_user[user] = [entry]
                else:
                    found.append(entry)
        self._users: dict[str, tuple[list[int], list[str], list[tuple[str, ...]]]] = {}
        for user, entries in by_user.items():
            if len(entries) > 1:
                entries.sort(key=_time_and_id)
            self._users[user] = (
                [e[0] for e in entries],
                [e[1] for e in entries],
                [e[2] for e in entries],
            )
        self._heavy: dict[str, dict[str, tuple[list[int], list[str]]]] = {}

    def latest(self, user: str, item: str, time_ms: int, window_ms: int) -> str | None:
        found = self._users.get(user)
        if found is None:
            return None
        times, rids, items = found
        if len(times) > self.HEAVY:
            return self._latest_heavy(user, item, time_ms, window_ms)
        index = bisect_right(times, time_ms) - 1
        oldest = time_ms - window_ms
        while index >= 0 and times[index] >= oldest:
            if item in items[index]:
                return rids[index]
            index -= 1
        return None

    def _latest_heavy(self, user: str, item: str, time_ms: int, window_ms: int) -> str | None:
        by_item = self._heavy.get(user)
        if by_item is None:
            times, rids, items = self._users[user]
            by_item = {}
            for time, rid, listed in zip(times, rids, items, strict=True):
                for each in dict.fromkeys(listed):
                    entry = by_item.get(each)
                    if entry is None:
                        by_item[each] = ([time], [rid])
                    else:
                        entry[0].append(time)
                        entry[1].append(rid)
            self._heavy[user] = by_item
        entry = by_item.get(item)
        if entry is None:
            return None
        index = bisect_right(entry[0], time_ms) - 1
        if index < 0 or entry[0][index] < time_ms - window_ms:
            return None
        return entry[1][index]


def _time_and_id(entry: tuple[int, str, tuple[str, ...]]) -> tuple[int, str]:
    return entry[0], entry[1]


def attribute(
    impressions: Iterable[Impression],
    events: Iterable[StoredEvent],
    *,
    window_ms: int = DEFAULT_ATTRIBUTION_WINDOW_MS,
    details: bool = True,
    unattributed_between: tuple[int, int] | None = None,
) -> Attribution:
    """Attribute events to responses by the rule of the module docstring. Without
    ``details`` the attributed events are counted but not listed (faster). With
    ``unattributed_between`` (from, to), only events in ``[from, to)`` are counted as
    not attributed (a report over a range reads events around it too)."""
    if isinstance(window_ms, bool) or not isinstance(window_ms, int) or window_ms < 0:
        raise InvalidInputError(f"window_ms: must be an integer >= 0, got {window_ms!r}")
    effective = effective_impressions(impressions)
    counts: tuple[dict[str, int], ...] = ({}, {}, {}, {})  # by slot: recommendation id -> n
    unattributed = dict.fromkeys(REASONS, 0)
    attributed: list[AttributedEvent] = []
    attributed_count = 0
    seen: set[str] = set()
    index: _WindowIndex | None = None
    slots = _SLOTS
    fields = _EVENT_FIELDS
    skew = -CLOCK_SKEW_MS
    lowest, highest = unattributed_between or (-(2**63), 2**63)
    outside = dict.fromkeys(REASONS, 0)  # not attributed, outside the range: not reported
    for event in events:
        event_id, user_id, item_id, event_type, time_ms, rid, position = fields(event)
        try:
            slot = slots[event_type]
        except IndexError:  # a type added later
            continue
        if slot is None:
            continue
        missed = unattributed if lowest <= time_ms < highest else outside
        if event_id:
            if event_id in seen:
                continue
            seen.add(event_id)
        by: Literal["id", "window"]
        if rid:
            impression = effective.get(rid)
            if impression is None:
                missed["unknown_recommendation"] += 1
                continue
            if impression.user_id and impression.user_id != user_id:
                missed["other_user"] += 1
                continue
            if item_id not in impression.item_ids:
                missed["item_not_in_response"] += 1
                continue
            if not skew <= time_ms - impression.time_ms <= window_ms:
                missed["expired"] += 1
                continue
            by = "id"
        else:
            if index is None:
                index = _WindowIndex(effective)
            found = index.latest(user_id, item_id, time_ms, window_ms) if user_id else None
            if found is None:
                missed["no_impression"] += 1
                continue
            rid = found
            impression = effective[rid]
            by = "window"
        tally = counts[slot]  # no new container per event: nothing for the GC to track
        tally[rid] = tally.get(rid, 0) + 1
        attributed_count += 1
        if details:
            if position <= 0:
                position = impression.item_ids.index(item_id) + 1
            attributed.append(AttributedEvent(event_id, rid, event_type, position, by))
    clicks, carts, purchases, dismissals = counts
    outcomes = {
        rid: ResponseOutcome(
            impression,
            clicks.get(rid, 0),
            carts.get(rid, 0),
            purchases.get(rid, 0),
            dismissals.get(rid, 0),
        )
        for rid, impression in effective.items()
    }
    return Attribution(
        outcomes=outcomes,
        unattributed=unattributed,
        attributed=attributed_count,
        events=tuple(attributed),
        window_ms=window_ms,
    )


__all__ = [
    "CLOCK_SKEW_MS",
    "DEFAULT_ATTRIBUTION_WINDOW_MS",
    "REASONS",
    "AttributedEvent",
    "Attribution",
    "ResponseOutcome",
    "attribute",
    "effective_impressions",
]
