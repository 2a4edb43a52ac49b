"""``EdgeRecommender``: one device, one user, one local directory.

Layout of ``path``::

    outbox.sqlite3          every tracked event until acknowledged (also the session)
    snapshots/<version>/    verified snapshots (manifest.json + snapshot.npz)
    snapshots/CURRENT       the snapshot in use (replaced atomically)

Recommending needs no network: it scores the local snapshot with the user's vector and
reranks with this session's events. Every list ``recommend`` and ``rank`` return is queued
in the outbox as an impression (surface ``device``), so the server can attribute the
feedback tracked on the device to what the device showed. ``sync()`` pushes the outbox
(idempotent: event ids and recommendation ids are made on the device, and the server
counts a resend as a duplicate) and pulls a snapshot delta; it can be interrupted at any
point and simply resumes next time.

Retries: the edge adds no retry loop of its own. Each RPC of a sync goes through the
client's channel, which retries UNAVAILABLE at most ``max_attempts`` attempts in all (the
one retry policy, documented in ``shelfrank.client``); if the server stays unreachable
the round stops at the first RPC that fails, ``sync()`` reports ``offline`` and
everything stays queued: calling ``sync()`` again later is the retry, of the whole round.

Errors: everything raised derives from ``ShelfrankError``: ``InvalidInputError`` naming
the argument, ``NoSnapshotError``, ``ModelFileError`` (a snapshot or model directory that
cannot be read), ``StorageError`` (the device folder or outbox cannot be used),
``ClosedError`` (used after ``close()``) and the client's ``ServiceError`` subclasses for
answers of the server other than "unreachable".
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shelfrank.client import (
    Client,
    Contribution,
    DeadlineExceededError,
    Event,
    Explanation,
    FailedPreconditionError,
    FeatureFilter,
    Impression,
    InvalidArgumentError,
    Reason,
    Recommendations,
    ResourceExhaustedError,
    ScoredItem,
    Strategy,
    UnavailableError,
    UnimplementedError,
)
from shelfrank.client import _validation as check
from shelfrank.client._convert import feature_filters
from shelfrank.core.artifact import publish_directory, write_pointer
from shelfrank.core.errors import (
    ClosedError,
    InvalidInputError,
    ModelFileError,
    ShelfrankError,
    StorageError,
)
from shelfrank.core.events import EventType, StoredEvent, new_event_id
from shelfrank.core.experiments import (
    Experiment,
    Variant,
    active_experiment,
    assign,
    check_overlaps,
)
from shelfrank.core.explain import BECAUSE_MAX, DEFAULT_TOP, reason_of, summarise
from shelfrank.core.explain import Explanation as CoreExplanation
from shelfrank.core.ranking import ItemFacts, Steering, candidate_mask, exploration_rows, rank
from shelfrank.core.scoring import TopK, top_k
from shelfrank.core.session import (
    SessionConfig,
    SessionEvent,
    rerank,
    session_pulls,
    spread,
)
from shelfrank.core.snapshot import (
    Snapshot,
    SnapshotDelta,
    apply_delta,
    read_snapshot,
    read_snapshot_or_delta,
    write_snapshot,
)
from shelfrank.edge.convert import snapshot_from_model_directory
from shelfrank.edge.outbox import Outbox
from shelfrank.edge.table import EdgeTable

PUSH_BATCH = 500
# Impressions per ReportShown request of a sync (each holds up to 1,000 item ids).
PUSH_IMPRESSIONS_BATCH = 200
# The latest events the session rerank and exclude_event_types look at (as the server:
# server/live.py); acknowledged events older than these are pruned from the outbox.
MAX_RECENT_EVENTS = 200
# Where a sync downloads a snapshot before it is checked and installed (in the device folder).
DOWNLOAD_PREFIX = ".download-"


class NoSnapshotError(ShelfrankError):
    """The device has no snapshot yet: call ``sync()`` online, or pass ``snapshot=``."""


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    pushed: int  # events the server acknowledged in this sync (new or duplicate)
    rejected: int  # events the server refused (kept locally with the reason)
    pending: int  # events still waiting for the next sync
    snapshot_version: str  # the snapshot in use after the sync ("" if none)
    snapshot_bytes: int  # payload bytes downloaded (a delta is small)
    full_snapshot: bool
    purged: bool  # the server erased the user; the device data is gone
    offline: bool  # the server could not be reached
    error: str = ""  # what went wrong, if anything (e.g. a corrupted download)
    impressions_pushed: int = 0  # shown lists the server acknowledged (new or duplicate)
    impressions_rejected: int = 0  # shown lists the server refused (kept with the reason)
    impressions_pending: int = 0  # shown lists still waiting for the next sync


@dataclass
class _ShownTally:
    """Impressions of one sync: acknowledged, refused, and why they stopped (if so)."""

    pushed: int = 0
    rejected: int = 0
    error: str = ""


@dataclass(frozen=True)
class _Arm:
    """The experiment variant serving the device's user on one surface."""

    experiment: str
    variant: Variant

    @property
    def popularity(self) -> bool:
        return self.variant.setting == "popularity"


