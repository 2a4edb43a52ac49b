"""Opening the store a location names (``--state DIR`` today)."""

from __future__ import annotations

from pathlib import Path

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.storage import EventStore
from shelfrank.server.store import SQLiteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(location: str | Path) -> EventStore:
    """The store at ``location``: a ``postgresql://`` (or ``postgres://``) URL opens the
    PostgreSQL store (server/store_postgres.py); a state directory (or a ``.sqlite3``
    file) opens the embedded SQLite store."""
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        # Imported here: psycopg is loaded only by processes that use PostgreSQL.
        from shelfrank.server.store_postgres import PostgresStore

        return PostgresStore(location)
    path = Path(location)
    if str(path).startswith(("postgresql:/", "postgres:/")):
        # Path("postgresql://h/db") is postgresql:/h/db: not a URL any more, and a SQLite
        # file would be created under a folder named "postgresql:".
        raise InvalidInputError(
            f"store location {str(location)!r}: pass a PostgreSQL URL as a str, not a Path"
        )
    return SQLiteStore(path if path.suffix == ".sqlite3" else path / "events.sqlite3")


__all__ = ["open_store"]
