"""Tests for the synthetic shop dynamics (datasets/synth.py, steps 6 to 8): repeat
purchases of consumables, trending items, new launches, shoppers joining over time, the
``SynthConfig.shop`` preset, and that the default output is unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.events import EventType
from shelfrank.datasets.synth import (
    SHOP_DYNAMICS,
    SynthConfig,
    SynthData,
    SynthDynamics,
    generate,
)

DAY = 86_400
WEEK = 7 * DAY
CONFIG = SynthConfig.shop(items=3000, users=800, events=80_000, seed=11)
# The same shop with trend-led sessions off: trending items keep only their flat popularity.
FLAT = dataclasses.replace(CONFIG, trend_session_share=0.0)
# The same shop with consumables never rebought: every repeat is chance, as for durables.
NO_REPEATS = dataclasses.replace(CONFIG, repeat_probability=0.0)

# sha256 of generate(SynthConfig(items=2000, users=500, events=20000, seed=3)) (see `digest`)
# computed with the generator as it was before shop dynamics existed (numpy 2.x); cached
# benchmark data relies on this output. A numpy that changes its random streams changes it.
DEFAULT_DIGEST = "349c13005c8a863cc64863dba58b126dfba6f01718161b05c00e1ca20014e6f5"
# sha256 of generate(SynthConfig.shop(items=2000, users=500, events=20000, seed=3)) computed
# with the generator as it was before shoppers could join over time: with
# user_arrival_share=0.0 the shop preset still gives exactly that output.
SHOP_WITHOUT_ARRIVALS_DIGEST = "d465f06a7f9e82911ad36c4b7201a6c6bf34d112274004ce339d49a6b6844552"
# The temporal evaluation's shop: trained on the first 150 days, tested on the last 30.
GROWING = SynthConfig.shop(items=10_000, users=5000, events=300_000, seed=5)
TEST_DAYS = 30


@pytest.fixture(scope="module")
def shop() -> SynthData:
    return generate(CONFIG)


@pytest.fixture(scope="module")
def growing() -> SynthData:
    return generate(GROWING)


@pytest.fixture(scope="module")
def settled() -> SynthData:
    """The control: the same shop with every shopper there from the start."""
    return generate(dataclasses.replace(GROWING, user_arrival_share=0.0))


def dynamics_of(data: SynthData) -> SynthDynamics:
    assert data.dynamics is not None
    return data.dynamics


def digest(data: SynthData) -> str:
    """A hash of every column and table of a data set."""
    h = hashlib.sha256()
    inter = data.interactions
    for strings in (inter.user_ids, inter.item_ids, inter.event_ids):
        h.update("\n".join(strings).encode())
        h.update(b"|")
    for array in (inter.event_types, inter.timestamps, inter.weights, data.sessions):
        h.update(np.ascontiguousarray(array).tobytes())
        h.update(str(array.dtype).encode())
    for table in (data.items, data.users):
        h.update(repr((table.id_column, table.columns, table.ids, table.tokens)).encode())
    return h.hexdigest()


def user_rows(data: SynthData) -> npt.NDArray[np.int64]:
    """Each event's user as an index into ``data.users.ids`` (and ``user_join``)."""
    index = {user: k for k, user in enumerate(data.users.ids)}
    return np.array([index[user] for user in data.interactions.user_ids], dtype=np.int64)


def first_seen(data: SynthData) -> npt.NDArray[np.float64]:
    """Per user (``data.users.ids`` order): the time of its first event, inf if none."""
    first = np.full(len(data.users.ids), np.inf)
    np.minimum.at(first, user_rows(data), data.interactions.timestamps)
    return first


def category_of(data: SynthData) -> dict[str, int]:
    """Item id -> category number (index into ``dynamics.category_ids``)."""
    number = {f"category={c}": k for k, c in enumerate(dynamics_of(data).category_ids)}
    pairs = zip(data.items.ids, data.items.tokens, strict=True)
    return {item: number[tokens[0]] for item, tokens in pairs}


def purchases(data: SynthData) -> dict[tuple[str, str], list[float]]:
    """(user, item) -> times of its purchases, in time order."""
    inter = data.interactions
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for k in np.flatnonzero(inter.event_types == EventType.PURCHASE).tolist():
        out[(inter.user_ids[k], inter.item_ids[k])].append(float(inter.timestamps[k]))
    return out


