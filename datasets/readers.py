"""Readers for the documented import format (CSV, or JSON Lines with the same fields).

Interactions: header row; required ``user_id,item_id``; optional ``event_type`` (view,
add_to_cart, purchase, search, dismiss; default view), ``timestamp`` (unix seconds, unix
milliseconds or ISO 8601), ``weight`` (finite, >= 0; overrides the event type's weight),
``event_id``.

Items / users: the id column (``item_id`` / ``user_id``) plus feature columns. Every other
column is a categorical feature; a cell is split on ``|`` into values and each value
becomes the token ``column=value``. Empty cells give no token.

Bad rows are counted and reported with file:line and the reason (nothing is dropped
silently); with ``strict=True`` the first bad row raises :class:`DataFormatError`. A bad
header always raises.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from shelfrank.core.errors import DataFormatError, InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.core.ids import MAX_ID_BYTES, has_control_characters
from shelfrank.datasets.records import FeatureTable, Interactions, ReadReport

INTERACTION_COLUMNS = ("user_id", "item_id", "event_type", "timestamp", "weight", "event_id")
REQUIRED_INTERACTION_COLUMNS = ("user_id", "item_id")
VALUE_SEPARATOR = "|"
# Unix times above this are milliseconds: 1e11 seconds is the year 5138.
_MILLISECONDS_THRESHOLD = 1e11

Row = dict[str, str]


class RowRejectedError(InvalidInputError):
    """Internal: a row is invalid for the given reason."""


def parse_id(value: str | None, field: str) -> str:
    text = (value or "").strip()
    if not text:
        raise RowRejectedError(f"missing {field}")
    if len(text.encode("utf-8")) > MAX_ID_BYTES:
        raise RowRejectedError(f"{field} longer than {MAX_ID_BYTES} bytes")
    if has_control_characters(text):  # as Track refuses them (core/ids.py)
        raise RowRejectedError(f"{field} {text!r} contains control characters")
    return text


def parse_timestamp(value: str) -> float:
    """Unix seconds from unix seconds, unix milliseconds or ISO 8601 (UTC if naive)."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RowRejectedError(f"timestamp {value!r} is not unix time or ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(number) or number < 0:
        raise RowRejectedError(f"timestamp {value!r} is not a non-negative finite number")
    return number / 1000.0 if number >= _MILLISECONDS_THRESHOLD else number


