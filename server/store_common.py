"""What every store backend does the same way: group commit of appended batches, and
database errors leaving the store as StorageError."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import numbers
import threading
from collections import Counter
from collections.abc import Callable, Collection, Container, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from shelfrank.core.errors import InvalidInputError, StorageError, UnknownIdError
from shelfrank.core.events import StoredEvent
from shelfrank.server.storage import (
    AppendResult,
    AuditEntry,
    Impression,
    ImpressionKind,
    ReplicaSample,
)

_T = TypeVar("_T")


class PendingBatch:
    """One caller's batch waiting for the group commit that stores it."""

    __slots__ = ("done", "erasure_seen", "error", "events", "result")

    def __init__(self, events: Sequence[StoredEvent], erasure_seen: int | None) -> None:
        self.events = events
        self.erasure_seen = erasure_seen
        self.done = False
        self.result: AppendResult | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Batches that arrive while a commit is in progress are written together in the next
    transaction (one commit for all), in arrival order. Every caller returns only after
    the transaction holding its batch is committed; if that transaction fails, every
    batch in it fails and none is stored. ``lock`` is held while a group commits (a
    backend may use it for its other writes too)."""

    def __init__(self, lock: AbstractContextManager[Any]) -> None:
        self._lock = lock
        self._queue_lock = threading.Lock()
        self._queue: list[PendingBatch] = []

    def append(
        self,
        events: Sequence[StoredEvent],
        erasure_seen: int | None,
        commit: Callable[[Sequence[PendingBatch]], list[AppendResult]],
    ) -> AppendResult:
        """``events`` stored by ``commit`` (one transaction for a group of batches,
        returning one result per batch), alone or with batches of other callers."""
        pending = PendingBatch(events, erasure_seen)
        with self._queue_lock:
            self._queue.append(pending)
        while True:
            with self._lock:
                if pending.done:
                    break
                with self._queue_lock:
                    group, self._queue = self._queue, []
                try:
                    results = commit(group)
                except BaseException as exc:
                    for member in group:
                        member.error, member.done = exc, True
                else:
                    for member, result in zip(group, results, strict=True):
                        member.result, member.done = result, True
        if pending.error is not None:
            raise pending.error
        if pending.result is None:  # unreachable: done is set with a result or an error
            raise StorageError("append_events: batch finished without a result")
        return pending.result


def errors_mapped(
    database_error: type[BaseException], describe: Callable[[Any, str, BaseException], str]
) -> Callable[[type[_T]], type[_T]]:
    """A class decorator: every public method (and ``__init__``: opening fails too) raises
    StorageError where the database raised ``database_error``, with the message
    ``describe(store, method, error)``. Callers, the gRPC layer above all, know no
    database module."""

    def mapped(cls: type[_T]) -> type[_T]:
        for name, member in list(vars(cls).items()):
            public = not name.startswith("_") or name == "__init__"
            if public and inspect.isfunction(member):
                setattr(cls, name, _wrapped(member, name, database_error, describe))
        return cls

    return mapped


def _wrapped(
    method: Any,
    name: str,
    database_error: type[BaseException],
    describe: Callable[[Any, str, BaseException], str],
) -> Any:
    shown = "open" if name == "__init__" else name
    if inspect.isgeneratorfunction(method):

        def generator(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except database_error as exc:
                raise StorageError(describe(self, shown, exc)) from exc

        return functools.wraps(method)(generator)

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except database_error as exc:
            raise StorageError(describe(self, shown, exc)) from exc

    return functools.wraps(method)(call)


__all__ = ["GroupCommit", "PendingBatch", "errors_mapped"]


# What a time bound can be in every backend's integer columns (SQLite's INTEGER and
# PostgreSQL's BIGINT are both 64-bit): a report range beyond them ("until the end of
# time" plus a window) would overflow the driver's binding instead of meaning "all".
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def clamped_range(from_ms: int, to_ms: int) -> tuple[int, int]:
    """``[from_ms, to_ms)`` with both bounds clamped into the 64-bit range."""
    return (
        min(max(from_ms, INT64_MIN), INT64_MAX),
        min(max(to_ms, INT64_MIN), INT64_MAX),
    )


# Feature tokens are stored joined by a character that cannot appear in a valid token
# (the same in every backend: a store can be exported from one into another).
TOKEN_SEPARATOR = "\x1f"


def split_tokens(features: str | None) -> tuple[str, ...]:
    """The tokens of a stored ``features`` column (none for NULL or empty)."""
    return tuple(t for t in features.split(TOKEN_SEPARATOR) if t) if features else ()


# An impression's kind as every backend stores it: a small integer (SQLite stores 0 and 1
# in no bytes at all), numbered in the order the kinds' values sort (served, shown).
IMPRESSION_KINDS = (ImpressionKind.SERVED, ImpressionKind.SHOWN)
KIND_CODES = {kind: code for code, kind in enumerate(IMPRESSION_KINDS)}

# Where and how an impression's list was made: (surface, experiment, variant,
# model_version). Few of them are shared by many impressions, so each is stored once
# (``impression_contexts``) and an impression keeps its number.
ImpressionContext = tuple[str, str, str, str]


def context_of(impression: Impression) -> ImpressionContext:
    return (impression.surface, impression.experiment, impression.variant, impression.model_version)


def stored_impression(row: Sequence[Any], contexts: dict[int, ImpressionContext]) -> Impression:
    """An impression from its stored (recommendation_id, kind, user_id, time_ms,
    context_id, items) and the contexts by number."""
    recommendation_id, kind, user, time_ms, context_id, items = row
    surface, experiment, variant, model_version = contexts[int(context_id)]
    return Impression(
        recommendation_id=str(recommendation_id),
        kind=IMPRESSION_KINDS[int(kind)],
        user_id=str(user),
        time_ms=int(time_ms),
        surface=surface,
        experiment=experiment,
        variant=variant,
        model_version=model_version,
        item_ids=split_tokens(items),
    )


# The columns every backend reads impression contexts by, and the table they become.
CONTEXT_COLUMNS = "context_id, surface, experiment, variant, model_version"


def impression_contexts(rows: Iterable[Sequence[Any]]) -> dict[int, ImpressionContext]:
    """Context number -> (surface, experiment, variant, model_version), from rows of
    ``CONTEXT_COLUMNS``."""
    return {int(row[0]): (str(row[1]), str(row[2]), str(row[3]), str(row[4])) for row in rows}


def with_served_users(
    impressions: Sequence[Impression], stored_served: Mapping[str, str]
) -> list[Impression]:
    """``impressions`` where a SHOWN one naming no user takes the user of the SERVED
    impression of its recommendation id: the stored one (``stored_served``: id -> user,
    read in the write transaction), else the first of the batch. What was shown from a
    user's response is data about that user: the erasure check and the erasure apply."""
    served = dict(stored_served)
    for impression in impressions:
        if impression.kind is ImpressionKind.SERVED:
            served.setdefault(impression.recommendation_id, impression.user_id)
    return [
        dataclasses.replace(i, user_id=served[i.recommendation_id])
        if i.kind is ImpressionKind.SHOWN and not i.user_id and served.get(i.recommendation_id)
        else i
        for i in impressions
    ]


