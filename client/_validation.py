"""Cheap, certain checks of caller input, done before any RPC (private).

Only limits the contract in ``proto/shelfrank/v1/recommender.proto`` states are checked
here, so a request that passes can still be refused by the server for reasons only it
knows. Every error is an ``InvalidInputError`` whose message starts with the field name.
No grpc or protobuf import: ``types.py`` uses this module and must stay transport-free.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType

MAX_ID_BYTES = 256
"""Ids (users, items, events, sessions) are 1 to 256 UTF-8 bytes."""
MAX_K = 1000
MAX_CANDIDATES = 10_000
"""Rank candidates and Recommend's exclude_item_ids."""
MAX_BATCH = 10_000
"""Events per Track request, items/users per Upsert request, impressions per ReportShown."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1
MAX_SECONDS = 365 * 24 * 3600
"""The longest timeout: gRPC wraps deadlines a few centuries away into the past."""


def _type_name(value: object) -> str:
    return type(value).__name__


def utf8_text(field: str, value: object) -> str:
    """``value`` if it is a str protobuf can encode (no lone surrogates)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected a str, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field}: not encodable as UTF-8") from None
    return value


def identifier(field: str, value: object) -> str:
    """A required id: non-empty and at most 256 UTF-8 bytes."""
    text = optional_identifier(field, value)
    if not text:
        raise InvalidInputError(f"{field}: must not be empty")
    return text


def optional_identifier(field: str, value: object) -> str:
    """An id that may be left empty (``session_id``), else at most 256 UTF-8 bytes."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected a str, got {_type_name(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field}: not encodable as UTF-8") from None
    if size > MAX_ID_BYTES:
        raise InvalidInputError(f"{field}: {size} bytes long, ids are at most {MAX_ID_BYTES}")
    return value


def _iterable(field: str, values: object) -> Iterable[object]:
    # A bare str is iterable too, and would silently become one id per character.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{field}: expected an iterable of str, got {_type_name(values)}")
    return values


def identifiers(
    field: str, values: object, *, min_count: int = 0, max_count: int | None = None
) -> tuple[str, ...]:
    """A tuple of required ids, each checked, with an optional count range."""
    checked = tuple(
        identifier(f"{field}[{index}]", value)
        for index, value in enumerate(_iterable(field, values))
    )
    count_in_range(field, len(checked), min_count=min_count, max_count=max_count)
    return checked


def tokens(field: str, values: object) -> tuple[str, ...]:
    """Feature tokens: any str (the server owns the ``column=value`` vocabulary)."""
    return tuple(
        utf8_text(f"{field}[{index}]", value)
        for index, value in enumerate(_iterable(field, values))
    )


def count_in_range(field: str, count: int, *, min_count: int, max_count: int | None) -> None:
    if count < min_count:
        raise InvalidInputError(f"{field}: needs at least {min_count}, got {count}")
    if max_count is not None and count > max_count:
        raise InvalidInputError(f"{field}: at most {max_count:,} allowed, got {count:,}")


def integer(field: str, value: object) -> int:
    """An int, refusing bool (a bool is an int to Python, never what the caller meant)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field}: expected an int, got {_type_name(value)}")
    return value


