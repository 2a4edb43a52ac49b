"""Before the first model a server ranks by the popularity of the stored events, and names
that table by the events and erasures it counted (ServingState.snapshot_version): devices
sync deltas by the name, so one name must never stand for two tables."""

from __future__ import annotations

from pathlib import Path

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.bootstrap import read_state_without_model
from shelfrank.server.config import TrainConfig
from shelfrank.server.store import SQLiteStore

CONFIG = TrainConfig(num_threads=1)


def _events(store: SQLiteStore) -> None:
    store.append_events(
        [StoredEvent(f"g{n}", "gone", "itemA", EventType.PURCHASE, 1_000 + n) for n in range(5)]
        + [StoredEvent("s0", "stay", "itemB", EventType.VIEW, 2_000)]
    )


def test_an_erasure_renames_the_table_though_the_newest_event_stays(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    _events(store)
    before = read_state_without_model(store, CONFIG)
    store.delete_user("gone")  # not the newest event: the watermark stays
    after = read_state_without_model(store, CONFIG)
    assert after.watermark_seq == before.watermark_seq
    assert after.snapshot_version != before.snapshot_version
    assert "itemA" not in after.model.item_ids
    store.close()


class _ErasingDuringTheCount(SQLiteStore):
    """The real store, with a shopper erased (a real erasure) while the first count runs."""

    erase_during_count = True

    def item_event_counts(self):  # type: ignore[no-untyped-def]
        counted = super().item_event_counts()
        if self.erase_during_count:
            self.erase_during_count = False
            self.delete_user("gone")
        return counted


def test_an_erasure_committed_while_counting_is_counted_again(tmp_path: Path) -> None:
    store = _ErasingDuringTheCount(tmp_path / "events.db")
    _events(store)
    state = read_state_without_model(store, CONFIG)
    # The name says "through the erasure", and the counts are those after it.
    assert state.erasures_through == store.last_erasure() > 0
    assert "itemA" not in state.model.item_ids
    store.close()
