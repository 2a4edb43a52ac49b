"""The trainer lease on a real SQLite store: a holder that lost its lease (it stalled past
its time to live; another trainer took the lease, published and left) does not take it
back from its heartbeat, so the training it began before cannot publish over the newer
model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shelfrank.server.storage import LeaseLostError
from shelfrank.server.store import SQLiteStore
from shelfrank.server.trainer_lease import LEASE_NAME, TrainerLease


def test_a_lapsed_holder_does_not_take_the_lease_back_from_its_heartbeat(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    stalled = TrainerLease(store, holder="stalled", ttl_seconds=0.6)
    other = TrainerLease(store, holder="other", ttl_seconds=60)
    try:
        store.save_model("old", [("manifest.json", b"{}")])
        assert stalled.acquire()
        # What a stall past the time to live looks like from the store: the lease ran out
        # and another trainer took it, published, and gave it up.
        store.release_lease(LEASE_NAME, "stalled")
        assert other.acquire()
        store.save_model("newer", [("manifest.json", b"{}")])
        store.publish_model("newer", lease=other.key)
        other.release()
        deadline = time.monotonic() + 10
        while stalled.held() and time.monotonic() < deadline:
            time.sleep(0.05)  # the heartbeat runs every third of the time to live
        assert not stalled.held()
        assert store.lease_holder(LEASE_NAME) is None  # not taken back
        with pytest.raises(LeaseLostError):
            store.publish_model("old", lease=stalled.key)
        assert store.current_model() is not None
        assert store.current_model().version == "newer"  # type: ignore[union-attr]
        # A new round takes the lease afresh, and trains on what is stored then.
        assert stalled.acquire()
    finally:
        stalled.release()
        other.release()
        store.close()
