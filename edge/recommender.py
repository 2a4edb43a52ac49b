"""``EdgeRecommender``: one device, one user, one local directory.

Layout of ``path``::

    outbox.sqlite3          every tracked event until acknowledged (also the session)
    snapshots/<version>/    verified snapshots (manifest.json + snapshot.npz)
    snapshots/CURRENT       the snapshot in use (replaced atomically)

Recommending needs no network: it scores the local snapshot with the user's vector and
reranks with this session's events. ``sync()`` pushes the outbox (idempotent: event ids
are made on the device) and pulls a snapshot delta; it can be interrupted at any point
and simply resumes next time.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shelfrank.client import (
    Client,
    DeadlineExceededError,
    Event,
    Recommendations,
    ScoredItem,
    Strategy,
    UnavailableError,
)
from shelfrank.client import _validation as check
from shelfrank.core.artifact import publish_directory, write_pointer
from shelfrank.core.errors import (
    ClosedError,
    InvalidInputError,
    ModelFileError,
    ShelfrankError,
    StorageError,
)
from shelfrank.core.events import EventType, StoredEvent, new_event_id
from shelfrank.core.scoring import top_k
from shelfrank.core.session import SessionConfig, SessionEvent, rerank
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


class EdgeRecommender:
    """One device, one user, one local directory (see the module docstring).

    ``target``/``token``/``timeout``/``max_attempts`` are the client's (``shelfrank.client.
    Client``) and checked by its rules at construction; ``max_attempts`` (1..5) bounds the
    attempts of each RPC of a sync. Thread-safe; ``close()`` when done.
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
    ) -> str:
        """Record an event on the device at once (durable); returns its event id.

        ``event_type`` is an ``EventType`` or its label (``"view"``); ``timestamp_ms`` unix
        milliseconds, default now. Ids and texts follow the client's rules (``Event``)."""
        self._require_open()
        kind = event_type if isinstance(event_type, EventType) else EventType.parse(event_type)
        item_id = check.identifier("item_id", item_id)
        session_id = check.optional_identifier("session_id", session_id)
        query = check.utf8_text("query", query)
        if timestamp_ms is not None:
            timestamp_ms = check.int64("timestamp_ms", timestamp_ms)
        event_id = new_event_id()
        stamp = int(self.clock() * 1000) if timestamp_ms is None else timestamp_ms
        self._outbox.add(
            StoredEvent(event_id, self.user_id, item_id, kind, stamp, session_id, query)
        )
        return event_id

    def _session(self, snapshot: Snapshot) -> list[SessionEvent]:
        # Clamped before int(): SQLite integers are 64-bit, and a window may reach back
        # further (a float that even overflows to -inf).
        since = int(max((self.clock() - self.session_window_seconds) * 1000, -(2.0**63)))
        events = []
        for event in self._outbox.recent(since, limit=200):
            row = snapshot.item_ids.get(event.item_id)
            if row is not None:
                events.append(SessionEvent(row, event.event_type, event.timestamp_ms / 1000.0))
        return events

    # -- recommending -------------------------------------------------------------------------
    def recommend(
        self,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude_item_ids: Iterable[str] = (),
        filters: Sequence[Sequence[str]] = (),
        exclude_features: Sequence[str] = (),
        use_session: bool = True,
        diversity: float | None = None,
    ) -> Recommendations:
        """Top-``k`` on the device: the user's vector (or popularity) reranked with this
        session's events; same result type as ``shelfrank.client.Client.recommend``.
        ``diversity`` (MMR penalty per unit of cosine, e.g. 0.5) overrides the session
        config's for this call, and applies with or without session events.

        ``filters`` are lists of feature tokens (``[["category=shoes", "category=boots"]]``):
        an item passes a filter with one of its tokens, and must pass every filter."""
        self._require_open()
        k = check.top_k(k)
        check.boolean("exclude_seen", exclude_seen)
        check.boolean("use_session", use_session)
        exclude_item_ids = check.identifiers("exclude_item_ids", exclude_item_ids)
        filters = _filters(filters)
        exclude_features = check.tokens("exclude_features", exclude_features)
        config = self.session_config
        if diversity is not None:
            config = dataclasses.replace(config, diversity=diversity)
        table = self._require_table()
        snapshot = table.snapshot  # one snapshot for the whole call, even if a sync swaps
        if snapshot.user_vector is not None:
            base = table.scores(snapshot.user_vector, snapshot.user_bias)
            strategy = Strategy.TRAINED
        else:
            base = snapshot.popularity.copy()
            strategy = Strategy.POPULARITY
        allowed = self._allowed(snapshot, filters, exclude_features)
        excluded = set(exclude_item_ids)
        if exclude_seen:
            excluded |= self._outbox.consumed_items()
        exclude = np.array(snapshot.item_ids.indices(sorted(excluded)), dtype=np.int64)
        events = self._session(snapshot) if use_session else []
        if not events and config.diversity == 0:
            top = top_k(base, k, exclude=exclude, candidates=allowed)
            return _result(snapshot, top.indices, top.scores, strategy)
        # Rerank the best ``rerank_depth`` of the model's ranking with the session.
        pool = top_k(base, max(k, self.rerank_depth), exclude=exclude, candidates=allowed)
        rows, scores = self._rerank(table, pool.indices, base[pool.indices], events, config)
        return _result(snapshot, rows[:k], scores[:k], Strategy.FOLD_IN if events else strategy)

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
            self.clock(),
            config,
        )
        return needed[result.rows], result.scores

    def rank(self, item_ids: Sequence[str], *, use_session: bool = True) -> Recommendations:
        """The given items in ranked order (unknown items last, score -inf)."""
        self._require_open()
        item_ids = check.identifiers(
            "item_ids", item_ids, min_count=1, max_count=check.MAX_CANDIDATES
        )
        check.boolean("use_session", use_session)
        table = self._require_table()
        snapshot = table.snapshot
        known = [snapshot.item_ids.get(i) for i in item_ids]
        rows = np.array([r for r in known if r is not None], dtype=np.int64)
        if snapshot.user_vector is not None:
            base = table.rows(rows) @ snapshot.user_vector + snapshot.biases[rows]
            base = base + np.float32(snapshot.user_bias)
        else:
            base = snapshot.popularity[rows]
        events = self._session(snapshot) if use_session else []
        if events:
            ordered, scores = self._rerank(
                table, rows, base.astype(np.float32), events, self.session_config
            )
        else:
            order = np.lexsort((rows, -base))
            ordered, scores = rows[order], base[order]
        items = [
            ScoredItem(snapshot.item_ids.id_of(int(r)), float(v))
            for r, v in zip(ordered, scores, strict=True)
        ]
        items += [
            ScoredItem(i, float("-inf")) for i, r in zip(item_ids, known, strict=True) if r is None
        ]
        return Recommendations(
            items=tuple(items),
            model_version=snapshot.model_version,
            recommendation_id=uuid.uuid4().hex,
            strategy=Strategy.FOLD_IN if events else Strategy.TRAINED,
        )

    @staticmethod
    def _allowed(
        snapshot: Snapshot, filters: Sequence[Sequence[str]], exclude_features: Sequence[str]
    ) -> np.ndarray | None:
        if not filters and not exclude_features:
            return None
        from shelfrank.core.filters import FeatureIndex

        index = FeatureIndex(
            snapshot.token_vocabulary,
            snapshot.item_tokens.indptr,
            snapshot.item_tokens.indices,
            len(snapshot),
        )
        mask = index.allowed(filters, exclude_features)
        return None if mask is None else np.flatnonzero(mask).astype(np.int64)

    # -- syncing ------------------------------------------------------------------------------
    def sync(self) -> SyncResult:
        """Pull the snapshot delta (or learn that the server erased the user, and purge),
        then push queued events. Never raises for a missing network: the result says
        ``offline`` and everything stays queued (each RPC is tried at most
        ``max_attempts`` times by the channel; the edge itself does not retry)."""
        self._require_open()
        if self.target is None:
            raise InvalidInputError("target: this EdgeRecommender was created without a server")
        with self._sync_lock:
            return self._sync(self.target)

    def _sync(self, target: str) -> SyncResult:
        pushed = rejected = 0
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
                pushed, rejected = self._push(client)
                if erased and pushed:
                    # Events recorded since the purge bring the user back: the server
                    # has a profile (and a snapshot) for them again.
                    pulled, erased = self._pull(client)
                return dataclasses.replace(
                    pulled,
                    pushed=pushed,
                    rejected=rejected,
                    pending=self._outbox.counts().get("pending", 0),
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
            )

    def _push(self, client: Client) -> tuple[int, int]:
        pushed = rejected = 0
        # If the user is erased after our pull, the server refuses what we send (recorded
        # before we knew) in the insert's transaction; the next pull purges it. Read once:
        # nothing purges during a sync (the sync lock).
        erasure_seen = self._outbox.purged_erasure()
        while True:
            batch = self._outbox.pending(PUSH_BATCH)
            if not batch:
                return pushed, rejected
            events = [
                Event(
                    e.user_id,
                    e.item_id,
                    e.event_type,
                    event_id=e.event_id,
                    timestamp_ms=e.timestamp_ms,
                    session_id=e.session_id,
                    query=e.query,
                )
                for e in batch
            ]
            result = client.track(events, erasure_seen=erasure_seen)
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
                dir=self.path, prefix=".download-", ignore_cleanup_errors=True
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
            except (ModelFileError, ValueError) as exc:  # corrupted download: keep ours
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
            self._outbox.wipe(erasure_id)

    def pending_events(self) -> int:
        """Events tracked on the device and not yet acknowledged by the server."""
        self._require_open()
        return self._outbox.counts().get("pending", 0)

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