def sessions_of(data: SynthData) -> dict[int, list[tuple[float, str, str, EventType]]]:
    inter = data.interactions
    out: dict[int, list[tuple[float, str, str, EventType]]] = defaultdict(list)
    for k, session in enumerate(data.sessions.tolist()):
        out[session].append(
            (
                float(inter.timestamps[k]),
                inter.user_ids[k],
                inter.item_ids[k],
                EventType(int(inter.event_types[k])),
            )
        )
    return out


def repeat_rates(data: SynthData) -> dict[int, tuple[float, int]]:
    """Per category: share of its (user, item) purchase pairs bought at least twice, and the
    number of pairs."""
    category = category_of(data)
    pairs: dict[int, list[bool]] = defaultdict(list)
    for (_, item), times in purchases(data).items():
        pairs[category[item]].append(len(times) >= 2)
    return {c: (float(np.mean(v)), len(v)) for c, v in pairs.items()}


def pooled_rates(data: SynthData) -> tuple[float, float]:
    """Repeat rate over all consumable pairs, and over all durable pairs."""
    consumable = dynamics_of(data).consumable
    category = category_of(data)
    again: dict[bool, list[bool]] = {True: [], False: []}
    for (_, item), times in purchases(data).items():
        again[bool(consumable[category[item]])].append(len(times) >= 2)
    return float(np.mean(again[True])), float(np.mean(again[False]))


# --- defaults unchanged ----------------------------------------------------------------


def test_default_output_is_unchanged_byte_for_byte() -> None:
    data = generate(SynthConfig(items=2000, users=500, events=20000, seed=3))
    assert data.dynamics is None
    assert digest(data) == DEFAULT_DIGEST


@settings(max_examples=8, deadline=None)
@given(
    repeat_probability=st.floats(0.0, 0.9),
    repeat_interval_days=st.floats(1.0, 60.0),
    trend_session_share=st.floats(0.0, 1.0),
    trend_width_days=st.floats(0.1, 60.0),
)
def test_dynamics_knobs_change_nothing_while_the_shares_are_zero(
    repeat_probability: float,
    repeat_interval_days: float,
    trend_session_share: float,
    trend_width_days: float,
) -> None:
    plain = SynthConfig(items=200, users=40, events=2000, seed=5)
    tuned = dataclasses.replace(
        plain,
        repeat_probability=repeat_probability,
        repeat_interval_days=repeat_interval_days,
        trend_session_share=trend_session_share,
        trend_width_days=trend_width_days,
    )
    assert not tuned.has_dynamics
    assert digest(generate(tuned)) == digest(generate(plain))


# --- the preset and validation -----------------------------------------------------------


def test_shop_without_arrivals_is_unchanged_byte_for_byte() -> None:
    config = SynthConfig.shop(items=2000, users=500, events=20000, seed=3, user_arrival_share=0.0)
    data = generate(config)
    assert np.isnan(dynamics_of(data).user_join).all()
    assert digest(data) == SHOP_WITHOUT_ARRIVALS_DIGEST


def test_shop_preset_sets_documented_dynamics_and_takes_overrides() -> None:
    config = SynthConfig.shop(items=100, users=10, events=50)
    assert config.has_dynamics
    assert {name: getattr(config, name) for name in SHOP_DYNAMICS} == dict(SHOP_DYNAMICS)
    assert config.days == 180
    assert (config.repeat_category_share, config.repeat_probability) == (0.3, 0.5)
    assert (config.repeat_interval_days, config.trending_item_share) == (21.0, 0.1)
    assert config.user_arrival_share == 0.5
    # the rest is as a plain config
    assert config.segments == SynthConfig(items=100, users=10, events=50).segments
    overridden = SynthConfig.shop(items=100, users=10, events=50, days=365, seed=4)
    assert (overridden.days, overridden.seed, overridden.repeat_probability) == (365, 4, 0.5)
    off = SynthConfig.shop(
        items=100, users=10, events=50, repeat_category_share=0.0, trending_item_share=0.0
    )
    assert off.has_dynamics  # launches are still on
    with pytest.raises(ValueError, match=r"^repeat_probability "):
        SynthConfig.shop(items=100, users=10, events=50, repeat_probability=1.0)


