"""The ``tradeoffs`` protocol of ``shelfrank evaluate`` (server/evaluation/tradeoffs.py):
its pieces on hand-computed cases, its curves on a toy shop against the plain ranking,
and the command end to end on MovieLens-100k."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import POSITIVE_EVENT_TYPES
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.cli import main
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.protocols import ProtocolSettings, run_protocol
from shelfrank.server.evaluation.runner import EvaluationReport, evaluate_split, relevance
from shelfrank.server.evaluation.splits import cold_items_split, given_split, random_split
from shelfrank.server.evaluation.tradeoffs import (
    DiversityCurve,
    DiversityPoint,
    TradeoffReport,
    cosine_ild,
    diversity_curve,
    evaluate_tradeoffs,
    exploration_curve,
    percent_change,
    sweep,
)
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.offline import recommend_users
from tests.conftest import run_cli

CONFIG = TrainConfig(components=8, epochs=15, seed=3, num_threads=1)
K = 5


# ---------------------------------------------------------------- the pieces


def test_cosine_ild_is_mean_pairwise_cosine_distance() -> None:
    vectors = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [2, 0]], dtype=np.float32)
    rows = [np.array(r, dtype=np.int64) for r in ([0, 1], [0, 2], [7], [])]
    # [0, 1]: orthogonal, distance 1; [0, 2]: 1 - 1/sqrt(2); lists below two items left out
    assert cosine_ild(rows, vectors) == pytest.approx((1.0 + 1.0 - 1 / math.sqrt(2)) / 2)
    # three items: pairs (0,1) 1, (0,2) 1 - 1/sqrt(2), (1,2) 1 - 1/sqrt(2)
    three = [np.array([0, 1, 2], dtype=np.int64)]
    assert cosine_ild(three, vectors) == pytest.approx((3 - 2 / math.sqrt(2)) / 3)
    # same direction: 0, whatever the length; a zero vector is at cosine 0 from everything
    assert cosine_ild([np.array([0, 4])], vectors) == pytest.approx(0.0, abs=1e-7)
    assert cosine_ild([np.array([0, 3])], vectors) == pytest.approx(1.0)
    assert cosine_ild([np.array([1])], vectors) is None
    assert cosine_ild([], vectors) is None


def test_sweep_adds_the_baseline_sorts_and_checks() -> None:
    assert sweep([0.3, 0.1, 0.3], "diversity") == (0.0, 0.1, 0.3)
    assert sweep([], "exploration") == (0.0,)
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(InvalidInputError, match="diversity"):
            sweep([bad], "diversity")


def test_percent_change() -> None:
    assert percent_change(0.12, 0.1) == pytest.approx(20.0)
    assert percent_change(0.095, 0.1) == pytest.approx(-5.0)
    assert percent_change(0.1, 0.0) is None
    assert percent_change(None, 0.1) is None


def point(d: float, precision: float, ild: float | None) -> DiversityPoint:
    return DiversityPoint(
        diversity=d,
        precision=precision,
        ndcg=precision,
        ild_cosine=ild,
        ild_jaccard=None,
        precision_change=None,
        ild_cosine_change=None,
        ild_jaccard_change=None,
    )


def test_best_is_the_most_diverse_setting_within_five_percent_of_precision() -> None:
    points = (
        point(0.0, 0.20, 0.40),
        point(0.2, 0.195, 0.45),
        point(0.4, 0.19, 0.50),  # exactly 5% below: allowed
        point(0.6, 0.1899, 0.60),  # just over 5% below
        point(0.8, 0.21, 0.50),  # as diverse as 0.4: the smaller d wins
    )
    curve = DiversityCurve(k=10, user_ids=("a",), diversity_by=None, points=points)
    assert curve.best.diversity == 0.4
    flat = DiversityCurve(
        k=10,
        user_ids=("a",),
        diversity_by=None,
        points=(point(0.0, 0.0, None), point(0.5, 0.0, None)),
    )
    assert flat.best.diversity == 0.0


# ---------------------------------------------------------------- the curves on a toy shop


@pytest.fixture(scope="module")
def toy_split(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
) -> tuple[Interactions, Interactions]:
    interactions, _, _ = toy_shop
    split = random_split(interactions, 0.3, seed=1)
    return split.train, split.test


def test_report_structure_and_ranges(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
    toy_split: tuple[Interactions, Interactions],
) -> None:
    _, items, users = toy_shop
    train, test = toy_split
    report = run_protocol(
        ProtocolSettings(
            "tradeoffs",
            k=K,
            item_fraction=0.3,
            split_seed=2,
            diversity_sweep=(0.9, 0.5),
            exploration_sweep=(0.3,),
        ),
        train,
        CONFIG,
        test=test,
        items=items,
        users=users,
    )
    assert isinstance(report, TradeoffReport)
    assert isinstance(report, EvaluationReport)
    assert report.results == []
    diversity, exploration = report.diversity, report.exploration
    assert [p.diversity for p in diversity.points] == [0.0, 0.5, 0.9]
    assert [p.exploration for p in exploration.points] == [0.0, 0.3]
    assert diversity.diversity_by == ("category",)  # default: every item column
    assert diversity.best in diversity.points
    base = diversity.baseline
    assert base.precision_change == 0.0
    assert base.ild_cosine_change == 0.0
    for p in diversity.points:
        assert len(p.lists) == len(diversity.user_ids)
        assert all(len(top) == K and len(set(top.tolist())) == K for top in p.lists)
        for value in (p.precision, p.ndcg, p.ild_jaccard):
            assert value is not None
            assert 0.0 <= value <= 1.0
        assert p.ild_cosine is not None
        assert 0.0 <= p.ild_cosine <= 2.0  # 1 - cos: opposite vectors are 2 apart
        assert p.precision_change == pytest.approx(
            100 * (p.precision - base.precision) / base.precision
        )
    # strong diversity does spread the lists out
    top = diversity.points[-1]
    assert top.ild_cosine is not None
    assert base.ild_cosine is not None
    assert top.ild_cosine > base.ild_cosine
    for p in exploration.points:
        for value in (p.precision, p.ndcg, p.cold_slot_share, p.cold_coverage):
            assert 0.0 <= value <= 1.0
    assert exploration.points[1].cold_slot_share >= exploration.points[0].cold_slot_share
    assert exploration.held_out_items == report.notes["held_out_items"] > 0
    payload = json.loads(json.dumps(report.to_json()))
    assert payload["protocol"] == "tradeoffs"
    assert set(payload) == {"protocol", "k", "notes", "diversity", "exploration"}
    assert [p["diversity"] for p in payload["diversity"]["points"]] == [0.0, 0.5, 0.9]
    assert payload["diversity"]["best"]["diversity"] == diversity.best.diversity
    assert set(payload["exploration"]["points"][0]) == {
        "exploration",
        "precision",
        "ndcg",
        "precision_change_percent",
        "cold_slot_share",
        "cold_coverage",
    }
    text = report.table()
    assert "diversity curve" in text
    assert "exploration curve" in text
    assert "best: diversity" in text


def test_diversity_zero_is_the_plain_ranking_and_the_runners_precision(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
    toy_split: tuple[Interactions, Interactions],
) -> None:
    _, items, users = toy_shop
    train, test = toy_split
    hybrid = HybridModel.train(train, CONFIG, items=items, users=users)
    serving = hybrid.to_serving()
    rows, _ = relevance(test, hybrid.data, POSITIVE_EVENT_TYPES)
    truth = {hybrid.data.users.entities.id_of(u): r for u, r in rows.items()}
    curve = diversity_curve(serving, truth, K, (0.0, 0.7))
    plain = {
        r.user_id: [item for item, _ in r.items]
        for r in recommend_users(serving, sorted(truth), K, exclude_seen=True, mode="new")
    }
    for user, top in zip(curve.user_ids, curve.baseline.lists, strict=True):
        assert serving.items.item_ids.indices(plain[user]) == top.tolist()
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(curve.baseline.lists, curve.points[1].lists, strict=True)
    )
    # the same P@k as `evaluate --protocol given` gives the hybrid model (same seed)
    given = evaluate_split(
        given_split(train, test), CONFIG, items=items, users=users, k=K, models=["hybrid"]
    )
    assert curve.baseline.precision == pytest.approx(given.result("hybrid").metrics["precision"])
    assert curve.baseline.ndcg == pytest.approx(given.result("hybrid").metrics["ndcg"])


def test_exploration_fills_slots_with_held_out_items(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
    toy_split: tuple[Interactions, Interactions],
) -> None:
    _, items, users = toy_shop
    train, test = toy_split
    split = cold_items_split(train, 0.3, seed=2)
    held = split.candidate_item_ids or ()
    cold = HybridModel.train(split.train, CONFIG, items=items, users=users)
    serving = cold.to_serving()
    held_rows = serving.item_rows(list(held))
    assert (serving.item_popularity[held_rows] <= 0).all()  # new items: exploration's pool
    warm = test.take(np.array([item not in held for item in test.item_ids]))
    rows, _ = relevance(warm, cold.data, POSITIVE_EVENT_TYPES)
    truth = {cold.data.users.entities.id_of(u): r for u, r in rows.items()}
    curve = exploration_curve(serving, truth, K, held_rows, (0.0, 0.3, 1.0))
    plain = [
        serving.item_rows([item for item, _ in r.items])
        for r in recommend_users(serving, curve.user_ids, K, exclude_seen=True, mode="new")
    ]
    slots = np.concatenate(plain)
    base = curve.baseline
    assert base.cold_slot_share == pytest.approx(np.isin(slots, held_rows).mean())
    assert base.cold_coverage == pytest.approx(
        np.unique(slots[np.isin(slots, held_rows)]).size / held_rows.size
    )
    shares = [p.cold_slot_share for p in curve.points]
    assert shares == sorted(shares)
    assert shares[1] > shares[0]
    for p in curve.points:
        assert 0.0 <= p.cold_slot_share <= 1.0
        assert 0.0 <= p.cold_coverage <= 1.0
    # everything explores at 1.0: every slot holds a new item (held out or never bought)
    new = np.flatnonzero(serving.item_popularity <= 0)
    assert all(np.isin(top, new).all() for top in curve.point(1.0).lists)


def test_protocol_refuses_bad_settings(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
    toy_split: tuple[Interactions, Interactions],
) -> None:
    _, items, _users = toy_shop
    train, test = toy_split
    with pytest.raises(InvalidInputError, match="needs the items file"):
        evaluate_tradeoffs(train, test, CONFIG, items=None)
    with pytest.raises(InvalidInputError, match="no items column 'colour'"):
        evaluate_tradeoffs(train, test, CONFIG, items=items, diversity_by=("colour",))
    with pytest.raises(InvalidInputError, match="needs test interactions"):
        run_protocol(ProtocolSettings("tradeoffs"), train, CONFIG, items=items)
    with pytest.raises(InvalidInputError, match="only for protocol tradeoffs"):
        run_protocol(ProtocolSettings("given", diversity_sweep=(0.5,)), train, CONFIG, test=test)
    with pytest.raises(InvalidInputError, match="hybrid model alone"):
        run_protocol(ProtocolSettings("tradeoffs", models=["popularity"]), train, CONFIG, test=test)


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--protocol", "given", "--diversity-sweep", "0.5"], "only used by --protocol tradeoffs"),
        (["--protocol", "tradeoffs"], "--items is required"),
        (["--protocol", "tradeoffs", "--items", "i.csv", "--models", "ease"], "--models"),
        (["--protocol", "tradeoffs", "--items", "i.csv", "--group-by", "age"], "--group-by"),
    ],
)
def test_cli_refuses_misused_options(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--interactions", "x.csv", "--test", "y.csv", "--quiet", *extra]
    assert main(args) == 1
    assert message in capsys.readouterr().err


def test_cli_rejects_shares_outside_zero_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--protocol", "tradeoffs", "--interactions", "x.csv",
              "--exploration-sweep", "0,1.5"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_cli_tradeoffs_on_ml100k(ml100k_csvs: Path, tmp_path: Path) -> None:
    """ua split, small settings (plain LightFM, 5 epochs, two points per curve)."""
    data = ml100k_csvs
    done = run_cli(
        "evaluate",
        "--protocol",
        "tradeoffs",
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
        "--diversity-by",
        "genre",
        "--diversity-sweep",
        "0,0.3",
        "--exploration-sweep",
        "0,0.1",
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
    assert "diversity curve (934 test users, top-10)" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["protocol"] == "tradeoffs"
    assert report["k"] == 10
    assert (tmp_path / "report.png").stat().st_size > 10_000
    diversity = report["diversity"]
    assert diversity["users"] == 934
    assert diversity["diversity_by"] == ["genre"]
    assert [p["diversity"] for p in diversity["points"]] == [0.0, 0.3]
    for p in diversity["points"]:
        for name in ("precision", "ndcg", "ild_cosine", "ild_jaccard"):
            assert 0.0 < p[name] < 1.0
    assert diversity["best"]["diversity"] in (0.0, 0.3)
    exploration = report["exploration"]
    notes = report["notes"]
    # ~20% of the 1680 films rated in ua.base, plus the 2 rated only in ua.test, are new
    assert 250 < exploration["held_out_items"] == notes["held_out_items"] < 420
    assert notes["new_items"] == notes["held_out_items"] + 2
    assert 0 < notes["warm_test_events"] < notes["test_events"] == 9430
    base, explore = exploration["points"]
    assert (base["exploration"], explore["exploration"]) == (0.0, 0.1)
    assert base["cold_slot_share"] < 0.01  # the plain ranking hardly shows unrated films
    assert explore["cold_slot_share"] >= 0.10  # one slot in ten, to held-out films
    assert 0.0 < explore["cold_coverage"] <= 1.0
    assert explore["precision"] > 0.5 * base["precision"] > 0
