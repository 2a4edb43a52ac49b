"""What the server asks of its store: one contract, several backends.

Every process serving or training reads the state that correctness depends on through
this interface (events, catalogue, profiles, erasures), so processes that share a store
agree. Backends: ``SQLiteStore`` (``server/store.py``; embedded, the default: one file
under ``--state``) and ``PostgresStore`` (``server/store_postgres.py``; one database
shared by every process); :func:`shelfrank.server.stores.open_store` opens the one a
location names. ``tests/test_store_contract.py`` is the contract both pass.

Ordering: every stored event gets a ``seq``, a cursor in commit order. A reader that saw
the store's last seq ``s`` has seen every event with a seq up to ``s``, now and later:
an event committed afterwards always gets a larger seq. (Seqs are never reused; the last
seq may go down when the newest events are erased on SQLite, never on PostgreSQL.)
Watermarks (what a model was trained on) and fold-in (what came after) rely on it: no
event falls between them.

Errors: every method raises :class:`~shelfrank.core.errors.StorageError` where its
database fails; callers (the gRPC layer above all) know no database module.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from shelfrank.core.errors import StorageError
from shelfrank.core.events import EventType, StoredEvent


@dataclass(frozen=True, kw_only=True)
class AppendResult:
    """Positions (in the given batch) of newly stored events, of duplicates and of events
    refused because their user was erased after the sender's ``erasure_seen``."""

    accepted: tuple[int, ...]
    duplicates: tuple[int, ...]
    seqs: tuple[int, ...] = ()  # the store's seq of each accepted event, in the same order
    erased: tuple[int, ...] = ()


class CatalogueEntry(NamedTuple):
    """One catalogue item as the store has it now."""

    item_id: str
    tokens: tuple[str, ...]
    available: bool = True  # False: never recommended (out of stock, withdrawn)
    added_ms: int = 0  # when first stored (unix ms; 0: unknown)
    # The revision that last wrote its tokens (an availability flip does not): a reader at
    # a revision at or after it has these tokens already and need not compare them.
    tokens_revision: int = 0
    # The store's integer key of the item: given once, never reused (0: not known). A
    # reader maps keys to its rows with one gather instead of a lookup per string id.
    key: int = 0


@dataclass(frozen=True, kw_only=True)
class AvailabilityResult:
    changed: int  # items whose availability this call changed
    unknown_item_ids: tuple[str, ...]  # ids the catalogue does not hold (nothing done)


@dataclass(frozen=True, kw_only=True)
class StoreCounts:
    events: int
    users_with_events: int
    items: int
    users: int


# (seq, event) pairs, oldest first.
SeqEvents = list[tuple[int, StoredEvent]]


@dataclass(frozen=True, kw_only=True)
class UserView:
    """What one request needs of the store about one user, read from one snapshot: a
    serving process caches nothing about users that this read does not re-validate, so
    every process sharing the store serves the same thing (see ``server/live.py``)."""

    # The store's last seq: every event up to it is either in ``events`` or not the user's.
    last_seq: int
    events: SeqEvents  # the user's events with a seq after the ``after_seq`` asked for
    latest_erasure: int  # the user's latest erasure id (0: never erased)
    profile: tuple[str, ...]  # the user's stored profile tokens (empty: none)
    catalogue_revision: int  # the store's catalogue revision (see catalogue_changes)


@dataclass(frozen=True, kw_only=True)
class ModelPointer:
    """The model every process should serve: ``version``, moved for the ``published``-th
    time (publication numbers only grow: a process never swaps back to an older one)."""

    version: str
    published: int


class LeaseLostError(StorageError):
    """A write that needs a lease (publishing a model as the trainer) found it held by
    another process or expired: the write was not made."""


class ImpressionKind(enum.StrEnum):
    """Who recorded an impression. The server records every response it serves
    (``SERVED``); a caller or a device reports what it actually showed (``SHOWN``: a part
    of a served list, or a list ranked on the device). Where both exist for one
    recommendation id, attribution uses the ``SHOWN`` one."""

    SERVED = "served"
    SHOWN = "shown"


