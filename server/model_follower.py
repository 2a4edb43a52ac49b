"""Every serving process follows the store's model pointer (see server/registry.py)."""

from __future__ import annotations

import logging
import threading

from shelfrank.server.registry import ModelRegistry
from shelfrank.server.service import RecommenderService

log = logging.getLogger("shelfrank.model_follower")


class ModelFollower:
    """Keeps a serving process on the store's current model: every ``poll_seconds`` it
    reads the pointer and, when it moved past what the service serves, loads the new
    version (in this thread; requests keep being served from the old one) and swaps it in.
    A publication older than the one serving is never swapped in."""

    def __init__(
        self, registry: ModelRegistry, service: RecommenderService, *, poll_seconds: float = 1.0
    ) -> None:
        self.registry = registry
        self.service = service
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_now(self) -> bool:
        """Follow the pointer once; whether a newer model was swapped in."""
        pointer = self.registry.current()
        if pointer is None or pointer.published <= self.service.published:
            return False
        state = self.registry.load(pointer.version)
        swapped = self.service.swap(state, published=pointer.published)
        if swapped:
            log.info("model %s (publication %d) is now serving", pointer.version, pointer.published)
            self.registry.prune_local(pointer.version)
        return swapped

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="shelfrank-model-follower", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_now()
            # The store away, a bad copy, a full local disk (an OSError): the next poll
            # retries; a thread that died here would leave the replica on its old model.
            except Exception:
                log.exception("following the current model failed; retrying")

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