def test_dynamics_keep_the_catalogue_and_the_shoppers(shop: SynthData) -> None:
    plain = generate(
        dataclasses.replace(
            CONFIG,
            repeat_category_share=0.0,
            trending_item_share=0.0,
            launch_item_share=0.0,
            user_arrival_share=0.0,
        )
    )
    assert plain.dynamics is None
    assert (plain.items.ids, plain.items.tokens) == (shop.items.ids, shop.items.tokens)
    assert (plain.users.ids, plain.users.tokens) == (shop.users.ids, shop.users.tokens)
    assert plain.interactions.item_ids != shop.interactions.item_ids


def test_arrivals_alone_are_dynamics_and_keep_every_shoppers_features() -> None:
    plain_config = SynthConfig(items=500, users=300, events=20_000, seed=4)
    config = dataclasses.replace(plain_config, user_arrival_share=0.4)
    assert config.has_dynamics
    plain, data = generate(plain_config), generate(config)
    assert (data.users.ids, data.users.tokens) == (plain.users.ids, plain.users.tokens)
    assert (data.items.ids, data.items.tokens) == (plain.items.ids, plain.items.tokens)
    assert len(data.interactions) == config.events
    dynamics = dynamics_of(data)
    assert not dynamics.consumable.any()
    assert dynamics.trend_item_ids == []
    assert dynamics.user_join.shape == (config.users,)
    assert np.isfinite(dynamics.user_join).sum() == 120


@pytest.mark.parametrize(("users", "joiners"), [(1, 0), (2, 1), (10, 9)])
def test_every_shopper_but_one_may_join_later(users: int, joiners: int) -> None:
    config = SynthConfig(items=50, users=users, events=3000, seed=1, days=5, user_arrival_share=1)
    data = generate(config)
    join = dynamics_of(data).user_join
    assert np.isfinite(join).sum() == joiners
    assert (first_seen(data) >= np.nan_to_num(join, nan=config.start_time)).all()
    assert len(data.interactions) == config.events


BASE: dict[str, Any] = {"items": 10, "users": 5, "events": 20}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repeat_category_share", -0.1),
        ("repeat_category_share", 1.5),
        ("repeat_category_share", float("nan")),
        ("repeat_probability", 0.95),
        ("repeat_probability", -0.01),
        ("repeat_probability", "0.5"),
        ("repeat_interval_days", 0.5),
        ("repeat_interval_days", float("inf")),
        ("trending_item_share", -0.5),
        ("trending_item_share", True),
        ("launch_item_share", 1.01),
        ("trend_session_share", 2.0),
        ("trend_width_days", 0.0),
        ("trend_width_days", None),
        ("user_arrival_share", -0.1),
        ("user_arrival_share", 1.2),
        ("user_arrival_share", float("nan")),
        ("user_arrival_share", "0.5"),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field} "):
        SynthConfig(**{**BASE, field: value})


def test_trend_and_launch_shares_must_fit_in_one() -> None:
    with pytest.raises(ValueError, match=r"^trending_item_share \+ launch_item_share"):
        SynthConfig(**BASE, trending_item_share=0.7, launch_item_share=0.4)


# --- invariants, for any config ------------------------------------------------------------


@st.composite
def dynamic_configs(draw: st.DrawFn) -> SynthConfig:
    trending = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    return SynthConfig(
        items=draw(st.integers(1, 300)),
        users=draw(st.integers(1, 60)),
        events=draw(st.integers(0, 3000)),
        seed=draw(st.integers(0, 2**32)),
        days=draw(st.integers(1, 60)),
        repeat_category_share=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        repeat_probability=draw(st.floats(0.0, 0.9)),
        repeat_interval_days=draw(st.floats(1.0, 30.0)),
        trending_item_share=trending,
        launch_item_share=draw(st.floats(0.0, 1.0 - trending)),
        trend_session_share=draw(st.floats(0.0, 1.0)),
        trend_width_days=draw(st.floats(0.1, 40.0)),
        mean_session_views=draw(st.floats(1.0, 8.0)),
        user_arrival_share=draw(st.sampled_from([0.0, 0.2, 0.5, 1.0])),
    )