@dataclass(frozen=True, kw_only=True)
class Impression:
    """One list of items put in front of a user (see shelfrank.server.feedback)."""

    recommendation_id: str
    kind: ImpressionKind
    user_id: str  # "" for anonymous requests (SimilarItems without a user)
    time_ms: int  # unix ms
    surface: str  # "recommend", "similar", "rank" or "device"
    experiment: str  # the experiment that assigned the variant ("": none)
    variant: str  # "": no experiment applied
    model_version: str  # "" before the first model
    item_ids: tuple[str, ...]  # in shown order
    # The user's latest erasure its sender had seen when it made the list (as Track's
    # ``erasure_seen``; None: no check): an impression of a user erased since is not
    # stored, so a buffered or re-sent one never outlives the erasure. Not stored itself.
    erasure_seen: int | None = None


# A model version's files: (path relative to its directory, bytes).
ModelFiles = list[tuple[str, bytes]]


@dataclass(frozen=True)
class ReplicaSample:
    """One serving process's load at one moment (the dashboard's overview): every replica
    writes its own to the shared store, so every replica can show them all."""

    replica: str
    time_ms: int  # unix ms
    # events_per_s, recommend_p50_ms, recommend_p99_ms, recommend_calls (a figure not
    # measured is left out); finite numbers only.
    values: Mapping[str, float]


@dataclass(frozen=True)
class AuditEntry:
    """Who changed what by hand (e.g. an item's availability from the dashboard)."""

    time_ms: int  # unix ms
    actor: str  # the caller's name ("anonymous" without tokens)
    action: str  # e.g. "availability"
    target: str  # e.g. "item:<id>"
    detail: str  # e.g. "available=false"


@dataclass(frozen=True)
class EvaluationInfo:
    """A stored offline evaluation (``shelfrank evaluate --save-to``)."""

    name: str
    saved_ms: int  # unix ms of the save (a replacement's)
    files: tuple[str, ...]  # its file names, in byte order


