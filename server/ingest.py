"""Storing a data set (events, catalogue, profiles) in a server's event store: what
``shelfrank ingest`` and ``shelfrank serve --demo`` share."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.storage import EventStore

# Events appended per store transaction (each one fsyncs).
INGEST_BATCH = 10_000


@dataclass(frozen=True)
class IngestOutcome:
    stored: int
    duplicates: int


def stable_event_id(user_id: str, item_id: str, event_type: EventType, stamp: float) -> str:
    """The id of an event read without one: ingesting the same file twice stores it once."""
    key = f"{user_id}\x1f{item_id}\x1f{int(event_type)}\x1f{stamp}".encode()
    return "ingest-" + hashlib.sha256(key).hexdigest()[:32]


def stored_events(interactions: Interactions) -> list[StoredEvent]:
    events = []
    for user, item, kind, stamp, _weight, event_id in interactions.rows():
        event_id = event_id or stable_event_id(user, item, kind, stamp)
        millis = 0 if math.isnan(stamp) else int(stamp * 1000)
        events.append(StoredEvent(event_id, user, item, kind, millis))
    return events


def ingest(
    store: EventStore,
    interactions: Interactions,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
) -> IngestOutcome:
    """Catalogue and profiles first (upserted), then the events (idempotent by id)."""
    if items is not None:
        store.upsert_items(list(items.as_dict().items()))
    if users is not None:
        store.upsert_users(list(users.as_dict().items()))
    events = stored_events(interactions)
    stored = duplicates = 0
    for start in range(0, len(events), INGEST_BATCH):
        result = store.append_events(events[start : start + INGEST_BATCH])
        stored += len(result.accepted)
        duplicates += len(result.duplicates)
    return IngestOutcome(stored, duplicates)


__all__ = ["INGEST_BATCH", "IngestOutcome", "ingest", "stable_event_id", "stored_events"]
