"""How often an item was shown and clicked lately, by the feedback loop's own rules.

Shown: effective impressions (server/feedback/attribution.py, rule 1: what a caller
reported shown narrows what was served) of the last ``days`` holding the item. Clicked:
views of the item attributed to one of those impressions (by its id or the window
rule). Attribution of one event depends only on the impressions and on that event, so
only the item's own events are read, and only the impressions of recommendation ids that
ever held the item (and reported-shown ones, which may narrow a list to leave it out).
"""

from __future__ import annotations

from shelfrank.core.events import EventType
from shelfrank.server.feedback.attribution import (
    CLOCK_SKEW_MS,
    attribute,
    effective_impressions,
)
from shelfrank.server.storage import EventStore, ImpressionKind

DAY_MS = 24 * 3600 * 1000
WINDOW_DAYS = 7


def shown_and_clicked(
    store: EventStore, item_id: str, *, now_ms: int, window_ms: int, days: int = WINDOW_DAYS
) -> tuple[int, int]:
    since = now_ms - days * DAY_MS
    records = [
        impression
        for impression in store.impressions_between(since, now_ms + 1)
        if impression.kind is ImpressionKind.SHOWN or item_id in impression.item_ids
    ]
    holding = {i.recommendation_id for i in records if item_id in i.item_ids}
    records = [i for i in records if i.recommendation_id in holding]
    shown = sum(item_id in i.item_ids for i in effective_impressions(records).values())
    # Events up to the clock skew attribution tolerates before an impression count too.
    events = [
        event
        for event in store.events_between(since - CLOCK_SKEW_MS, now_ms + 1)
        if event.item_id == item_id and event.event_type == EventType.VIEW
    ]
    if not shown or not events:
        return shown, 0
    attributed = attribute(records, events, window_ms=window_ms, details=True)
    return shown, len(attributed.events)
