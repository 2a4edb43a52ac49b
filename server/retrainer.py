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

from shelfrank.core.errors import InvalidInputError, ModelFileError
from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.bootstrap import FirstModelPolicy
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.registry import ModelRegistry
from shelfrank.server.service import RecommenderService, TrackOutcome
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import EventStore
from shelfrank.server.trainer_lease import TrainerLease

log = logging.getLogger("shelfrank.retrainer")


def store_interactions(store: EventStore, up_to_seq: int) -> Interactions:
    """Every stored event up to ``up_to_seq`` in event-time order (timestamp, then id), not
    arrival order: however the same events arrived, training sees the same sequence (with
    one thread and a seed, the same model; tests/test_replay_order.py)."""
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
    rows.sort(key=lambda row: (row[3], row[5]))
    return Interactions.from_rows(rows)


def store_features(features: dict[str, tuple[str, ...]], id_column: str) -> FeatureTable:
    columns = sorted({t.partition("=")[0] for tokens in features.values() for t in tokens})
    return FeatureTable(id_column, tuple(columns), list(features), list(features.values()))


class Retrainer:
    """Incremental rounds (``fit_partial`` on top of the serving model, growing it for new
    users, items and tokens) every ``interval_seconds``, a full retrain every
    ``full_every`` rounds, on demand (:meth:`retrain_now` with ``full=True``; SIGUSR1 on
    ``shelfrank serve``), and whenever a user was erased since the serving model was
    trained (continuing would keep the erased user's learned parameters).

    Before the first model, it watches Track (it is a service observer) and trains the
    first model in the background once the store is ready by ``first_model``."""

    def __init__(
        self,
        service: RecommenderService,
        registry: ModelRegistry,
        config: TrainConfig,
        *,
        interval_seconds: float | None = None,
        incremental_epochs: int = 5,
        full_every: int = 12,
        first_model: FirstModelPolicy | None = None,
        lease: TrainerLease | None = None,
        enabled: bool = True,
    ) -> None:
        if incremental_epochs < 1 or full_every < 1:
            raise InvalidInputError("incremental_epochs and full_every: must be >= 1")
        self.service = service
        self.registry = registry
        self.config = config
        self.interval_seconds = interval_seconds
        self.incremental_epochs = incremental_epochs
        self.full_every = full_every
        self.first_model = first_model or FirstModelPolicy()
        # With a lease, this process trains only while it holds it (one trainer per store).
        self.lease = lease
        # False in a process that never trains (``serve --role server``).
        self.enabled = enabled
        self.rounds = 0
        self.last_kind = ""
        self._first_training: threading.Thread | None = None
        # Events stored when a first training failed: the next try waits for 10% more.
        self._first_failed_at = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def retrain_now(self, *, full: bool | None = None, force: bool = False) -> str | None:
        """Train on everything stored so far and swap it in; returns the new version, or
        None when there was nothing new (unless ``force`` or ``full``)."""
        if not self.enabled:
            return None
        with self._lock:
            if self.lease is not None and not self.lease.acquire():
                return None  # another process is the trainer
            store = self.service.store
            state = self.service.state
            # Erasures first: one committed while the events are read is after the mark,
            # and its user is not served this model's trained vector.
            erasures = store.last_erasure()
            watermark = store.last_seq()
            # An erasure since the serving model was trained is reason enough: the model
            # still holds the erased user's learned vector until it is retrained without it.
            erased_since = erasures > state.erasures_through
            nothing_new = watermark <= state.watermark_seq and not erased_since
            if not force and not full and nothing_new:
                return None
            if not state.trained and not force and not self.first_model.ready(store.counts()):
                return None  # too little data for a first model: popularity serves on
            interactions = store_interactions(store, watermark)
            if len(interactions) == 0:
                return None
            log.info("training on %d events through seq %d", len(interactions), watermark)
            items = store_features(store.item_features(), "item_id")
            users = store_features(store.user_features(), "user_id")
            self.rounds += 1
            previous = self._previous_model() if full is not True else None
            scheduled_full = self.rounds % self.full_every == 0
            if previous is None or erased_since or scheduled_full or full:
                model = HybridModel.train(interactions, self.config, items=items, users=users)
                self.last_kind = "full"
            else:
                model = previous.continued(
                    interactions, items=items, users=users, epochs=self.incremental_epochs
                )
                self.last_kind = "incremental"
            version = self.registry.save(
                model, watermark, erasures_through=erasures, activate=False
            )
            # Loaded before it becomes current: a version that cannot load (a bad disk, a
            # bug) is never served nor restarted into; the previous one keeps serving.
            state = self.registry.load(version)
            pointer = self.registry.activate(
                version, lease=self.lease.key if self.lease is not None else None
            )
            self.service.swap(state, published=pointer.published)
            log.info(
                "%s retrain: model %s on %d events (through seq %d) is now serving",
                self.last_kind,
                version,
                len(interactions),
                watermark,
            )
            return version

    # -- the first model ----------------------------------------------------------------------
    def on_track(self, outcome: TrackOutcome) -> None:
        if outcome.accepted and not self.service.state.trained:
            self.train_first_when_ready()

    def on_state(self, state: ServingState) -> None:
        pass

    def train_first_when_ready(self) -> bool:
        """Starts training the first model in the background when there is none, none is
        training and the store holds enough data; whether it started one."""
        if not self.enabled or self.service.state.trained or self._stop.is_set():
            return False
        running = self._first_training
        if running is not None and running.is_alive():
            return False
        store = self.service.store
        # Seqs are never reused, so the last one bounds the number of events: below the
        # threshold, the full count (a scan on every Track) is not needed.
        if store.last_seq() < self.first_model.events:
            return False
        counts = store.counts()
        if not self.first_model.ready(counts) or counts.events < self._first_failed_at * 1.1:
            return False
        thread = threading.Thread(
            target=self._train_first, args=(counts.events,), name="shelfrank-first-model"
        )
        thread.daemon = True
        self._first_training = thread
        thread.start()
        return True

    def _train_first(self, events: int) -> None:
        log.info("the store holds %d events: training the first model", events)
        try:
            self.retrain_now(full=True)
        except Exception:
            self._first_failed_at = events
            log.exception("training the first model failed; popularity keeps serving")

    def wait_for_first_model(self, timeout: float | None = None) -> bool:
        """Waits for a first training in progress; whether a model now serves."""
        running = self._first_training
        if running is not None:
            running.join(timeout)
        return self.service.state.trained

    def _previous_model(self) -> HybridModel | None:
        version = self.registry.current_version()
        if version is None:
            return None
        try:
            return HybridModel.load(self.registry.local_copy(version))
        except ModelFileError:
            log.exception("cannot continue model %s; training from scratch", version)
            return None

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
        for thread in (self._thread, self._first_training):
            if thread is not None:
                thread.join(timeout)
        if self.lease is not None:
            self.lease.release()
