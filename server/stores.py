"""Opening the store a location names (``--state DIR`` today)."""

from __future__ import annotations

from pathlib import Path

from shelfrank.server.storage import EventStore
from shelfrank.server.store import SQLiteStore


def open_store(location: str | Path) -> EventStore:
    """The store at ``location``: a state directory (or a ``.sqlite3`` file) opens the
    embedded SQLite store."""
    path = Path(location)
    return SQLiteStore(path if path.suffix == ".sqlite3" else path / "events.sqlite3")


__all__ = ["open_store"]