# -- per-item daily counters (item_days): what every backend counts at write time ----------
# The dashboard's "shown / clicked in the last days" of an item, read by a primary-key
# lookup per day (EventStore.item_feedback, item_feedback_sql) instead of decoding every
# impression and event of the range. Shown: shown_deltas. Clicked: each newly stored VIEW
# with a recommendation id whose stored impression (SERVED or SHOWN) holds the event's item
# and names the event's user or none, +1 on the event's day (each backend's clicks
# statement, in the append's transaction). Not the report's attribution
# (server/feedback/attribution.py, the reference): no window and no narrowing by a SHOWN
# list are applied, clicks without a recommendation id (its window rule) and clicks stored
# before their impression are not counted, so the figure is mostly below the report's
# attributed clicks. Erasures leave the counters (anonymous aggregates); an upgraded store
# counts the rows it holds then.
DAY_MS = 86_400_000  # item_days.day is time_ms // DAY_MS (UTC days, floored)


def day_sql(column: str) -> str:
    """``column // DAY_MS`` in SQL (floored, as Python: both backends' integer division
    truncates towards zero, and ``column + 1`` cannot overflow where it is negative)."""
    return (
        f"(CASE WHEN {column} >= 0 THEN {column} / {DAY_MS} ELSE ({column} + 1) / {DAY_MS} - 1 END)"
    )


