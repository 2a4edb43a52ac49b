"""The typed service layer: every business rule of the online server lives here.

gRPC servicers only validate, translate and call this class.

Concurrency model
-----------------
- ``ServingState`` (model + filter index + metadata) is immutable. Requests read
  ``self._state`` once and use that snapshot throughout. Writers (item upserts, user
  erasure, model swaps) build a new snapshot and publish it with one reference
  assignment, serialised by ``_publish_lock``; nothing ever blocks a reader.
- Events are made durable by the :class:`EventStore` (its own writer lock) *before* the
  in-memory per-user record (:class:`LiveUsers`, copy-on-write records under a lock) is
  updated, so Track returns only after both: the next Recommend reads its own writes.
- Fold-in vectors are cached per user with what they were computed from (model snapshot,
  number of fresh events, profile); any change misses and replaces the entry, so a cached
  vector is never stale and the cache holds one vector per active user.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cachetools import LRUCache

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType, StoredEvent, user_id_of
from shelfrank.core.scoring import top_k
from shelfrank.core.serving import UserVector
from shelfrank.server.bootstrap import read_state_without_model, with_new_events
from shelfrank.server.live import LiveUsers, UserLive
from shelfrank.server.rate_limit import RateLimiter
from shelfrank.server.requests import (
    MAX_BATCH,
    EventLimits,
    EventRow,
    NotFoundError,
    RankQuery,
    RateLimitedError,
    RecommendQuery,
    SimilarQuery,
    TooLargeError,
    check_id,
    check_tokens,
    validate_events,
)
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import EventStore

# What a cached user vector was computed from: snapshot (and erasure), fresh events, profile.
VectorStamp = tuple[str, int, tuple[str, ...]]


@dataclass(frozen=True, kw_only=True)
class Scored:
    items: tuple[tuple[str, float], ...]
    model_version: str
    recommendation_id: str
    strategy: str  # trained | fold-in | features | popularity | item


@dataclass(frozen=True)
class TrackOutcome:
    accepted: int
    duplicates: int
    errors: tuple[tuple[int, str], ...]


@dataclass(frozen=True, kw_only=True)
class Info:
    model_version: str
    trained_at_ms: int
    users: int
    items: int
    stored_events: int


class ServiceObserver(Protocol):
    """Told about outcomes (metrics, logs); must be quick and must not raise."""

    def on_track(self, outcome: TrackOutcome) -> None: ...

    def on_state(self, state: ServingState) -> None: ...


def _erased_errors(
    events: Sequence[EventRow],
    errors: Sequence[tuple[int, str]],
    valid: Sequence[StoredEvent],
    erased: Sequence[int],
) -> list[tuple[int, str]]:
    """Errors for the valid events (positions in ``valid``) the store refused as erased,
    at their positions in ``events``."""
    invalid = {index for index, _ in errors}
    positions = [i for i in range(len(events)) if i not in invalid]
    return [
        (
            positions[v],
            f"user_id {valid[v].user_id!r}: erased on the server after this sender's last "
            "purge (erasure_seen); purge the user's data and sync again",
        )
        for v in erased
    ]


class RecommenderService:
    def __init__(
        self,
        store: EventStore,
        state: ServingState,
        *,
        vector_cache: int = 100_000,
        limits: EventLimits | None = None,
        scoring_threads: int = 1,
    ):
        self._store = store
        self._state = state
        self.observers: list[ServiceObserver] = []
        self._publish_lock = threading.Lock()
        self._live = LiveUsers(store.user_history)
        self._profiles = store.user_features()
        self._profiles_lock = threading.Lock()
        # One entry per user (the newest vector and what it was computed from): memory
        # follows active users, not events.
        self._vectors: LRUCache[str, tuple[VectorStamp, UserVector]] = LRUCache(
            maxsize=vector_cache
        )
        self._vectors_lock = threading.Lock()
        if scoring_threads < 1:
            raise InvalidInputError(f"scoring_threads: must be at least 1, got {scoring_threads}")
        # Searches run at most this many at a time. The numpy search is dozens of numpy
        # calls, each handing the GIL around; many at once on few cores convoy
        # (benchmarks/RESULTS.md: 1 at a time served 1.6x the calls/s of 16 at 32 clients).
        # The compiled search is one call without the GIL; for it the limit made no
        # difference beyond noise (1 vs 16 at 32 clients: 48-63% vs 55-64% of the floor).
        self._scoring = threading.BoundedSemaphore(scoring_threads)
        limits = limits or EventLimits()
        self._per_user = (
            RateLimiter(limits.per_user_rate, limits.per_user_burst)
            if limits.per_user_rate and limits.per_user_burst
            else None
        )
        self._per_connection = (
            RateLimiter(limits.per_connection_rate, limits.per_connection_burst)
            if limits.per_connection_rate and limits.per_connection_burst
            else None
        )

    # -- state --------------------------------------------------------------------------------
    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def store(self) -> EventStore:
        return self._store

    def current_state(self) -> ServingState:
        """The state a read uses: the published one, and before the first model, brought
        up to date with the events stored since (by this process or any other)."""
        state = self._state
        if state.trained:
            return state
        with self._publish_lock:
            state = self._state
            if not state.trained:
                updated = with_new_events(state, self._store)
                if updated is not state:
                    self._state = state = updated
        return state

    def swap(self, state: ServingState) -> None:
        """Publish a new model snapshot (atomic for readers). Erasures and catalogue changes
        made while the new model was trained are carried over to it: the catalogue is
        re-read from the store, the source of truth."""
        with self._publish_lock:
            current = self._state
            carried = state.with_erased_users(
                u for u in current.erased_users if u in state.model.user_ids
            ).with_catalogue(self._store.iter_item_features())
            self._state = carried
        self._live.clear()
        self._notify_state()

    def _notify_state(self) -> None:
        for observer in self.observers:
            observer.on_state(self._state)

    # -- reads --------------------------------------------------------------------------------
    def _user(
        self, state: ServingState, user_id: str, features: Sequence[str]
    ) -> tuple[UserVector, UserLive]:
        live = self._live.get(user_id, state.watermark_seq)
        if not state.trained:  # no model yet: everyone sees what is popular
            return UserVector(None, 0.0, "popularity"), live
        with self._profiles_lock:
            tokens = tuple(features) or self._profiles.get(user_id, ())
        # Everything the vector depends on is in the stamp, so a cached one is never stale.
        stamp: VectorStamp = (
            f"{state.snapshot_version}:{user_id in state.erased_users}",
            len(live.fresh_items),
            tokens,
        )
        with self._vectors_lock:
            cached = self._vectors.get(user_id)
        if cached is not None and cached[0] == stamp:
            return cached[1], live
        model = state.model
        weights_by_type = state.config.event_weights
        rows: list[int] = []
        weights: list[float] = []
        for item_id, event_type in zip(live.fresh_items, live.fresh_types, strict=True):
            row = model.item_ids.get(item_id)
            if row is None:
                continue
            rows.append(row)
            if event_type is EventType.DISMISS:
                weights.append(-weights_by_type[EventType.VIEW])
            else:
                weights.append(weights_by_type[event_type])
        vector = model.user_vector(
            user_id,
            tokens=tokens,
            history_rows=np.array(rows, dtype=np.int64),
            history_weights=np.array(weights, dtype=np.float32),
            use_trained=user_id not in state.erased_users,
        )
        with self._vectors_lock:
            self._vectors[user_id] = (stamp, vector)
        return vector, live

    def user_vector(self, state: ServingState, user_id: str) -> UserVector:
        """The user's current vector (what Recommend would use, without request features)."""
        vector, _ = self._user(state, user_id, ())
        return vector

    def recommend(self, query: RecommendQuery) -> Scored:
        state = self.current_state()
        model = state.model
        user, live = self._user(state, query.user_id, query.user_features)
        excluded = set(query.exclude_item_ids)
        if query.exclude_seen:
            excluded |= live.consumed
        exclude = model.item_rows(sorted(excluded))
        mask = state.features.allowed(query.filters, query.exclude_features)
        with self._scoring:
            top = model.rank(
                user,
                query.k,
                exclude=exclude,
                allowed=mask,
                mode="new" if query.exclude_seen else "repeat",
            )
        return self._scored(state, top.indices, top.scores, user.source)

    def similar_items(self, query: SimilarQuery) -> Scored:
        state = self.current_state()
        model = state.model
        row = model.item_ids.get(query.item_id)
        if row is None:
            raise NotFoundError(f"item_id: unknown item {query.item_id!r}")
        if not state.trained:
            return self._popular_besides(state, row, query)
        vectors, norms = model.items.item_vectors, model.items.norms
        scores = (vectors @ vectors[row]) / (norms * norms[row])
        exclude = np.union1d(model.item_rows(query.exclude_item_ids), [row])
        mask = state.features.allowed(query.filters, query.exclude_features)
        candidates = np.flatnonzero(mask) if mask is not None else None
        top = top_k(scores, query.k, exclude=exclude, candidates=candidates)
        return self._scored(state, top.indices, top.scores, "item")

    def _popular_besides(self, state: ServingState, row: int, query: SimilarQuery) -> Scored:
        """Before the first model nothing is known about similarity: the popular items,
        said so by the strategy."""
        model = state.model
        exclude = np.union1d(model.item_rows(query.exclude_item_ids), [row])
        mask = state.features.allowed(query.filters, query.exclude_features)
        candidates = np.flatnonzero(mask) if mask is not None else None
        top = top_k(model.item_popularity, query.k, exclude=exclude, candidates=candidates)
        return self._scored(state, top.indices, top.scores, "popularity")

    def rank(self, query: RankQuery) -> Scored:
        state = self.current_state()
        model = state.model
        user, _ = self._user(state, query.user_id, query.user_features)
        known = [(i, model.item_ids.get(i)) for i in dict.fromkeys(query.item_ids)]
        rows = np.array([r for _, r in known if r is not None], dtype=np.int64)
        # Nothing is excluded from a list to rank, so the blend's repeat mode orders it.
        scores = model.scores_of(user, rows, mode="repeat")
        order = np.lexsort((rows, -scores))
        ranked = [(model.item_ids.id_of(int(rows[i])), float(scores[i])) for i in order]
        ranked += [(item, float("-inf")) for item, r in known if r is None]  # unknown: last
        return Scored(
            items=tuple(ranked),
            model_version=state.model_version,
            recommendation_id=uuid.uuid4().hex,
            strategy=user.source,
        )

    def _scored(
        self, state: ServingState, rows: np.ndarray, scores: np.ndarray, strategy: str
    ) -> Scored:
        names = state.model.item_ids.ids
        # tolist() makes Python ints and floats in C; a loop over numpy scalars is slower.
        items = tuple(zip([names[r] for r in rows.tolist()], scores.tolist(), strict=True))
        return Scored(
            items=items,
            model_version=state.model_version,
            recommendation_id=uuid.uuid4().hex,
            strategy=strategy,
        )

    def info(self) -> Info:
        state = self.current_state()
        known_users = sum(1 for u in state.erased_users if u in state.model.user_ids)
        return Info(
            model_version=state.model_version,
            trained_at_ms=state.trained_at_ms,
            users=len(state.model.user_ids) - known_users,
            items=len(state.model.items),
            stored_events=self._store.counts().events,
        )

    # -- writes -------------------------------------------------------------------------------
    def track(
        self,
        events: Sequence[EventRow],
        *,
        connection: str = "",
        erasure_seen: int | None = None,
    ) -> TrackOutcome:
        """Store events durably, then make them count at once (read-your-writes).

        ``events`` are IncomingEvents or plain rows of the same fields.
        ``connection`` names the caller's connection for its rate limit. Over a user's or
        the connection's event rate, nothing is stored and RateLimitedError is raised.
        ``erasure_seen``: see EventStore.append_events; refused events are errors."""
        if not events:
            raise InvalidInputError("events: must not be empty")
        if len(events) > MAX_BATCH:
            raise TooLargeError(f"events: at most {MAX_BATCH} per request, got {len(events)}")
        valid, errors = validate_events(events, int(time.time() * 1000))
        self._check_rates(valid, connection)
        # Durable before anything else.
        result = self._store.append_events(valid, erasure_seen=erasure_seen)
        if result.erased:
            errors = sorted(errors + _erased_errors(events, errors, valid, result.erased))
        accepted = (
            valid
            if len(result.accepted) == len(valid)
            else [valid[position] for position in result.accepted]
        )
        self._live.record(accepted, result.seqs, self._state.watermark_seq)
        outcome = TrackOutcome(len(result.accepted), len(result.duplicates), tuple(errors))
        for observer in self.observers:
            observer.on_track(outcome)
        return outcome

    def _check_rates(self, events: Sequence[StoredEvent], connection: str) -> None:
        if not events:
            return
        per_connection = self._per_connection if connection else None
        if (
            per_connection is not None
            and per_connection.take_all({connection: len(events)}) is not None
        ):
            raise RateLimitedError(
                f"events: more than {per_connection.rate:g}/s on this connection; retry later"
            )
        if self._per_user is not None:
            over = self._per_user.take_all(Counter(map(user_id_of, events)))
            if over is not None:
                if per_connection is not None:  # refused: the connection is not charged
                    per_connection.give_back({connection: len(events)})
                raise RateLimitedError(
                    f"events: more than {self._per_user.rate:g}/s for user_id {over!r}; retry later"
                )

    def upsert_items(self, items: Sequence[tuple[str, Sequence[str]]]) -> int:
        checked = self._checked_entities(items, "items", "item_id")
        self._store.upsert_items(checked)
        with self._publish_lock:
            self._state = self._state.with_items(dict(checked))
        self._notify_state()
        return len(checked)

    def upsert_users(self, users: Sequence[tuple[str, Sequence[str]]]) -> int:
        checked = self._checked_entities(users, "users", "user_id")
        self._store.upsert_users(checked)
        with self._profiles_lock:
            for user_id, tokens in checked:
                self._profiles[user_id] = tokens
        return len(checked)

    @staticmethod
    def _checked_entities(
        entities: Sequence[tuple[str, Sequence[str]]], field: str, id_field: str
    ) -> list[tuple[str, tuple[str, ...]]]:
        if not entities:
            raise InvalidInputError(f"{field}: must not be empty")
        if len(entities) > MAX_BATCH:
            raise TooLargeError(f"{field}: at most {MAX_BATCH} per request, got {len(entities)}")
        return [
            (
                check_id(entity, f"{field}[{i}].{id_field}"),
                check_tokens(tokens, f"{field}[{i}].features"),
            )
            for i, (entity, tokens) in enumerate(entities)
        ]

    def delete_user(self, user_id: str) -> tuple[bool, int]:
        check_id(user_id, "user_id")
        existed, deleted = self._store.delete_user(user_id)
        with self._profiles_lock:
            self._profiles.pop(user_id, None)
        with self._publish_lock:
            state = self._state
            in_model = user_id in state.model.user_ids and user_id not in state.erased_users
            if in_model:
                self._state = state.with_erased_user(user_id)
            elif not state.trained and deleted:
                # The user's events no longer count: popularity is counted afresh.
                self._state = read_state_without_model(self._store, state.config)
        self._live.forget(user_id)  # after publishing: no reload can see the old state
        with self._vectors_lock:
            self._vectors.pop(user_id, None)
        return existed or in_model, deleted
