"""Fairness and beyond-accuracy figures of ``shelfrank evaluate``
(server/evaluation/fairness.py): each metric on hand-computed cases, properties, and the
command end to end on MovieLens-100k."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import InvalidInputError, InvariantError
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.cli import main
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation import fairness
from shelfrank.server.evaluation.fairness import (
    NONE,
    FairnessContext,
    FairnessSettings,
    check_settings,
    coverage,
    exposure,
    gap,
    gini,
    group_scores,
    intra_list_diversity,
    novelty,
    self_information,
    token_matrix,
    value_shares,
)
from shelfrank.server.evaluation.metrics import MetricAccumulator
from shelfrank.server.evaluation.protocols import ProtocolSettings, run_protocol
from shelfrank.server.evaluation.splits import random_split
from shelfrank.server.training_data import build_training_data
from tests.conftest import make_interactions, run_cli


def lists(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64) for r in rows]


# ---------------------------------------------------------------- exposure Gini, coverage


def test_gini_of_uniform_exposure_is_zero() -> None:
    assert gini([3, 3, 3, 3]) == pytest.approx(0.0, abs=1e-12)
    assert gini([5]) == 0.0


@pytest.mark.parametrize("n", [2, 3, 10, 1682])
def test_gini_of_all_exposure_on_one_item_is_n_minus_one_over_n(n: int) -> None:
    values = np.zeros(n)
    values[n // 2] = 7
    assert gini(values) == pytest.approx((n - 1) / n)


def test_gini_hand_computed_and_edge_cases() -> None:
    # sorted 0, 0, 1, 3: sum of |xi - xj| over ordered pairs = 20; 20 / (2 * 4^2 * 1) = 0.625
    assert gini([3, 0, 1, 0]) == pytest.approx(0.625)
    assert gini([0, 0, 0]) == 0.0  # nothing recommended: nothing uneven
    with pytest.raises(InvalidInputError):
        gini([])
    with pytest.raises(InvalidInputError):
        gini([1, -1])


def test_exposure_counts_slots_and_coverage_counts_items_recommended_once() -> None:
    slots = exposure(lists([0, 1], [1, 2], []), 5)
    assert slots.tolist() == [1, 2, 1, 0, 0]
    assert coverage(slots) == pytest.approx(3 / 5)
    assert coverage([0, 0]) == 0.0
    assert exposure([], 3).tolist() == [0, 0, 0]
    with pytest.raises(InvalidInputError):
        exposure(lists([3]), 3)


# ---------------------------------------------------------------- novelty


def test_novelty_is_mean_self_information_with_add_one_smoothing() -> None:
    # U = 3 users; item 0 had all 3, item 1 one, item 2 none:
    # p = 4/4, 2/4, 1/4 -> 0, 1 and 2 bits
    information = self_information([3, 1, 0], 3)
    assert information.tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert novelty(lists([0, 1], [2, 1]), information) == pytest.approx(1.0)  # (0+1+2+1)/4
    assert novelty(lists([2]), information) == pytest.approx(2.0)  # never-seen item: finite
    assert novelty([], information) == 0.0
    with pytest.raises(InvalidInputError):
        self_information([4], 3)


# ---------------------------------------------------------------- intra-list diversity

TOKENS = [("a", "b"), ("a",), ("c",), (), ()]


def test_intra_list_diversity_is_mean_pairwise_jaccard_distance() -> None:
    matrix = token_matrix(TOKENS)
    # {a,b} vs {a}: 1 - 1/2
    assert intra_list_diversity(lists([0, 1]), matrix) == pytest.approx(0.5)
    # pairs (0,1) 0.5, (0,2) 1, (1,2) 1
    assert intra_list_diversity(lists([0, 1, 2]), matrix) == pytest.approx(2.5 / 3)
    # two items without tokens are at distance 0; one-item lists are left out
    assert intra_list_diversity(lists([3, 4]), matrix) == 0.0
    assert intra_list_diversity(lists([2]), matrix) is None
    mixed = intra_list_diversity(lists([0, 1], [0, 1, 2], [2], [3, 4]), matrix)
    assert mixed == pytest.approx((0.5 + 2.5 / 3 + 0.0) / 3)


def test_intra_list_diversity_is_the_same_across_chunk_sizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    matrix = token_matrix(TOKENS)
    many = lists(*([0, 1, 2], [3, 4, 0], [1, 2], [4, 2, 1]) * 5)
    whole = intra_list_diversity(many, matrix)
    monkeypatch.setattr(fairness, "DIVERSITY_CHUNK_CELLS", 1)  # one list per chunk
    assert intra_list_diversity(many, matrix) == pytest.approx(whole)


def naive_ild(top_lists: list[list[int]], tokens: list[set[int]]) -> float | None:
    per_list = []
    for top in top_lists:
        if len(top) < 2:
            continue
        distances = []
        for i, j in itertools.combinations(top, 2):
            union = tokens[i] | tokens[j]
            distances.append(1 - len(tokens[i] & tokens[j]) / len(union) if union else 0.0)
        per_list.append(sum(distances) / len(distances))
    return sum(per_list) / len(per_list) if per_list else None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sets(st.integers(0, 5), max_size=4), min_size=2, max_size=12).flatmap(
        lambda tokens: st.tuples(
            st.just(tokens),
            st.lists(
                st.lists(st.integers(0, len(tokens) - 1), unique=True, max_size=6), max_size=8
            ),
        )
    )
)
def test_intra_list_diversity_matches_the_definition(
    case: tuple[list[set[int]], list[list[int]]],
) -> None:
    tokens, top_lists = case
    matrix = token_matrix([[str(t) for t in item] for item in tokens])
    got = intra_list_diversity(lists(*top_lists), matrix)
    want = naive_ild(top_lists, tokens)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want)
        assert got is not None
        assert 0.0 <= got <= 1.0


# ---------------------------------------------------------------- shares and gaps


def test_value_shares_split_multi_valued_items_evenly() -> None:
    shares = value_shares([2, 1, 1], [("x", "y"), ("x",), ()])
    assert shares == pytest.approx({"x": 0.5, "y": 0.25, NONE: 0.25})
    assert value_shares([0, 0], [("x",), ("y",)]) == {"x": 0.0, "y": 0.0}


def test_gap_is_max_minus_min_and_min_over_max() -> None:
    result = gap({"F": 0.1, "M": 0.25, NONE: 0.9})  # (none) is shown, not compared
    assert result is not None
    assert result.difference == pytest.approx(0.15)
    assert result.ratio == pytest.approx(0.4)
    assert (result.lowest, result.highest) == ("F", "M")
    both_zero = gap({"a": 0.0, "b": 0.0})
    assert both_zero is not None
    assert (both_zero.difference, both_zero.ratio) == (0.0, 1.0)
    assert gap({"a": 0.3}) is None
    assert gap({"a": 0.3, NONE: 0.1}) is None


def test_group_scores_average_per_value() -> None:
    values = {"u1": ("F",), "u2": ("M",), "u3": ("M",), "u4": ("F", "M")}  # u5: no value
    result = group_scores(
        "gender",
        ["u1", "u2", "u3", "u4", "u5"],
        [0.2, 0.1, 0.3, 0.0, 0.5],
        [0.4, 0.2, 0.6, 0.0, 1.0],
        values,
    )
    by_value = {g.value: g for g in result.groups}
    assert [g.value for g in result.groups] == ["F", "M", NONE]
    assert (by_value["F"].users, by_value["M"].users, by_value[NONE].users) == (2, 3, 1)
    assert by_value["F"].precision == pytest.approx(0.1)  # u1, u4
    assert by_value["M"].precision == pytest.approx(0.4 / 3)  # u2, u3, u4
    assert by_value["M"].ndcg == pytest.approx(0.8 / 3)
    assert result.precision_gap is not None
    assert result.precision_gap.difference == pytest.approx(0.4 / 3 - 0.1)
    assert result.precision_gap.ratio == pytest.approx(0.1 / (0.4 / 3))
    assert result.ndcg_gap is not None
    assert result.ndcg_gap.lowest == "F"


# ---------------------------------------------------------------- properties

non_negative = st.lists(st.integers(0, 1000), min_size=1, max_size=50)


@given(non_negative, st.integers(1, 9))
def test_gini_stays_in_range_and_ignores_order_and_scale(values: list[int], scale: int) -> None:
    n = len(values)
    g = gini(values)
    assert 0.0 <= g <= (n - 1) / n + 1e-12
    assert gini(list(reversed(values))) == pytest.approx(g)
    assert gini([v * scale for v in values]) == pytest.approx(g)
    assert 0.0 <= coverage(values) <= 1.0


@given(
    st.lists(
        st.tuples(
            st.floats(0, 100, allow_nan=False),
            st.lists(st.sampled_from("abcd"), max_size=3),
        ),
        min_size=1,
        max_size=30,
    ).filter(lambda items: sum(w for w, _ in items) > 0)
)
def test_value_shares_sum_to_one(items: list[tuple[float, list[str]]]) -> None:
    shares = value_shares([w for w, _ in items], [tuple(v) for _, v in items])
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 + 1e-12 for s in shares.values())


@given(st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1), min_size=2))
def test_gaps_are_between_zero_and_one_for_rates(means: dict[str, float]) -> None:
    result = gap(means)
    assert result is not None
    assert 0.0 <= result.difference <= 1.0
    assert 0.0 <= result.ratio <= 1.0
    assert means[result.lowest] == min(means.values())
    assert means[result.highest] == max(means.values())


# ---------------------------------------------------------------- one model, by hand


@pytest.fixture
def tiny() -> tuple[Interactions, FeatureTable, FeatureTable]:
    """4 items (i3 never interacted with), 3 users."""
    interactions = make_interactions(
        [
            ("u1", "i0", "purchase"),
            ("u1", "i1", "purchase"),
            ("u2", "i0", "purchase"),
            ("u3", "i0", "purchase"),
            ("u3", "i2", "purchase"),
        ]
    )
    items = FeatureTable(
        "item_id",
        ("genre",),
        ["i0", "i1", "i2", "i3"],
        [("genre=Drama",), ("genre=Drama", "genre=Comedy"), ("genre=Comedy",), ()],
    )
    users = FeatureTable(
        "user_id",
        ("gender", "age"),
        ["u1", "u2", "u3"],
        [("gender=F", "age=18-24"), ("gender=M", "age=18-24"), ("gender=M",)],
    )
    return interactions, items, users


def test_context_measures_a_model_from_its_lists(
    tiny: tuple[Interactions, FeatureTable, FeatureTable],
) -> None:
    interactions, items, users = tiny
    data = build_training_data(interactions, TrainConfig(), items=items, users=users)
    row = data.items.entities.index
    context = FairnessContext(
        FairnessSettings(exposure_by=("genre",)), data, 2, users=users, items=items
    )
    accumulator = MetricAccumulator(2, 4, np.zeros(4))
    # u1: one hit of 2 relevant; u2: none; u3: both
    accumulator.add(np.array([row("i2"), row("i3")]), np.array([row("i2"), row("i0")]), 0.5, "u1")
    accumulator.add(np.array([row("i2"), row("i1")]), np.array([row("i3")]), 0.5, "u2")
    accumulator.add(np.array([row("i1"), row("i3")]), np.array([row("i1"), row("i3")]), 0.5, "u3")
    result = context.measure("model", accumulator)

    assert context.report.group_by == ("gender", "age")
    gender = {g.value: g for g in result.group("gender").groups}
    assert gender["F"].precision == pytest.approx(0.5)
    assert gender["M"].precision == pytest.approx(0.5)  # (0 + 1) / 2
    assert gender["M"].users == 2
    age = {g.value: g for g in result.group("age").groups}
    assert (age["18-24"].users, age[NONE].users) == (2, 1)
    assert result.group("age").precision_gap is None  # one real group only

    # exposure: i0 0, i1 2, i2 2, i3 2 slots of 6
    assert (result.lists, result.slots) == (3, 6)
    assert result.coverage == pytest.approx(0.75)
    assert result.exposure_gini == pytest.approx(gini([0, 2, 2, 2]))
    assert result.exposure_gini == pytest.approx(0.25)
    # U = 3; users per item 3, 1, 1, 0 -> 0, 1, 1, 2 bits; slots: i2 i3 i2 i1 i1 i3
    assert result.novelty_bits == pytest.approx((1 + 2 + 1 + 1 + 1 + 2) / 6)
    # {Comedy} vs {}: 1; {Comedy} vs {Drama, Comedy}: 0.5; {Drama, Comedy} vs {}: 1
    assert result.intra_list_diversity == pytest.approx(2.5 / 3)
    # slots: i1 (Drama/Comedy) x2, i2 (Comedy) x2, i3 (none) x2
    assert result.exposure_shares["genre"] == pytest.approx(
        {"Drama": 1 / 6, "Comedy": 3 / 6, NONE: 2 / 6}
    )
    catalogue = context.report.catalogue
    assert (catalogue.items, catalogue.training_users, catalogue.training_pairs) == (4, 3, 5)
    assert catalogue.catalogue_shares["genre"] == pytest.approx(
        {"Drama": 1.5 / 4, "Comedy": 1.5 / 4, NONE: 1 / 4}
    )
    # pairs: i0 x3 (Drama), i1 x1 (half each), i2 x1 (Comedy)
    assert catalogue.interaction_shares["genre"] == pytest.approx(
        {"Drama": 3.5 / 5, "Comedy": 1.5 / 5, NONE: 0.0}
    )
    payload = context.report.to_json()
    assert payload["models"]["model"]["groups"]["gender"]["gaps"]["precision"]["ratio"] == 1.0
    assert payload["catalogue"]["exposure_by"]["genre"]["Drama"]["catalogue_share"] == 0.375
    text = context.report.table()
    assert "P@2 / NDCG@2 by user gender" in text
    assert "share of recommended slots by item genre" in text


def test_context_refuses_lists_without_users_and_unknown_columns(
    tiny: tuple[Interactions, FeatureTable, FeatureTable],
) -> None:
    interactions, items, users = tiny
    data = build_training_data(interactions, TrainConfig(), items=items, users=users)
    context = FairnessContext(FairnessSettings(), data, 1, users=users, items=items)
    accumulator = MetricAccumulator(1, 4, np.zeros(4))
    accumulator.add(np.array([0]), np.array([0]), 0.5)  # no user id
    with pytest.raises(InvariantError):
        context.measure("model", accumulator)
    with pytest.raises(InvalidInputError, match="no users column 'country'"):
        check_settings(FairnessSettings(group_by=("country",)), users, items)
    with pytest.raises(InvalidInputError, match="needs the items file"):
        check_settings(FairnessSettings(exposure_by=("genre",)), users, None)


# ---------------------------------------------------------------- the protocols


SMALL = TrainConfig(components=8, epochs=5, seed=3, num_threads=1, blend=False)


@pytest.mark.parametrize("protocol", ["random", "temporal", "cold-items", "fold-in"])
def test_protocols_attach_fairness_figures(
    protocol: str, toy_shop: tuple[Interactions, FeatureTable, FeatureTable]
) -> None:
    interactions, items, users = toy_shop
    test = None
    if protocol == "fold-in":
        split = random_split(interactions, 0.3, seed=0)
        interactions, test = split.train, split.test
    report = run_protocol(
        ProtocolSettings(
            protocol,
            k=3,
            test_fraction=0.3,
            item_fraction=0.3,
            models=["lightfm-cf", "popularity-recent"] if protocol == "temporal" else None,
            fold_users=3,
            fairness=FairnessSettings(exposure_by=("category",)),
        ),
        interactions,
        SMALL,
        test=test,
        items=items,
        users=users,
    )
    assert report.fairness is not None
    assert len(report.results) >= 2
    assert list(report.fairness.models) == [r.name for r in report.results]
    for result in report.results:
        figures = report.fairness.models[result.name]
        segments = figures.group("segment")
        assert sum(g.users for g in segments.groups) == result.users
        assert figures.coverage == pytest.approx(result.metrics["coverage"])
        assert sum(figures.exposure_shares["category"].values()) == pytest.approx(1.0)
    assert "beyond accuracy over the top-3 lists" in report.table()
    assert "fairness" in json.loads(json.dumps(report.to_json()))


def test_edge_replay_refuses_fairness(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
) -> None:
    interactions, items, users = toy_shop
    with pytest.raises(InvalidInputError, match="not measured by protocol edge-replay"):
        run_protocol(
            ProtocolSettings("edge-replay", fairness=FairnessSettings()),
            interactions,
            SMALL,
            items=items,
            users=users,
        )


# ---------------------------------------------------------------- the command line


def test_cli_rejects_unknown_columns_and_edge_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "events.csv").write_text("user_id,item_id,event_type\na,x,purchase\nb,y,view\n")
    (tmp_path / "items.csv").write_text("item_id,genre\nx,Drama\ny,Comedy\n")
    base = ["evaluate", "--interactions", str(tmp_path / "events.csv"), "--quiet"]
    items = str(tmp_path / "items.csv")
    assert main([*base, "--protocol", "random", "--items", items, "--exposure-by", "colour"]) == 1
    assert "no items column 'colour'; the items file has genre" in capsys.readouterr().err
    assert main([*base, "--protocol", "edge-replay", "--group-by", "age"]) == 1
    assert "not available with --protocol edge-replay" in capsys.readouterr().err


def test_cli_fairness_report_on_ml100k(ml100k_csvs: Path, tmp_path: Path) -> None:
    """ua split, hybrid / pure CF / popularity, users grouped by gender and age band."""
    data = ml100k_csvs
    # small settings: plain LightFM (no blend fit), 5 epochs, as tests/test_cli.py
    done = run_cli(
        "evaluate",
        "--protocol",
        "given",
        "--interactions",
        str(data / "ua.base.csv"),
        "--test",
        str(data / "ua.test.csv"),
        "--items",
        str(data / "items.csv"),
        "--users",
        str(data / "users.csv"),
        "--relevant",
        "purchase",
        "--models",
        "hybrid,lightfm-cf,popularity",
        "--group-by",
        "gender",
        "--group-by",
        "age",
        "--exposure-by",
        "genre",
        "--epochs",
        "5",
        "--no-blend",
        "--seed",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--json",
        str(tmp_path / "report.json"),
        "--plot",
        str(tmp_path / "report.png"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    figures = report["fairness"]
    models = ("hybrid", "lightfm-cf", "popularity")
    assert set(figures["models"]) == set(models)
    assert figures["group_by"] == ["gender", "age"]
    age_bands = {"under-18", "18-24", "25-34", "35-44", "45-49", "50-55", "56-plus"}
    for name in models:
        overall = report["models"][name]
        model = figures["models"][name]
        for column, expected in (("gender", {"F", "M"}), ("age", age_bands)):
            groups = model["groups"][column]["groups"]
            assert set(groups) == expected
            # every user has one value: the groups partition the evaluated users, and
            # their user-weighted means are the overall means
            assert sum(g["users"] for g in groups.values()) == overall["users"]
            for metric in ("precision", "ndcg"):
                weighted = sum(g["users"] * g[metric] for g in groups.values())
                assert weighted / overall["users"] == pytest.approx(overall[metric], abs=1e-4)
                means = [g[metric] for g in groups.values()]
                gaps = model["groups"][column]["gaps"][metric]
                assert 0.0 <= gaps["difference"] <= 1.0
                assert 0.0 < gaps["ratio"] <= 1.0
                assert gaps["difference"] == pytest.approx(max(means) - min(means), abs=1e-4)
                assert gaps["ratio"] == pytest.approx(min(means) / max(means), abs=1e-4)
        assert model["lists"] == overall["users"]
        assert model["slots"] == 10 * overall["users"]
        assert 0.0 < model["exposure_gini"] < 1.0
        assert model["coverage"] == pytest.approx(overall["coverage"], abs=1e-4)
        assert 0.0 < model["novelty_bits"] < math.log2(943 + 1)
        assert 0.0 < model["intra_list_diversity"] <= 1.0
        assert sum(model["exposure_by"]["genre"].values()) == pytest.approx(1.0, abs=1e-3)
    genres = figures["catalogue"]["exposure_by"]["genre"]
    assert len(genres) == 19  # the 19 genres of u.genre, every item has one at least
    for share in ("catalogue_share", "interaction_share"):
        assert sum(g[share] for g in genres.values()) == pytest.approx(1.0, abs=1e-3)
    assert figures["catalogue"]["items"] == 1682
    # popularity shows everyone the same bestsellers: the most uneven exposure, the least
    # coverage and novelty
    popularity = figures["models"]["popularity"]
    for name in ("hybrid", "lightfm-cf"):
        other = figures["models"][name]
        assert popularity["exposure_gini"] > other["exposure_gini"]
        assert popularity["coverage"] < other["coverage"]
        assert popularity["novelty_bits"] < other["novelty_bits"]
    assert "P@10 / NDCG@10 by user gender" in done.stdout
    assert "share of recommended slots by item genre" in done.stdout
    assert (tmp_path / "report.png").stat().st_size > 0
    assert (tmp_path / "report-groups.png").stat().st_size > 0