def parse_weight(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise RowRejectedError(f"weight {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise RowRejectedError(f"weight {value!r} must be finite and >= 0")
    return number


def _event_type(value: str) -> EventType:
    if not value.strip():
        return EventType.VIEW
    try:
        return EventType.parse(value)
    except ValueError as exc:
        raise RowRejectedError(str(exc)) from None


def _check_header(
    path: Path, header: list[str], allowed: tuple[str, ...] | None, required: tuple[str, ...]
) -> list[str]:
    names = [name.strip() for name in header]
    if not any(names):
        raise DataFormatError(path, 1, "empty header row")
    seen: set[str] = set()
    for name in names:
        if not name:
            raise DataFormatError(path, 1, "header has an empty column name")
        if name in seen:
            raise DataFormatError(path, 1, f"header repeats column {name!r}")
        seen.add(name)
        if allowed is not None and name not in allowed:
            raise DataFormatError(
                path, 1, f"unknown column {name!r}; allowed columns: {', '.join(allowed)}"
            )
        if "=" in name or VALUE_SEPARATOR in name:
            raise DataFormatError(path, 1, f"column name {name!r} must not contain '=' or '|'")
    missing = [name for name in required if name not in seen]
    if missing:
        raise DataFormatError(
            path, 1, f"missing required column(s) {', '.join(missing)}; header is {names}"
        )
    return names


def _csv_rows(
    path: Path,
    allowed: tuple[str, ...] | None,
    required: tuple[str, ...],
    report: ReadReport,
    strict: bool,
) -> Iterator[tuple[int, Row]]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, None, "file is empty (a header row is required)") from None
        except csv.Error as exc:
            raise DataFormatError(path, 1, f"unreadable header: {exc}") from None
        names = _check_header(path, header, allowed, required)
        width = len(names)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                report.rows_read += 1
                _reject(report, reader.line_num, f"malformed CSV: {exc}", strict)
                continue
            if not cells:  # blank line
                continue
            report.rows_read += 1
            if len(cells) != width:
                _reject(
                    report, reader.line_num, f"expected {width} columns, got {len(cells)}", strict
                )
                continue
            yield reader.line_num, dict(zip(names, cells, strict=True))


def _jsonl_rows(
    path: Path,
    allowed: tuple[str, ...] | None,
    required: tuple[str, ...],
    report: ReadReport,
    strict: bool,
    multi_valued: bool,
) -> Iterator[tuple[int, Row]]:
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.rows_read += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                _reject(report, number, f"invalid JSON: {exc.msg}", strict)
                continue
            if not isinstance(record, dict):
                _reject(report, number, "a line must hold a JSON object", strict)
                continue
            row: Row = {}
            problem = None
            for key, value in record.items():
                if allowed is not None and key not in allowed:
                    problem = f"unknown field {key!r}; allowed fields: {', '.join(allowed)}"
                elif (
                    multi_valued
                    and isinstance(value, list)
                    and all(isinstance(v, str) for v in value)
                ):
                    row[key] = VALUE_SEPARATOR.join(value)
                elif isinstance(value, str | int | float) and not isinstance(value, bool):
                    row[key] = str(value)
                elif value is None:
                    row[key] = ""
                else:
                    problem = f"field {key!r} has an unsupported value {value!r}"
            missing = [name for name in required if name not in row]
            if problem is None and missing:
                problem = f"missing required field(s) {', '.join(missing)}"
            if problem is not None:
                _reject(report, number, problem, strict)
                continue
            yield number, row


def _open_text(path: Path) -> TextIO:
    # surrogateescape keeps reading past invalid UTF-8 so the bad row can be reported
    # with its line number instead of aborting the whole file.
    try:
        return path.open("r", encoding="utf-8", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "is a directory, expected a file") from None
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot open: {exc.strerror}") from None


def _reject(report: ReadReport, line: int, reason: str, strict: bool) -> None:
    if strict:
        raise DataFormatError(report.path, line, reason)
    report.reject(line, reason)


def _has_invalid_utf8(row: Row) -> bool:
    return any("\udc80" <= ch <= "\udcff" for cell in row.values() for ch in cell)


def _rows(
    path: Path,
    allowed: tuple[str, ...] | None,
    required: tuple[str, ...],
    report: ReadReport,
    strict: bool,
    multi_valued: bool,
) -> Iterator[tuple[int, Row]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        source = _jsonl_rows(path, allowed, required, report, strict, multi_valued)
    else:
        source = _csv_rows(path, allowed, required, report, strict)
    for line, row in source:
        if _has_invalid_utf8(row):
            _reject(report, line, "row is not valid UTF-8", strict)
            continue
        yield line, row


def read_interactions(path: str | Path, *, strict: bool = False) -> tuple[Interactions, ReadReport]:
    """Read an interactions file (``.csv`` or ``.jsonl``)."""
    source = Path(path)
    report = ReadReport(path=str(source))
    users: list[str] = []
    items: list[str] = []
    types: list[int] = []
    stamps: list[float] = []
    weights: list[float] = []
    event_ids: list[str] = []
    for line, row in _rows(
        source,
        INTERACTION_COLUMNS,
        REQUIRED_INTERACTION_COLUMNS,
        report,
        strict,
        multi_valued=False,
    ):
        try:
            user = parse_id(row.get("user_id"), "user_id")
            item = parse_id(row.get("item_id"), "item_id")
            kind = _event_type(row.get("event_type", ""))
            stamp_text = row.get("timestamp", "").strip()
            stamp = parse_timestamp(stamp_text) if stamp_text else math.nan
            weight_text = row.get("weight", "").strip()
            weight = parse_weight(weight_text) if weight_text else math.nan
            event_id_text = row.get("event_id", "").strip()
            event_id = parse_id(event_id_text, "event_id") if event_id_text else ""
        except RowRejectedError as exc:
            _reject(report, line, str(exc), strict)
            continue
        users.append(user)
        items.append(item)
        types.append(int(kind))
        stamps.append(stamp)
        weights.append(weight)
        event_ids.append(event_id)
    report.rows_accepted = len(users)
    table = Interactions(
        user_ids=users,
        item_ids=items,
        event_types=np.array(types, dtype=np.int8),
        timestamps=np.array(stamps, dtype=np.float64),
        weights=np.array(weights, dtype=np.float32),
        event_ids=event_ids,
    )
    return table, report


def read_features(
    path: str | Path, id_column: str, *, strict: bool = False
) -> tuple[FeatureTable, ReadReport]:
    """Read an items or users file: ``id_column`` plus categorical feature columns."""
    source = Path(path)
    report = ReadReport(path=str(source))
    ids: list[str] = []
    tokens: list[tuple[str, ...]] = []
    first_line: dict[str, int] = {}
    columns: list[str] = []
    for line, row in _rows(source, None, (id_column,), report, strict, multi_valued=True):
        if not columns:
            columns = [name for name in row if name != id_column]
        try:
            entity = parse_id(row.get(id_column), id_column)
            if entity in first_line:
                raise RowRejectedError(
                    f"duplicate {id_column} {entity!r} (first at line {first_line[entity]})"
                )
            entity_tokens = _tokens(row, id_column)
        except RowRejectedError as exc:
            _reject(report, line, str(exc), strict)
            continue
        first_line[entity] = line
        ids.append(entity)
        tokens.append(entity_tokens)
    report.rows_accepted = len(ids)
    return FeatureTable(id_column=id_column, columns=tuple(columns), ids=ids, tokens=tokens), report


def _tokens(row: Row, id_column: str) -> tuple[str, ...]:
    out: list[str] = []
    for column, cell in row.items():
        if column == id_column:
            continue
        if "=" in column or VALUE_SEPARATOR in column:
            raise RowRejectedError(f"field name {column!r} must not contain '=' or '|'")
        for value in cell.split(VALUE_SEPARATOR):
            value = value.strip()
            if value:
                token = f"{column}={value}"
                if has_control_characters(token):  # as UpsertItems refuses them
                    raise RowRejectedError(f"feature {token!r} contains control characters")
                if token not in out:
                    out.append(token)
    return tuple(out)
