"""A/B experiments: their configuration file and the assignment of users to variants.

Shared by the server and the edge device, so it uses the standard library only (and
:mod:`shelfrank.core.ranking` for the steering options' checks).

Configuration
=============

:func:`load_experiments` reads a TOML file (JSON when the name ends in ``.json``, same
structure)::

    [[experiment]]
    name = "home"
    surface = "recommend"           # recommend | similar | rank; default recommend
    salt = "2026-12"                # optional, default: the name
    start = "2026-12-01T00:00:00Z"  # optional RFC 3339 date-time with an offset; end likewise
    control = "control"             # optional, default: the first variant
    [[experiment.variant]]
    name = "control"
    share = 50                      # integer percent, 1..100; the shares add up to 100
    setting = "hybrid"
    [[experiment.variant]]
    name = "pop"
    share = 50
    setting = "popularity"
    # optional per variant: diversity = 0.3, exploration = 0.1, max_per_feature = { "brand=" = 2 }

Settings: ``"hybrid"`` (the serving model with the normal pipeline), ``"popularity"``
(the recent-popularity baseline) and ``"model:<version>"`` (a model version pinned: the
server serves that stored version to the variant's users, with the current catalogue and
the users' events since that model's watermark folded in; the server refuses a file naming
a version its store does not hold, and keeps pinned versions from being pruned).

On surface ``similar`` (SimilarItems with the shopper's ``user_id``; a request without
one gets no variant), ``hybrid`` and ``model:<version>`` rank by that model's item
similarity and ``popularity`` by popularity; the steering options do not apply there,
and a file setting them on that surface is refused.

An experiment is active from ``start`` (included) to ``end`` (excluded); a missing bound
is open. Two experiments on one surface may not have
overlapping active windows, so at most one applies to a request.

Assignment
==========

:func:`assign` is deterministic and stateless, so every process (and every language)
assigning a user gives the same variant:

1. ``key`` = the UTF-8 bytes of ``salt + "\\x1f" + user_id`` (U+001F, the unit separator,
   between them; ``salt`` defaults to the experiment's name).
2. ``digest`` = SHA-256 of ``key``.
3. ``bucket`` = the first 8 bytes of ``digest`` read as an unsigned big-endian 64-bit
   integer, modulo 10 000 (0..9999; the modulo bias, 2**64 mod 10 000 of 2**64 values, is
   below 1e-15).
4. Walk the variants in file order with a running total of ``share * 100`` buckets each:
   the user gets the first variant whose running total exceeds ``bucket``. With shares 50
   and 50, buckets 0..4999 get the first variant and 5000..9999 the second.

A new salt reshuffles every user; changing the shares of a salt keeps most users where
they were (only the buckets moving from one variant to another change). Test vectors
(salt ``"2026-12"``, shares 50/50): user ``"alice"`` has bucket 1408 (the first
variant), ``"bob"`` 4188 (the first), ``"ü"`` 6987 (the second), ``""`` 8421 (the second).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from shelfrank.core.errors import DataFormatError, InvalidInputError
from shelfrank.core.ids import has_control_characters
from shelfrank.core.ranking import check_max_per_feature, check_share

SURFACES = ("recommend", "similar", "rank")
SETTINGS = ("hybrid", "popularity")
BUCKETS = 10_000

_EXPERIMENT_KEYS = frozenset({"name", "surface", "salt", "start", "end", "control", "variant"})
_VARIANT_KEYS = frozenset(
    {"name", "share", "setting", "diversity", "exploration", "max_per_feature"}
)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _quote(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what}: must be a non-empty string, got {value!r}")
    if has_control_characters(value):
        raise InvalidInputError(f"{what}: must not contain control characters, got {value!r}")
    return value


# A variant pinned to one model version: ``setting = "model:<version>"``.
PINNED_PREFIX = "model:"


def _check_setting(value: object, where: str) -> str:
    if value in SETTINGS:
        return str(value)
    if isinstance(value, str) and value.startswith(PINNED_PREFIX):
        version = value[len(PINNED_PREFIX) :]
        if not version or any(ord(c) < 32 or ord(c) == 127 for c in version):
            raise InvalidInputError(
                f"{where}setting: {value!r} must name a model version after 'model:'"
            )
        return value
    allowed = ", ".join(map(repr, SETTINGS))
    raise InvalidInputError(
        f"{where}setting: unknown value {value!r} (expected one of {allowed}, or "
        "'model:<version>' for a pinned model version)"
    )


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: ``share`` percent of the users get ``setting`` with these
    steering options (``None``: the request's own, or the server's default)."""

    name: str
    share: int
    setting: str = "hybrid"
    diversity: float | None = None
    exploration: float | None = None
    max_per_feature: tuple[tuple[str, int], ...] | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "variant name")
        where = f"variant {_quote(self.name)}: "
        share = self.share
        if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= 100:
            raise InvalidInputError(
                f"{where}share: must be an integer percent in 1..100, got {share!r}"
            )
        _check_setting(self.setting, where)
        try:
            if self.diversity is not None:
                object.__setattr__(self, "diversity", check_share(self.diversity, "diversity"))
            if self.exploration is not None:
                object.__setattr__(
                    self, "exploration", check_share(self.exploration, "exploration")
                )
            if self.max_per_feature is not None:
                caps = check_max_per_feature(self.max_per_feature)
                object.__setattr__(self, "max_per_feature", caps)
        except InvalidInputError as error:
            raise InvalidInputError(f"{where}{error}") from None

    @property
    def pinned_version(self) -> str | None:
        """The model version a ``model:<version>`` setting pins (None: not pinned)."""
        if self.setting.startswith(PINNED_PREFIX):
            return self.setting[len(PINNED_PREFIX) :]
        return None