def _filters(filters: object) -> list[tuple[str, ...]]:
    """Lists of tokens, each non-empty; a bare list of tokens is refused (it would be read
    as one filter per character)."""
    if isinstance(filters, str | bytes) or not isinstance(filters, Iterable):
        raise InvalidInputError(
            f"filters: expected an iterable of token lists, got {type(filters).__name__}"
        )
    checked = []
    for index, tokens in enumerate(filters):
        any_of = check.tokens(f"filters[{index}]", tokens)
        if not any_of:
            raise InvalidInputError(f"filters[{index}]: a filter needs at least one feature token")
        checked.append(any_of)
    return checked


def _safe(version: str) -> str:
    """A plain directory name for a version sent by the server (never '.', '..' or hidden)."""
    cleaned = "".join(c if c.isalnum() or c in "-._" else "_" for c in version)
    return "v-" + cleaned if cleaned else "snapshot"


def _result(
    snapshot: Snapshot, rows: np.ndarray, scores: np.ndarray, strategy: Strategy
) -> Recommendations:
    items = tuple(
        ScoredItem(snapshot.item_ids.id_of(int(r)), float(s))
        for r, s in zip(rows, scores, strict=True)
    )
    return Recommendations(
        items=items,
        model_version=snapshot.model_version,
        recommendation_id=uuid.uuid4().hex,
        strategy=strategy,
    )
