"""Behaviour event types and their default training weights."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from shelfrank.core.errors import InvalidInputError


class EventType(enum.IntEnum):
    """What a shopper did with an item. Values match ``shelfrank.v1.EventType``."""

    VIEW = 1
    ADD_TO_CART = 2
    PURCHASE = 3
    SEARCH = 4
    DISMISS = 5

    @property
    def label(self) -> str:
        """The lower-case name used in CSV files (``add_to_cart``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> EventType:
        """Parse a CSV label (``view``) or enum name (``VIEW``); raises InvalidInputError."""
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
