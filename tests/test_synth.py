"""Tests for the synthetic data generator: shape, determinism, realism and round trip."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from shelfrank.core.events import EventType
from shelfrank.datasets import FeatureTable, Interactions, read_features, read_interactions
from shelfrank.datasets.synth import (
    AGE_BANDS,
    ITEM_COLUMNS,
    USER_COLUMNS,
    SynthConfig,
    SynthData,
    generate,
    write,
)

CONFIG = SynthConfig(items=2000, users=600, events=30_000, seed=7)


@pytest.fixture(scope="module")
def data() -> SynthData:
    return generate(CONFIG)


def assert_same_interactions(a: Interactions, b: Interactions) -> None:
    assert a.user_ids == b.user_ids
    assert a.item_ids == b.item_ids
    assert a.event_ids == b.event_ids
    np.testing.assert_array_equal(a.event_types, b.event_types)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.weights, b.weights)  # NaN == NaN here


def assert_same_table(a: FeatureTable, b: FeatureTable) -> None:
    assert (a.id_column, a.columns, a.ids, a.tokens) == (b.id_column, b.columns, b.ids, b.tokens)


def view_mask(data: SynthData) -> npt.NDArray[np.bool_]:
    mask: npt.NDArray[np.bool_] = data.interactions.event_types == EventType.VIEW
    return mask


def token_of(table: FeatureTable, column: str) -> dict[str, str]:
    """The single value of ``column`` for every id."""
    prefix = column + "="
    out = {}
    for entity, tokens in zip(table.ids, table.tokens, strict=True):
        (value,) = [t for t in tokens if t.startswith(prefix)]
        out[entity] = value
    return out


def test_same_seed_gives_identical_data(data: SynthData) -> None:
    again = generate(CONFIG)
    assert_same_interactions(data.interactions, again.interactions)
    assert_same_table(data.items, again.items)
    assert_same_table(data.users, again.users)
    np.testing.assert_array_equal(data.sessions, again.sessions)


def test_different_seed_differs(data: SynthData) -> None:
    other = generate(
        SynthConfig(
            items=CONFIG.items, users=CONFIG.users, events=CONFIG.events, seed=CONFIG.seed + 1
        )
    )
    assert other.interactions.item_ids != data.interactions.item_ids
    assert other.items.tokens != data.items.tokens
    assert other.users.tokens != data.users.tokens


def test_sizes_ids_and_dtypes(data: SynthData) -> None:
    inter = data.interactions
    assert len(inter) == CONFIG.events
    assert len(data.items) == CONFIG.items
    assert len(data.users) == CONFIG.users
    assert data.sessions.shape == (CONFIG.events,)
    assert all(re.fullmatch(r"i\d{6}", i) for i in data.items.ids)
    assert all(re.fullmatch(r"u\d{6}", u) for u in data.users.ids)
    assert all(re.fullmatch(r"e\d{9}", e) for e in inter.event_ids)
    assert len(set(data.items.ids)) == CONFIG.items
    assert len(set(data.users.ids)) == CONFIG.users
    assert len(set(inter.event_ids)) == CONFIG.events
    assert set(inter.item_ids) <= set(data.items.ids)
    assert set(inter.user_ids) <= set(data.users.ids)
    assert inter.event_types.dtype == np.int8
    assert inter.timestamps.dtype == np.float64
    assert inter.weights.dtype == np.float32
    assert np.isnan(inter.weights).all()
    assert set(np.unique(inter.event_types).tolist()) == {int(t) for t in EventType}


@pytest.mark.parametrize("events", [0, 1, 7, 999])
def test_exact_event_count(events: int) -> None:
    data = generate(SynthConfig(items=50, users=10, events=events))
    assert len(data.interactions) == events
    assert len(set(data.interactions.event_ids)) == events


def test_tiny_catalogue_works() -> None:
    data = generate(SynthConfig(items=1, users=1, events=40, tags=0))
    assert data.items.ids == ["i000000"]
    assert data.items.columns == ITEM_COLUMNS
    assert set(data.interactions.item_ids) == {"i000000"}


def test_feature_tables(data: SynthData) -> None:
    assert data.items.id_column == "item_id"
    assert data.items.columns == (*ITEM_COLUMNS, "tags")
    for tokens in data.items.tokens:
        columns = [t.partition("=")[0] for t in tokens]
        assert columns[:3] == list(ITEM_COLUMNS)
        tags = tokens[3:]
        assert set(columns[3:]) <= {"tags"}
        assert len(tags) == len(set(tags)) <= CONFIG.max_tags_per_item
    assert data.users.id_column == "user_id"
    assert data.users.columns == USER_COLUMNS
    ages = {f"age_band={a}" for a in AGE_BANDS}
    for tokens in data.users.tokens:
        assert [t.partition("=")[0] for t in tokens] == list(USER_COLUMNS)
        assert tokens[2] in ages


def test_timestamps_in_span_sorted_and_increasing_within_sessions(data: SynthData) -> None:
    stamps = data.interactions.timestamps
    assert (stamps >= CONFIG.start_time).all()
    assert (stamps < CONFIG.start_time + CONFIG.days * 86_400).all()
    assert (np.floor(stamps) == stamps).all()
    assert (np.diff(stamps) >= 0).all()
    order = np.lexsort((stamps, data.sessions))
    same = data.sessions[order][1:] == data.sessions[order][:-1]
    assert (np.diff(stamps[order])[same] > 0).all()


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


def test_funnel_order_within_sessions(data: SynthData) -> None:
    """In a session: one user; a cart needs an earlier view of the item; a purchase needs
    an earlier cart of it; a search is followed by a view of the item it reached."""
    purchases = 0
    for events in sessions_of(data).values():
        assert len({user for _, user, _, _ in events}) == 1
        first: dict[tuple[str, EventType], float] = {}
        last: dict[tuple[str, EventType], float] = {}
        for stamp, _, item, kind in events:
            first.setdefault((item, kind), stamp)
            last[(item, kind)] = stamp
        for stamp, _, item, kind in events:
            if kind == EventType.ADD_TO_CART:
                assert first[(item, EventType.VIEW)] < stamp
            elif kind == EventType.PURCHASE:
                purchases += 1
                assert first[(item, EventType.ADD_TO_CART)] < stamp
                assert first[(item, EventType.VIEW)] < first[(item, EventType.ADD_TO_CART)]
            elif kind == EventType.SEARCH:
                assert last[(item, EventType.VIEW)] > stamp
    assert purchases > 100


def test_session_views_stay_in_one_category(data: SynthData) -> None:
    category = token_of(data.items, "category")
    for events in sessions_of(data).values():
        viewed = {category[item] for _, _, item, kind in events if kind == EventType.VIEW}
        assert len(viewed) == 1


def test_event_mix_is_a_funnel(data: SynthData) -> None:
    counts = Counter(EventType(t) for t in data.interactions.event_types.tolist())
    assert counts[EventType.VIEW] > 0.6 * CONFIG.events
    assert counts[EventType.VIEW] > counts[EventType.ADD_TO_CART] > counts[EventType.PURCHASE] > 0
    assert counts[EventType.SEARCH] > 0
    assert counts[EventType.DISMISS] > 0


def test_popularity_is_skewed(data: SynthData) -> None:
    views = Counter(np.array(data.interactions.item_ids)[view_mask(data)].tolist())
    ranked = sorted(views.values(), reverse=True)
    top = sum(ranked[: CONFIG.items // 10])
    assert top / sum(ranked) > 0.4


def test_segment_predicts_categories_of_unseen_users(data: SynthData) -> None:
    """Cold start signal: a segment's top categories, learned on half the users, cover far
    more of the other half's views than the globally top categories do."""
    inter = data.interactions
    category = token_of(data.items, "category")
    segment = token_of(data.users, "segment")
    by_segment: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    held_out: list[tuple[str, str]] = []
    for k in np.flatnonzero(view_mask(data)).tolist():
        user, cat = inter.user_ids[k], category[inter.item_ids[k]]
        if int(user[1:]) % 2 == 0:
            by_segment[segment[user]][cat] += 1
            overall[cat] += 1
        else:
            held_out.append((segment[user], cat))
    top_global = {c for c, _ in overall.most_common(3)}
    top_segment = {s: {c for c, _ in counts.most_common(3)} for s, counts in by_segment.items()}
    segment_hits = np.mean([cat in top_segment[s] for s, cat in held_out])
    global_hits = np.mean([cat in top_global for _, cat in held_out])
    assert segment_hits > global_hits + 0.2