class EdgeRecommender:
    """One device, one user, one local directory (see the module docstring).

    ``target``/``token``/``timeout``/``max_attempts`` are the client's (``shelfrank.client.
    Client``) and checked by its rules at construction; ``max_attempts`` (1..5) bounds the
    attempts of each RPC of a sync. Thread-safe; ``close()`` when done.

    ``experiments`` (``shelfrank.core.experiments.Experiment`` values, e.g. from
    ``load_experiments`` of the server's file): while one is active on the ``recommend``
    (or ``rank``) surface, the device's user gets ``assign(experiment, user_id)``, the
    variant the server gives the same user. Its responses and impressions are labelled
    with the experiment and variant, and the variant's ``diversity``, ``exploration`` and
    ``max_per_feature`` apply where the request leaves them unset (diversity 0, the
    others None). A ``popularity`` variant ranks by the snapshot's item popularity
    (the score the device already uses for a user without a vector) without the session
    rerank, as the server's popularity variant ignores the user's history; the
    request's filters and exclusions still apply. A variant pinning a model version
    (``model:<version>``) is labelled, but the device ranks with the model of its
    snapshot: it holds one model only.
    """

    def __init__(
        self,
        path: str | Path,
        user_id: str,
        target: str | None = None,
        token: str | None = None,
        *,
        snapshot: str | Path | None = None,
        memory_budget_bytes: int = 64 << 20,
        session: SessionConfig | None = None,
        session_window_seconds: float = 3600.0,
        rerank_depth: int = 2000,
        timeout: float = 5.0,
        max_attempts: int = 4,
        clock: Callable[[], float] = time.time,
        experiments: Iterable[Experiment] = (),
    ) -> None:
        self.path = check.local_path("path", path)
        self.user_id = check.identifier("user_id", user_id)
        # The client's own checks (target, token, timeout, max_attempts), so a bad argument
        # fails here rather than at the first sync. Opening a channel connects nothing.
        Client(
            "localhost" if target is None else target,
            token=token,
            timeout=timeout,
            max_attempts=max_attempts,
        ).close()
        self.target = target
        self.token = token
        if session is not None and not isinstance(session, SessionConfig):
            raise InvalidInputError(
                f"session: expected a SessionConfig, got {type(session).__name__}"
            )
        self.session_config = session or SessionConfig()
        self.memory_budget_bytes = _count("memory_budget_bytes", memory_budget_bytes, 0)
        self.session_window_seconds = _finite("session_window_seconds", session_window_seconds)
        self.rerank_depth = _count("rerank_depth", rerank_depth, 1)
        self.timeout = timeout
        self.max_attempts = max_attempts
        if not callable(clock):
            raise InvalidInputError(f"clock: expected a callable, got {type(clock).__name__}")
        self.clock = clock
        self.experiments = _experiments(experiments)
        source = None if snapshot is None else check.local_path("snapshot", snapshot)
        self._lock = threading.RLock()
        # One sync (or forget) at a time: a push must not upload what a concurrent purge
        # wiped, nor a pull reinstall a snapshot a forget removed.
        self._sync_lock = threading.Lock()
        self._closed = False
        with self._storage("cannot create the device folder"):
            self.path.mkdir(parents=True, exist_ok=True)
        self._outbox = Outbox(self.path / "outbox.sqlite3")
        self._table: EdgeTable | None = None
        try:
            self._remove_downloads()  # left by an app killed while it synced
            current = self._current_dir()
            if current is not None and current.is_dir():
                self._install(read_snapshot(current))
            elif source is not None:
                self._install_file(source)
        except BaseException:
            self._outbox.close()
            raise

    @contextmanager
    def _storage(self, action: str) -> Iterator[None]:
        """The file system's errors on the device folder as a StorageError naming it."""
        try:
            yield
        except OSError as exc:
            raise StorageError(f"{self.path}: {action}: {exc}") from exc

    def _require_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.path}: this EdgeRecommender is closed")

    # -- snapshots ----------------------------------------------------------------------------
    @property
    def _snapshots(self) -> Path:
        return self.path / "snapshots"

    def _current_dir(self) -> Path | None:
        pointer = self._snapshots / "CURRENT"
        try:
            version = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"{pointer}: cannot read: {exc}") from exc
        return self._snapshots / version if version else None

    def _install(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._table = EdgeTable(snapshot, self.memory_budget_bytes)

    def _install_file(self, source: Path) -> None:
        """Adopt a model directory (server format) or an exported snapshot."""
        try:
            manifest = (source / "manifest.json").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(
                source, f"snapshot: not a model or snapshot directory ({exc})"
            ) from None
        if '"shelfrank-model"' in manifest:
            snapshot = snapshot_from_model_directory(source, self.user_id)
        else:
            snapshot = read_snapshot(source)
        self._persist(snapshot)

    def _persist(self, snapshot: Snapshot) -> None:
        """Write a verified snapshot under its version and make it current (atomically)."""
        target = publish_directory(
            self._snapshots,
            _safe(snapshot.version),
            lambda folder: write_snapshot(folder, snapshot),
        )
        write_pointer(self._snapshots / "CURRENT", target.name)
        with self._storage("cannot list the snapshots"):
            for old in self._snapshots.iterdir():
                if old.is_dir() and old.name != target.name:
                    shutil.rmtree(old, ignore_errors=True)
        self._install(snapshot)

    @property
    def snapshot(self) -> Snapshot:
        return self._require_table().snapshot

    # -- tracking -----------------------------------------------------------------------------
    def track(
        self,
        event_type: EventType | str,
        item_id: str,
        *,
        session_id: str = "",
        query: str = "",
        timestamp_ms: int | None = None,
        recommendation_id: str = "",
        position: int = 0,
    ) -> str:
        """Record an event on the device at once (durable); returns its event id.

        ``event_type`` is an ``EventType`` or its label (``"view"``); ``timestamp_ms`` unix
        milliseconds, default now. ``recommendation_id`` names the response the event
        answers (e.g. ``rec.recommendation_id`` of this device's ``recommend``) and
        ``position`` the item's 1-based place in it (0: unknown): the event then counts
        for that response; without it, for the latest response that showed the item to
        the user within the server's attribution window (24 h by default). Ids and texts
        follow the client's rules (``Event``)."""
        self._require_open()
        kind = event_type if isinstance(event_type, EventType) else EventType.parse(event_type)
        item_id = check.identifier("item_id", item_id)
        session_id = check.optional_identifier("session_id", session_id)
        query = check.utf8_text("query", query)
        if timestamp_ms is not None:
            timestamp_ms = check.int64("timestamp_ms", timestamp_ms)
        recommendation_id = check.recommendation_id(recommendation_id)
        position = check.position("position", position)
        event_id = new_event_id()
        stamp = int(self.clock() * 1000) if timestamp_ms is None else timestamp_ms
        self._outbox.add(
            StoredEvent(
                event_id,
                self.user_id,
                item_id,
                kind,
                stamp,
                session_id,
                query,
                recommendation_id=recommendation_id,
                position=position,
            )
        )
        return event_id

    def _session(self, snapshot: Snapshot) -> list[SessionEvent]:
        # Clamped before int(): SQLite integers are 64-bit, and a window may reach back
        # further (a float that even overflows to -inf).
        since = int(max((self.clock() - self.session_window_seconds) * 1000, -(2.0**63)))
        events = []
        for event in self._outbox.recent(since, limit=MAX_RECENT_EVENTS):
            row = snapshot.item_ids.get(event.item_id)
            if row is not None:
                events.append(SessionEvent(row, event.event_type, event.timestamp_ms / 1000.0))
        return events

    # -- recommending -------------------------------------------------------------------------
    def _device_user(self, user_id: str | None) -> None:
        if user_id is not None and check.identifier("user_id", user_id) != self.user_id:
            raise InvalidInputError(
                f"user_id: this device recommends for {self.user_id!r}, not {user_id!r}"
            )

    def recommend(
        self,
        user_id: str | None = None,
        k: int = 10,
        *,
        exclude_item_ids: Iterable[str] = (),
        filters: Iterable[FeatureFilter] = (),
        exclude_features: Iterable[str] = (),
        exclude_seen: bool = True,
        user_features: Iterable[str] = (),
        diversity: float = 0.0,
        max_per_feature: Mapping[str, int] | None = None,
        exploration: float | None = None,
        exploration_max_age_ms: int | None = None,
        exclude_event_types: Iterable[EventType | str] = (),
        exclude_within_ms: int = 0,
        recommendation_id: str = "",
        explain: bool = False,
        timeout: float | None = None,
        use_session: bool = True,
    ) -> Recommendations:
        """Top-``k`` on the device, with the arguments and result type of
        ``shelfrank.client.Client.recommend`` (one ranking pipeline, ``core/ranking.py``):
        the user's vector (or popularity) reranked with this session's events, then
        steered. ``user_id`` (default: the device's user) must be the device's user;
        ``user_features`` are accepted for the same calls and unused (the snapshot holds
        the user's vector); ``timeout`` too (nothing waits). ``exploration`` defaults to
        0 on the device. ``use_session=False`` ranks by the snapshot alone."""
        self._require_open()
        self._device_user(user_id)
        k = check.top_k(k)
        check.boolean("exclude_seen", exclude_seen)
        check.boolean("use_session", use_session)
        check.boolean("explain", explain)
        check.tokens("user_features", user_features)
        exclude_item_ids = check.identifiers("exclude_item_ids", exclude_item_ids)
        any_of = [f.any_of for f in feature_filters("filters", filters)]
        exclude_features = check.tokens("exclude_features", exclude_features)
        kinds = frozenset(check.event_types("exclude_event_types", exclude_event_types))
        within = check.int64("exclude_within_ms", exclude_within_ms)
        if within < 0:
            raise InvalidInputError(f"exclude_within_ms: must be >= 0, got {within}")
        key = check.recommendation_id(recommendation_id) or uuid.uuid4().hex
        diversity = check.share("diversity", diversity)
        caps = (
            None
            if max_per_feature is None
            else tuple(check.feature_caps("max_per_feature", max_per_feature).items())
        )
        if exploration is not None:
            exploration = check.share("exploration", exploration)
        max_age = (
            0
            if exploration_max_age_ms is None
            else _count("exploration_max_age_ms", exploration_max_age_ms, 0)
        )
        now = self.clock()
        now_ms = int(now * 1000)
        arm = self._arm("recommend", now_ms)
        if arm is not None:  # the variant's options where the request leaves them unset
            variant = arm.variant
            if not diversity and variant.diversity is not None:
                diversity = variant.diversity
            if caps is None:
                caps = variant.max_per_feature
            if exploration is None:
                exploration = variant.exploration
        steering = Steering(
            diversity=diversity,
            max_per_feature=caps or (),
            exploration=exploration or 0.0,
            exploration_max_age_ms=max_age,
        )
        table = self._require_table()
        snapshot = table.snapshot  # one snapshot for the whole call, even if a sync swaps
        popularity = arm is not None and arm.popularity
        if snapshot.user_vector is not None and not popularity:
            base = table.scores(snapshot.user_vector, snapshot.user_bias)
            strategy = Strategy.TRAINED
        else:
            base = snapshot.popularity.copy()
            strategy = Strategy.POPULARITY
        mask = candidate_mask(
            table.features,
            filters=any_of,
            exclude_features=exclude_features,
            available=snapshot.available,
        )
        allowed = None if mask is None else np.flatnonzero(mask).astype(np.int64)
        excluded = set(exclude_item_ids)
        if exclude_seen:
            excluded |= self._outbox.consumed_items()
        if kinds:
            since = now_ms - within if within else -(2**63)
            excluded |= {
                e.item_id
                for e in self._outbox.recent(since, limit=MAX_RECENT_EVENTS)
                if e.event_type in kinds
            }
        exclude = np.array(snapshot.item_ids.indices(sorted(excluded)), dtype=np.int64)
        # A popularity variant ignores the user's history, as on the server.
        events = self._session(snapshot) if use_session and not popularity else []
        config = self.session_config
        reranks = bool(events) or config.diversity > 0
        pools: list[tuple[np.ndarray, np.ndarray]] = []

        def best_of(count: int) -> TopK:
            if not reranks:
                return top_k(base, count, exclude=exclude, candidates=allowed)
            # Rerank the best ``rerank_depth`` of the model's ranking with the session.
            pool = top_k(base, max(count, self.rerank_depth), exclude=exclude, candidates=allowed)
            pools.append((pool.indices, base[pool.indices]))
            rows, scores = self._rerank(
                table, pool.indices, base[pool.indices], events, config, now
            )
            return TopK(rows[:count], scores[:count])

        facts = ItemFacts(
            vectors=table.rows,
            features=table.features,
            exploration=lambda: exploration_rows(
                candidates=mask,
                n_items=len(snapshot),
                excluded=exclude,
                new=snapshot.new_mask(),
                added_ms=snapshot.added_ms,
                max_age_ms=steering.exploration_max_age_ms,
                now_ms=now_ms,
            ),
            scores=lambda rows: base[rows],
        )
        candidates = len(snapshot) if mask is None else int(np.count_nonzero(mask))
        top, explores = rank(best_of, k, steering, facts, key, candidates=candidates)
        explanations = None
        if explain:
            explanations = self._explain(
                table, top, explores, events if reranks else [], pools[-1] if pools else None, now
            )
        result = _result(
            snapshot,
            top.indices,
            top.scores,
            Strategy.FOLD_IN if events else strategy,
            key=key,
            explanations=explanations,
            arm=arm,
        )
        self._shown(result, now_ms)
        return result

    def _arm(self, surface: str, now_ms: int) -> _Arm | None:
        """The variant serving the device's user on ``surface`` now (None: no experiment)."""
        experiment = active_experiment(self.experiments, surface, now_ms)
        if experiment is None:
            return None
        return _Arm(experiment.name, assign(experiment, self.user_id))

    def _shown(self, result: Recommendations, now_ms: int) -> None:
        """Queue a returned list as an impression (its first 1,000 items; an empty list
        showed nothing)."""
        if not result.items:
            return
        self._outbox.add_impression(
            Impression(
                result.recommendation_id,
                result.item_ids[: check.MAX_SHOWN_ITEMS],
                user_id=self.user_id,
                timestamp_ms=max(now_ms, 0),
                surface="device",
                experiment=result.experiment,
                variant=result.variant,
                model_version=result.model_version,
            )
        )

    def _explain(
        self,
        table: EdgeTable,
        top: TopK,
        explores: np.ndarray,
        events: list[SessionEvent],
        pool: tuple[np.ndarray, np.ndarray] | None,
        now: float,
    ) -> list[CoreExplanation]:
        """Exact decompositions of the device's scores: the user's vector against the item
        (``user:vector``; the device holds no token embeddings), the biases, and under a
        session rerank each session event's pull (``history:<item_id>``), the base part
        divided by the spread the rerank divides it by."""
        snapshot = table.snapshot
        deviation = 1.0
        pulls: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, np.float32))
        if pool is not None:
            found = spread(pool[1].astype(np.float32))
            deviation = found if found > 0 else 1.0
            if self.session_config.strength > 0 and events:
                needed = np.unique([e.row for e in events]).astype(np.int64)
                local = [
                    SessionEvent(int(np.searchsorted(needed, e.row)), e.event_type, e.timestamp)
                    for e in events
                ]
                found_rows, coefficients = session_pulls(
                    local, table.rows(needed), now, self.session_config
                )
                pulls = (needed[found_rows], coefficients)
        out = []
        vectors = table.rows(top.indices)
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        event_vectors = table.rows(pulls[0]) if pulls[0].size else None
        for position, row in enumerate(top.indices.tolist()):
            parts: dict[str, float] = {}
            if snapshot.user_vector is not None:
                parts["user:vector"] = float(vectors[position] @ snapshot.user_vector) / deviation
                parts["bias:item"] = float(snapshot.biases[row]) / deviation
                parts["bias:user"] = float(snapshot.user_bias) / deviation
            else:
                parts["signal:popularity"] = float(snapshot.popularity[row]) / deviation
            if event_vectors is not None:
                cosines = (event_vectors @ vectors[position]) / norms[position]
                strength = self.session_config.strength
                for event_row, coefficient, cosine in zip(
                    pulls[0].tolist(), pulls[1].tolist(), cosines.tolist(), strict=True
                ):
                    source = f"history:{snapshot.item_ids.id_of(event_row)}"
                    parts[source] = parts.get(source, 0.0) + strength * coefficient * cosine
            score = float(top.scores[position])
            history = sorted(
                ((v, s[len("history:") :]) for s, v in parts.items() if s.startswith("history:")),
                key=lambda pair: (-pair[0], pair[1]),
            )
            because = [item for value, item in history if value > 0][:BECAUSE_MAX]
            reason = reason_of(
                explored=bool(explores[position]),
                new=False,  # the device does not know what the model was trained with
                popular=snapshot.user_vector is None and not history,
                history_positive=sum(v for v, _ in history if v > 0),
                positive=sum(v for v in parts.values() if v > 0),
            )
            out.append(summarise(parts, score, reason, because, DEFAULT_TOP))
        return out

    def _require_table(self) -> EdgeTable:
        table = self._table
        if table is None:
            raise NoSnapshotError(
                f"{self.path}: no snapshot on this device yet; call sync() with a server "
                "reachable, or construct with snapshot=<model or snapshot directory>"
            )
        return table

    def _rerank(
        self,
        table: EdgeTable,
        rows: np.ndarray,
        base: np.ndarray,
        events: list[SessionEvent],
        config: SessionConfig,
        now: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """core.session.rerank over a compact table of just the rows involved."""
        if rows.size == 0:
            return rows, base
        needed = np.union1d(rows, [e.row for e in events]).astype(np.int64)
        local = [
            SessionEvent(int(np.searchsorted(needed, e.row)), e.event_type, e.timestamp)
            for e in events
        ]
        result = rerank(
            np.searchsorted(needed, rows),
            base,
            table.rows(needed),
            local,
            now,
            config,
        )
        return needed[result.rows], result.scores

    def rank(
        self,
        user_id: str | None = None,
        item_ids: Iterable[str] = (),
        *,
        user_features: Iterable[str] = (),
        explain: bool = False,
        timeout: float | None = None,
        use_session: bool = True,
    ) -> Recommendations:
        """The given items in ranked order (unknown and unavailable items last, score
        -inf), with the arguments of ``shelfrank.client.Client.rank``. An experiment on the
        ``rank`` surface labels the list; its popularity variant orders by popularity."""
        self._require_open()
        self._device_user(user_id)
        item_ids = check.identifiers(
            "item_ids", item_ids, min_count=1, max_count=check.MAX_CANDIDATES
        )
        check.boolean("use_session", use_session)
        check.boolean("explain", explain)
        check.tokens("user_features", user_features)
        table = self._require_table()
        snapshot = table.snapshot
        now = self.clock()
        now_ms = int(now * 1000)
        arm = self._arm("rank", now_ms)
        popularity = arm is not None and arm.popularity
        available = snapshot.available_mask()
        known = [snapshot.item_ids.get(i) for i in item_ids]
        rankable = [r is not None and bool(available[r]) for r in known]
        rows = np.array([r for r, ok in zip(known, rankable, strict=True) if ok], dtype=np.int64)
        if snapshot.user_vector is not None and not popularity:
            base = table.rows(rows) @ snapshot.user_vector + snapshot.biases[rows]
            base = base + np.float32(snapshot.user_bias)
        else:
            base = snapshot.popularity[rows]
        events = self._session(snapshot) if use_session and not popularity else []
        if events and rows.size:
            ordered, scores = self._rerank(
                table, rows, base.astype(np.float32), events, self.session_config, now
            )
        else:
            order = np.lexsort((rows, -base))
            ordered, scores = rows[order], base[order]
        top = TopK(ordered.astype(np.int64), np.asarray(scores, np.float32))
        explanations = None
        if explain:
            pool = (rows, base.astype(np.float32)) if events and rows.size else None
            explanations = self._explain(
                table, top, np.zeros(len(top), bool), events if pool else [], pool, now
            )
            explanations += [
                summarise({}, float("-inf"), "personalized", (), DEFAULT_TOP)
                for ok in rankable
                if not ok
            ]
        items = [
            ScoredItem(snapshot.item_ids.id_of(int(r)), float(v))
            for r, v in zip(ordered, scores, strict=True)
        ]
        items += [
            ScoredItem(i, float("-inf")) for i, ok in zip(item_ids, rankable, strict=True) if not ok
        ]
        if explanations is not None:
            items = [
                dataclasses.replace(item, explanation=_client_explanation(found))
                for item, found in zip(items, explanations, strict=True)
            ]
        if events:
            strategy = Strategy.FOLD_IN
        else:
            strategy = Strategy.POPULARITY if popularity else Strategy.TRAINED
        result = Recommendations(
            items=tuple(items),
            model_version=snapshot.model_version,
            recommendation_id=uuid.uuid4().hex,
            strategy=strategy,
            variant="" if arm is None else arm.variant.name,
            experiment="" if arm is None else arm.experiment,
        )
        self._shown(result, now_ms)
        return result

    # -- syncing ------------------------------------------------------------------------------
    def sync(self) -> SyncResult:
        """Pull the snapshot delta (or learn that the server erased the user, and purge),
        then push queued events and impressions. Never raises for a missing network: the
        result says ``offline`` and everything stays queued (each RPC is tried at most
        ``max_attempts`` times by the channel; the edge itself does not retry).

        Impressions leave the device once the server acknowledged them; sent again after
        a lost acknowledgement, they count as duplicates there (one impression per
        recommendation id). A server that does not take impressions (older, or recording
        none) keeps them queued, says so in ``error``, and the sync succeeds otherwise."""
        self._require_open()
        if self.target is None:
            raise InvalidInputError("target: this EdgeRecommender was created without a server")
        with self._sync_lock:
            return self._sync(self.target)

    def _sync(self, target: str) -> SyncResult:
        pushed = rejected = 0
        shown = _ShownTally()
        try:
            with Client(
                target, token=self.token, timeout=self.timeout, max_attempts=self.max_attempts
            ) as client:
                # Pull first: if the user was erased on the server since this device last
                # purged, everything recorded here until now is purged, not uploaded (it
                # would bring erased data back).
                pulled, erased = self._pull(client)
                if pulled.purged:
                    if not erased:  # the user came back elsewhere: a full snapshot now
                        pulled, erased = self._pull(client)
                        pulled = dataclasses.replace(pulled, purged=True)
                    return pulled
                pushed, rejected, throttled = self._push(client)
                self._push_impressions(client, shown)
                if erased and pushed:
                    # Events recorded since the purge bring the user back: the server
                    # has a profile (and a snapshot) for them again.
                    pulled, erased = self._pull(client)
                return dataclasses.replace(
                    pulled,
                    pushed=pushed,
                    rejected=rejected,
                    pending=self._outbox.counts().get("pending", 0),
                    error=pulled.error or throttled or shown.error,
                    impressions_pushed=shown.pushed,
                    impressions_rejected=shown.rejected,
                    impressions_pending=self._outbox.impression_counts().get("pending", 0),
                )
        except (UnavailableError, DeadlineExceededError) as exc:
            return SyncResult(
                pushed=pushed,
                rejected=rejected,
                pending=self._outbox.counts().get("pending", 0),
                snapshot_version=self._version(),
                snapshot_bytes=0,
                full_snapshot=False,
                purged=False,
                offline=True,
                error=str(exc),
                impressions_pushed=shown.pushed,
                impressions_rejected=shown.rejected,
                impressions_pending=self._outbox.impression_counts().get("pending", 0),
            )

    def _push_impressions(self, client: Client, tally: _ShownTally) -> None:
        """Send the queued impressions until none is left; counts into ``tally``."""
        while True:
            batch = self._outbox.pending_impressions(PUSH_IMPRESSIONS_BATCH)
            if not batch:
                return
            try:
                client.report_shown(batch, erasure_seen=self._outbox.purged_erasure())
            except InvalidArgumentError:
                # One refused impression fails its whole request: send them one by one so
                # the others still go and only the refused ones are set aside.
                for impression in batch:
                    try:
                        client.report_shown(
                            [impression], erasure_seen=self._outbox.purged_erasure()
                        )
                    except InvalidArgumentError as refused:
                        self._outbox.reject_impression(
                            impression.recommendation_id, refused.details
                        )
                        tally.rejected += 1
                    else:
                        self._outbox.acknowledge_impressions([impression.recommendation_id])
                        tally.pushed += 1
                continue
            except (UnimplementedError, FailedPreconditionError) as exc:
                tally.error = f"{exc} (impressions stay queued)"
                return
            # A crash before this line only means they are sent again: the server dedups.
            self._outbox.acknowledge_impressions([i.recommendation_id for i in batch])
            tally.pushed += len(batch)

    def _push(self, client: Client) -> tuple[int, int, str]:
        """Sends the pending events; returns how many were taken and refused, and why the
        server stopped taking them, if it did (its rate limit: the rest waits for the next
        sync, and the sync goes on to the impressions)."""
        pushed = rejected = 0
        # If the user is erased after our pull, the server refuses what we send (recorded
        # before we knew) in the insert's transaction; the next pull purges it. Read once:
        # nothing purges during a sync (the sync lock).
        erasure_seen = self._outbox.purged_erasure()
        while True:
            batch = self._outbox.pending(PUSH_BATCH)
            if not batch:
                if pushed or rejected:
                    self._outbox.prune_acknowledged(keep_recent=MAX_RECENT_EVENTS)
                return pushed, rejected, ""
            events = [
                Event(
                    e.user_id,
                    e.item_id,
                    e.event_type,
                    event_id=e.event_id,
                    timestamp_ms=e.timestamp_ms,
                    session_id=e.session_id,
                    query=e.query,
                    recommendation_id=e.recommendation_id,
                    position=e.position,
                )
                for e in batch
            ]
            try:
                result = client.track(events, erasure_seen=erasure_seen)
            except ResourceExhaustedError as exc:  # a long offline backlog meets the limit
                return pushed, rejected, f"{exc} (the remaining events stay queued)"
            failed = {error.index: error.message for error in result.errors}
            # Acknowledged (new or duplicate) and refused events leave the queue; a crash
            # before this line only means they are sent again: the server dedups.
            self._outbox.mark([e.event_id for i, e in enumerate(batch) if i not in failed], "sent")
            for index, message in failed.items():
                self._outbox.mark([batch[index].event_id], "rejected", message)
            pushed += len(batch) - len(failed)
            rejected += len(failed)

    def _version(self) -> str:
        table = self._table
        return table.snapshot.version if table is not None else ""

    def _pull(self, client: Client) -> tuple[SyncResult, bool]:
        """Fetch and apply the snapshot (or delta); purge first if the server erased the
        user since the last purge. Returns the result and whether the server holds the
        user as erased (no events since the erasure, so no snapshot to download)."""
        have = self._version()
        with self._storage("cannot make a download folder"):
            download = tempfile.TemporaryDirectory(
                dir=self.path, prefix=DOWNLOAD_PREFIX, ignore_cleanup_errors=True
            )
        with download as scratch:
            info = client.fetch_snapshot(self.user_id, scratch, have_version=have)
            # A server from before numbered erasures sends 0: purge at every erased answer.
            unnumbered = info.user_erased and info.erasure_id == 0
            if unnumbered or info.erasure_id > self._outbox.purged_erasure():
                self._wipe(info.erasure_id)
                return SyncResult(
                    pushed=0,
                    rejected=0,
                    pending=0,
                    snapshot_version="",
                    snapshot_bytes=0,
                    full_snapshot=False,
                    purged=True,
                    offline=False,
                ), info.user_erased
            pending = self._outbox.counts().get("pending", 0)
            if info.user_erased:  # purged for already: what was recorded since is new
                return SyncResult(
                    pushed=0,
                    rejected=0,
                    pending=pending,
                    snapshot_version=self._version(),
                    snapshot_bytes=0,
                    full_snapshot=False,
                    purged=False,
                    offline=False,
                ), True
            try:
                loaded = read_snapshot_or_delta(scratch)
                if isinstance(loaded, SnapshotDelta):
                    snapshot = apply_delta(self.snapshot, loaded)
                else:
                    snapshot = loaded
            # A corrupted download, or one another process opening this folder removed:
            # keep ours, the next sync downloads again.
            except (ModelFileError, ValueError, OSError) as exc:
                failed = SyncResult(
                    pushed=0,
                    rejected=0,
                    pending=pending,
                    snapshot_version=have,
                    snapshot_bytes=info.payload_bytes,
                    full_snapshot=False,
                    purged=False,
                    offline=False,
                    error=str(exc),
                )
                return failed, False
            self._persist(snapshot)
        full = isinstance(loaded, Snapshot)
        return SyncResult(
            pushed=0,
            rejected=0,
            pending=pending,
            snapshot_version=snapshot.version,
            snapshot_bytes=info.payload_bytes,
            full_snapshot=full,
            purged=False,
            offline=False,
        ), False

    # -- privacy ------------------------------------------------------------------------------
    def forget(self) -> None:
        """Wipe everything this device holds for the user: outbox, session, snapshots."""
        self._require_open()
        with self._sync_lock:
            self._wipe(None)

    def _wipe(self, erasure_id: int | None) -> None:
        # Snapshots first (they hold the user's vector): a crash before the outbox wipe
        # commits leaves the erasure unrecorded, so the next sync purges again.
        with self._lock:
            self._table = None
            shutil.rmtree(self._snapshots, ignore_errors=True)
            self._remove_downloads()
            self._outbox.wipe(erasure_id)

    def _remove_downloads(self) -> None:
        """Removes download folders (each may hold a snapshot with the user's vector): an
        app killed during a sync leaves its folder behind, and nothing else would."""
        for folder in self.path.glob(f"{DOWNLOAD_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)

    def pending_events(self) -> int:
        """Events tracked on the device and not yet acknowledged by the server."""
        self._require_open()
        return self._outbox.counts().get("pending", 0)

    def pending_impressions(self) -> int:
        """Lists this device returned (impressions) not yet acknowledged by the server."""
        self._require_open()
        return self._outbox.impression_counts().get("pending", 0)

    def cached_bytes(self) -> int:
        """Bytes of dequantised item vectors cached (bounded by ``memory_budget_bytes``)."""
        table = self._table
        return table.cached_bytes() if table is not None else 0

    def close(self) -> None:
        """Close the outbox; closing twice is harmless, any other use afterwards raises
        ``ClosedError``. Waits for a sync in progress."""
        with self._sync_lock:
            self._closed = True
            self._outbox.close()


def _experiments(values: object) -> tuple[Experiment, ...]:
    """Experiment values, their names usable as ids and no two overlapping on a surface."""
    if isinstance(values, Experiment | str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError("experiments: expected an iterable of Experiment")
    experiments = tuple(values)
    for index, experiment in enumerate(experiments):
        if not isinstance(experiment, Experiment):
            raise InvalidInputError(
                f"experiments[{index}]: expected an Experiment, got {type(experiment).__name__}"
            )
        check.identifier(f"experiments[{index}].name", experiment.name)
        for variant in experiment.variants:
            check.identifier(f"experiments[{index}].variant", variant.name)
    check_overlaps(experiments)
    return experiments


def _count(field: str, value: object, minimum: int) -> int:
    number = check.integer(field, value)
    if number < minimum:
        raise InvalidInputError(f"{field}: must be >= {minimum}, got {number}")
    return number


def _finite(field: str, value: object) -> float:
    """Seconds that may be 0 (no session) but must be finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"{field}: expected seconds as a number, got {type(value).__name__}"
        )
    if not (math.isfinite(value) and value >= 0):
        raise InvalidInputError(f"{field}: must be finite and >= 0, got {value!r}")
    return float(value)


def _client_explanation(found: CoreExplanation) -> Explanation:
    return Explanation(
        reason=Reason(found.reason),
        contributions=tuple(Contribution(s, v) for s, v in found.contributions),
        rest=found.rest,
        because_item_ids=found.because,
    )


def _safe(version: str) -> str:
    """A plain directory name for a version sent by the server (never '.', '..' or hidden)."""
    cleaned = "".join(c if c.isalnum() or c in "-._" else "_" for c in version)
    return "v-" + cleaned if cleaned else "snapshot"


def _result(
    snapshot: Snapshot,
    rows: np.ndarray,
    scores: np.ndarray,
    strategy: Strategy,
    *,
    key: str = "",
    explanations: list[CoreExplanation] | None = None,
    arm: _Arm | None = None,
) -> Recommendations:
    found: list[Explanation | None] = (
        [_client_explanation(e) for e in explanations]
        if explanations is not None
        else [None] * len(rows)
    )
    items = tuple(
        ScoredItem(snapshot.item_ids.id_of(int(r)), float(s), e)
        for r, s, e in zip(rows, scores, found, strict=True)
    )
    return Recommendations(
        items=items,
        model_version=snapshot.model_version,
        recommendation_id=key or uuid.uuid4().hex,
        strategy=strategy,
        variant="" if arm is None else arm.variant.name,
        experiment="" if arm is None else arm.experiment,
    )
