"""The impression recorder over a real SQLite store: nothing lost when a write fails (for
whatever reason), the pending queue bounded even while writes succeed, and a flush that
ends under steady traffic. Failures are injected by a thin wrapper around the real
store: SQLite cannot be made to fail on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shelfrank.server.feedback.recorder import ImpressionRecorder
from shelfrank.server.storage import EventStore, Impression, ImpressionKind
from shelfrank.server.stores import open_store

IDLE = 3600.0  # the background thread never flushes by itself during a test


def impression(number: int) -> Impression:
    return Impression(
        recommendation_id=f"r{number:05d}",
        kind=ImpressionKind.SERVED,
        user_id=f"u{number % 7}",
        time_ms=1_000 + number,
        surface="recommend",
        experiment="",
        variant="",
        model_version="v1",
        item_ids=("a", "b"),
    )


class FaultyStore:
    """The real store, whose ``record_impressions`` raises ``failure`` while it is set
    and calls ``during_write`` (traffic arriving meanwhile) before each write."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.failure: BaseException | None = None
        self.during_write: Any = None
        self.writes = 0

    def record_impressions(self, impressions: Sequence[Impression]) -> int:
        self.writes += 1
        if self.during_write is not None:
            self.during_write()
        if self.failure is not None:
            raise self.failure
        return self.store.record_impressions(impressions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FaultyStore]:
    real = open_store(tmp_path / "state")
    yield FaultyStore(real)
    real.close()


def stored_ids(store: FaultyStore) -> list[str]:
    return [i.recommendation_id for i in store.store.impressions_between(0, 2**62)]


def test_a_failed_write_of_any_kind_keeps_the_impressions_in_order(store: FaultyStore) -> None:
    written: list[int] = []
    recorder = ImpressionRecorder(
        store,  # type: ignore[arg-type]
        flush_seconds=IDLE,
        batch=1_000,  # never woken by a full batch: this thread writes
        on_written=written.append,
    )
    try:
        for number in range(10):
            recorder.record(impression(number))
        store.failure = RuntimeError("a bug, not a StorageError")
        with pytest.raises(RuntimeError):
            recorder.flush()
        assert recorder.pending == 10
        store.failure = None
        recorder.flush()
        assert recorder.pending == 0
        assert stored_ids(store) == [f"r{n:05d}" for n in range(10)]
        assert written == [10]
    finally:
        recorder.close()


def test_the_queue_is_bounded_while_writes_succeed(store: FaultyStore) -> None:
    dropped: list[int] = []
    recorder = ImpressionRecorder(
        store,  # type: ignore[arg-type]
        flush_seconds=IDLE,
        batch=1_000,
        max_pending=5,
        on_dropped=dropped.append,
    )
    try:
        for number in range(12):
            recorder.record(impression(number))
        assert recorder.pending == 5
        assert sum(dropped) == 7
        recorder.flush()
        assert stored_ids(store) == [f"r{n:05d}" for n in range(7, 12)]  # the newest kept
        assert store.writes == 1
    finally:
        recorder.close()


def test_a_flush_under_steady_traffic_ends(store: FaultyStore) -> None:
    recorder = ImpressionRecorder(store, flush_seconds=IDLE, batch=10)  # type: ignore[arg-type]
    arriving = iter(range(100, 100_000))
    flushing = threading.current_thread()
    writes_by_this_flush = 0

    def traffic() -> None:  # each write of this flush, more responses are served meanwhile
        nonlocal writes_by_this_flush
        if threading.current_thread() is flushing:
            writes_by_this_flush += 1
            for _ in range(20):
                recorder.record(impression(next(arriving)))

    try:
        for number in range(30):
            recorder.record(impression(number))
        store.during_write = traffic
        recorder.flush()
        # The 30 queued before the flush took 3 writes; what came meanwhile was left to
        # the background thread (woken by the full batches).
        assert writes_by_this_flush == 3
    finally:
        recorder.close()
    assert len(stored_ids(store)) == 90  # close() writes the rest
