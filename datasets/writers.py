"""Writers for the import format (used by the synthetic generator and MovieLens import)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from shelfrank.core.errors import InvalidInputError, StorageError
from shelfrank.core.events import EventType
from shelfrank.datasets.readers import VALUE_SEPARATOR
from shelfrank.datasets.records import FeatureTable, Interactions


@contextmanager
def _writing(path: str | Path) -> Iterator[TextIO]:
    """The file opened for writing CSV; a failed write (no permission, disk full) becomes a
    StorageError naming it."""
    try:
        with Path(path).open("w", encoding="utf-8", newline="") as handle:
            yield handle
    except OSError as exc:
        raise StorageError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def write_interactions(path: str | Path, interactions: Interactions) -> None:
    """Write interactions as CSV; timestamps as integer unix seconds when whole."""
    with _writing(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "event_type", "timestamp", "weight", "event_id"])
        for i in range(len(interactions)):
            stamp = float(interactions.timestamps[i])
            weight = float(interactions.weights[i])
            writer.writerow(
                [
                    interactions.user_ids[i],
                    interactions.item_ids[i],
                    EventType(int(interactions.event_types[i])).label,
                    "" if math.isnan(stamp) else (int(stamp) if stamp.is_integer() else stamp),
                    "" if math.isnan(weight) else weight,
                    interactions.event_ids[i],
                ]
            )


def write_features(path: str | Path, table: FeatureTable) -> None:
    """Write a feature table back to CSV (tokens grouped by column, multi-values joined)."""
    columns = list(table.columns)
    with _writing(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([table.id_column, *columns])
        for entity, tokens in zip(table.ids, table.tokens, strict=True):
            writer.writerow([entity, *_cells(tokens, columns)])


def _cells(tokens: Iterable[str], columns: list[str]) -> list[str]:
    values: dict[str, list[str]] = {column: [] for column in columns}
    for token in tokens:
        column, _, value = token.partition("=")
        if column not in values:
            raise InvalidInputError(f"token {token!r} belongs to no column of {columns}")
        values[column].append(value)
    return [VALUE_SEPARATOR.join(values[column]) for column in columns]