@dataclass(frozen=True)
class Experiment:
    """Variants of one surface, assigned by a salted hash of the user id (see the module
    docstring). ``start_ms``/``end_ms``: unix milliseconds, start included, end excluded,
    ``None`` open."""

    name: str
    salt: str
    surface: str
    start_ms: int | None
    end_ms: int | None
    variants: tuple[Variant, ...]
    control: str

    def __post_init__(self) -> None:
        _check_name(self.name, "experiment name")
        where = f"experiment {_quote(self.name)}: "
        if not isinstance(self.salt, str):
            raise InvalidInputError(f"{where}salt: must be a string, got {self.salt!r}")
        if self.surface not in SURFACES:
            raise InvalidInputError(
                f"{where}surface: unknown value {self.surface!r} (expected one of "
                f"{', '.join(map(repr, SURFACES))})"
            )
        for field_name in ("start_ms", "end_ms"):
            value = getattr(self, field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidInputError(f"{where}{field_name}: must be an integer or None")
        if self.start_ms is not None and self.end_ms is not None and self.end_ms <= self.start_ms:
            raise InvalidInputError(f"{where}end: must be after start")
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants:
            raise InvalidInputError(f"{where}needs at least one variant")
        seen: set[str] = set()
        for variant in self.variants:
            if not isinstance(variant, Variant):
                raise InvalidInputError(f"{where}variants: expected Variant, got {variant!r}")
            if variant.name in seen:
                raise InvalidInputError(f"{where}variant {_quote(variant.name)}: duplicate name")
            seen.add(variant.name)
        total = sum(variant.share for variant in self.variants)
        if total != 100:
            shares = " + ".join(f"{v.share} ({_quote(v.name)})" for v in self.variants)
            raise InvalidInputError(f"{where}shares must add up to 100, got {shares} = {total}")
        if self.surface == "similar":
            for variant in self.variants:
                steered = [
                    option
                    for option in ("diversity", "exploration", "max_per_feature")
                    if getattr(variant, option) is not None
                ]
                if steered:
                    raise InvalidInputError(
                        f"{where}variant {_quote(variant.name)}: {steered[0]}: not applied on "
                        "surface 'similar' (its settings: hybrid, popularity, model:<version>)"
                    )
        if self.control not in seen:
            raise InvalidInputError(
                f"{where}control: {self.control!r} is not one of its variants "
                f"({', '.join(map(_quote, (v.name for v in self.variants)))})"
            )

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; InvalidInputError if there is none."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise InvalidInputError(f"experiment {_quote(self.name)}: no variant {name!r}")

    def active_at(self, now_ms: int) -> bool:
        """Whether ``start_ms <= now_ms < end_ms`` (a missing bound is open)."""
        return (self.start_ms is None or self.start_ms <= now_ms) and (
            self.end_ms is None or now_ms < self.end_ms
        )


def bucket_of(salt: str, user_id: str) -> int:
    """The user's bucket, 0..9999 (see the module docstring)."""
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(experiment: Experiment, user_id: str) -> Variant:
    """The variant a user gets: stable across processes, restarts and languages."""
    bucket = bucket_of(experiment.salt, user_id)
    total = 0
    for variant in experiment.variants:
        total += variant.share * (BUCKETS // 100)
        if bucket < total:
            return variant
    return experiment.variants[-1]  # unreachable: the shares add up to 100


def active_experiment(
    experiments: Iterable[Experiment], surface: str, now_ms: int
) -> Experiment | None:
    """The experiment running on ``surface`` at ``now_ms`` (the first one, should several
    overlap: :func:`load_experiments` refuses that), else ``None``."""
    for experiment in experiments:
        if experiment.surface == surface and experiment.active_at(now_ms):
            return experiment
    return None


def check_overlaps(experiments: Sequence[Experiment]) -> None:
    """InvalidInputError for duplicate names or two experiments on one surface whose active
    windows overlap."""
    names: set[str] = set()
    for index, experiment in enumerate(experiments):
        if experiment.name in names:
            raise InvalidInputError(f"experiment {_quote(experiment.name)}: duplicate name")
        names.add(experiment.name)
        for earlier in experiments[:index]:
            if earlier.surface != experiment.surface:
                continue
            low = max(_bound(earlier.start_ms, -math.inf), _bound(experiment.start_ms, -math.inf))
            high = min(_bound(earlier.end_ms, math.inf), _bound(experiment.end_ms, math.inf))
            if low < high:
                raise InvalidInputError(
                    f"experiment {_quote(experiment.name)}: its active window overlaps that of "
                    f"experiment {_quote(earlier.name)} on surface {experiment.surface!r} "
                    f"(from {_show_time(low)} to {_show_time(high)})"
                )


def _bound(value: int | None, default: float) -> float:
    return default if value is None else value


def _show_time(ms: float) -> str:
    if math.isinf(ms):
        return "the start" if ms < 0 else "open end"
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def parse_time(value: object, field_name: str) -> int:
    """An RFC 3339 date-time with an offset (a string, or a TOML date-time) as unix ms."""
    if isinstance(value, str):
        text = value.strip()
        if not _RFC3339.fullmatch(text):
            raise InvalidInputError(
                f"{field_name}: must be an RFC 3339 date-time such as "
                f"'2026-12-01T00:00:00Z', got {value!r}"
            )
        try:
            moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"{field_name}: not a valid date-time: {value!r}") from None
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        raise InvalidInputError(
            f"{field_name}: needs a time and an offset, e.g. {value.isoformat()}T00:00:00Z"
        )
    else:
        raise InvalidInputError(f"{field_name}: must be an RFC 3339 date-time, got {value!r}")
    if moment.utcoffset() is None:
        raise InvalidInputError(f"{field_name}: needs an offset (Z or +hh:mm), got {str(value)!r}")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _unknown_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidInputError(
            f"{where}unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})"
        )


def _variant_from(table: object, experiment_where: str, index: int) -> Variant:
    if not isinstance(table, Mapping):
        raise InvalidInputError(f"{experiment_where}variant #{index + 1}: must be a table")
    try:
        name = _check_name(table.get("name"), "name")
    except InvalidInputError as error:
        raise InvalidInputError(f"{experiment_where}variant #{index + 1}: {error}") from None
    where = f"{experiment_where}variant {_quote(name)}: "
    _unknown_keys(table, _VARIANT_KEYS, where)
    if "share" not in table:
        raise InvalidInputError(f"{where}share: missing")
    caps = table.get("max_per_feature")
    if caps is not None and not isinstance(caps, Mapping):
        raise InvalidInputError(
            f'{where}max_per_feature: must be a table such as {{ "brand=" = 2 }}, got {caps!r}'
        )
    try:
        checked_caps = None if caps is None else check_max_per_feature(caps)
    except InvalidInputError as error:
        raise InvalidInputError(f"{where}{error}") from None
    try:
        return Variant(
            name=name,
            share=table["share"],
            setting=table.get("setting", "hybrid"),
            diversity=table.get("diversity"),
            exploration=table.get("exploration"),
            max_per_feature=checked_caps,
        )
    except InvalidInputError as error:
        raise InvalidInputError(f"{experiment_where}{error}") from None


def _experiment_from(table: object, index: int) -> Experiment:
    if not isinstance(table, Mapping):
        raise InvalidInputError(f"experiment #{index + 1}: must be a table")
    try:
        name = _check_name(table.get("name"), "name")
    except InvalidInputError as error:
        raise InvalidInputError(f"experiment #{index + 1}: {error}") from None
    where = f"experiment {_quote(name)}: "
    _unknown_keys(table, _EXPERIMENT_KEYS, where)
    raw_variants = table.get("variant", [])
    if not isinstance(raw_variants, list) or not raw_variants:
        raise InvalidInputError(f"{where}needs at least one [[experiment.variant]]")
    variants = tuple(_variant_from(v, where, i) for i, v in enumerate(raw_variants))
    times: dict[str, int | None] = {}
    for key in ("start", "end"):
        value = table.get(key)
        try:
            times[key] = None if value is None else parse_time(value, key)
        except InvalidInputError as error:
            raise InvalidInputError(f"{where}{error}") from None
    control = table.get("control", variants[0].name)
    if not isinstance(control, str):
        raise InvalidInputError(f"{where}control: must be a variant name, got {control!r}")
    return Experiment(
        name=name,
        salt=table.get("salt", name),
        surface=table.get("surface", "recommend"),
        start_ms=times["start"],
        end_ms=times["end"],
        variants=variants,
        control=control,
    )


def parse_experiments(document: object) -> tuple[Experiment, ...]:
    """Experiments from a parsed configuration (``{"experiment": [...]}``); the errors
    name the experiment and variant (not the file)."""
    if not isinstance(document, Mapping):
        raise InvalidInputError("must be a table with an 'experiment' array")
    _unknown_keys(document, frozenset({"experiment"}), "")
    tables = document.get("experiment", [])
    if not isinstance(tables, list):
        raise InvalidInputError("experiment: must be an array of tables ([[experiment]])")
    experiments = tuple(_experiment_from(t, i) for i, t in enumerate(tables))
    check_overlaps(experiments)
    return experiments


def load_experiments(path: str | Path) -> tuple[Experiment, ...]:
    """The experiments of a TOML file (JSON if its name ends in ``.json``). Every problem
    is a one-line :class:`~shelfrank.core.errors.DataFormatError` naming the file (and
    the line, for syntax errors), the experiment and variant."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(path, None, f"cannot read: {error}") from None
    document: object
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                path, error.lineno, f"invalid JSON: {error.msg} (column {error.colno})"
            ) from None
    else:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            message = str(error)
            found = _TOML_WHERE.search(message)
            line = int(found.group(1)) if found else None
            if found:
                message = f"{message[: found.start()]} (column {found.group(2)})"
            raise DataFormatError(path, line, f"invalid TOML: {message}") from None
    try:
        return parse_experiments(document)
    except InvalidInputError as error:
        raise DataFormatError(path, None, " ".join(str(error).split())) from None


__all__ = [
    "BUCKETS",
    "SETTINGS",
    "SURFACES",
    "Experiment",
    "Variant",
    "active_experiment",
    "assign",
    "bucket_of",
    "check_overlaps",
    "load_experiments",
    "parse_experiments",
    "parse_time",
]