def test_segment_prefers_a_price_band(data: SynthData) -> None:
    inter = data.interactions
    band = token_of(data.items, "price_band")
    segment = token_of(data.users, "segment")
    by_segment: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for k in np.flatnonzero(view_mask(data)).tolist():
        b = band[inter.item_ids[k]]
        by_segment[segment[inter.user_ids[k]]][b] += 1
        overall[b] += 1
    total = sum(overall.values())
    lifts = []
    for counts in by_segment.values():
        favourite, n = counts.most_common(1)[0]
        lifts.append((n / counts.total()) / (overall[favourite] / total))
    assert np.mean(lifts) > 1.5


def test_written_files_read_back_identically(data: SynthData, tmp_path: Path) -> None:
    paths = write(data, tmp_path / "out")
    assert [p.name for p in paths] == ["interactions.csv", "items.csv", "users.csv"]
    assert paths.interactions.parent == tmp_path / "out"

    interactions, report = read_interactions(paths.interactions)
    assert report.rows_rejected == 0
    assert report.rows_accepted == CONFIG.events
    assert_same_interactions(interactions, data.interactions)

    items, report = read_features(paths.items, "item_id")
    assert report.rows_rejected == 0
    assert_same_table(items, data.items)

    users, report = read_features(paths.users, "user_id")
    assert report.rows_rejected == 0
    assert_same_table(users, data.users)


