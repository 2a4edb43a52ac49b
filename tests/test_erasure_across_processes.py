"""An erasure made through one process reaches what another process has cached about the
user: two servers on one store (one SQLite file), the erasure sent to the first."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.app import ServerOptions, start
from tests.conftest import SERVER_CONFIG


def test_another_process_does_not_serve_a_vector_folded_from_erased_events(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    first = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
        )
    )
    second = start(
        ServerOptions(
            store=str(tmp_path / "state" / "events.sqlite3"),
            port=0,
            role="server",
            train_config=SERVER_CONFIG,
        )
    )
    a, b = first.service, second.service
    numbers = itertools.count()

    def bought(items: list[str]) -> None:
        a.track(
            [
                StoredEvent(f"e{next(numbers)}", "z", item, EventType.PURCHASE, 1_000)
                for item in items
            ]
        )

    try:
        bought(["shoe1", "shoe2"])
        a.delete_user("z")  # erased once
        bought(["shoe1", "shoe2"])  # back, and folded in on the second process
        _, before = b.user_vector("z")
        assert before.source == "fold-in"
        a.delete_user("z")  # erased again, on the first process
        bought(["book1", "book2"])  # back with as many events as before
        _, on_a = a.user_vector("z")
        _, on_b = b.user_vector("z")
        assert on_b.folded_rows.tolist() == on_a.folded_rows.tolist()
        assert not np.array_equal(on_b.vector, before.vector)
    finally:
        second.stop()
        first.stop()
