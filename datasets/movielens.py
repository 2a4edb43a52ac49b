"""Reader for the MovieLens-100k folder layout (u.data, u.item, u.user, u.genre, splits).

Produces the same objects as the CSV readers:
- interactions: a rating >= 4 becomes a ``purchase`` (positive interaction), a lower rating
  a ``view`` (weak signal: the user watched it), timestamp from the file, and a stable
  ``event_id`` ``ml-<user>-<item>``;
- items: ``genre`` (multi-valued), ``year`` and ``decade`` of release;
- users: ``age`` band, ``gender``, ``occupation``.
Malformed lines are reported with file:line like the CSV readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shelfrank.core.errors import DataFormatError
from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions, ReadReport

POSITIVE_RATING = 4
RATING_FILES = (
    "u.data",
    "ua.base",
    "ua.test",
    "ub.base",
    "ub.test",
    *(f"u{i}.{part}" for i in range(1, 6) for part in ("base", "test")),
)
AGE_BANDS = (
    (18, "under-18"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (50, "45-49"),
    (56, "50-55"),
)


def _lines(path: Path) -> list[str]:
    try:
        # u.item contains Latin-1 titles.
        return path.read_text(encoding="latin-1").splitlines()
    except FileNotFoundError:
        raise DataFormatError(
            path, None, "file not found (is this a MovieLens-100k folder?)"
        ) from None
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot read: {exc.strerror or exc}") from None


def read_ratings(path: str | Path, *, strict: bool = False) -> tuple[Interactions, ReadReport]:
    source = Path(path)
    report = ReadReport(path=str(source))
    rows: list[tuple[str, str, EventType, float, float, str]] = []
    for number, line in enumerate(_lines(source), start=1):
        if not line.strip():
            continue
        report.rows_read += 1
        parts = line.split("\t")
        reason = None
        if len(parts) != 4:
            reason = f"expected 4 tab-separated fields, got {len(parts)}"
        else:
            try:
                user, item, rating, stamp = (int(p) for p in parts)
            except ValueError:
                reason = "fields must be integers"
            else:
                if not 1 <= rating <= 5:
                    reason = f"rating {rating} outside 1..5"
        if reason is not None:
            if strict:
                raise DataFormatError(source, number, reason)
            report.reject(number, reason)
            continue
        kind = EventType.PURCHASE if rating >= POSITIVE_RATING else EventType.VIEW
        rows.append((str(user), str(item), kind, float(stamp), float("nan"), f"ml-{user}-{item}"))
    report.rows_accepted = len(rows)
    return Interactions.from_rows(rows), report


def _age_band(age: int) -> str:
    for limit, label in AGE_BANDS:
        if age < limit:
            return label
    return "56-plus"


def read_items(folder: str | Path) -> FeatureTable:
    root = Path(folder)
    genres = [line.split("|")[0] for line in _lines(root / "u.genre") if line.strip()]
    ids: list[str] = []
    tokens: list[tuple[str, ...]] = []
    path = root / "u.item"
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(genres):
            raise DataFormatError(
                path, number, f"expected {5 + len(genres)} fields, got {len(parts)}"
            )
        item_tokens = [
            f"genre={g}" for g, flag in zip(genres, parts[5:], strict=True) if flag == "1"
        ]
        date = parts[2].strip()
        if date:
            year = date[-4:]
            item_tokens += [f"year={year}", f"decade={year[:3]}0s"]
        ids.append(parts[0])
        tokens.append(tuple(item_tokens))
    return FeatureTable("item_id", ("genre", "year", "decade"), ids, tokens)


def read_users(folder: str | Path) -> FeatureTable:
    path = Path(folder) / "u.user"
    ids: list[str] = []
    tokens: list[tuple[str, ...]] = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 or not parts[1].isdigit():
            raise DataFormatError(path, number, "expected id|age|gender|occupation|zip")
        ids.append(parts[0])
        tokens.append(
            (f"age={_age_band(int(parts[1]))}", f"gender={parts[2]}", f"occupation={parts[3]}")
        )
    return FeatureTable("user_id", ("age", "gender", "occupation"), ids, tokens)


def available_rating_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    return [root / name for name in RATING_FILES if (root / name).is_file()]


def positive_mask(interactions: Interactions) -> np.ndarray:
    """Rows that are positive interactions (rating >= 4)."""
    return np.asarray(interactions.event_types == int(EventType.PURCHASE))
