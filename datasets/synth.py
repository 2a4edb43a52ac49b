"""Synthetic e-commerce behaviour with learnable structure (numpy only).

The generative story:

1. **Catalogue.** Items fall into categories of unequal size. Within a category, items have
   a Zipf-like popularity: rank ``r`` gets weight about ``(r + 1.5) ** -popularity_exponent``
   (a bounded power law, sampled in O(1) per event).
   Each category owns a slice of the brands (themselves Zipf-skewed); each brand has a home
   price band and its items sit in or next to it. Items carry a few tags from a
   category-specific pool (multi-valued ``tags`` column).
2. **Shoppers.** Each user belongs to a segment. A segment prefers a few categories and one
   price band, and has a typical age band, so user features carry cold-start signal.
   Each user also has a personal favourite category (signal only ids can learn) and a
   lognormal activity level. ``region`` is pure noise, a feature a model should ignore.
3. **Sessions.** A session belongs to one user (drawn by activity) and one category: the
   segment's preferred ones with probability ``segment_focus``, the user's favourite with
   ``personal_focus``, otherwise a category drawn by catalogue share.
4. **Events.** A session has ``1 + Poisson(mean_session_views - 1)`` views of popular items
   of its category, biased towards the segment's price band. A view may be preceded by a
   search (reaching that item) and followed by an add_to_cart; a carted item may be
   purchased at checkout, after the session's last view. Now and then a shown item from
   any category is dismissed.
5. **Time.** Events in a session are seconds to minutes apart (whole seconds); sessions
   start uniformly in ``[start_time, start_time + days)``. Rows are sorted by time and
   numbered ``e000000001``, ``e000000002``, ...

Everything is vectorised, so a million items and millions of events take seconds, and the
output is a pure function of the :class:`SynthConfig` (seed included) for a given numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.datasets.writers import write_features, write_interactions

__all__ = [
    "AGE_BANDS",
    "ITEM_COLUMNS",
    "MAX_SESSION_SECONDS",
    "USER_COLUMNS",
    "SynthConfig",
    "SynthData",
    "SynthPaths",
    "generate",
    "write",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ITEM_COLUMNS = ("category", "brand", "price_band")
USER_COLUMNS = ("segment", "region", "age_band")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")

# Caps that bound a session's length, so every timestamp stays inside the time span.
MAX_SESSION_VIEWS = 40
MAX_GAP_SECONDS = 300
# At most search, view, add_to_cart and dismiss per view slot, plus one purchase.
_MAX_EVENTS_PER_SLOT = 5
MAX_SESSION_SECONDS = MAX_SESSION_VIEWS * _MAX_EVENTS_PER_SLOT * MAX_GAP_SECONDS
_DAY_SECONDS = 86_400
# Rejection rounds for the price-band bias; after these the last draw is kept.
_PRICE_ROUNDS = 8
_TAG_WINDOW = 8

# Sort keys of events inside a view slot; purchases come after every slot (checkout).
_SUB_SEARCH, _SUB_VIEW, _SUB_CART, _SUB_DISMISS = 0, 1, 2, 3
_SLOT_STRIDE = 4
_CHECKOUT_BASE = MAX_SESSION_VIEWS * _SLOT_STRIDE
_KEYS_PER_SESSION = _CHECKOUT_BASE + MAX_SESSION_VIEWS


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_float(name: str, value: object, low: float, high: float | None = None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")


@dataclass(frozen=True)
class SynthConfig:
    """Size and shape of a synthetic data set; ``generate`` is a pure function of it.

    ``categories`` and ``brands`` default to values derived from ``items`` (see
    :attr:`category_count`, :attr:`brand_count`) so small and huge catalogues both work.
    """

    items: int
    users: int
    events: int
    seed: int = 0
    categories: int | None = None
    brands: int | None = None
    price_bands: int = 5
    tags: int = 60
    max_tags_per_item: int = 3
    segments: int = 8
    categories_per_segment: int = 3
    regions: int = 6
    popularity_exponent: float = 1.0
    segment_focus: float = 0.65
    personal_focus: float = 0.2
    price_sensitivity: float = 1.0
    activity_sigma: float = 1.0
    mean_session_views: float = 4.0
    search_rate: float = 0.1
    cart_rate: float = 0.12
    purchase_rate: float = 0.45
    dismiss_rate: float = 0.05
    mean_gap_seconds: float = 40.0
    start_time: int = 1_700_000_000
    days: int = 90

    def __post_init__(self) -> None:
        _check_int("items", self.items, 1)
        _check_int("users", self.users, 1)
        _check_int("events", self.events, 0)
        _check_int("seed", self.seed, 0)
        if self.categories is not None:
            _check_int("categories", self.categories, 1, self.items)
        if self.brands is not None:
            _check_int("brands", self.brands, 1)
        _check_int("price_bands", self.price_bands, 1, 99)
        # Bounded so that an item's tag set fits one int64 code (see _tag_tokens).
        _check_int("tags", self.tags, 0, 10_000)
        _check_int("max_tags_per_item", self.max_tags_per_item, 0, 4)
        _check_int("segments", self.segments, 1)
        _check_int("categories_per_segment", self.categories_per_segment, 1)
        _check_int("regions", self.regions, 1)
        _check_float("popularity_exponent", self.popularity_exponent, 0.0, 5.0)
        _check_float("segment_focus", self.segment_focus, 0.0, 1.0)
        _check_float("personal_focus", self.personal_focus, 0.0, 1.0)
        if self.segment_focus + self.personal_focus > 1.0:
            raise ValueError(
                "segment_focus + personal_focus must be <= 1, got "
                f"{self.segment_focus} + {self.personal_focus}"
            )
        _check_float("price_sensitivity", self.price_sensitivity, 0.0, 20.0)
        _check_float("activity_sigma", self.activity_sigma, 0.0, 5.0)
        _check_float("mean_session_views", self.mean_session_views, 1.0, MAX_SESSION_VIEWS)
        _check_float("search_rate", self.search_rate, 0.0, 1.0)
        _check_float("cart_rate", self.cart_rate, 0.0, 1.0)
        _check_float("purchase_rate", self.purchase_rate, 0.0, 1.0)
        _check_float("dismiss_rate", self.dismiss_rate, 0.0, 1.0)
        _check_float("mean_gap_seconds", self.mean_gap_seconds, 0.0, MAX_GAP_SECONDS)
        _check_int("start_time", self.start_time, 0)
        _check_int("days", self.days, 1, 36_500)

    @property
    def category_count(self) -> int:
        """``categories``, or about one category per 10 items, capped at 20."""
        if self.categories is not None:
            return self.categories
        return max(1, min(20, self.items // 10))

    @property
    def brand_count(self) -> int:
        """``brands``, or about one brand per 20 items, between 1 and 5000."""
        if self.brands is not None:
            return self.brands
        return max(1, min(5000, self.items // 20))

    @property
    def span_seconds(self) -> int:
        return self.days * _DAY_SECONDS


@dataclass(frozen=True)
class SynthData:
    """A generated data set. ``sessions[k]`` is the session number of interaction ``k``
    (the import format has no session column, but tests and session-based splits need it).
    """

    interactions: Interactions
    items: FeatureTable
    users: FeatureTable
    sessions: IntArray


class SynthPaths(NamedTuple):
    interactions: Path
    items: Path
    users: Path


@dataclass(frozen=True)
class _Catalogue:
    """Item attributes, plus the items ranked by popularity within each category."""

    category: IntArray
    brand: IntArray
    band: IntArray
    tags: IntArray  # (items, max_tags_per_item), -1 where unused
    order: IntArray  # item indices sorted by category, then popularity rank
    block_start: IntArray  # per category: first position in ``order``
    block_end: IntArray  # per category: one past the last position
    category_cdf: FloatArray  # catalogue share of each category, cumulative


@dataclass(frozen=True)
class _Population:
    segment: IntArray
    region: IntArray
    age: IntArray
    favourite: IntArray
    activity_cdf: FloatArray
    segment_categories: IntArray  # (segments, categories_per_segment)
    segment_band: IntArray


@dataclass(frozen=True)
class _Events:
    """Event columns as indices, grouped by session and in order within each session."""

    session: IntArray
    user: IntArray
    item: IntArray
    kind: npt.NDArray[np.int8]

    def head(self, n: int) -> _Events:
        return _Events(self.session[:n], self.user[:n], self.item[:n], self.kind[:n])

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        return _Events(
            session=np.concatenate([p.session for p in parts]),
            user=np.concatenate([p.user for p in parts]),
            item=np.concatenate([p.item for p in parts]),
            kind=np.concatenate([p.kind for p in parts]),
        )


def _zipf_cdf(n: int, exponent: float) -> FloatArray:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf: FloatArray = np.cumsum(weights)
    normalised: FloatArray = cdf / cdf[-1]
    return normalised


def _draw(rng: np.random.Generator, cdf: FloatArray, size: int) -> IntArray:
    """Indices drawn with probabilities given by a normalised ``cdf``."""
    picks = np.searchsorted(cdf, rng.random(size), side="right")
    drawn: IntArray = np.minimum(picks, cdf.shape[0] - 1).astype(np.int64)
    return drawn


def _catalogue(config: SynthConfig, rng: np.random.Generator) -> _Catalogue:
    n, c, b, p = config.items, config.category_count, config.brand_count, config.price_bands
    # Categories of unequal size; every category gets at least one item.
    category_cdf = _zipf_cdf(c, 0.6)
    category = _draw(rng, category_cdf, n)
    category[rng.permutation(n)[:c]] = np.arange(c)

    # Each category owns a contiguous slice of brands, popular ones first.
    per_category = max(1, b // c)
    local_brand = _draw(rng, _zipf_cdf(per_category, 1.0), n)
    brand = (category * per_category + local_brand) % b
    brand_band = rng.integers(0, p, size=b)
    shift = rng.choice(np.array([-1, 0, 1]), size=n, p=[0.2, 0.6, 0.2])
    band = np.clip(brand_band[brand] + shift, 0, p - 1).astype(np.int64)

    tags = np.full((n, config.max_tags_per_item), -1, dtype=np.int64)
    if config.tags > 0 and config.max_tags_per_item > 0:
        window = min(config.tags, _TAG_WINDOW)
        stride = max(1, config.tags // c)
        drawn = (category[:, None] * stride + rng.integers(0, window, size=tags.shape)) % (
            config.tags
        )
        count = rng.integers(0, config.max_tags_per_item + 1, size=n)
        used = np.arange(config.max_tags_per_item)[None, :] < count[:, None]
        drawn = np.sort(np.where(used, drawn, -1), axis=1)
        repeated = np.zeros_like(used)
        repeated[:, 1:] = drawn[:, 1:] == drawn[:, :-1]
        tags = np.where(repeated, -1, drawn)

    # Popularity rank within a category is random with respect to the item number.
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(category[shuffled], kind="stable")].astype(np.int64)
    sorted_category = category[order]
    block_start = np.searchsorted(sorted_category, np.arange(c), side="left").astype(np.int64)
    block_end = np.searchsorted(sorted_category, np.arange(c), side="right").astype(np.int64)
    sizes = np.bincount(category, minlength=c).astype(np.float64)
    return _Catalogue(
        category=category,
        brand=brand.astype(np.int64),
        band=band,
        tags=tags,
        order=order,
        block_start=block_start,
        block_end=block_end,
        category_cdf=np.cumsum(sizes) / n,
    )


def _population(
    config: SynthConfig, catalogue: _Catalogue, rng: np.random.Generator
) -> _Population:
    c, s = config.category_count, config.segments
    k = min(config.categories_per_segment, c)
    segment_categories = np.stack([rng.choice(c, size=k, replace=False) for _ in range(s)])
    segment_band = rng.integers(0, config.price_bands, size=s)
    segment_age = rng.integers(0, len(AGE_BANDS), size=s)

    segment = rng.integers(0, s, size=config.users)
    region = rng.integers(0, config.regions, size=config.users)
    typical = rng.random(config.users) < 0.6
    age = np.where(typical, segment_age[segment], rng.integers(0, len(AGE_BANDS), config.users))
    favourite = _draw(rng, catalogue.category_cdf, config.users)
    activity = np.cumsum(rng.lognormal(0.0, config.activity_sigma, size=config.users))
    return _Population(
        segment=segment.astype(np.int64),
        region=region.astype(np.int64),
        age=age.astype(np.int64),
        favourite=favourite,
        activity_cdf=activity / activity[-1],
        segment_categories=segment_categories.astype(np.int64),
        segment_band=segment_band.astype(np.int64),
    )


def _ranks(sizes: IntArray, exponent: float, rng: np.random.Generator) -> IntArray:
    """Popularity ranks in blocks of the given sizes, by inverting the bounded power law
    ``x ** -exponent`` on ``[1, size + 1)``: O(1) per draw, no per-category tables."""
    u = rng.random(sizes.shape[0])
    top = sizes.astype(np.float64) + 1.0
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(top))
    else:
        power = 1.0 - exponent
        x = (1.0 + u * (top**power - 1.0)) ** (1.0 / power)
    ranks: IntArray = np.clip(np.floor(x).astype(np.int64) - 1, 0, sizes - 1)
    return ranks


def _items_in(
    config: SynthConfig, catalogue: _Catalogue, categories: IntArray, rng: np.random.Generator
) -> IntArray:
    """Items drawn by popularity, each within the given category."""
    start = catalogue.block_start[categories]
    sizes = catalogue.block_end[categories] - start
    items: IntArray = catalogue.order[start + _ranks(sizes, config.popularity_exponent, rng)]
    return items


def _items_for(
    config: SynthConfig,
    catalogue: _Catalogue,
    categories: IntArray,
    bands: IntArray,
    rng: np.random.Generator,
) -> IntArray:
    """Popular items of each category, re-drawn until the price band suits the shopper
    (accepted with probability ``exp(-price_sensitivity * band distance)``)."""
    items = _items_in(config, catalogue, categories, rng)
    pending = np.arange(items.shape[0])
    for _ in range(_PRICE_ROUNDS):
        distance = np.abs(catalogue.band[items[pending]] - bands[pending])
        rejected = rng.random(pending.shape[0]) >= np.exp(-config.price_sensitivity * distance)
        pending = pending[rejected]
        if pending.shape[0] == 0:
            break
        items[pending] = _items_in(config, catalogue, categories[pending], rng)
    return items


def _sessions(
    config: SynthConfig,
    catalogue: _Catalogue,
    people: _Population,
    count: int,
    first: int,
    rng: np.random.Generator,
) -> _Events:
    """Events of ``count`` sessions numbered from ``first``, ordered within each session."""
    user = _draw(rng, people.activity_cdf, count)
    segment = people.segment[user]
    k = people.segment_categories.shape[1]
    preferred = people.segment_categories[segment, rng.integers(0, k, size=count)]
    background = _draw(rng, catalogue.category_cdf, count)
    choice = rng.random(count)
    category = np.where(
        choice < config.segment_focus,
        preferred,
        np.where(
            choice < config.segment_focus + config.personal_focus,
            people.favourite[user],
            background,
        ),
    )

    views = np.minimum(
        1 + rng.poisson(config.mean_session_views - 1.0, size=count), MAX_SESSION_VIEWS
    )
    slot_session = np.repeat(np.arange(count, dtype=np.int64), views)
    slots = slot_session.shape[0]
    slot_index = np.arange(slots, dtype=np.int64) - np.repeat(np.cumsum(views) - views, views)
    slot_item = _items_for(
        config, catalogue, category[slot_session], people.segment_band[segment[slot_session]], rng
    )

    searched = rng.random(slots) < config.search_rate
    carted = rng.random(slots) < config.cart_rate
    bought = carted & (rng.random(slots) < config.purchase_rate)
    dismissed = rng.random(slots) < config.dismiss_rate
    dismiss_category = _draw(rng, catalogue.category_cdf, int(dismissed.sum()))
    dismiss_item = _items_in(config, catalogue, dismiss_category, rng)

    base = slot_index * _SLOT_STRIDE
    everything = np.ones(slots, dtype=np.bool_)
    parts: list[tuple[BoolArray, IntArray, IntArray, EventType]] = [
        (searched, base + _SUB_SEARCH, slot_item, EventType.SEARCH),
        (everything, base + _SUB_VIEW, slot_item, EventType.VIEW),
        (carted, base + _SUB_CART, slot_item, EventType.ADD_TO_CART),
        (bought, _CHECKOUT_BASE + slot_index, slot_item, EventType.PURCHASE),
        (dismissed, base + _SUB_DISMISS, np.zeros(slots, dtype=np.int64), EventType.DISMISS),
    ]
    session = np.concatenate([slot_session[mask] for mask, _, _, _ in parts])
    key = np.concatenate([slot_key[mask] for mask, slot_key, _, _ in parts])
    items = [slot_items[mask] for mask, _, slot_items, _ in parts[:-1]] + [dismiss_item]
    kind = np.concatenate(
        [np.full(int(mask.sum()), int(event), dtype=np.int8) for mask, _, _, event in parts]
    )
    order = np.argsort(session * _KEYS_PER_SESSION + key, kind="stable")
    session = session[order]
    return _Events(
        session=session + first,
        user=user[session],
        item=np.concatenate(items)[order],
        kind=kind[order],
    )


def _event_rows(
    config: SynthConfig, catalogue: _Catalogue, people: _Population, rng: np.random.Generator
) -> _Events:
    """Whole sessions until ``config.events`` rows exist, cut to exactly that many.

    Cutting keeps a prefix of the last session, so its funnel order still holds.
    """
    per_slot = (
        1.0
        + config.search_rate
        + config.dismiss_rate
        + config.cart_rate * (1.0 + config.purchase_rate)
    )
    per_session = config.mean_session_views * per_slot
    batches: list[_Events] = []
    total = 0
    first = 0
    while total < config.events:
        count = math.ceil((config.events - total) / per_session * 1.05) + 16
        batch = _sessions(config, catalogue, people, count, first, rng)
        batches.append(batch)
        total += batch.session.shape[0]
        first += count
    if not batches:
        empty = np.zeros(0, dtype=np.int64)
        return _Events(empty, empty, empty, np.zeros(0, dtype=np.int8))
    return _Events.concat(batches).head(config.events)


def _timestamps(config: SynthConfig, session: IntArray, rng: np.random.Generator) -> FloatArray:
    """Unix seconds, strictly increasing within a session and inside the time span."""
    n = session.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    gaps = 1 + np.minimum(
        np.floor(rng.exponential(config.mean_gap_seconds, size=n)), MAX_GAP_SECONDS - 1
    ).astype(np.int64)
    opens = np.ones(n, dtype=np.bool_)
    opens[1:] = session[1:] != session[:-1]
    starts = np.flatnonzero(opens)
    run = np.cumsum(opens) - 1
    elapsed = np.cumsum(gaps)
    elapsed -= (elapsed[starts] - gaps[starts])[run]
    ends = np.append(starts[1:], n) - 1
    duration = elapsed[ends]
    offset = np.floor(rng.random(starts.shape[0]) * (config.span_seconds - duration))
    stamps: FloatArray = (config.start_time + offset.astype(np.int64)[run] + elapsed).astype(
        np.float64
    )
    return stamps


def _labels(prefix: str, count: int, width: int, first: int = 0) -> list[str]:
    """``prefix`` + zero-padded numbers; ``%`` through ``map`` is the fastest formatting."""
    width = max(width, len(str(max(first + count - 1, 0))))
    return list(map(f"{prefix}%0{width}d".__mod__, range(first, first + count)))


def _pick(labels: list[str], indices: IntArray) -> list[str]:
    """``labels[k]`` for each index (object-array take: shares the strings, no copies)."""
    table = np.empty(len(labels), dtype=object)
    table[:] = labels
    picked: list[str] = table[indices].tolist()
    return picked


def _tag_tokens(config: SynthConfig, tags: IntArray) -> list[tuple[str, ...]]:
    """Each item's tag tokens. Rows are encoded as one integer so that only the few
    distinct tag sets are turned into strings."""
    base = config.tags + 1
    code = ((tags + 1) * base ** np.arange(tags.shape[1], dtype=np.int64)).sum(axis=1)
    distinct, inverse = np.unique(code, return_inverse=True)
    names = [f"tags={v}" for v in _labels("t", config.tags, 3)]
    combos = np.empty(distinct.shape[0], dtype=object)
    for position, value in enumerate(distinct.tolist()):
        digits = []
        while value:
            value, digit = divmod(value, base)
            if digit:
                digits.append(names[digit - 1])
        combos[position] = tuple(digits)
    picked: list[tuple[str, ...]] = combos[inverse.reshape(-1)].tolist()
    return picked


def _item_table(config: SynthConfig, catalogue: _Catalogue) -> FeatureTable:
    category = _pick(
        [f"category={v}" for v in _labels("c", config.category_count, 3)], catalogue.category
    )
    brand = _pick([f"brand={v}" for v in _labels("b", config.brand_count, 4)], catalogue.brand)
    band = _pick([f"price_band=p{k + 1}" for k in range(config.price_bands)], catalogue.band)
    ids = _labels("i", config.items, 6)
    tokens: list[tuple[str, ...]] = list(zip(category, brand, band, strict=True))
    if config.tags == 0 or config.max_tags_per_item == 0:
        return FeatureTable("item_id", ITEM_COLUMNS, ids, tokens)
    tags = _tag_tokens(config, catalogue.tags)
    tokens = [fixed + extra for fixed, extra in zip(tokens, tags, strict=True)]
    return FeatureTable("item_id", (*ITEM_COLUMNS, "tags"), ids, tokens)


def _user_table(config: SynthConfig, people: _Population) -> FeatureTable:
    segment = _pick([f"segment={v}" for v in _labels("s", config.segments, 2)], people.segment)
    region = _pick([f"region={v}" for v in _labels("r", config.regions, 2)], people.region)
    age = _pick([f"age_band={v}" for v in AGE_BANDS], people.age)
    tokens: list[tuple[str, ...]] = list(zip(segment, region, age, strict=True))
    return FeatureTable("user_id", USER_COLUMNS, _labels("u", config.users, 6), tokens)


def generate(config: SynthConfig) -> SynthData:
    """Generate catalogue, shoppers and time-ordered events; same config, same output."""
    rng = np.random.default_rng(config.seed)
    catalogue = _catalogue(config, rng)
    people = _population(config, catalogue, rng)
    events = _event_rows(config, catalogue, people, rng)
    stamps = _timestamps(config, events.session, rng)
    order = np.argsort(stamps, kind="stable")
    items = _item_table(config, catalogue)
    users = _user_table(config, people)
    n = order.shape[0]
    interactions = Interactions(
        user_ids=_pick(users.ids, events.user[order]),
        item_ids=_pick(items.ids, events.item[order]),
        event_types=events.kind[order],
        timestamps=stamps[order],
        weights=np.full(n, np.nan, dtype=np.float32),
        event_ids=_labels("e", n, 9, first=1),
    )
    return SynthData(
        interactions=interactions, items=items, users=users, sessions=events.session[order]
    )


def write(data: SynthData, out_dir: str | Path) -> SynthPaths:
    """Write ``interactions.csv``, ``items.csv`` and ``users.csv`` in the import format."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = SynthPaths(
        interactions=directory / "interactions.csv",
        items=directory / "items.csv",
        users=directory / "users.csv",
    )
    write_interactions(paths.interactions, data.interactions)
    write_features(paths.items, data.items)
    write_features(paths.users, data.users)
    return paths
