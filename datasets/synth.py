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

Shop dynamics (off by default; :meth:`SynthConfig.shop` turns them all on) make a temporal
split (train on the past, test on the last weeks, on old and on new shoppers) meaningful:

6. **Repeat purchases.** A share ``repeat_category_share`` of the categories are
   consumables, each with its own cycle: log-uniform in ``repeat_interval_days / 1.6`` to
   ``repeat_interval_days * 1.6`` days. A shopper who bought a consumable comes back one
   cycle later (jittered by 15%, from the purchase's time) with probability
   ``repeat_probability`` and buys the *same* item in a short session (half the time a
   view, then add_to_cart, then purchase); from that purchase the next cycle starts, until
   a cycle is skipped or the next one would end after the time span. A chain starts from a
   user's first purchase of the item. Other categories are durables: bought again only by
   the chance of step 4.
7. **Trends and launches.** A share ``trending_item_share`` of the items have a popularity
   bump: a Gaussian in time centred at a uniform time of the span, with a standard
   deviation log-uniform in ``trend_width_days / 2`` to ``trend_width_days * 2`` days, and a
   lognormal strength. A share ``launch_item_share`` of other items are new launches: they
   do not exist before a launch time (uniform in the 10%-95% part of the span; never a
   category's most popular item) and then have a burst decaying exponentially with that
   width. A share ``trend_session_share`` of sessions is led by a trend: a (trending or
   launched item, time) pair is drawn with density proportional to strength times bump, the
   session starts at that time, stays in the item's category and opens with a view of it.
   Any item drawn for a session that starts before the item's launch is redrawn.
8. **Arrivals.** A share ``user_arrival_share`` of the shoppers (all but one at most) join
   at a second drawn uniformly over the span; the others are there from the start. From
   its join time a shopper's sessions come at a constant rate (its activity), so traffic
   grows as shoppers join: a session's start is drawn with density proportional to the
   total activity of the shoppers there by then (a trend-led session keeps its trend's
   time), and a session whose user (drawn by activity) has not joined by its start goes to
   a shopper drawn, by activity, among those who have, with a new category (unless
   trend-led). Every shopper keeps its profile features, so one who joins late is a new
   shopper known only by segment, age band and region.

With any dynamics on, sessions are timed before their items are drawn, so the same config
without them differs in its events (catalogue and shoppers are the same); with them off the
output is exactly that of the five steps above.

Everything is vectorised, so a million items and millions of events take seconds, and the
output is a pure function of the :class:`SynthConfig` (seed included) for a given numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.datasets.writers import write_features, write_interactions

__all__ = [
    "AGE_BANDS",
    "ITEM_COLUMNS",
    "MAX_SESSION_SECONDS",
    "SHOP_DYNAMICS",
    "USER_COLUMNS",
    "ShopTruth",
    "SynthConfig",
    "SynthData",
    "SynthDynamics",
    "SynthPaths",
    "generate",
    "truth",
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

# Shop dynamics (steps 6 to 8 of the module docstring).
_INTERVAL_SPREAD = 1.6  # category cycles are log-uniform in [interval / 1.6, interval * 1.6]
_CYCLE_JITTER = 0.15  # standard deviation of one cycle, relative to its category's cycle
_REPEAT_VIEW_SHARE = 0.5  # share of repurchases that start with a view ("buy again" otherwise)
_WIDTH_SPREAD = 2.0  # trend widths are log-uniform in [width / 2, width * 2]
# Launches happen in this part of the time span, the last month of a half year included
# (items a model trained before a temporal split has never seen).
_LAUNCH_WINDOW = (0.1, 0.95)
_TREND_ROUNDS = 32  # rejection rounds that draw a trend's time inside the span
_LAUNCH_ROUNDS = 8  # redraws of a not-yet-launched item before the category's top item

SHOP_DYNAMICS: Mapping[str, Any] = MappingProxyType(
    {
        "days": 180,
        "repeat_category_share": 0.3,
        "repeat_probability": 0.5,
        "repeat_interval_days": 21.0,
        "trending_item_share": 0.1,
        "launch_item_share": 0.02,
        "trend_session_share": 0.15,
        "trend_width_days": 10.0,
        "user_arrival_share": 0.5,
    }
)
"""The settings :meth:`SynthConfig.shop` applies: half a year of a shop with consumables,
trends, launches and shoppers joining (about 8% of them in the last 30 days), long enough to
test on the last 30 days after training on the rest."""


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidInputError(f"{name} must be {bound}, got {value}")


def _check_float(name: str, value: object, low: float, high: float | None = None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidInputError(f"{name} must be finite and {bound}, got {value}")


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
    # Shop dynamics: any share above 0 turns them on (module docstring, steps 6 to 8).
    repeat_category_share: float = 0.0
    repeat_probability: float = 0.5
    repeat_interval_days: float = 21.0
    trending_item_share: float = 0.0
    launch_item_share: float = 0.0
    trend_session_share: float = 0.15
    trend_width_days: float = 10.0
    user_arrival_share: float = 0.0

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
            raise InvalidInputError(
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
        _check_float("repeat_category_share", self.repeat_category_share, 0.0, 1.0)
        # Below 1 so that a chain of repurchases ends (9 repurchases per purchase at most
        # on average), whatever the span.
        _check_float("repeat_probability", self.repeat_probability, 0.0, 0.9)
        _check_float("repeat_interval_days", self.repeat_interval_days, 1.0, 3650.0)
        _check_float("trending_item_share", self.trending_item_share, 0.0, 1.0)
        _check_float("launch_item_share", self.launch_item_share, 0.0, 1.0)
        if self.trending_item_share + self.launch_item_share > 1.0:
            raise InvalidInputError(
                "trending_item_share + launch_item_share must be <= 1, got "
                f"{self.trending_item_share} + {self.launch_item_share}"
            )
        _check_float("trend_session_share", self.trend_session_share, 0.0, 1.0)
        _check_float("trend_width_days", self.trend_width_days, 0.1, 3650.0)
        _check_float("user_arrival_share", self.user_arrival_share, 0.0, 1.0)

    @classmethod
    def shop(cls, items: int, users: int, events: int, **overrides: Any) -> SynthConfig:
        """A config with realistic shop dynamics: :data:`SHOP_DYNAMICS` (180 days, 30% of
        categories consumable, rebought with probability 0.5 every ~21 days, 10% of items
        trending, 2% launched during the span, 15% of sessions led by a trend, half of the
        shoppers joining during the span), then ``overrides`` (any field, e.g. ``seed=3`` or
        ``days=365``)."""
        return cls(items=items, users=users, events=events, **{**SHOP_DYNAMICS, **overrides})

    @property
    def has_dynamics(self) -> bool:
        """Whether repeat purchases, trends, launches or arrivals are on (steps 6 to 8)."""
        return (
            self.repeat_category_share > 0.0
            or self.trending_item_share > 0.0
            or self.launch_item_share > 0.0
            or self.user_arrival_share > 0.0
        )

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
class SynthDynamics:
    """The hidden shop dynamics of a generated data set (steps 6 to 8 of the module
    docstring), for tests and analyses.

    Per category ``k`` (the feature token ``category=`` + ``category_ids[k]``): whether it is
    a consumable and its repurchase cycle in days (NaN for durables). Per trend ``j``: the
    item, the peak (unix seconds: the bump's centre, or the launch time of a launch), the
    width (seconds: the bump's standard deviation, or the mean decay after a launch), and
    its strength (relative share of the trend-led sessions). Per user ``u`` (``users.ids[u]``
    of the :class:`SynthData`): its join time ``user_join[u]`` (unix seconds; NaN for a
    shopper there from the start), before which it has no event.
    """

    category_ids: list[str]
    consumable: BoolArray
    repeat_interval_days: FloatArray
    trend_item_ids: list[str]
    trend_peak: FloatArray
    trend_width: FloatArray
    trend_launch: BoolArray
    trend_strength: FloatArray
    user_join: FloatArray


@dataclass(frozen=True)
class SynthData:
    """A generated data set. ``sessions[k]`` is the session number of interaction ``k``
    (the import format has no session column, but tests and session-based splits need it).
    A repurchase is a session of its own. ``dynamics`` is set when the config has
    dynamics on (:attr:`SynthConfig.has_dynamics`).
    """

    interactions: Interactions
    items: FeatureTable
    users: FeatureTable
    sessions: IntArray
    dynamics: SynthDynamics | None = None


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

    def take(self, index: IntArray) -> _Events:
        return _Events(self.session[index], self.user[index], self.item[index], self.kind[index])

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


def _session_categories(
    config: SynthConfig,
    catalogue: _Catalogue,
    people: _Population,
    user: IntArray,
    rng: np.random.Generator,
) -> IntArray:
    """Each session's category: segment-preferred, the user's favourite or background."""
    count = user.shape[0]
    segment = people.segment[user]
    k = people.segment_categories.shape[1]
    preferred = people.segment_categories[segment, rng.integers(0, k, size=count)]
    background = _draw(rng, catalogue.category_cdf, count)
    choice = rng.random(count)
    category: IntArray = np.where(
        choice < config.segment_focus,
        preferred,
        np.where(
            choice < config.segment_focus + config.personal_focus,
            people.favourite[user],
            background,
        ),
    )
    return category


def _view_slots(
    config: SynthConfig, count: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """Views per session, then the session and the position in it of every view slot."""
    views = np.minimum(
        1 + rng.poisson(config.mean_session_views - 1.0, size=count), MAX_SESSION_VIEWS
    ).astype(np.int64)
    slot_session = np.repeat(np.arange(count, dtype=np.int64), views)
    slots = slot_session.shape[0]
    slot_index = np.arange(slots, dtype=np.int64) - np.repeat(np.cumsum(views) - views, views)
    return views, slot_session, slot_index


class _Funnel(NamedTuple):
    """Events of a batch of sessions, grouped by session and in order within each.
    ``source[k]`` indexes the slot items followed by the dismissed items."""

    session: IntArray
    source: IntArray
    kind: npt.NDArray[np.int8]


def _funnel(
    config: SynthConfig, slot_session: IntArray, slot_index: IntArray, rng: np.random.Generator
) -> tuple[_Funnel, BoolArray]:
    """Search, view, add_to_cart, dismiss and checkout events of the view slots, and which
    slots have a dismissal (its item is drawn by the caller)."""
    slots = int(slot_session.shape[0])
    searched = rng.random(slots) < config.search_rate
    carted = rng.random(slots) < config.cart_rate
    bought = carted & (rng.random(slots) < config.purchase_rate)
    dismissed = rng.random(slots) < config.dismiss_rate
    slot = np.arange(slots, dtype=np.int64)
    dismiss_source = slots + np.arange(int(dismissed.sum()), dtype=np.int64)

    base = slot_index * _SLOT_STRIDE
    everything = np.ones(slots, dtype=np.bool_)
    parts: list[tuple[BoolArray, IntArray, IntArray, EventType]] = [
        (searched, base + _SUB_SEARCH, slot, EventType.SEARCH),
        (everything, base + _SUB_VIEW, slot, EventType.VIEW),
        (carted, base + _SUB_CART, slot, EventType.ADD_TO_CART),
        (bought, _CHECKOUT_BASE + slot_index, slot, EventType.PURCHASE),
    ]
    session = np.concatenate(
        [slot_session[mask] for mask, _, _, _ in parts] + [slot_session[dismissed]]
    )
    key = np.concatenate(
        [slot_key[mask] for mask, slot_key, _, _ in parts] + [(base + _SUB_DISMISS)[dismissed]]
    )
    source = np.concatenate(
        [slot_source[mask] for mask, _, slot_source, _ in parts] + [dismiss_source]
    )
    kind = np.concatenate(
        [np.full(int(mask.sum()), int(event), dtype=np.int8) for mask, _, _, event in parts]
        + [np.full(dismiss_source.shape[0], int(EventType.DISMISS), dtype=np.int8)]
    )
    order = np.argsort(session * _KEYS_PER_SESSION + key, kind="stable")
    return _Funnel(session[order], source[order], kind[order]), dismissed


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
    category = _session_categories(config, catalogue, people, user, rng)
    _, slot_session, slot_index = _view_slots(config, count, rng)
    slot_item = _items_for(
        config, catalogue, category[slot_session], people.segment_band[segment[slot_session]], rng
    )
    funnel, dismissed = _funnel(config, slot_session, slot_index, rng)
    dismiss_category = _draw(rng, catalogue.category_cdf, int(dismissed.sum()))
    dismiss_item = _items_in(config, catalogue, dismiss_category, rng)
    return _Events(
        session=funnel.session + first,
        user=user[funnel.session],
        item=np.concatenate([slot_item, dismiss_item])[funnel.source],
        kind=funnel.kind,
    )


def _rows_per_session(config: SynthConfig) -> float:
    """Expected events of a session (steps 3 and 4)."""
    per_slot = (
        1.0
        + config.search_rate
        + config.dismiss_rate
        + config.cart_rate * (1.0 + config.purchase_rate)
    )
    return config.mean_session_views * per_slot


def _event_rows(
    config: SynthConfig, catalogue: _Catalogue, people: _Population, rng: np.random.Generator
) -> _Events:
    """Whole sessions until ``config.events`` rows exist, cut to exactly that many.

    Cutting keeps a prefix of the last session, so its funnel order still holds.
    """
    per_session = _rows_per_session(config)
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


def _gaps(config: SynthConfig, size: int | tuple[int, int], rng: np.random.Generator) -> IntArray:
    """Whole seconds between consecutive events of a session, in ``[1, MAX_GAP_SECONDS]``."""
    gaps: IntArray = 1 + np.minimum(
        np.floor(rng.exponential(config.mean_gap_seconds, size=size)), MAX_GAP_SECONDS - 1
    ).astype(np.int64)
    return gaps


def _elapsed(
    config: SynthConfig, session: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """Seconds from each event's session start (strictly increasing within a session), the
    index of each session's first event and each event's session rank (events grouped by
    session)."""
    n = session.shape[0]
    gaps = _gaps(config, n, rng)
    opens = np.ones(n, dtype=np.bool_)
    opens[1:] = session[1:] != session[:-1]
    starts = np.flatnonzero(opens)
    run = np.cumsum(opens) - 1
    elapsed = np.cumsum(gaps)
    elapsed -= (elapsed[starts] - gaps[starts])[run]
    return elapsed, starts, run


def _timestamps(config: SynthConfig, session: IntArray, rng: np.random.Generator) -> FloatArray:
    """Unix seconds, strictly increasing within a session and inside the time span."""
    n = session.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    elapsed, starts, run = _elapsed(config, session, rng)
    ends = np.append(starts[1:], n) - 1
    duration = elapsed[ends]
    offset = np.floor(rng.random(starts.shape[0]) * (config.span_seconds - duration))
    stamps: FloatArray = (config.start_time + offset.astype(np.int64)[run] + elapsed).astype(
        np.float64
    )
    return stamps


@dataclass(frozen=True)
class _Arrivals:
    """Step 8: join times, and the shoppers ordered by them. ``level[k]`` is the total
    activity of ``order[: k + 1]``, the rate of sessions from ``times[k]`` until the next
    join; ``area[k]`` is the integral of that rate up to ``times[k]``."""

    joined: BoolArray  # per user: joins during the span (else there from the start)
    join: IntArray  # per user: the first second it may have a session (0 from the start)
    order: IntArray  # users by join time (a user there from the start first)
    times: IntArray  # join[order], ascending from 0
    level: FloatArray
    area: FloatArray


def _arrivals(config: SynthConfig, people: _Population, rng: np.random.Generator) -> _Arrivals:
    n, span = config.users, config.span_seconds
    # At least one shopper is there from the start, so every second has someone to visit.
    count = min(round(config.user_arrival_share * n), n - 1)
    joined = np.zeros(n, dtype=np.bool_)
    joined[rng.permutation(n)[:count]] = True
    join = np.zeros(n, dtype=np.int64)
    join[joined] = rng.integers(0, span, size=count)
    order = np.argsort(join, kind="stable").astype(np.int64)
    times = join[order]
    activity = np.diff(people.activity_cdf, prepend=0.0)
    level = np.cumsum(activity[order])
    area = np.concatenate([np.zeros(1), np.cumsum(level[:-1] * np.diff(times))])
    return _Arrivals(joined, join, order, times, level, area)


def _arrival_starts(arrivals: _Arrivals, ends: IntArray, rng: np.random.Generator) -> IntArray:
    """Session starts in ``[0, ends)`` with density proportional to the activity of the
    shoppers there (by inverting its piecewise-linear integral)."""
    times, level, area = arrivals.times, arrivals.level, arrivals.area
    k = np.searchsorted(times, ends, side="right") - 1
    target = rng.random(ends.shape[0]) * (area[k] + level[k] * (ends - times[k]))
    k = np.maximum(np.searchsorted(area, target, side="right") - 1, 0)
    seconds = times[k] + (target - area[k]) / level[k]
    starts: IntArray = np.clip(np.floor(seconds).astype(np.int64), 0, ends - 1)
    return starts


def _present_users(arrivals: _Arrivals, start: IntArray, rng: np.random.Generator) -> IntArray:
    """For each start, a user drawn by activity among those who have joined by then."""
    present = np.searchsorted(arrivals.times, start, side="right")  # >= 1: times[0] == 0
    weight = rng.random(start.shape[0]) * arrivals.level[present - 1]
    picks = np.minimum(np.searchsorted(arrivals.level, weight, side="right"), present - 1)
    users: IntArray = arrivals.order[picks]
    return users


@dataclass(frozen=True)
class _Dynamics:
    """Steps 6 to 8 of the module docstring; times in seconds from ``start_time``."""

    consumable: BoolArray  # per category
    cycle: FloatArray  # per category: repurchase cycle in seconds, NaN for durables
    launch: IntArray  # per item: the first second it exists (0 for most)
    trend_item: IntArray
    trend_peak: IntArray
    trend_width: FloatArray
    trend_launch: BoolArray
    trend_strength: FloatArray
    trend_cdf: FloatArray
    arrivals: _Arrivals | None  # None when every shopper is there from the start


def _dynamics(
    config: SynthConfig, catalogue: _Catalogue, people: _Population, rng: np.random.Generator
) -> _Dynamics:
    c, n, span = config.category_count, config.items, config.span_seconds
    consumables = (
        0
        if config.repeat_category_share == 0.0
        else max(1, round(config.repeat_category_share * c))
    )
    consumable = np.zeros(c, dtype=np.bool_)
    consumable[rng.permutation(c)[:consumables]] = True
    spread = math.log(_INTERVAL_SPREAD)
    days = config.repeat_interval_days * np.exp(rng.uniform(-spread, spread, size=c))
    cycle = np.where(consumable, days * _DAY_SECONDS, np.nan)

    # Trending items, then launches among the other items, never a category's top item (so
    # that every category has an item from the start).
    picked = rng.permutation(n).astype(np.int64)
    trending = picked[: round(config.trending_item_share * n)]
    top = np.zeros(n, dtype=np.bool_)
    top[catalogue.order[catalogue.block_start]] = True
    rest = picked[trending.shape[0] :]
    launched = rest[~top[rest]][: round(config.launch_item_share * n)]
    low, high = _LAUNCH_WINDOW
    peak = np.concatenate(
        [
            rng.integers(0, span, size=trending.shape[0]),
            rng.integers(int(low * span), int(high * span), size=launched.shape[0]),
        ]
    ).astype(np.int64)
    item = np.concatenate([trending, launched])
    trends = int(item.shape[0])
    is_launch = np.arange(trends) >= trending.shape[0]
    width = (
        config.trend_width_days
        * _DAY_SECONDS
        * np.exp(rng.uniform(-1.0, 1.0, size=trends) * math.log(_WIDTH_SPREAD))
    )
    strength = rng.lognormal(0.0, 1.0, size=trends)
    launch = np.zeros(n, dtype=np.int64)
    launch[launched] = peak[is_launch]
    total = np.cumsum(strength)
    return _Dynamics(
        consumable=consumable,
        cycle=cycle,
        launch=launch,
        trend_item=item,
        trend_peak=peak,
        trend_width=width,
        trend_launch=is_launch,
        trend_strength=strength,
        trend_cdf=total / total[-1] if total.shape[0] else total,
        arrivals=None if config.user_arrival_share == 0.0 else _arrivals(config, people, rng),
    )


def _trend_draws(
    config: SynthConfig, dynamics: _Dynamics, count: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """``count`` (trend, second) pairs with density proportional to strength times bump,
    restricted to the span by rejection (after ``_TREND_ROUNDS`` rounds, clipped)."""
    span = config.span_seconds
    trend = np.zeros(count, dtype=np.int64)
    time = np.zeros(count, dtype=np.float64)
    pending = np.arange(count)
    for _ in range(_TREND_ROUNDS):
        if pending.shape[0] == 0:
            break
        picks = _draw(rng, dynamics.trend_cdf, pending.shape[0])
        noise = np.where(
            dynamics.trend_launch[picks],
            rng.exponential(1.0, size=pending.shape[0]),
            rng.standard_normal(pending.shape[0]),
        )
        drawn = dynamics.trend_peak[picks] + dynamics.trend_width[picks] * noise
        trend[pending] = picks
        time[pending] = drawn
        pending = pending[(drawn < 0.0) | (drawn >= span)]
    seconds: IntArray = np.clip(np.floor(time), 0, span - 1).astype(np.int64)
    return trend, seconds


def _launched(
    config: SynthConfig,
    catalogue: _Catalogue,
    dynamics: _Dynamics,
    items: IntArray,
    categories: IntArray,
    start: IntArray,
    rng: np.random.Generator,
) -> IntArray:
    """``items`` with every item not yet launched at its session's ``start`` redrawn in its
    category, and after ``_LAUNCH_ROUNDS`` replaced by the category's top item."""
    pending = np.flatnonzero(dynamics.launch[items] > start)
    for _ in range(_LAUNCH_ROUNDS):
        if pending.shape[0] == 0:
            return items
        items[pending] = _items_in(config, catalogue, categories[pending], rng)
        pending = pending[dynamics.launch[items[pending]] > start[pending]]
    items[pending] = catalogue.order[catalogue.block_start[categories[pending]]]
    return items


class _Batch(NamedTuple):
    """Events of a batch in cutting order (a prefix keeps whole sessions, then a prefix of
    one session, and no repurchase without the sessions it follows), with each event's
    seconds since ``start_time``."""

    events: _Events
    stamps: IntArray
    sessions: int  # session numbers used


def _repurchases(
    config: SynthConfig,
    catalogue: _Catalogue,
    dynamics: _Dynamics,
    base: _Events,
    stamps: IntArray,
    rng: np.random.Generator,
) -> tuple[_Events, IntArray, IntArray, int]:
    """Chains of repurchases after the batch's first purchase of each (user, consumable):
    events with session numbers counted from 0, their seconds, their cutting keys (rows:
    origin session, step, chain, position) and the number of sessions."""
    bought = np.flatnonzero(
        (base.kind == int(EventType.PURCHASE)) & dynamics.consumable[catalogue.category[base.item]]
    )
    # The first purchase of each (user, item) pair in the batch starts its chain (a
    # generation is one batch, or a few when the first falls short).
    order = bought[np.lexsort((stamps[bought], base.item[bought], base.user[bought]))]
    fresh = np.ones(order.shape[0], dtype=np.bool_)
    fresh[1:] = (base.user[order][1:] != base.user[order][:-1]) | (
        base.item[order][1:] != base.item[order][:-1]
    )
    origin = np.sort(order[fresh])
    user, item = base.user[origin], base.item[origin]
    origin_session = base.session[origin]
    cycle = dynamics.cycle[catalogue.category[item]]
    last = stamps[origin].copy()

    span = config.span_seconds
    kinds = np.array(
        [int(EventType.VIEW), int(EventType.ADD_TO_CART), int(EventType.PURCHASE)], dtype=np.int8
    )
    chains: list[IntArray] = []
    sessions: list[IntArray] = []
    positions: list[IntArray] = []
    steps: list[IntArray] = []
    seconds: list[IntArray] = []
    chain = np.arange(origin.shape[0], dtype=np.int64)
    step = 0
    used = 0
    while chain.shape[0] > 0:
        step += 1
        m = int(chain.shape[0])
        length = cycle[chain] * np.clip(1.0 + _CYCLE_JITTER * rng.standard_normal(m), 0.5, 1.5)
        again = rng.random(m) < config.repeat_probability
        viewed = rng.random(m) < _REPEAT_VIEW_SHARE
        gaps = _gaps(config, (m, 3), rng)
        gaps[:, 0] *= viewed  # no view: the cart is one gap after the session start
        times = (last[chain] + np.floor(length).astype(np.int64))[:, None] + np.cumsum(gaps, axis=1)
        go = again & (times[:, 2] < span)
        chain, times, viewed = chain[go], times[go], viewed[go]
        present = np.ones(times.shape, dtype=np.bool_)
        present[:, 0] = viewed
        rows, position = np.nonzero(present)
        chains.append(chain[rows])
        sessions.append(used + rows.astype(np.int64))
        positions.append(position.astype(np.int64))
        steps.append(np.full(rows.shape[0], step, dtype=np.int64))
        seconds.append(times[rows, position])
        used += chain.shape[0]
        last[chain] = times[:, 2]
    if not chains:
        empty = np.zeros(0, dtype=np.int64)
        return (
            _Events(empty, empty, empty, np.zeros(0, dtype=np.int8)),
            empty,
            np.zeros((4, 0), dtype=np.int64),
            0,
        )
    chained = np.concatenate(chains)
    position = np.concatenate(positions)
    events = _Events(
        session=np.concatenate(sessions),
        user=user[chained],
        item=item[chained],
        kind=kinds[position],
    )
    keys = np.stack([origin_session[chained], np.concatenate(steps), chained, position])
    return events, np.concatenate(seconds), keys, used


def _dynamic_sessions(
    config: SynthConfig,
    catalogue: _Catalogue,
    people: _Population,
    dynamics: _Dynamics,
    count: int,
    first: int,
    rng: np.random.Generator,
) -> _Batch:
    """``count`` sessions timed before their items are drawn, some led by a trend, by
    shoppers who have joined by then, and the repurchases that follow them; session numbers
    from ``first``."""
    span = config.span_seconds
    user = _draw(rng, people.activity_cdf, count)
    segment = people.segment[user]
    category = _session_categories(config, catalogue, people, user, rng)
    led = np.zeros(0, dtype=np.int64)
    if dynamics.trend_item.shape[0] > 0:
        led = np.flatnonzero(rng.random(count) < config.trend_session_share)
    trend, lead_time = _trend_draws(config, dynamics, led.shape[0], rng)
    lead_item = dynamics.trend_item[trend]
    category[led] = catalogue.category[lead_item]

    views, slot_session, slot_index = _view_slots(config, count, rng)
    funnel, dismissed = _funnel(config, slot_session, slot_index, rng)
    elapsed, starts, _ = _elapsed(config, funnel.session, rng)
    # Every session has a view, so session k is the k-th run of events.
    duration = elapsed[np.append(starts[1:], elapsed.shape[0]) - 1]
    arrivals = dynamics.arrivals
    if arrivals is None:
        start = np.floor(rng.random(count) * (span - duration)).astype(np.int64)
    else:
        start = _arrival_starts(arrivals, span - duration, rng)
    start[led] = np.minimum(lead_time, span - 1 - duration[led])
    if arrivals is not None:
        # A session before its user joined goes to a shopper there by then: drawn by
        # activity among them, which makes every session's user so drawn.
        early = np.flatnonzero(arrivals.join[user] > start)
        user[early] = _present_users(arrivals, start[early], rng)
        is_led = np.zeros(count, dtype=np.bool_)
        is_led[led] = True
        free = early[~is_led[early]]
        category[free] = _session_categories(config, catalogue, people, user[free], rng)
        segment = people.segment[user]

    slot_start = start[slot_session]
    slot_category = category[slot_session]
    slot_item = _items_for(
        config, catalogue, slot_category, people.segment_band[segment[slot_session]], rng
    )
    slot_item[(np.cumsum(views) - views)[led]] = lead_item
    slot_item = _launched(config, catalogue, dynamics, slot_item, slot_category, slot_start, rng)
    dismiss_category = _draw(rng, catalogue.category_cdf, int(dismissed.sum()))
    dismiss_item = _launched(
        config,
        catalogue,
        dynamics,
        _items_in(config, catalogue, dismiss_category, rng),
        dismiss_category,
        slot_start[dismissed],
        rng,
    )
    base = _Events(
        session=funnel.session,
        user=user[funnel.session],
        item=np.concatenate([slot_item, dismiss_item])[funnel.source],
        kind=funnel.kind,
    )
    stamps = start[funnel.session] + elapsed

    repeats, repeat_stamps, repeat_keys, repeat_sessions = _repurchases(
        config, catalogue, dynamics, base, stamps, rng
    )
    n = base.session.shape[0]
    zeros = np.zeros(n, dtype=np.int64)
    keys = np.concatenate(
        [np.stack([base.session, zeros, zeros, np.arange(n, dtype=np.int64)]), repeat_keys],
        axis=1,
    )
    order = np.lexsort(keys[::-1])
    repeats = _Events(repeats.session + count, repeats.user, repeats.item, repeats.kind)
    events = _Events.concat([base, repeats]).take(order)
    return _Batch(
        events=_Events(events.session + first, events.user, events.item, events.kind),
        stamps=np.concatenate([stamps, repeat_stamps])[order],
        sessions=count + repeat_sessions,
    )


def _dynamic_rows(
    config: SynthConfig,
    catalogue: _Catalogue,
    people: _Population,
    dynamics: _Dynamics,
    rng: np.random.Generator,
) -> tuple[_Events, IntArray]:
    """Like :func:`_event_rows` with shop dynamics; also each row's second of the span."""
    batches: list[_Batch] = []
    total = 0
    first = 0
    drawn = 0
    per_session = _rows_per_session(config)
    while total < config.events:
        count = math.ceil((config.events - total) / per_session * 1.05) + 16
        batch = _dynamic_sessions(config, catalogue, people, dynamics, count, first, rng)
        batches.append(batch)
        total += batch.stamps.shape[0]
        first += batch.sessions
        drawn += count
        per_session = max(total / drawn, 1.0)
    if not batches:
        empty = np.zeros(0, dtype=np.int64)
        return _Events(empty, empty, empty, np.zeros(0, dtype=np.int8)), empty
    events = _Events.concat([batch.events for batch in batches]).head(config.events)
    stamps = np.concatenate([batch.stamps for batch in batches])[: config.events]
    return events, stamps


def _public_dynamics(
    config: SynthConfig, dynamics: _Dynamics, item_ids: list[str]
) -> SynthDynamics:
    return SynthDynamics(
        category_ids=_labels("c", config.category_count, 3),
        consumable=dynamics.consumable,
        repeat_interval_days=dynamics.cycle / _DAY_SECONDS,
        trend_item_ids=_pick(item_ids, dynamics.trend_item),
        trend_peak=(config.start_time + dynamics.trend_peak).astype(np.float64),
        trend_width=dynamics.trend_width,
        trend_launch=dynamics.trend_launch,
        trend_strength=dynamics.trend_strength,
        user_join=(
            np.full(config.users, np.nan)
            if dynamics.arrivals is None
            else np.where(
                dynamics.arrivals.joined,
                (config.start_time + dynamics.arrivals.join).astype(np.float64),
                np.nan,
            )
        ),
    )


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
    dynamics: _Dynamics | None = None
    if config.has_dynamics:
        dynamics = _dynamics(config, catalogue, people, rng)
        events, seconds = _dynamic_rows(config, catalogue, people, dynamics, rng)
        stamps = (config.start_time + seconds).astype(np.float64)
    else:
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
        interactions=interactions,
        items=items,
        users=users,
        sessions=events.session[order],
        dynamics=None if dynamics is None else _public_dynamics(config, dynamics, items.ids),
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


@dataclass(frozen=True)
class ShopTruth:
    """The hidden tastes behind :func:`generate`'s shoppers, for simulations that need a
    "true" answer (``shelfrank simulate``). Rows follow the generated tables: user row
    ``u`` is ``users.ids[u]``, item row ``i`` is ``items.ids[i]``.

    :meth:`preference` is the probability that one view of the shopper is the item, as the
    generative story draws views (steps 3 and 4, without dynamics): the session's category
    (segment-preferred with ``segment_focus``, the favourite with ``personal_focus``, else
    by catalogue share) times the item's popularity weight within its category, tilted by
    the price band (``exp(-price_sensitivity * band distance)``) and normalised within the
    category. The tilt is applied as a weight, not by the generator's bounded re-draws, so
    it is the limit the generator approaches.
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    category_given_user: FloatArray  # (users, categories)
    item_category: IntArray  # (items,)
    item_band: IntArray  # (items,)
    item_popularity: FloatArray  # (items,) weight within its category, before the band tilt
    user_band: IntArray  # (users,) the segment's price band
    price_sensitivity: float

    def preference(self, user_rows: IntArray) -> FloatArray:
        """(len(user_rows), items): each row sums to 1 over the catalogue."""
        rows = np.asarray(user_rows, dtype=np.int64)
        tilt = np.exp(
            -self.price_sensitivity
            * np.abs(self.item_band[None, :] - self.user_band[rows][:, None]).astype(np.float64)
        )
        weight = self.item_popularity[None, :] * tilt
        categories = self.category_given_user.shape[1]
        within = np.zeros((rows.size, categories))
        for category in range(categories):  # normalise within each category, per user
            members = self.item_category == category
            within[:, category] = weight[:, members].sum(axis=1)
        share = self.category_given_user[rows][:, self.item_category]
        out: FloatArray = share * weight / np.maximum(within[:, self.item_category], 1e-300)
        return out


def truth(config: SynthConfig) -> ShopTruth:
    """The hidden tastes of the shop :func:`generate` makes from ``config`` (same seed:
    the catalogue and the shoppers are drawn first, the same way)."""
    rng = np.random.default_rng(config.seed)
    catalogue = _catalogue(config, rng)
    people = _population(config, catalogue, rng)
    c = config.category_count
    share = np.diff(np.concatenate([[0.0], catalogue.category_cdf]))
    k = people.segment_categories.shape[1]
    background = 1.0 - config.segment_focus - config.personal_focus
    given = np.tile(background * share, (config.users, 1))
    segment_rows = people.segment_categories[people.segment]  # (users, k)
    np.add.at(
        given,
        (np.repeat(np.arange(config.users), k), segment_rows.ravel()),
        config.segment_focus / k,
    )
    given[np.arange(config.users), people.favourite] += config.personal_focus
    rank = np.empty(config.items, dtype=np.int64)
    for category in range(c):
        block = catalogue.order[catalogue.block_start[category] : catalogue.block_end[category]]
        rank[block] = np.arange(block.size)
    popularity = (rank + 1.5) ** -config.popularity_exponent
    items = _item_table(config, catalogue)
    users = _user_table(config, people)
    return ShopTruth(
        user_ids=tuple(users.ids),
        item_ids=tuple(items.ids),
        category_given_user=given,
        item_category=catalogue.category,
        item_band=catalogue.band,
        item_popularity=popularity.astype(np.float64),
        user_band=people.segment_band[people.segment],
        price_sensitivity=config.price_sensitivity,
    )
