"""Recording served responses as impressions without slowing the response down.

A Recommend must not wait for a database commit of its own impression: that would add a
write transaction (and on SQLite a turn at the single writer) to every read. The service
hands each impression to an :class:`ImpressionRecorder`, which writes them in batches from
one background thread: every ``flush_seconds`` or as soon as ``batch`` are waiting.

What this trades: an impression reaches the store up to ``flush_seconds`` after its
response (a report read at once may miss the last fraction of a second), and a process
killed without a graceful shutdown loses what it had not written yet (feedback on those
responses is then attributed by the window rule, or not at all). A graceful shutdown,
``flush()`` and an erasure in this process write everything pending first. While the store
is away, impressions wait, up to ``max_pending``; beyond that the oldest are dropped and
counted.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from shelfrank.core.errors import StorageError
from shelfrank.server.storage import EventStore, Impression

log = logging.getLogger("shelfrank.feedback")

DEFAULT_FLUSH_SECONDS = 0.2
DEFAULT_BATCH = 1_000
DEFAULT_MAX_PENDING = 100_000


class ImpressionRecorder:
    """Writes impressions to ``store`` in batches from a background thread."""

    def __init__(
        self,
        store: EventStore,
        *,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        batch: int = DEFAULT_BATCH,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._batch = batch
        self._pending: deque[Impression] = deque()
        self._max_pending = max_pending
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._wake = threading.Event()
        self._stopped = threading.Event()
        # One writer at a time: the thread, flush() and close() may race.
        self._writing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="shelfrank-impressions", daemon=True)
        self._thread.start()

    def record(self, impression: Impression) -> None:
        """Queue one impression (a deque append: safe from any thread, no lock); beyond
        ``max_pending`` waiting (the store is away or slower than the traffic) the
        oldest is dropped and counted."""
        self._pending.append(impression)
        waiting = len(self._pending)
        if waiting >= self._batch:
            self._wake.set()
        if waiting > self._max_pending:
            self._drop_overflow()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Write everything queued before this call, in this thread (StorageError if the
        store refuses; the impressions stay queued then). Impressions queued meanwhile
        wait for the next flush, so that a flush under steady traffic ends."""
        with self._writing:
            left = len(self._pending)
            while left > 0 and self._pending:
                left -= self._write_batch(left)

    def close(self) -> None:
        """Stop the thread and write what is pending (logged, not raised, if it fails)."""
        self._stopped.set()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        except StorageError as exc:
            log.error("impressions: %d not written at shutdown: %s", len(self._pending), exc)

    def _write_batch(self, most: int) -> int:
        """Write up to ``most`` of the oldest queued impressions; how many were taken."""
        batch: list[Impression] = []
        size = min(most, self._batch)
        while self._pending and len(batch) < size:
            batch.append(self._pending.popleft())
        try:
            self._store.record_impressions(batch)
        except BaseException:  # whatever failed, they are kept for the next attempt
            self._pending.extendleft(reversed(batch))  # in their order
            self._drop_overflow()
            raise
        if self._on_written is not None:
            self._on_written(len(batch))
        return len(batch)

    def _drop_overflow(self) -> None:
        dropped = 0
        while len(self._pending) > self._max_pending:
            try:
                self._pending.popleft()
            except IndexError:  # a writer took them meanwhile
                break
            dropped += 1
        if dropped:
            log.warning(
                "impressions: more than %d waiting, %d oldest dropped", self._max_pending, dropped
            )
            if self._on_dropped is not None:
                self._on_dropped(dropped)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.flush()
            except StorageError as exc:
                log.warning("impressions: store unavailable (%s); %d waiting", exc, self.pending)
            except Exception:  # the thread must live on: log, keep the impressions queued
                log.exception("impressions: unexpected failure while writing")


__all__ = ["ImpressionRecorder"]
