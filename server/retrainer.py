"""Background retraining: fold accumulated events into a new model version and swap it in.

One training runs at a time (LightFM's ``fit_partial`` is not thread-safe). The store is
read up to a watermark (its last sequence number when training starts); events arriving
during training stay above the watermark and keep being folded in at request time, so
nothing is lost across the swap. A failed training is logged and the previous model keeps
serving.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.registry import ModelRegistry, load_state
from shelfrank.server.service import RecommenderService
from shelfrank.server.store import EventStore

log = logging.getLogger("shelfrank.retrainer")


def store_interactions(store: EventStore, up_to_seq: int) -> Interactions:
    rows: list[tuple[str, str, EventType, float, float, str]] = []
    for seq, event in store.iter_events():
        if seq > up_to_seq:
            break
        rows.append(
            (
                event.user_id,
                event.item_id,
                event.event_type,
                event.timestamp_ms / 1000.0,
                math.nan,
                event.event_id,
            )
        )
    return Interactions.from_rows(rows)


def store_features(features: dict[str, tuple[str, ...]], id_column: str) -> FeatureTable:
    columns = sorted({t.partition("=")[0] for tokens in features.values() for t in tokens})
    return FeatureTable(id_column, tuple(columns), list(features), list(features.values()))


class Retrainer:
    def __init__(
        self,
        service: RecommenderService,
        registry: ModelRegistry,
        config: TrainConfig,
        *,
        interval_seconds: float | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self.config = config
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def retrain_now(self, *, force: bool = False) -> str | None:
        """Train on everything stored so far and swap it in; returns the new version, or
        None when there was nothing new (unless ``force``)."""
        with self._lock:
            store = self.service.store
            watermark = store.last_seq()
            if not force and watermark <= self.service.state.watermark_seq:
                return None
            interactions = store_interactions(store, watermark)
            if len(interactions) == 0:
                return None
            model = HybridModel.train(
                interactions,
                self.config,
                items=store_features(store.item_features(), "item_id"),
                users=store_features(store.user_features(), "user_id"),
            )
            version = self.registry.save(model, watermark)
            self.service.swap(load_state(Path(self.registry.root) / version))
            log.info(
                "model %s trained on %d events (through seq %d) is now serving",
                version,
                len(interactions),
                watermark,
            )
            return version

    def start(self) -> None:
        if self.interval_seconds is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="shelfrank-retrainer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.interval_seconds or 0.0
        while not self._stop.wait(interval):
            try:
                self.retrain_now()
            except Exception:  # keep serving the previous model; the next round retries
                log.exception("retraining failed; the previous model keeps serving")

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
