"""The typed service layer: every business rule of the online server lives here.

gRPC servicers only validate, translate and call this class.

Concurrency model
-----------------
- ``ServingState`` (model + filter index + metadata) is immutable. Requests read
  ``self._state`` once and use that snapshot throughout. Writers (item upserts, user
  erasure, model swaps) build a new snapshot and publish it with one reference
  assignment, serialised by ``_publish_lock``; nothing ever blocks a reader.
- The store is the only truth shared between processes. Track returns once the store has
  committed; every read re-validates what it uses against the store in one indexed read
  (the user's events after those already counted, latest erasure and profile, and the
  catalogue revision: :class:`LiveUsers`), so the next Recommend served by any process
  sharing the store reads the writes of every other (stateless serving).
- Fold-in vectors are cached per user with what they were computed from (model snapshot,
  number of fresh events, profile); any change misses and replaces the entry, so a cached
  vector is never stale and the cache holds one vector per active user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from cachetools import LRUCache

from shelfrank.core.blend import Mode
from shelfrank.core.errors import InvalidInputError, InvariantError, StorageError, UnknownIdError
from shelfrank.core.events import EventType, StoredEvent, user_id_of
from shelfrank.core.explain import (
    DEFAULT_TOP,
    Explanation,
    explain_scores,
    explain_similar,
    summarise,
)
from shelfrank.core.ranking import (
    PLAIN,
    Steering,
    candidate_mask,
    model_facts,
    rank,
)
from shelfrank.core.scoring import TopK, top_k
from shelfrank.core.serving import UserVector
from shelfrank.server.bootstrap import read_state_without_model, with_new_events
from shelfrank.server.feedback.loop import Arm, FeedbackLoop
from shelfrank.server.feedback.report import FeedbackReport
from shelfrank.server.live import CONSUMED, MAX_RECENT, LiveUsers, UserLive
from shelfrank.server.rate_limit import RateLimiter
from shelfrank.server.requests import (
    MAX_BATCH,
    EventLimits,
    EventRow,
    FailedPreconditionError,
    IncomingEvent,
    NotFoundError,
    RankQuery,
    RateLimitedError,
    RecommendQuery,
    SimilarQuery,
    TooLargeError,
    check_id,
    check_list,
    check_tokens,
    validate_event,
    validate_events,
)
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import (
    AuditEntry,
    AvailabilityResult,
    EvaluationInfo,
    EventStore,
    Impression,
    ReplicaSample,
    UserView,
)
from shelfrank.server.trainer_lease import LEASE_NAME

log = logging.getLogger("shelfrank.service")
# What an experiment's popularity variant serves every user: the model's popularity (the
# blend's recent popularity where the model has one), seen items still excluded.
POPULARITY_USER = UserVector(None, 0.0, "popularity")
DEGRADED_LOG_SECONDS = 10.0  # at most one warning this often while the store is away

# What a cached user vector was computed from: snapshot, erasures, fresh events, profile.
VectorStamp = tuple[str, int, tuple[str, ...]]

# Who changed something by hand when no tokens are configured (nobody is named).
ANONYMOUS = "anonymous"
DAY_MS = 24 * 3600 * 1000
# An item's insight counts the shows and clicks of this many UTC days, today's included.
ITEM_WINDOW_DAYS = 7
# The overview's load samples: the last hour of every replica's.
OVERVIEW_SAMPLES_MS = 3600 * 1000


def check_batch(count: int, field: str) -> None:
    """A request's list of at most MAX_BATCH entries (TooLargeError naming ``field``)."""
    if count > MAX_BATCH:
        raise TooLargeError(f"{field}: at most {MAX_BATCH} per request, got {count}")


@dataclass(frozen=True, kw_only=True)
class Scored:
    items: tuple[tuple[str, float], ...]
    model_version: str
    recommendation_id: str
    strategy: str  # trained | fold-in | features | popularity | item
    # Per item: whether it fills an exploration slot (empty: none did).
    explored: tuple[bool, ...] = ()
    # Per item, when the request asked to explain (core/explain.py).
    explanations: tuple[Explanation, ...] = ()
    # The experiment and variant that served the response ("": none applied).
    experiment: str = ""
    variant: str = ""


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


def _with_events(live: UserLive, events: Sequence[StoredEvent]) -> UserLive:
    """The user's record as if ``events`` had been tracked after everything stored (a
    what-if: fresh events folded in, purchases and dismissals excluded, recent ones
    reachable by the seen filter)."""
    return replace(
        live,
        fresh_items=live.fresh_items + tuple(e.item_id for e in events),
        fresh_types=live.fresh_types + tuple(e.event_type for e in events),
        consumed=live.consumed | {e.item_id for e in events if e.event_type in CONSUMED},
        recent=(live.recent + tuple((e.item_id, e.event_type, e.timestamp_ms) for e in events))[
            -MAX_RECENT:
        ],
    )


