"""Behaviour event types, their default training weights, and new event ids."""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Mapping
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

from shelfrank.core.errors import InvalidInputError


class EventType(enum.IntEnum):
    """What a shopper did with an item. Values match ``shelfrank.v1.EventType``."""

    VIEW = 1
    ADD_TO_CART = 2
    PURCHASE = 3
    SEARCH = 4
    DISMISS = 5

    @classmethod
    def _missing_(cls, value: object) -> EventType:
        """``EventType(99)`` raises InvalidInputError (a ValueError, as Enum's own)."""
        allowed = ", ".join(f"{int(member)} ({member.label})" for member in cls)
        raise InvalidInputError(f"event_type: unknown value {value!r} (expected one of {allowed})")

    @property
    def label(self) -> str:
        """The lower-case name used in CSV files (``add_to_cart``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> EventType:
        """Parse a CSV label (``view``) or enum name (``VIEW``); raises InvalidInputError."""
        if not isinstance(text, str):
            raise InvalidInputError(f"event_type: expected a str, got {type(text).__name__}")
        key = text.strip().upper()
        try:
            return cls[key]
        except KeyError:
            allowed = ", ".join(member.label for member in cls)
            raise InvalidInputError(
                f"event_type: unknown value {text!r} (expected one of {allowed})"
            ) from None


# Positive signal strength per event type, relative to a purchase. A dismissal is a
# negative signal: it never becomes a positive training interaction.
DEFAULT_EVENT_WEIGHTS: Mapping[EventType, float] = MappingProxyType(
    {
        EventType.VIEW: 0.25,
        EventType.SEARCH: 0.25,
        EventType.ADD_TO_CART: 0.5,
        EventType.PURCHASE: 1.0,
        EventType.DISMISS: 0.0,
    }
)

POSITIVE_EVENT_TYPES: frozenset[EventType] = frozenset(
    {EventType.VIEW, EventType.SEARCH, EventType.ADD_TO_CART, EventType.PURCHASE}
)


def new_event_id() -> str:
    """A new event id: 32 hex digits laid out as a UUID version 7 (RFC 9562), 48 bits of
    Unix milliseconds then 74 random bits, so ids sort by creation time.

    The server deduplicates by id through a B-tree: ids that arrive in about the order they
    were made are added at its right edge, while random ids (uuid4) each land on a random
    page, one more page written per event and commit (39-58% fewer events/s through the
    server, benchmarks/RESULTS.md "Ingest")."""
    millis = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF
    random_bits = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    rand_a, rand_b = random_bits >> 68, random_bits & (2**62 - 1)
    return f"{millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b:032x}"


class StoredEvent(NamedTuple):
    """An event as every layer passes it on (validated requests, the server's store, live
    records, a device's outbox): a named tuple, because ingest creates one per event and
    it must be cheap."""

    event_id: str
    user_id: str
    item_id: str
    event_type: EventType
    timestamp_ms: int
    session_id: str = ""
    query: str = ""
    # The response the event answers (``RecommendResponse.recommendation_id``; "": none) and
    # the item's 1-based position in it (0: unknown). See shelfrank.server.feedback.
    recommendation_id: str = ""
    position: int = 0


# A StoredEvent's user, in C (ingest maps it over every event of a batch).
user_id_of = attrgetter("user_id")
