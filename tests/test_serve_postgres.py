"""``shelfrank serve --store postgresql://...`` and ``shelfrank ingest --store``: the real
server process over the real PostgreSQL (the throwaway cluster of tests/postgres.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shelfrank.client import Client, Event, Item, Strategy
from shelfrank.server.stores import describe_location, open_store
from tests.conftest import serve_process, stop_process


def test_a_server_over_postgresql_starts_honest_and_serves_what_it_stores(
    postgres_url: str, tmp_path: Path
) -> None:
    process, address = serve_process("--state", str(tmp_path / "state"), "--store", postgres_url)
    try:
        with Client(address) as client:
            info = client.model_info()
            assert (info.model_version, info.items, info.stored_events) == ("", 0, 0)
            client.upsert_items([Item("kettle", ["category=kitchen"])])
            client.track([Event(f"u{n}", "toaster", "purchase") for n in range(3)])
            answer = client.recommend("someone", k=2)
            assert answer.strategy is Strategy.POPULARITY
            assert answer.item_ids == ("toaster", "kettle")
            assert client.model_info().stored_events == 3
    finally:
        assert stop_process(process) == 0
    # Everything is in PostgreSQL, nothing in a SQLite file under --state.
    assert not (tmp_path / "state" / "events.sqlite3").exists()
    store = open_store(postgres_url)
    try:
        assert store.counts().events == 3
        assert set(store.item_features()) == {"kettle"}
    finally:
        store.close()


INGEST = [sys.executable, "-m", "shelfrank.server", "ingest"]


def test_ingest_into_postgresql_and_a_password_never_printed(
    postgres_url: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,event_type\nu1,i1,view\nu2,i1,purchase\n")
    done = subprocess.run(
        [*INGEST, "--store", postgres_url, "--interactions", str(events)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.startswith("2 events stored, 0 already there, in postgresql://")
    assert describe_location("postgresql://shop:s3cret@db.local:5432/events") == (
        "postgresql://shop:***@db.local:5432/events"
    )


MIGRATE = [sys.executable, "-m", "shelfrank.server", "migrate"]


def test_migrate_creates_and_checks_the_schema_on_both_backends(
    postgres_url: str, tmp_path: Path
) -> None:
    from shelfrank.server.store import SCHEMA_VERSION as SQLITE_VERSION
    from shelfrank.server.store_postgres import SCHEMA_VERSION as POSTGRES_VERSION

    for where, version in (
        (["--store", postgres_url], POSTGRES_VERSION),
        (["--state", str(tmp_path / "state")], SQLITE_VERSION),
    ):
        done = subprocess.run(
            [*MIGRATE, *where], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(f": schema {version}, check: ok")
    refused = subprocess.run(
        [*MIGRATE, "--store", "postgresql://nobody:pw@127.0.0.1:1/none"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1  # one line, no traceback
    assert "127.0.0.1:1" in refused.stderr
    assert "pw" not in refused.stderr.replace("postgresql", "")
