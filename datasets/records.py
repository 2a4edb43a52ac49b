"""In-memory forms of imported data: columnar interactions, feature tables, read reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType

MAX_REPORTED_ERRORS = 1000


@dataclass(frozen=True)
class RowError:
    """One rejected input row: where it was and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(kw_only=True)
class ReadReport:
    """What a reader did with a file. Every rejected row is counted; the first
    ``MAX_REPORTED_ERRORS`` are kept with their location."""

    path: str
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    errors: list[RowError] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.rows_rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(self.path, line, reason))

    def summary(self) -> str:
        return (
            f"{self.path}: {self.rows_read} rows, {self.rows_accepted} accepted, "
            f"{self.rows_rejected} rejected"
        )


@dataclass
class Interactions:
    """Behaviour events, column by column (compact for millions of rows).

    ``timestamps`` are unix seconds (NaN when absent); ``weights`` are explicit weights
    (NaN when the event type's weight applies); ``event_ids`` are '' when absent.
    """

    user_ids: list[str]
    item_ids: list[str]
    event_types: npt.NDArray[np.int8]
    timestamps: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float32]
    event_ids: list[str]

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        sizes = {
            len(self.item_ids),
            self.event_types.shape[0],
            self.timestamps.shape[0],
            self.weights.shape[0],
            len(self.event_ids),
        }
        if sizes != {n}:
            raise InvalidInputError("Interactions columns must all have the same length")

    @classmethod
    def empty(cls) -> Interactions:
        return cls.from_rows([])

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[tuple[str, str, EventType, float, float, str]],
    ) -> Interactions:
        """Build from ``(user_id, item_id, event_type, timestamp, weight, event_id)`` rows."""
        return cls(
            user_ids=[r[0] for r in rows],
            item_ids=[r[1] for r in rows],
            event_types=np.array([int(r[2]) for r in rows], dtype=np.int8),
            timestamps=np.array([r[3] for r in rows], dtype=np.float64),
            weights=np.array([r[4] for r in rows], dtype=np.float32),
            event_ids=[r[5] for r in rows],
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows(self) -> Iterator[tuple[str, str, EventType, float, float, str]]:
        for i in range(len(self)):
            yield (
                self.user_ids[i],
                self.item_ids[i],
                EventType(int(self.event_types[i])),
                float(self.timestamps[i]),
                float(self.weights[i]),
                self.event_ids[i],
            )

    def take(self, indices: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> Interactions:
        """The subset at ``indices`` (an index array or a boolean mask), in that order."""
        idx = np.flatnonzero(indices) if indices.dtype == np.bool_ else indices
        pick = idx.tolist()
        return Interactions(
            user_ids=[self.user_ids[i] for i in pick],
            item_ids=[self.item_ids[i] for i in pick],
            event_types=self.event_types[idx],
            timestamps=self.timestamps[idx],
            weights=self.weights[idx],
            event_ids=[self.event_ids[i] for i in pick],
        )

    @staticmethod
    def concat(parts: Sequence[Interactions]) -> Interactions:
        if not parts:
            return Interactions.empty()
        return Interactions(
            user_ids=[u for p in parts for u in p.user_ids],
            item_ids=[i for p in parts for i in p.item_ids],
            event_types=np.concatenate([p.event_types for p in parts]),
            timestamps=np.concatenate([p.timestamps for p in parts]),
            weights=np.concatenate([p.weights for p in parts]),
            event_ids=[e for p in parts for e in p.event_ids],
        )


@dataclass
class FeatureTable:
    """Metadata of users or items: for each id, its feature tokens (``column=value``)."""

    id_column: str
    columns: tuple[str, ...]
    ids: list[str]
    tokens: list[tuple[str, ...]]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.tokens):
            raise InvalidInputError("FeatureTable ids and tokens must have the same length")

    @classmethod
    def empty(cls, id_column: str) -> FeatureTable:
        return cls(id_column=id_column, columns=(), ids=[], tokens=[])

    def __len__(self) -> int:
        return len(self.ids)

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(zip(self.ids, self.tokens, strict=True))