@settings(max_examples=40, deadline=None)
@given(config=dynamic_configs())
def test_any_dynamic_shop_is_exact_sorted_inside_the_span_and_launch_aware(
    config: SynthConfig,
) -> None:
    data = generate(config)
    inter = data.interactions
    n = config.events
    assert len(inter) == n
    assert data.sessions.shape == (n,)
    assert inter.event_ids == [f"e{k:09d}" for k in range(1, n + 1)]
    stamps = inter.timestamps
    assert (stamps >= config.start_time).all()
    assert (stamps < config.start_time + config.span_seconds).all()
    assert (np.floor(stamps) == stamps).all()
    assert (np.diff(stamps) >= 0).all()
    order = np.lexsort((stamps, data.sessions))
    same = data.sessions[order][1:] == data.sessions[order][:-1]
    assert (np.diff(stamps[order])[same] > 0).all()

    dynamics = data.dynamics
    assert (dynamics is not None) == config.has_dynamics
    if dynamics is None:
        return
    assert dynamics.consumable.shape == dynamics.repeat_interval_days.shape
    assert np.isnan(dynamics.repeat_interval_days[~dynamics.consumable]).all()
    cycles = dynamics.repeat_interval_days[dynamics.consumable]
    assert (cycles >= config.repeat_interval_days / 1.6 - 1e-9).all()
    assert (cycles <= config.repeat_interval_days * 1.6 + 1e-9).all()
    assert len(set(dynamics.trend_item_ids)) == len(dynamics.trend_item_ids)
    launch = {
        item: peak
        for item, peak, launched in zip(
            dynamics.trend_item_ids,
            dynamics.trend_peak.tolist(),
            dynamics.trend_launch.tolist(),
            strict=True,
        )
        if launched
    }
    for item, stamp in zip(inter.item_ids, stamps.tolist(), strict=True):
        assert stamp >= launch.get(item, config.start_time), f"{item} before its launch"
    join = dynamics.user_join
    assert join.shape == (config.users,)
    joiners = np.isfinite(join)
    assert joiners.sum() == min(round(config.user_arrival_share * config.users), config.users - 1)
    assert (join[joiners] >= config.start_time).all()
    assert (join[joiners] < config.start_time + config.span_seconds).all()
    assert (stamps >= np.nan_to_num(join, nan=config.start_time)[user_rows(data)]).all()


def test_same_seed_same_shop(shop: SynthData) -> None:
    assert digest(generate(CONFIG)) == digest(shop)
    other = generate(dataclasses.replace(CONFIG, seed=CONFIG.seed + 1))
    assert digest(other) != digest(shop)


# --- repeat purchases ------------------------------------------------------------------------


def test_consumables_are_rebought_and_durables_hardly(shop: SynthData) -> None:
    """Per category, the share of (user, item) purchase pairs bought twice or more: every
    consumable category is far above every durable one."""
    dynamics = dynamics_of(shop)
    assert dynamics.consumable.sum() == round(0.3 * CONFIG.category_count)
    rates = repeat_rates(shop)
    consumable = [r for c, (r, n) in rates.items() if dynamics.consumable[c] and n >= 30]
    durable = [r for c, (r, n) in rates.items() if not dynamics.consumable[c] and n >= 30]
    assert len(consumable) >= 3
    assert len(durable) >= 8
    assert min(consumable) > 0.25
    assert max(durable) < 0.2
    assert min(consumable) > 2 * max(durable)
    pooled_consumable, pooled_durable = pooled_rates(shop)
    assert pooled_consumable > 5 * pooled_durable


def test_repeat_purchases_happen_mostly_in_consumables(shop: SynthData) -> None:
    consumable = dynamics_of(shop).consumable
    category = category_of(shop)
    bought = purchases(shop)
    repeated = [item for (_, item), times in bought.items() if len(times) >= 2]
    assert len(repeated) > 300
    in_consumables = np.mean([consumable[category[item]] for item in repeated])
    assert in_consumables > 0.6
    # while consumables have only about a third of all purchase pairs
    assert in_consumables > 2 * np.mean([consumable[category[item]] for _, item in bought])


def test_without_repeat_probability_consumables_are_like_durables() -> None:
    """The control: the gap above comes from the repurchase chains, not from the data."""
    consumable, durable = pooled_rates(generate(NO_REPEATS))
    assert consumable < 2 * durable + 0.02


def test_repurchase_gaps_are_near_the_category_cycle(shop: SynthData) -> None:
    dynamics = dynamics_of(shop)
    category = category_of(shop)
    ratios: list[float] = []
    for (_, item), times in purchases(shop).items():
        c = category[item]
        if dynamics.consumable[c] and len(times) >= 2:
            days = np.diff(times) / DAY
            ratios.extend((days / dynamics.repeat_interval_days[c]).tolist())
    assert len(ratios) > 300
    q25, median, q75 = np.percentile(ratios, [25, 50, 75])
    assert 0.9 < median < 1.1
    assert q25 > 0.75
    assert q75 < 1.25