BASE: dict[str, Any] = {"items": 10, "users": 5, "events": 20}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("items", 0),
        ("users", -1),
        ("events", -5),
        ("seed", -1),
        ("items", 2.5),
        ("users", True),
        ("categories", 0),
        ("categories", 11),
        ("brands", 0),
        ("price_bands", 0),
        ("tags", -1),
        ("max_tags_per_item", 5),
        ("segments", 0),
        ("categories_per_segment", 0),
        ("regions", 0),
        ("popularity_exponent", -0.1),
        ("segment_focus", 1.5),
        ("personal_focus", float("nan")),
        ("price_sensitivity", float("inf")),
        ("mean_session_views", 0.5),
        ("search_rate", -0.1),
        ("cart_rate", 2.0),
        ("purchase_rate", "0.5"),
        ("dismiss_rate", 1.01),
        ("mean_gap_seconds", -1.0),
        ("start_time", -1),
        ("days", 0),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field} "):
        SynthConfig(**{**BASE, field: value})


def test_focus_shares_must_fit_in_one() -> None:
    with pytest.raises(ValueError, match="segment_focus \\+ personal_focus"):
        SynthConfig(**BASE, segment_focus=0.7, personal_focus=0.4)


def test_derived_counts_scale_with_items() -> None:
    assert SynthConfig(items=1, users=1, events=0).category_count == 1
    assert SynthConfig(items=1_000_000, users=1, events=0).category_count == 20
    assert SynthConfig(items=1_000_000, users=1, events=0).brand_count == 5000
    assert SynthConfig(items=100, users=1, events=0, categories=4, brands=9).brand_count == 9