def item_feedback_sql(since: str, item: str) -> str:
    """The statement summing an item's (shown, clicked) over the days from ``since`` on
    (``since`` and ``item``: the backend's parameters). item_days is keyed by day first, so
    it seeks each day present from ``since`` on (the next one is the least day above the
    last: a loose index scan) and looks the item up in each: a 7-day window reads about 8
    days' keys, not every item's rows of the range."""
    return f"""
    WITH RECURSIVE days(day) AS (
        SELECT MIN(day) FROM item_days WHERE day >= {since}
        UNION ALL
        SELECT (SELECT MIN(x.day) FROM item_days x WHERE x.day > days.day) FROM days
        WHERE days.day IS NOT NULL
    )
    SELECT COALESCE(SUM(i.shown), 0), COALESCE(SUM(i.clicked), 0)
    FROM days JOIN item_days i ON i.day = days.day AND i.item_id = {item}
    """


def first_day(since_ms: int) -> int:
    """The day of ``since_ms`` (clamped into 64 bits: a bound beyond them binds no
    number a driver refuses)."""
    return min(max(since_ms, INT64_MIN), INT64_MAX) // DAY_MS


# A stored impression record as the counters need it, by (recommendation_id, kind):
# (user_id, time_ms, item ids).
StoredRecords = Mapping[tuple[str, ImpressionKind], tuple[str, int, tuple[str, ...]]]


def first_new(
    impressions: Iterable[Impression], stored: Collection[tuple[str, ImpressionKind]]
) -> list[Impression]:
    """The first of each (recommendation_id, kind) of ``impressions`` not in ``stored``,
    in order: what an insert ignoring repeats stores."""
    new: dict[tuple[str, ImpressionKind], Impression] = {}
    for impression in impressions:
        key = (impression.recommendation_id, impression.kind)
        if key not in new and key not in stored:
            new[key] = impression
    return list(new.values())


# What storing impressions adds to item_days.shown: (item_id, day, delta) rows, one per key.
ShownDeltas = list[tuple[str, int, int]]