def test_repurchase_sessions_are_short_and_by_a_previous_buyer(shop: SynthData) -> None:
    """A session whose add_to_cart has no earlier view of the item ("buy again") is exactly
    add_to_cart then purchase of one item, by a shopper who bought it before. Every
    purchase follows an add_to_cart of the item in its session."""
    dynamics = dynamics_of(shop)
    category = category_of(shop)
    bought = purchases(shop)
    buy_again = 0
    for events in sessions_of(shop).values():
        assert len({user for _, user, _, _ in events}) == 1
        seen: set[tuple[str, EventType]] = set()
        for _, _, item, kind in events:
            if kind == EventType.PURCHASE:
                assert (item, EventType.ADD_TO_CART) in seen
            if kind == EventType.ADD_TO_CART and (item, EventType.VIEW) not in seen:
                buy_again += 1
                assert [(i, k) for _, _, i, k in events] == [
                    (item, EventType.ADD_TO_CART),
                    (item, EventType.PURCHASE),
                ]
                user, stamp = events[1][1], events[1][0]
                cycle = dynamics.repeat_interval_days[category[item]]
                assert dynamics.consumable[category[item]]
                # at least half a cycle after an earlier purchase (jitter is within 50%)
                assert any(stamp - t >= 0.5 * cycle * DAY for t in bought[(user, item)])
            seen.add((item, kind))
    assert buy_again > 100


def test_sessions_stay_in_one_category(shop: SynthData) -> None:
    category = category_of(shop)
    for events in sessions_of(shop).values():
        assert (
            len({category[item] for _, _, item, kind in events if kind != EventType.DISMISS}) == 1
        )


# --- trends and launches ---------------------------------------------------------------------


def trend_concentration(data: SynthData, config: SynthConfig) -> tuple[float, float]:
    """For the trending (not launched) items: how much more of their events fall within one
    width of their peak than if they were spread evenly over the span, and the share of
    those with 20+ events whose busiest week is within a width (plus a week) of the peak."""
    dynamics = dynamics_of(data)
    inter = data.interactions
    times: dict[str, list[float]] = defaultdict(list)
    for item, stamp in zip(inter.item_ids, inter.timestamps.tolist(), strict=True):
        times[item].append(stamp)
    begin, end = config.start_time, config.start_time + config.span_seconds
    near: list[npt.NDArray[np.bool_]] = []
    expected: list[float] = []
    busiest_near: list[bool] = []
    for j, item in enumerate(dynamics.trend_item_ids):
        if dynamics.trend_launch[j]:
            continue
        stamps = np.array(times[item])
        peak, width = float(dynamics.trend_peak[j]), float(dynamics.trend_width[j])
        assert begin <= peak < end
        near.append(np.abs(stamps - peak) < width)
        expected.extend(
            [(min(end, peak + width) - max(begin, peak - width)) / (end - begin)] * len(stamps)
        )
        if len(stamps) >= 20:
            counts, edges = np.histogram(stamps, bins=np.arange(begin, end + WEEK, WEEK))
            busiest = edges[int(np.argmax(counts))] + WEEK / 2
            busiest_near.append(abs(busiest - peak) <= width + WEEK)
    observed = float(np.concatenate(near).mean())
    return observed / float(np.mean(expected)), float(np.mean(busiest_near))


def test_trending_items_peak_near_their_peak_time(shop: SynthData) -> None:
    dynamics = dynamics_of(shop)
    assert (~dynamics.trend_launch).sum() == round(0.1 * CONFIG.items)
    widths = dynamics.trend_width / DAY
    assert (widths >= 5.0 - 1e-9).all()
    assert (widths <= 20.0 + 1e-9).all()
    lift, busiest_near = trend_concentration(shop, CONFIG)
    assert lift > 1.7
    assert busiest_near > 0.4


def test_without_trend_sessions_trending_items_are_flat() -> None:
    """The control: the concentration above comes from the trend-led sessions."""
    lift, busiest_near = trend_concentration(generate(FLAT), FLAT)
    assert 0.8 < lift < 1.25
    assert busiest_near < 0.3


