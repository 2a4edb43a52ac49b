"""Opening the store a location names: a state directory (SQLite, the default) or a
PostgreSQL URL (``--store``, ``$SHELFRANK_STORE``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.storage import EventStore
from shelfrank.server.store import SQLiteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Where `shelfrank serve` and `shelfrank ingest` find the store when --store is not given.
STORE_ENV = "SHELFRANK_STORE"


def describe_location(location: str | Path) -> str:
    """The location for messages and logs: a URL's password replaced by ``***``."""
    text = str(location)
    if not text.startswith(POSTGRES_SCHEMES):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


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


def schema_version(location: str | Path) -> int:
    """The schema version this shelfrank writes for the store ``location`` names."""
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        from shelfrank.server.store_postgres import SCHEMA_VERSION as POSTGRES_VERSION

        return POSTGRES_VERSION
    from shelfrank.server.store import SCHEMA_VERSION as SQLITE_VERSION

    return SQLITE_VERSION


__all__ = ["POSTGRES_SCHEMES", "STORE_ENV", "describe_location", "open_store", "schema_version"]