def int64(field: str, value: object) -> int:
    number = integer(field, value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise InvalidInputError(f"{field}: {number} does not fit in 64 bits")
    return number


def uint64(field: str, value: object) -> int:
    number = integer(field, value)
    if not 0 <= number <= _UINT64_MAX:
        raise InvalidInputError(f"{field}: must be a non-negative int of 64 bits, got {number}")
    return number


def top_k(value: object) -> int:
    k = integer("k", value)
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k: must be between 1 and {MAX_K}, got {k}")
    return k


def boolean(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{field}: expected a bool, got {_type_name(value)}")
    return value


def positive_seconds(field: str, value: object) -> float:
    """A duration in seconds: finite and above zero (gRPC deadlines need both)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{field}: expected seconds as a number, got {_type_name(value)}")
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise InvalidInputError(
            f"{field}: must be a positive number of seconds, at most {MAX_SECONDS:,}"
        )
    return seconds


def local_path(field: str, value: object) -> Path:
    """A file system path given as a non-empty str or Path the OS can take (no NUL
    character, encodable in the file system's encoding)."""
    if not isinstance(value, str | Path):
        raise InvalidInputError(f"{field}: expected a str or Path, got {_type_name(value)}")
    text = str(value)
    if not text:
        raise InvalidInputError(f"{field}: must not be empty")
    if "\0" in text:
        raise InvalidInputError(f"{field}: must not contain a NUL character")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field}: not encodable as a file name") from None
    return Path(value)


MAX_PER_FEATURE_COLUMNS = 20
MAX_RECOMMENDATION_ID = 128
MAX_SHOWN_ITEMS = 1000
"""Items of one impression (ReportShown)."""
SURFACES = ("recommend", "similar", "rank", "device")
_INT32_MAX = 2**31 - 1
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # as the server's ids (server/requests.py)


def share(field: str, value: object) -> float:
    """A number in [0, 1] (diversity, exploration)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{field}: expected a number in [0, 1], got {_type_name(value)}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise InvalidInputError(f"{field}: must be in [0, 1], got {value!r}")
    return number


def feature_caps(field: str, value: object) -> dict[str, int]:
    """``{"brand=": 2}``: a column followed by '=' -> a positive count."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field}: expected a mapping like {{'brand=': 2}}")
    if len(value) > MAX_PER_FEATURE_COLUMNS:
        raise InvalidInputError(f"{field}: at most {MAX_PER_FEATURE_COLUMNS} columns")
    caps: dict[str, int] = {}
    for key, count in value.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{field}: keys must be str, got {_type_name(key)}")
        column, sep, rest = key.partition("=")
        if not column or not sep or rest:
            raise InvalidInputError(
                f"{field}[{key!r}]: must be a column followed by '=' (e.g. 'brand=')"
            )
        number = integer(f"{field}[{key!r}]", count)
        if number < 1 or number > 2**31 - 1:
            raise InvalidInputError(f"{field}[{key!r}]: must be a positive count, got {count!r}")
        caps[key] = number
    return caps


def recommendation_id(
    value: object, *, required: bool = False, field: str = "recommendation_id"
) -> str:
    """An id of 1 to 128 characters without control characters; empty is allowed unless
    ``required`` (the server then makes one, or the event answers no response)."""
    text = utf8_text(field, value)
    if not text:
        if required:
            raise InvalidInputError(f"{field}: must not be empty")
        return text
    identifier(field, text)
    if len(text) > MAX_RECOMMENDATION_ID:
        raise InvalidInputError(
            f"{field}: at most {MAX_RECOMMENDATION_ID} characters, got {len(text)}"
        )
    if _CONTROL.search(text):
        raise InvalidInputError(f"{field}: must not contain control characters")
    return text


def position(field: str, value: object) -> int:
    """A 1-based position in a list, 0 for unknown (an int32 on the wire)."""
    number = integer(field, value)
    if not 0 <= number <= _INT32_MAX:
        raise InvalidInputError(f"{field}: must be >= 0 (0: unknown), got {number}")
    return number


def surface(value: object) -> str:
    """Where an impression was shown (empty: ``device``)."""
    text = utf8_text("surface", value) or "device"
    if text not in SURFACES:
        raise InvalidInputError(f"surface: one of {', '.join(SURFACES)}, got {text!r}")
    return text


def time_range(from_ms: object, to_ms: object) -> tuple[int, int]:
    """A report's ``[from_ms, to_ms)``: unix ms >= 0, ``to_ms`` 0 (now) or after ``from_ms``."""
    start = int64("from_ms", from_ms)
    end = int64("to_ms", to_ms)
    if start < 0:
        raise InvalidInputError(f"from_ms: must be >= 0, got {start}")
    if end < 0:
        raise InvalidInputError(f"to_ms: must be >= 0 (0: now), got {end}")
    if end and end <= start:
        raise InvalidInputError(f"to_ms: must be after from_ms ({start}), got {end}")
    return start, end


def event_types(field: str, values: object) -> tuple[EventType, ...]:
    """Event types given as ``EventType`` or their labels (``"view"``)."""
    kinds = []
    for index, value in enumerate(_iterable(field, values)):
        if isinstance(value, EventType):
            kinds.append(value)
        elif isinstance(value, str):
            try:
                kinds.append(EventType.parse(value))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{field}[{index}]: {exc}") from None
        else:
            raise InvalidInputError(
                f"{field}[{index}]: expected an EventType or its label, got {_type_name(value)}"
            )
    return tuple(dict.fromkeys(kinds))