def test_launched_items_start_at_launch_with_a_burst(shop: SynthData) -> None:
    dynamics = dynamics_of(shop)
    assert dynamics.trend_launch.sum() == round(0.02 * CONFIG.items)
    inter = shop.interactions
    launch = {
        item: (float(peak), float(width))
        for item, peak, width, launched in zip(
            dynamics.trend_item_ids,
            dynamics.trend_peak.tolist(),
            dynamics.trend_width.tolist(),
            dynamics.trend_launch.tolist(),
            strict=True,
        )
        if launched
    }
    end = CONFIG.start_time + CONFIG.span_seconds
    low, high = (
        CONFIG.start_time + 0.1 * CONFIG.span_seconds,
        CONFIG.start_time + 0.95 * CONFIG.span_seconds,
    )
    assert all(low <= peak < high for peak, _ in launch.values())
    # some launch inside the last 30 days: new items for a model trained before them
    assert sum(peak >= end - 30 * DAY for peak, _ in launch.values()) >= 3
    early: list[bool] = []
    expected: list[float] = []
    for item, stamp in zip(inter.item_ids, inter.timestamps.tolist(), strict=True):
        if item in launch:
            peak, width = launch[item]
            assert stamp >= peak
            early.append(stamp < peak + width)
            expected.append(min(1.0, width / (end - peak)))
    assert len(early) > 300
    assert np.mean(early) > 1.7 * np.mean(expected)


# --- shoppers joining over time ---------------------------------------------------------------


def test_no_shopper_has_an_event_before_joining(shop: SynthData) -> None:
    join = dynamics_of(shop).user_join
    joiners = np.isfinite(join)
    assert joiners.sum() == CONFIG.users // 2
    rows = user_rows(shop)
    late = joiners[rows]
    assert (shop.interactions.timestamps[late] >= join[rows[late]]).all()
    # and the rule has something to bite on: joiners spread over the span, most of them active
    first = first_seen(shop)
    assert np.isfinite(first[joiners]).mean() > 0.75
    span = CONFIG.start_time + np.array([0.25, 0.5, 0.75]) * CONFIG.span_seconds
    quartiles = np.histogram(join[joiners], bins=[CONFIG.start_time, *span, np.inf])[0]
    assert (np.abs(quartiles - CONFIG.users / 8) < 40).all()


def test_a_realistic_share_of_shoppers_is_new_in_the_test_month(
    growing: SynthData, settled: SynthData
) -> None:
    """A shopper with no event before the last 30 days: about 8% of them (half join during
    the 180 days, a sixth of those in the last 30; some of those stay silent, while some
    earlier quiet joiners are first seen then), against ~1.5% with everyone there from the
    start."""
    cut = GROWING.start_time + GROWING.span_seconds - TEST_DAYS * DAY
    join = dynamics_of(growing).user_join
    expected = GROWING.user_arrival_share * TEST_DAYS / GROWING.days * GROWING.users  # 417
    late_joiners = int((np.nan_to_num(join) >= cut).sum())
    assert abs(late_joiners - expected) < 4 * np.sqrt(expected)
    first = first_seen(growing)
    new = int(((first >= cut) & np.isfinite(first)).sum())
    assert 0.6 * expected < new < 1.3 * expected
    # about half of the test month's joiners show up in it (the rest join too late or are quiet)
    assert ((first >= cut) & np.isfinite(first) & (np.nan_to_num(join) >= cut)).sum() > (
        0.35 * late_joiners
    )
    first_settled = first_seen(settled)
    new_settled = int(((first_settled >= cut) & np.isfinite(first_settled)).sum())
    assert new_settled < 0.03 * GROWING.users
    assert new > 3 * new_settled


def test_joiners_are_as_active_as_shoppers_there_from_the_start(
    growing: SynthData, settled: SynthData
) -> None:
    """A shopper's sessions come at a constant rate from its join time: in the test month a
    joiner that joined before it has as many events on average as a shopper there from the
    start, and the shop's traffic grows as shoppers join."""
    cut = GROWING.start_time + GROWING.span_seconds - TEST_DAYS * DAY
    join = dynamics_of(growing).user_join
    stamps = growing.interactions.timestamps
    recent = np.bincount(user_rows(growing)[stamps >= cut], minlength=GROWING.users)
    joined_before = np.isfinite(join) & (np.nan_to_num(join) < cut)
    ratio = recent[joined_before].mean() / recent[~np.isfinite(join)].mean()
    assert 0.8 < ratio < 1.25

    def growth(data: SynthData) -> float:
        times = data.interactions.timestamps
        last = (times >= cut).sum()
        first = (times < GROWING.start_time + TEST_DAYS * DAY).sum()
        return float(last / first)

    assert growth(growing) > 1.4
    assert growth(settled) < 1.2