@dataclass(frozen=True, kw_only=True)
class ItemRecord:
    """An item as served now: its tokens and availability."""

    item_id: str
    tokens: tuple[str, ...]
    available: bool


@dataclass(frozen=True, kw_only=True)
class ItemInsight:
    """An item as the dashboard shows it: as served now; ``shown``: the stored responses
    (served, else reported shown) that held it, ``clicked``: the views of it carrying the
    id of such a response, both over the last ``window_days`` UTC days (today's included),
    counted by the store as it writes them (EventStore.item_feedback). Not the feedback
    report's attribution: views without a recommendation id, which the report attributes
    by its time window, are not counted, so ``clicked`` is mostly below the report's
    attributed clicks. ``audit``: the latest changes made to it by hand, newest first."""

    item: ItemRecord
    shown: int
    clicked: int
    window_days: int
    audit: tuple[AuditEntry, ...]


@dataclass(frozen=True, kw_only=True)
class UserLook:
    """A shopper as the dashboard shows them: stored events and profile, and the explained
    recommendations Recommend would serve them now (a look: nothing recorded)."""

    view: UserView
    recommendations: Scored


@dataclass(frozen=True)
class WhatIf:
    """The recommendations before and after hypothetical events and features, ranked with
    one exploration key so that only the hypothesis tells them apart."""

    before: Scored
    after: Scored


@dataclass(frozen=True, kw_only=True)
class Overview:
    """What serves, who trains, how much is stored, how each replica fared lately."""

    model_version: str | None  # None: no model yet (popularity serves)
    # When the serving model was published: its training time (a model is published when
    # trained or imported; the store keeps no other time). None: no model, or unknown.
    published_ms: int | None
    trained: bool
    users: int  # users with stored events
    items: int  # items served (the model's and the catalogue's)
    available_items: int
    events: int  # stored events
    trainer: str | None  # the trainer lease's holder (None: nobody)
    samples: tuple[ReplicaSample, ...]  # the last hour's, by (replica, time)


@dataclass(frozen=True)
class Evaluation:
    """A stored evaluation run and its parsed ``report.json`` (None: the run has none)."""

    info: EvaluationInfo
    report: object