class EventStore(Protocol):
    """Durable, idempotent storage of behaviour events, catalogue items and profiles."""

    def append_events(
        self, events: Sequence[StoredEvent], *, erasure_seen: int | None = None
    ) -> AppendResult:
        """Store new events durably (committed when this returns); report duplicates by
        position. An id seen earlier in the batch, already stored, or belonging to an
        erased user's history is a duplicate. With ``erasure_seen`` (a device's last purged
        erasure, see :meth:`latest_erasure`), events of a user erased after it are refused,
        atomically with the insert. The new clicks are counted for :meth:`item_feedback`
        in the same transaction."""
        ...

    def record_impressions(self, impressions: Sequence[Impression]) -> int:
        """Store impressions durably (committed when this returns); returns how many were
        new. A ``SHOWN`` one naming no user (a caller's default) takes the user of the
        ``SERVED`` one of its recommendation id (stored, or in the batch), so the user's
        erasure takes it too. One whose user was erased after its ``erasure_seen`` is
        dropped first (not counted as new); then one per (recommendation_id, kind): a
        repeat is ignored (the first stays), so a device re-sending its outbox stores each
        once. Atomic with respect to :meth:`delete_user`: no impression it drops, or that
        the erasure deletes, is stored after it. The new ones are counted for
        :meth:`item_feedback` in the same transaction."""
        ...

    def impressions_between(self, from_ms: int, to_ms: int) -> Iterator[Impression]:
        """Every stored impression with ``from_ms <= time_ms < to_ms``, by (time_ms,
        recommendation_id, kind). Bounds beyond 64 bits mean the range's end (a report
        "until forever plus a window" is no error)."""
        ...

    def impressions_of(self, recommendation_ids: Collection[str]) -> list[Impression]:
        """Every stored impression (either kind) of ``recommendation_ids``, by
        (recommendation_id, kind): what a report over a range adds to the impressions of
        the range, whose other half (served or shown) may lie far outside it."""
        ...

    def item_feedback(self, item_id: str, since_ms: int) -> tuple[int, int]:
        """(shown, clicked) of the item over the UTC days from ``since_ms``'s on (day:
        ``time_ms // 86_400_000``), counted as rows are stored. Shown: recommendation ids
        whose list holds the item, once each (the SERVED record, else the SHOWN one), on
        that record's day. Clicked: VIEWs with a recommendation id whose stored impression
        holds the item and names the event's user or none, on the event's day (not when
        stored before that impression). Erasures keep both (anonymous counts). An
        approximation: the feedback report is the reference."""
        ...

    def events_between(self, from_ms: int, to_ms: int) -> Iterator[StoredEvent]:
        """Every stored event with ``from_ms <= timestamp_ms < to_ms``, by (timestamp_ms,
        event_id). Bounds beyond 64 bits mean the range's end."""
        ...

    def upsert_items(self, items: Iterable[tuple[str, Sequence[str]]]) -> int:
        """Store items (the last entry of an id wins) under a new catalogue revision (see
        :meth:`catalogue_changes`); returns how many entries were given."""
        ...

    def set_availability(self, item_ids: Sequence[str], available: bool) -> AvailabilityResult:
        """Make catalogue items (un)available without touching their tokens: the items
        that change get a new catalogue revision (one for the call; none when nothing
        changes). New items upserted later are available."""
        ...

    def upsert_users(self, users: Iterable[tuple[str, Sequence[str]]]) -> int: ...

    def delete_user(self, user_id: str) -> tuple[bool, int]:
        """Erase a user's events, impressions and profile; returns (existed, events deleted). The
        erased events' ids are remembered (replaying them stores nothing) and the erasure
        is numbered (see :meth:`latest_erasure`). ``SHOWN`` impressions of the user's
        recommendation ids go too, whoever they name: what was shown of a user's response
        is data about the user. The per-item counters of :meth:`item_feedback` stay: they
        are anonymous aggregates."""
        ...

    def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` were erased and have no events since."""
        ...

    def erasure_state(self, user_id: str) -> tuple[int, bool]:
        """(latest_erasure, was_erased) for the user, from one snapshot."""
        ...

    def latest_erasure(self, user_id: str) -> int:
        """The id of the user's latest erasure (growing; 0: never erased)."""
        ...

    def was_erased(self, user_id: str) -> bool: ...

    def events_for_user(self, user_id: str, after_seq: int = 0) -> SeqEvents: ...

    def user_history(self, user_id: str) -> tuple[int, SeqEvents]:
        """The user's events and the store's last seq, from one snapshot: every event with
        a seq up to that one is either in the list or not the user's."""
        ...

    def user_view(self, user_id: str, after_seq: int = 0) -> UserView:
        """The user's events after ``after_seq``, latest erasure and profile, and the
        store's last seq and catalogue revision, from one snapshot."""
        ...

    def catalogue_changes(self, after_revision: int = 0) -> tuple[int, list[CatalogueEntry]]:
        """The catalogue revision and every item upserted or (un)made available after
        ``after_revision`` as it is now, ordered by (revision, item id), from one
        snapshot. Revisions are in commit order: a reader that saw revision ``r`` has
        seen every change up to it."""
        ...

    def catalogue_revision(self) -> int:
        """The catalogue's revision now (see :meth:`catalogue_changes`)."""
        ...

    def last_erasure(self) -> int:
        """The latest erasure id of any user (0: none yet); erasure ids are in commit
        order, so a reader that saw ``e`` has seen every erasure up to it."""
        ...

    def last_seq(self) -> int: ...

    def iter_events(
        self, after_seq: int = 0, batch: int = 10_000
    ) -> Iterator[tuple[int, StoredEvent]]:
        """Every stored event after ``after_seq`` in seq order."""
        ...

    def item_event_counts(self, after_seq: int = 0) -> tuple[int, list[tuple[str, EventType, int]]]:
        """Events per item and type stored after ``after_seq``, and the last seq they run
        to (one snapshot)."""
        ...

    def item_features(self) -> dict[str, tuple[str, ...]]: ...

    def user_features(self) -> dict[str, tuple[str, ...]]: ...

    def iter_item_features(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every catalogue item and its tokens, streamed."""
        ...

    def counts(self) -> StoreCounts: ...

    # -- model registry ----------------------------------------------------------------------
    def save_model(self, version: str, files: ModelFiles) -> bool:
        """Store a model version's files, all or nothing; False when the version was
        stored before (its files are left as they are)."""
        ...

    def has_model(self, version: str) -> bool: ...

    def model_files(self, version: str) -> ModelFiles:
        """The version's files (StorageError naming it when it is not stored)."""
        ...

    def current_model(self) -> ModelPointer | None:
        """The model to serve (None: no model published yet)."""
        ...

    def publish_model(self, version: str, *, lease: tuple[str, str] | None = None) -> ModelPointer:
        """Point every process at ``version`` (stored before). With ``lease`` (name, holder),
        only while that holder holds the lease, checked in the same transaction
        (LeaseLostError otherwise): a trainer that lost its lease never publishes."""
        ...

    def prune_models(self, keep: int, protected: Collection[str] = ()) -> list[str]:
        """Delete the stored versions but the ``keep`` newest, the current one, the
        ``protected`` ones and those pinned in the store (:meth:`pin_models`, read in the
        deleting transaction); returns the versions deleted."""
        ...

    def pin_models(self, owner: str, versions: Collection[str]) -> set[str]:
        """Make ``versions`` the versions ``owner`` (e.g. "experiments") pins, replacing
        its earlier pins, in one transaction; empty: it pins none. Pins live in the store,
        so a process that knows nothing of their reason (a dedicated trainer without the
        experiment file) never prunes them. Returns the versions not stored (then nothing
        changes: a pin always names a stored model)."""
        ...

    def pinned_models(self) -> set[str]:
        """Every version pinned by any owner (never pruned)."""
        ...

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``ttl_seconds`` (by the
        store's clock); False while another holder's lease has not expired."""
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (if ``holder`` holds it)."""
        ...

    def lease_holder(self, name: str) -> str | None:
        """Who holds the lease now (None: nobody, or expired)."""
        ...

    # -- dashboard: load samples, audit log, saved evaluations --------------------------------
    def record_replica_sample(self, sample: ReplicaSample) -> None:
        """Store a replica's sample (one per (replica, time_ms): the last write wins) and,
        in the same transaction, delete every sample older than 24 h by this process's
        clock: the table stays small without a cleaning job."""
        ...

    def replica_samples(self, since_ms: int) -> list[ReplicaSample]:
        """Every sample with ``time_ms >= since_ms``, by (replica, time_ms)."""
        ...

    def record_audits(self, entries: Sequence[AuditEntry]) -> None:
        """Store audit entries durably, all or none in one transaction (a bulk change is
        one commit, not one per item); entries are never updated or deleted."""
        ...

    def audit_entries(self, target: str, limit: int = 50) -> list[AuditEntry]:
        """The ``limit`` newest entries about ``target``, newest first (same time: the
        later written first)."""
        ...

    def save_evaluation(self, name: str, files: Sequence[tuple[str, bytes]]) -> EvaluationInfo:
        """Store an evaluation's files under ``name``, replacing a same-named one in one
        transaction (a reader sees the old files or the new, never a mix). Names and file
        names are single URL path segments: not empty, no '/', '\\' or '..'."""
        ...

    def evaluations(self) -> list[EvaluationInfo]:
        """Every stored evaluation, the last saved first."""
        ...

    def evaluation_file(self, name: str, file: str) -> bytes:
        """A stored file's bytes (UnknownIdError naming the evaluation or the file when it
        is not stored)."""
        ...

    def integrity_check(self) -> str:
        """``"ok"``, or what the backend found wrong."""
        ...

    def close(self) -> None: ...


__all__ = [
    "AppendResult",
    "AuditEntry",
    "AvailabilityResult",
    "CatalogueEntry",
    "EvaluationInfo",
    "EventStore",
    "Impression",
    "ImpressionKind",
    "LeaseLostError",
    "ModelFiles",
    "ModelPointer",
    "ReplicaSample",
    "SeqEvents",
    "StoreCounts",
    "UserView",
]