def shown_deltas(new: Sequence[Impression], stored: StoredRecords) -> ShownDeltas:
    """What storing ``new`` (newly stored records, one per key) adds to ``item_days.shown``,
    given the records of their ids stored before (``stored``).

    One record per recommendation id counts, +1 for each distinct item of its list on its
    day: the SERVED one where there is one, else the SHOWN one (a list ranked on a device
    has only that). A SHOWN record whose id has a SERVED one (stored or new) adds nothing,
    though it may narrow the list (an approximation: the report's attribution applies the
    narrowing); a SERVED one arriving after its id's SHOWN one takes that one's counts back
    (negative deltas), so the counts do not depend on the order the records arrive in."""
    served_kind, shown_kind = ImpressionKind.SERVED, ImpressionKind.SHOWN  # looked up once
    served = {rid for rid, kind in stored if kind is served_kind}
    served.update(i.recommendation_id for i in new if i.kind is served_kind)
    # The items of the lists counted (and taken back), by day: Counter adds them up in C.
    added: dict[int, list[str]] = {}
    taken: dict[int, list[str]] = {}
    for impression in new:
        if impression.kind is served_kind:
            if stored and (counted := stored.get((impression.recommendation_id, shown_kind))):
                taken.setdefault(counted[1] // DAY_MS, []).extend(set(counted[2]))
        elif impression.recommendation_id in served:
            continue
        added.setdefault(impression.time_ms // DAY_MS, []).extend(set(impression.item_ids))
    # An empty id is no item (a stored list reads back without it).
    if not taken:  # the common case: no dict of (item, day) keys
        return [
            (item, day, count)
            for day, items in added.items()
            for item, count in Counter(items).items()
            if item
        ]
    deltas: dict[tuple[str, int], int] = {}
    for day, items in added.items():
        for item, count in Counter(items).items():
            deltas[item, day] = count
    for day, items in taken.items():
        for item, count in Counter(items).items():
            deltas[item, day] = deltas.get((item, day), 0) - count
    return [(item, day, delta) for (item, day), delta in deltas.items() if delta and item]


def count_list(deltas: dict[tuple[str, int], int], items: Iterable[str], time_ms: int) -> None:
    """Count 1 in ``deltas`` for each distinct item of a list shown at ``time_ms``."""
    day = time_ms // DAY_MS
    for item in set(items):
        if item:  # an empty id is no item (a stored list reads back without it)
            deltas[item, day] = deltas.get((item, day), 0) + 1


def erasure_checked_users(impressions: Iterable[Impression]) -> set[str]:
    """The users whose latest erasure the erasure check of ``impressions`` needs."""
    return {i.user_id for i in impressions if i.erasure_seen is not None and i.user_id}


def not_erased(impressions: Iterable[Impression], latest: Mapping[str, int]) -> list[Impression]:
    """The impressions whose user was not erased after their ``erasure_seen`` (``latest``:
    user -> latest erasure id, read in the write transaction). Every backend drops these
    before it looks for repeats: a dropped impression never hides a later copy of its key."""
    return [
        i
        for i in impressions
        if i.erasure_seen is None or latest.get(i.user_id, 0) <= i.erasure_seen
    ]


def not_of_erased_responses(
    impressions: Iterable[Impression], erased: Container[str]
) -> list[Impression]:
    """The impressions whose response no erasure deleted (``erased``: the recommendation
    ids of the batch found in ``erased_recommendations``, read in the write transaction).
    A report of what was shown names no user by default, and after the erasure its
    response no longer names one either: without this it would store the erased user's
    list again."""
    return [i for i in impressions if i.recommendation_id not in erased]


def user_hash(user_id: str) -> str:
    """What an erasure keeps of a user (the same in every backend: devices compare it)."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


MODEL_CHUNK_BYTES = 4 * 2**20  # model files are stored in pieces of at most this size


def model_chunks(data: bytes) -> list[bytes]:
    """``data`` in pieces of at most MODEL_CHUNK_BYTES (one, possibly empty, at least)."""
    return [data[i : i + MODEL_CHUNK_BYTES] for i in range(0, len(data), MODEL_CHUNK_BYTES)] or [
        b""
    ]


def joined_chunks(rows: Iterable[tuple[Any, Any]]) -> list[tuple[str, bytes]]:
    """(path, chunk) rows in (path, chunk) order, joined into whole files."""
    files: dict[str, list[bytes]] = {}
    for path, data in rows:
        files.setdefault(str(path), []).append(bytes(data))
    return [(path, b"".join(parts)) for path, parts in files.items()]


# -- the dashboard's tables: the same checks and stored forms in every backend ---------------
# Replica samples are kept this long (deleted by the writes that come after).
SAMPLE_RETENTION_MS = 24 * 3600 * 1000


def _check_text(field: str, value: object) -> None:
    """Text every backend stores alike: PostgreSQL refuses NUL characters, SQLite keeps them."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(f"{field}: must not contain NUL characters")
    if not _encodable(value):
        raise InvalidInputError(f"{field}: must be valid Unicode text, got {value!r}")


def unstorable_text(text: str) -> bool:
    """Whether no backend can hold ``text`` (so nothing stored matches it): a lookup by it
    finds nothing instead of failing in a driver."""
    return "\x00" in text or not _encodable(text)


def _encodable(text: str) -> bool:
    """Whether ``text`` is UTF-8 encodable (no lone surrogates): what both drivers send."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_time(field: str, value: object) -> None:
    """A time both backends' 64-bit columns hold (beyond it the drivers fail unmapped)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field}: must be an integer (unix ms), got {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInputError(f"{field}: out of the 64-bit range, got {value}")


def sample_figures(sample: ReplicaSample) -> str:
    """The sample's values as every backend stores them (JSON text, keys sorted, floats);
    InvalidInputError naming the field that is not storable (JSON has no NaN or
    infinity, and a chart of them would mean nothing)."""
    _check_text("replica", sample.replica)
    if not sample.replica:
        raise InvalidInputError("replica: must not be empty")
    _check_time("time_ms", sample.time_ms)
    figures: dict[str, float] = {}
    for key, value in sample.values.items():
        _check_text("values: a key", key)
        if not key:
            raise InvalidInputError("values: a key must not be empty")
        number: object = value  # callers may pass anything: checked, not trusted
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            raise InvalidInputError(f"values[{key!r}]: must be a number, got {number!r}")
        if not math.isfinite(number):
            raise InvalidInputError(f"values[{key!r}]: must be finite, got {number!r}")
        figures[key] = float(number)
    return json.dumps(figures, sort_keys=True, allow_nan=False, separators=(",", ":"))


def stored_sample(row: Sequence[Any]) -> ReplicaSample:
    """A sample from its stored (replica, time_ms, figures)."""
    replica, time_ms, figures = row
    return ReplicaSample(str(replica), int(time_ms), json.loads(figures))


def check_audit(entry: AuditEntry) -> None:
    """InvalidInputError naming the field of ``entry`` that is not storable: an entry
    says who did what to what, so actor, action and target are never empty."""
    _check_time("time_ms", entry.time_ms)
    for field in ("actor", "action", "target", "detail"):
        value = getattr(entry, field)
        _check_text(field, value)
        if not value and field != "detail":
            raise InvalidInputError(f"{field}: must not be empty")


def checked_limit(limit: int) -> int:
    """``limit`` as both backends bind it (SQLite reads a negative LIMIT as none)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit: must be a non-negative integer, got {limit!r}")
    return min(limit, INT64_MAX)


def segment_problem(value: object) -> str | None:
    """Why ``value`` cannot name an evaluation or one of its files (None: it can). Names
    are single URL path segments of the dashboard (``/api/evaluations/<name>/files/<file>``)
    and file names in a folder: no separators, no parent references."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if "/" in value or "\\" in value or ".." in value or value == ".":
        return f"must be one path segment (no '/', '\\' or '..'), got {value!r}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return f"must not contain control characters, got {value!r}"
    if not _encodable(value):
        return f"must be valid Unicode text, got {value!r}"
    return None


def checked_evaluation(name: str, files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The evaluation's files by name (byte order, as every backend lists them);
    InvalidInputError naming the bad name, file name or repeated file."""
    problem = segment_problem(name)
    if problem is not None:
        raise InvalidInputError(f"name: {problem}")
    checked: dict[str, bytes] = {}
    for index, (file, data) in enumerate(files):
        problem = segment_problem(file)
        if problem is not None:
            raise InvalidInputError(f"files[{index}]: {problem}")
        if file in checked:
            raise InvalidInputError(f"files[{index}]: {file!r} is given twice")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInputError(
                f"files[{index}]: {file!r}: bytes expected, got {type(data).__name__}"
            )
        checked[file] = bytes(data)
    return sorted(checked.items(), key=lambda pair: pair[0].encode("utf-8"))


def check_evaluation_key(name: str, file: str) -> None:
    """UnknownIdError when ``name`` or ``file`` could never have been stored (then no
    backend is asked: PostgreSQL would refuse some of them as an error)."""
    if segment_problem(name) is not None:
        raise UnknownIdError(f"name: unknown evaluation {name!r}")
    if segment_problem(file) is not None:
        raise UnknownIdError(f"file: evaluation {name!r} has no file {file!r}")