class RecommenderService:
    def __init__(
        self,
        store: EventStore,
        state: ServingState,
        *,
        vector_cache: int = 100_000,
        limits: EventLimits | None = None,
        scoring_threads: int = 1,
        published: int = 0,
        steering: Steering = PLAIN,
        feedback: FeedbackLoop | None = None,
    ):
        self._store = store
        # Experiments, impressions and reports (None: no variant, nothing recorded).
        self.feedback = feedback
        # What a Recommend that leaves a steering field out gets (e.g. an exploration share).
        self.default_steering = steering
        # Contributions kept per explanation (the rest is summed up in one number).
        self.explain_top = DEFAULT_TOP
        if state.trained:  # the catalogue as the store has it now, not as when trained
            revision, catalogue = store.catalogue_changes(state.catalogue_through)
            state = state.with_catalogue(catalogue, revision=revision)
        self._state = state
        self._published = published
        self.observers: list[ServiceObserver] = []
        self._publish_lock = threading.Lock()
        self._live = LiveUsers(store.user_view)
        # One entry per user (the newest vector and what it was computed from): memory
        # follows active users, not events.
        self._vectors: LRUCache[str, tuple[VectorStamp, UserVector]] = LRUCache(
            maxsize=vector_cache
        )
        self._vectors_lock = threading.Lock()
        # Model versions experiment variants pin, loaded on first use.
        self._pinned: dict[str, ServingState] = {}
        self._pinned_lock = threading.Lock()
        self._pinned_refresh_lock = threading.Lock()
        self._known_users: tuple[tuple[str, int, int], int] | None = None
        self._degraded_logged = -DEGRADED_LOG_SECONDS
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

    def current_state(self, catalogue_revision: int | None = None) -> ServingState:
        """The state a read uses: the published one, brought up to date with the store's
        catalogue (when ``catalogue_revision``, read by the caller, or the store's own is
        newer) and, before the first model, with the events and erasures stored since
        (by this process or any other)."""
        state = self._state
        if state.trained and (
            catalogue_revision is None or catalogue_revision <= state.catalogue_through
        ):
            return state
        with self._publish_lock:
            state = self._state
            if not state.trained:
                updated = (
                    read_state_without_model(self._store, state.config)
                    if self._store.last_erasure() > state.erasures_through
                    else with_new_events(state, self._store)
                )
                if catalogue_revision is None:
                    catalogue_revision = self._store.catalogue_changes(updated.catalogue_through)[0]
            else:
                updated = state
            if catalogue_revision is not None and catalogue_revision > updated.catalogue_through:
                revision, changes = self._store.catalogue_changes(updated.catalogue_through)
                updated = updated.with_catalogue(changes, revision=revision)
            if updated is not state:
                self._state = state = updated
                changed = True
            else:
                changed = False
        if changed:
            self._notify_state()
        return state

    @property
    def published(self) -> int:
        """The store's publication number of the model serving (0: none from the store)."""
        return self._published

    def swap(self, state: ServingState, *, published: int = 0) -> bool:
        """Serve a new model (atomic for readers), with the store's catalogue (the source
        of truth: items upserted while it was trained are carried over). ``published``:
        its publication number in the store; an older one than serving is not swapped in
        (two paths may deliver models out of order). Whether it was swapped in."""
        if published and published < self._published:
            return False
        revision, catalogue = self._store.catalogue_changes()
        caught_up = state.with_catalogue(catalogue, revision=revision)
        with self._publish_lock:
            if published and published < self._published:
                return False
            self._state = caught_up
            self._published = max(self._published, published)
        self._live.clear()
        self._notify_state()
        return True

    def _notify_state(self) -> None:
        for observer in self.observers:
            observer.on_state(self._state)

    # -- reads --------------------------------------------------------------------------------
    def _user(
        self,
        user_id: str,
        features: Sequence[str],
        pinned: str | None = None,
        *,
        hypothetical: Sequence[StoredEvent] = (),
    ) -> tuple[ServingState, UserVector, UserLive]:
        """The state to serve from, the user's vector and record, up to date with the
        store (the user's view read first: its catalogue revision may move the state).
        ``pinned``: a model version an experiment variant serves instead of the current.
        ``hypothetical``: events counted as if tracked after the stored ones (a what-if:
        the record and vector so made are not cached)."""
        try:
            base = self._state if pinned is None else self._pinned_state(pinned, None)
            live, view = self._live.get(user_id, base.watermark_seq)
        except StorageError:
            return self._unpersonalised(user_id, features)
        if pinned is None:
            state = self.current_state(view.catalogue_revision)
        else:
            try:
                state = self._pinned_state(pinned, view.catalogue_revision)
            except StorageError:
                return self._unpersonalised(user_id, features)
        if live.watermark_seq != state.watermark_seq:  # a new model was published meanwhile
            live, _ = self._live.get(user_id, state.watermark_seq)
        if hypothetical:
            live = _with_events(live, hypothetical)
        if not state.trained:  # no model yet: everyone sees what is popular
            return state, UserVector(None, 0.0, "popularity"), live
        tokens = tuple(features) or live.profile
        use_trained = state.uses_trained_vector(live.latest_erasure)
        # Everything the vector depends on is in the stamp, so a cached one is never stale.
        # The user's latest erasure too: another process's erasure clears only its own
        # cache, and a user erased again who comes back with as many events would match.
        stamp: VectorStamp = (
            f"{state.snapshot_version}:{use_trained}:{live.latest_erasure}",
            len(live.fresh_items),
            tokens,
        )
        # A what-if's vector is not the user's: the stamp (a count of fresh events) cannot
        # tell it apart, so it neither reads nor replaces the cached one.
        cached = None
        if not hypothetical:
            with self._vectors_lock:
                cached = self._vectors.get(user_id)
        if cached is not None and cached[0] == stamp:
            return state, cached[1], live
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
            use_trained=use_trained,
        )
        if not hypothetical:
            with self._vectors_lock:
                self._vectors[user_id] = (stamp, vector)
        return state, vector, live

    def _pinned_state(self, version: str, catalogue_revision: int | None) -> ServingState:
        """A pinned model version, loaded once (a verified local copy of the stored
        version) and kept up to date with the store's catalogue like the current one.
        Versions no variant pins any more are dropped at the next load or refresh."""
        with self._pinned_lock:
            state = self._pinned.get(version)
        if state is not None and (
            catalogue_revision is None or catalogue_revision <= state.catalogue_through
        ):
            return state
        # One load or refresh at a time, so that an older catalogue never replaces a newer.
        with self._pinned_refresh_lock:
            with self._pinned_lock:
                state = self._pinned.get(version)
            if state is not None and (
                catalogue_revision is None or catalogue_revision <= state.catalogue_through
            ):
                return state  # refreshed by another thread meanwhile
            feedback = self.feedback
            if feedback is None or feedback.load_model is None:
                raise InvariantError(f"model {version!r} is pinned but nothing loads models")
            if state is None:
                state = feedback.load_model(version)
                revision, catalogue = self._store.catalogue_changes()
            else:
                revision, catalogue = self._store.catalogue_changes(state.catalogue_through)
            state = state.with_catalogue(catalogue, revision=revision)
            pinned = feedback.pinned_versions()
            with self._pinned_lock:
                for unpinned in [v for v in self._pinned if v not in pinned]:
                    del self._pinned[unpinned]
                self._pinned[version] = state
        return state

    def _catalogue_revision(self) -> int | None:
        """The store's catalogue revision, or None while the store cannot be read (the
        last known catalogue serves meanwhile)."""
        try:
            return self._store.catalogue_revision()
        except StorageError:
            return None

    def _unpersonalised(
        self, user_id: str, features: Sequence[str]
    ) -> tuple[ServingState, UserVector, UserLive]:
        """While the store cannot be read: the serving model and catalogue as last known,
        and nothing of the user that the store would have to confirm (no history, no
        profile, no trained vector: the user may have been erased meanwhile), so only
        request features or popularity. Served, not failed: reads recover by themselves."""
        now = time.monotonic()
        if now - self._degraded_logged > DEGRADED_LOG_SECONDS:
            self._degraded_logged = now
            log.warning("the store cannot be read: serving without personal data")
        state = self._state
        live = UserLive.read(
            UserView(last_seq=0, events=[], latest_erasure=0, profile=(), catalogue_revision=0),
            state.watermark_seq,
        )
        if not state.trained:
            return state, UserVector(None, 0.0, "popularity"), live
        vector = state.model.user_vector(
            user_id,
            tokens=tuple(features),
            history_rows=np.zeros(0, dtype=np.int64),
            history_weights=np.zeros(0, dtype=np.float32),
            use_trained=False,
        )
        return state, vector, live

    def user_vector(self, user_id: str) -> tuple[ServingState, UserVector]:
        """The state and the user's current vector in it (what Recommend would use,
        without request features)."""
        state, vector, _ = self._user(user_id, ())
        return state, vector

    def recommend(
        self,
        query: RecommendQuery,
        *,
        record: bool = True,
        hypothetical: Sequence[StoredEvent] = (),
    ) -> Scored:
        """The user's top ``query.k``. ``record=False``: a look (the dashboard's), not a
        response: no impression is recorded and nothing counts it as served.
        ``hypothetical``: see :meth:`what_if`."""
        now_ms = int(time.time() * 1000)
        arm = self._arm("recommend", query.user_id, now_ms)
        pinned = None if arm is None else arm.variant.pinned_version
        state, user, live = self._user(
            query.user_id, query.user_features, pinned, hypothetical=hypothetical
        )
        model = state.model
        if arm is not None and arm.popularity:
            user = POPULARITY_USER
        excluded = set(query.exclude_item_ids)
        if query.exclude_seen:
            excluded |= live.consumed
        if query.seen.event_types:
            since = now_ms - query.seen.within_ms if query.seen.within_ms else 0
            excluded |= live.touched(query.seen.event_types, since)
        exclude = model.item_rows(sorted(excluded))
        mask = candidate_mask(
            state.features,
            filters=query.filters,
            exclude_features=query.exclude_features,
            available=state.available,
        )
        mode: Mode = "new" if query.exclude_seen else "repeat"
        steering = query.steering(
            self.default_steering if arm is None else arm.steering(self.default_steering)
        )
        key = query.recommendation_id or uuid.uuid4().hex

        def best_of(count: int) -> TopK:
            with self._scoring:
                return model.rank(user, count, exclude=exclude, allowed=mask, mode=mode)

        if not steering.active:
            top = best_of(query.k)
            explores = None
        else:
            facts = model_facts(
                model,
                state.features,
                user,
                mode,
                candidates=mask,
                excluded=exclude,
                new=state.new_items,
                added_ms=state.added_ms,
                max_age_ms=steering.exploration_max_age_ms,
                now_ms=now_ms,
            )
            candidates = len(model.items) if mask is None else int(np.count_nonzero(mask))
            top, explores = rank(best_of, query.k, steering, facts, key, candidates=candidates)
        scored = self._scored(
            state, top.indices, top.scores, user.source, key=key, explores=explores, arm=arm
        )
        if record:
            self._served(scored, query.user_id, "recommend", arm, now_ms, live.latest_erasure)
        if not query.explain:
            return scored
        explained = explain_scores(
            model,
            query.user_id,
            user,
            top.indices,
            top.scores,
            mode=mode,
            explored=() if explores is None else explores.tolist(),
            trained_items=state.trained_items if state.trained else None,
            top=self.explain_top,
        )
        return replace(scored, explanations=tuple(explained))

    def look_key(self, user_id: str) -> str:
        """The exploration key of the dashboard's looks at a user: derived from the user
        and the serving model, so that a reload shows the same list (a fresh key per call
        would seed other exploration slots each time)."""
        seed = f"{user_id}\x00{self._state.model_version}".encode()
        return "look-" + hashlib.sha256(seed).hexdigest()[:32]

    def look(self, user_id: str, k: int) -> UserLook:
        """A user's stored record and explained recommendations, as Recommend would serve
        them now; a look, not a response: nothing recorded or counted as served.
        NotFoundError for a user nothing is known of (see :meth:`user_record`)."""
        query = RecommendQuery(
            user_id=user_id, k=k, explain=True, recommendation_id=self.look_key(user_id)
        )
        view = self.user_record(user_id)
        return UserLook(view=view, recommendations=self.recommend(query, record=False))

    def what_if(
        self, user_id: str, events: Sequence[EventRow], features: Sequence[str], k: int
    ) -> WhatIf:
        """The user's explained recommendations now (before) and had ``events`` (the
        user's) been tracked and ``features`` been given (after): validated as Track and
        Recommend validate them (errors name ``events[i].<field>``), both ranked with the
        key of :meth:`look` (exploration fills the same slots the same way), and nothing
        is stored, recorded or counted as served."""
        before_query = RecommendQuery(
            user_id=user_id, k=k, explain=True, recommendation_id=self.look_key(user_id)
        )
        after_query = replace(before_query, user_features=check_tokens(features, "features"))
        check_batch(len(events), "events")
        now_ms = int(time.time() * 1000)
        hypothetical: list[StoredEvent] = []
        for index, row in enumerate(events):
            try:
                event = validate_event(IncomingEvent._make(row), now_ms)
            except InvalidInputError as exc:
                raise type(exc)(f"events[{index}].{exc}") from None
            if event.user_id != user_id:
                raise InvalidInputError(
                    f"events[{index}].user_id: must be the user asked about ({user_id!r})"
                )
            hypothetical.append(event)
        self.user_record(user_id)
        before = self.recommend(before_query, record=False)
        after = self.recommend(after_query, record=False, hypothetical=hypothetical)
        return WhatIf(before, after)

    def similar_items(self, query: SimilarQuery, *, record: bool = True) -> Scored:
        """Items like ``query.item_id``. ``record=False``: a look, not a response (see
        :meth:`recommend`)."""
        now_ms = int(time.time() * 1000)
        arm = self._arm("similar", query.user_id, now_ms)
        state = self._similar_state(arm)
        model = state.model
        row = model.item_ids.get(query.item_id)
        if row is None:
            raise NotFoundError(f"item_id: unknown item {query.item_id!r}")
        if not state.trained or (arm is not None and arm.popularity):
            return self._popular_besides(state, row, query, arm, now_ms, record=record)
        vectors, norms = model.items.item_vectors, model.items.norms
        scores = (vectors @ vectors[row]) / (norms * norms[row])
        exclude = np.union1d(model.item_rows(query.exclude_item_ids), [row])
        mask = candidate_mask(
            state.features,
            filters=query.filters,
            exclude_features=query.exclude_features,
            available=state.available,
        )
        candidates = np.flatnonzero(mask) if mask is not None else None
        top = top_k(scores, query.k, exclude=exclude, candidates=candidates)
        scored = self._scored(state, top.indices, top.scores, "item", arm=arm)
        if record:
            self._served_similar(scored, query.user_id, arm, now_ms)
        if not query.explain:
            return scored
        explained = explain_similar(model, row, top.indices, top.scores, top=self.explain_top)
        return replace(scored, explanations=tuple(explained))

    def _similar_state(self, arm: Arm | None) -> ServingState:
        """The state SimilarItems ranks with: the variant's pinned version, else current."""
        revision = self._catalogue_revision()
        pinned = None if arm is None else arm.variant.pinned_version
        if pinned is not None:
            try:
                return self._pinned_state(pinned, revision)
            except StorageError:
                pass  # the current model serves until the store answers again
        return self.current_state(revision)

    def _served_similar(self, scored: Scored, user_id: str, arm: Arm | None, now_ms: int) -> None:
        """Record a SimilarItems response, under its shopper when the store can say the
        user's latest erasure (so that an erasure meanwhile drops it), else anonymously."""
        erasure_seen = None
        if user_id:
            try:
                erasure_seen = self._store.latest_erasure(user_id)
            except StorageError:
                user_id = ""
        self._served(scored, user_id, "similar", arm, now_ms, erasure_seen)

    def _popular_besides(
        self,
        state: ServingState,
        row: int,
        query: SimilarQuery,
        arm: Arm | None,
        now_ms: int,
        *,
        record: bool = True,
    ) -> Scored:
        """Before the first model nothing is known about similarity (and a popularity
        variant asks for it): the popular items, said so by the strategy."""
        model = state.model
        exclude = np.union1d(model.item_rows(query.exclude_item_ids), [row])
        mask = candidate_mask(
            state.features,
            filters=query.filters,
            exclude_features=query.exclude_features,
            available=state.available,
        )
        candidates = np.flatnonzero(mask) if mask is not None else None
        top = top_k(model.item_popularity, query.k, exclude=exclude, candidates=candidates)
        scored = self._scored(state, top.indices, top.scores, "popularity", arm=arm)
        if record:
            self._served_similar(scored, query.user_id, arm, now_ms)
        if not query.explain:
            return scored
        explained = [
            summarise({"signal:popularity": value}, value, "popular", (), self.explain_top)
            for value in top.scores.tolist()
        ]
        return replace(scored, explanations=tuple(explained))

    def rank(self, query: RankQuery) -> Scored:
        now_ms = int(time.time() * 1000)
        arm = self._arm("rank", query.user_id, now_ms)
        pinned = None if arm is None else arm.variant.pinned_version
        state, user, live = self._user(query.user_id, query.user_features, pinned)
        model = state.model
        if arm is not None and arm.popularity:
            user = POPULARITY_USER
        available = state.available
        known = [(i, model.item_ids.get(i)) for i in dict.fromkeys(query.item_ids)]
        # Unknown and unavailable items come last, in the order given, with score -inf.
        rankable = [
            (i, r) for i, r in known if r is not None and (available is None or available[r])
        ]
        rows = np.array([r for _, r in rankable], dtype=np.int64)
        # Nothing is excluded from a list to rank, so the blend's repeat mode orders it.
        scores = model.scores_of(user, rows, mode="repeat")
        order = np.lexsort((rows, -scores))
        ranked = [(model.item_ids.id_of(int(rows[i])), float(scores[i])) for i in order]
        placed = {item for item, _ in rankable}
        ranked += [(item, float("-inf")) for item, _ in known if item not in placed]
        explanations: tuple[Explanation, ...] = ()
        if query.explain:
            ordered = rows[order]
            explanations = tuple(
                explain_scores(
                    model,
                    query.user_id,
                    user,
                    ordered,
                    scores[order],
                    mode="repeat",
                    trained_items=state.trained_items if state.trained else None,
                    top=self.explain_top,
                )
            ) + tuple(
                Explanation("personalized", (), float("-inf"))  # unknown or unavailable
                for _ in range(len(ranked) - ordered.size)
            )
        scored = Scored(
            items=tuple(ranked),
            model_version=state.model_version,
            recommendation_id=uuid.uuid4().hex,
            strategy=user.source,
            explanations=explanations,
            experiment="" if arm is None else arm.experiment,
            variant="" if arm is None else arm.variant.name,
        )
        self._served(scored, query.user_id, "rank", arm, now_ms, live.latest_erasure)
        return scored

    # -- feedback -----------------------------------------------------------------------------
    def _arm(self, surface: str, user_id: str, now_ms: int) -> Arm | None:
        return None if self.feedback is None else self.feedback.arm(surface, user_id, now_ms)

    def _served(
        self,
        scored: Scored,
        user_id: str,
        surface: str,
        arm: Arm | None,
        now_ms: int,
        erasure_seen: int | None = None,
    ) -> None:
        if self.feedback is not None:
            self.feedback.served(
                recommendation_id=scored.recommendation_id,
                user_id=user_id,
                surface=surface,
                arm=arm,
                model_version=scored.model_version,
                item_ids=[item for item, _ in scored.items],
                now_ms=now_ms,
                erasure_seen=erasure_seen,
            )

    def report_shown(self, impressions: Sequence[Impression]) -> tuple[int, int]:
        """Store impressions callers or devices report shown: (newly stored, duplicates)."""
        if self.feedback is None or self.feedback.recorder is None:
            raise FailedPreconditionError("ReportShown: this server records no impressions")
        if not impressions:
            raise InvalidInputError("impressions: at least one is needed")
        if len(impressions) > MAX_BATCH:
            raise TooLargeError(f"impressions: at most {MAX_BATCH}, got {len(impressions)}")
        return self.feedback.report_shown(impressions)

    def report(self, experiment: str = "", from_ms: int = 0, to_ms: int = 0) -> FeedbackReport:
        """Attributed feedback per experiment and variant (NotFoundError for an unknown
        experiment)."""
        if self.feedback is None:
            raise FailedPreconditionError("GetReport: this server records no impressions")
        if from_ms < 0 or to_ms < 0:
            raise InvalidInputError("from_ms, to_ms: must be >= 0")
        if to_ms and to_ms <= from_ms:
            raise InvalidInputError(f"to_ms: must be after from_ms ({from_ms}), got {to_ms}")
        return self.feedback.report(experiment, from_ms, to_ms)

    def _scored(
        self,
        state: ServingState,
        rows: np.ndarray,
        scores: np.ndarray,
        strategy: str,
        *,
        key: str = "",
        explores: np.ndarray | None = None,
        arm: Arm | None = None,
    ) -> Scored:
        names = state.model.item_ids.ids
        # tolist() makes Python ints and floats in C; a loop over numpy scalars is slower.
        items = tuple(zip([names[r] for r in rows.tolist()], scores.tolist(), strict=True))
        return Scored(
            items=items,
            model_version=state.model_version,
            recommendation_id=key or uuid.uuid4().hex,
            strategy=strategy,
            explored=() if explores is None else tuple(explores.tolist()),
            experiment="" if arm is None else arm.experiment,
            variant="" if arm is None else arm.variant.name,
        )

    def info(self) -> Info:
        state = self.current_state(self._store.catalogue_revision())
        return Info(
            model_version=state.model_version,
            trained_at_ms=state.trained_at_ms,
            users=self.known_users(state),
            items=len(state.model.items),
            stored_events=self._store.counts().events,
        )

    def user_record(self, user_id: str) -> UserView:
        """The user's stored events (oldest first) and profile; NotFoundError when nothing
        is known of the user: no stored events, no profile, and no trained vector in the
        serving model (or none it may serve since an erasure)."""
        check_id(user_id, "user_id")
        view = self._store.user_view(user_id)
        state = self._state
        in_model = (
            state.trained
            and user_id in state.model.user_ids
            and state.uses_trained_vector(view.latest_erasure)
        )
        if not view.events and not view.profile and not in_model:
            raise NotFoundError(f"user_id: unknown user {user_id!r}")
        return view

    def item_record(self, item_id: str) -> ItemRecord:
        """The item's tokens and availability as served now (the catalogue brought up to
        date with the store); NotFoundError when neither the catalogue nor the model
        holds it."""
        check_id(item_id, "item_id")
        state = self.current_state(self._catalogue_revision())
        row = state.model.item_ids.get(item_id)
        if row is None:
            raise NotFoundError(f"item_id: unknown item {item_id!r}")
        available = state.available is None or bool(state.available[row])
        return ItemRecord(item_id=item_id, tokens=state.item_tokens(item_id), available=available)

    def item_insight(self, item_id: str) -> ItemInsight:
        """The item as served now, how often it was shown and clicked lately and its
        audit log (see :class:`ItemInsight`); NotFoundError as :meth:`item_record`."""
        item = self.item_record(item_id)
        now_ms = int(time.time() * 1000)
        # The store counts per UTC day from since_ms's day on: today and the 6 before.
        since_ms = now_ms - (ITEM_WINDOW_DAYS - 1) * DAY_MS
        shown, clicked = self._store.item_feedback(item_id, since_ms)
        return ItemInsight(
            item=item,
            shown=shown,
            clicked=clicked,
            window_days=ITEM_WINDOW_DAYS,
            audit=tuple(self._store.audit_entries(f"item:{item_id}")),
        )

    def overview(self, now_ms: int) -> Overview:
        """The serving model, the trainer, the counts and the last hour's load samples of
        every replica (each writes its own to the store)."""
        store = self._store
        state = self.current_state(store.catalogue_revision())
        counts = store.counts()
        items = len(state.model.item_ids)
        available = items if state.available is None else int(np.count_nonzero(state.available))
        return Overview(
            model_version=state.model_version if state.trained else None,
            published_ms=(
                state.trained_at_ms if state.trained and state.trained_at_ms > 0 else None
            ),
            trained=state.trained,
            users=counts.users_with_events,
            items=items,
            available_items=available,
            events=counts.events,
            trainer=store.lease_holder(LEASE_NAME),
            samples=tuple(store.replica_samples(now_ms - OVERVIEW_SAMPLES_MS)),
        )

    def evaluations(self) -> list[EvaluationInfo]:
        """The stored evaluation runs (``shelfrank evaluate --save-to``), newest first."""
        return self._store.evaluations()

    def evaluation(self, name: str) -> Evaluation:
        """A stored evaluation run and its report (NotFoundError: no such run)."""
        info = next((e for e in self._store.evaluations() if e.name == name), None)
        if info is None:
            raise NotFoundError(f"name: unknown evaluation {name!r}")
        report = None
        if "report.json" in info.files:
            report = json.loads(self.evaluation_file(name, "report.json"))
        return Evaluation(info, report)

    def evaluation_file(self, name: str, file: str) -> bytes:
        """A stored file of an evaluation run (NotFoundError: no such run or file)."""
        try:
            return self._store.evaluation_file(name, file)
        except UnknownIdError as exc:
            # The resource asked for is missing: not found, not a bad argument.
            raise NotFoundError(str(exc)) from None

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
        ``connection`` names the caller for its rate limit (server/callers.py: the
        token's caller name, else the connection's peer). Over a user's or
        the connection's event rate, nothing is stored and RateLimitedError is raised.
        ``erasure_seen``: see EventStore.append_events; refused events are errors."""
        if not events:
            raise InvalidInputError("events: must not be empty")
        check_batch(len(events), "events")
        valid, errors = validate_events(events, int(time.time() * 1000))
        self._check_rates(valid, connection)
        # Durable before anything else.
        result = self._store.append_events(valid, erasure_seen=erasure_seen)
        if result.erased:
            errors = sorted(errors + _erased_errors(events, errors, valid, result.erased))
        outcome = TrackOutcome(len(result.accepted), len(result.duplicates), tuple(errors))
        if self.feedback is not None and result.accepted:
            self.feedback.tracked([valid[i] for i in result.accepted])
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
                f"events: more than {per_connection.rate:g}/s from this caller (named by its"
                " token, else its connection); retry later"
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
        # Through the store's revisions, as every other process sees it: the same table.
        self.current_state(self._store.catalogue_revision())
        return len(checked)

    def set_availability(
        self, item_ids: Sequence[str], available: bool, *, actor: str
    ) -> AvailabilityResult:
        """Make items (un)available; served from the next call, by every process. Items
        the serving model knows but the catalogue never stored (seen only in events) are
        stored first, with the tokens they are served with. Each item this call changed
        gets an audit entry naming ``actor`` (the caller; :data:`ANONYMOUS` without
        tokens), written once the change is committed (an item already so is no change
        and gets none)."""
        if not item_ids:
            raise InvalidInputError("item_ids: must not be empty")
        check_list(item_ids, "item_ids", limit=MAX_BATCH)
        since = self._store.catalogue_revision()
        result = self._store.set_availability(item_ids, available)
        touched = set(item_ids).difference(result.unknown_item_ids)
        if result.unknown_item_ids:
            state = self.current_state()
            adopt = [i for i in result.unknown_item_ids if i in state.model.item_ids]
            if adopt:
                self._store.upsert_items([(i, state.item_tokens(i)) for i in adopt])
                again = self._store.set_availability(adopt, available)
                if again.changed:  # stored available: only making them unavailable changes
                    touched.update(adopt)
                result = AvailabilityResult(
                    changed=result.changed + again.changed,
                    unknown_item_ids=tuple(
                        i for i in result.unknown_item_ids if i not in set(adopt)
                    ),
                )
        self.current_state(self._store.catalogue_revision())
        if result.changed:
            self._audit_availability(since, touched, available, actor)
        return result

    def _audit_availability(
        self, since: int, touched: set[str], available: bool, actor: str
    ) -> None:
        """An audit entry for each of ``touched`` whose availability changed after
        catalogue revision ``since`` and is now ``available`` (read back from the store:
        the store's write says how many it changed, not which)."""
        _, changes = self._store.catalogue_changes(since)
        changed = dict.fromkeys(
            entry.item_id
            for entry in changes
            if entry.item_id in touched and entry.available == available
        )
        now_ms = int(time.time() * 1000)
        detail = f"available={'true' if available else 'false'}"
        self._store.record_audits(
            [
                AuditEntry(
                    time_ms=now_ms,
                    actor=actor,
                    action="availability",
                    target=f"item:{item_id}",
                    detail=detail,
                )
                for item_id in changed
            ]
        )

    def upsert_users(self, users: Sequence[tuple[str, Sequence[str]]]) -> int:
        checked = self._checked_entities(users, "users", "user_id")
        self._store.upsert_users(checked)  # read by the next request of each user
        return len(checked)

    @staticmethod
    def _checked_entities(
        entities: Sequence[tuple[str, Sequence[str]]], field: str, id_field: str
    ) -> list[tuple[str, tuple[str, ...]]]:
        if not entities:
            raise InvalidInputError(f"{field}: must not be empty")
        check_batch(len(entities), field)
        return [
            (
                check_id(entity, f"{field}[{i}].{id_field}"),
                check_tokens(tokens, f"{field}[{i}].features"),
            )
            for i, (entity, tokens) in enumerate(entities)
        ]

    def delete_user(self, user_id: str) -> tuple[bool, int]:
        """Erase the user in the store; every process stops serving the user's history,
        trained vector and fold-in at its next read of the user (the latest erasure moved).
        Returns (existed, events deleted): a model user erased before counts once."""
        check_id(user_id, "user_id")
        if self.feedback is not None:
            self.feedback.flush()  # the user's pending impressions go with the rest
        state = self.current_state()
        earlier = self._store.latest_erasure(user_id)
        existed, deleted = self._store.delete_user(user_id)
        in_model = user_id in state.model.user_ids and state.uses_trained_vector(earlier)
        self._live.forget(user_id)
        with self._vectors_lock:
            self._vectors.pop(user_id, None)
        if not state.trained and deleted:
            self.current_state()  # the user's events no longer count in the popularity
        return existed or in_model, deleted

    def known_users(self, state: ServingState) -> int:
        """Users of the model not erased since it was trained (counted once per model and
        erasure: it hashes every model user)."""
        last = self._store.last_erasure()
        key = (state.model_version, state.erasures_through, last)
        with self._vectors_lock:
            if self._known_users is not None and self._known_users[0] == key:
                return self._known_users[1]
        users = state.model.user_ids
        erased = len(self._store.erased_among(users.ids)) if last > state.erasures_through else 0
        count = len(users) - erased
        with self._vectors_lock:
            self._known_users = (key, count)
        return count
