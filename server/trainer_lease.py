"""One trainer among all the processes sharing a store: a lease row in the store.

The holder renews it every third of its time to live from a thread of its own, so a long
training keeps it; a holder that dies (kill -9, a lost machine) stops renewing and another
process takes the lease once it expires. Publishing a model is fenced by the lease (the
store checks it in the publishing transaction), so a trainer that lost its lease in the
middle of a fit can never move the pointer.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from shelfrank.core.errors import InvalidInputError, ShelfrankError
from shelfrank.server.storage import EventStore

log = logging.getLogger("shelfrank.trainer_lease")

LEASE_NAME = "trainer"
TTL_SECONDS = 15.0


class TrainerLease:
    def __init__(
        self, store: EventStore, *, holder: str | None = None, ttl_seconds: float = TTL_SECONDS
    ) -> None:
        if ttl_seconds <= 0:
            raise InvalidInputError(f"ttl_seconds: must be positive, got {ttl_seconds}")
        self.store = store
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ttl_seconds = ttl_seconds
        self._held = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(name, holder), as EventStore.publish_model takes it."""
        return LEASE_NAME, self.holder

    def held(self) -> bool:
        return self._held.is_set()

    def acquire(self) -> bool:
        """Take (or keep) the lease; whether this process is the trainer now."""
        with self._lock:
            if self._stop.is_set():
                return False
            try:
                held = self.store.acquire_lease(LEASE_NAME, self.holder, self.ttl_seconds)
            except ShelfrankError:
                log.exception("cannot reach the store for the trainer lease")
                held = False
            if held and not self._held.is_set():
                log.info("this process (%s) is the trainer now", self.holder)
            if not held and self._held.is_set():
                log.warning("the trainer lease went to another process")
            (self._held.set if held else self._held.clear)()
            if held and self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._renew, name="shelfrank-trainer-lease", daemon=True
                )
                self._heartbeat.start()
            return held

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            if self._held.is_set():
                self._keep()

    def _keep(self) -> None:
        """Renew the lease only while the store still names this process: a holder that
        stalled past its time to live (a long pause, a stopped VM) has lost it, even if
        nobody holds it now, and must not take it back here, or the training it started
        before would pass the publishing check and could replace a newer model another
        trainer published meanwhile. The retrainer takes the lease afresh for its next
        round, which trains on what is stored then."""
        try:
            holder = self.store.lease_holder(LEASE_NAME)
        except ShelfrankError:
            log.exception("cannot reach the store for the trainer lease")
            return  # publishing is fenced by the store: nothing moves without it
        if holder != self.holder:
            with self._lock:
                if self._held.is_set():
                    log.warning(
                        "the trainer lease lapsed; no training here until it is taken again"
                    )
                    self._held.clear()
            return
        self.acquire()

    def release(self) -> None:
        """Give the lease up (on a graceful stop: another process takes over at once)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(self.ttl_seconds)
        if self._held.is_set():
            self._held.clear()
            try:
                self.store.release_lease(LEASE_NAME, self.holder)
            except ShelfrankError:
                log.exception("cannot release the trainer lease; it expires by itself")
