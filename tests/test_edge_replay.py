"""The edge replay protocol: its mechanics on a toy shop, and the claim on MovieLens-100k."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfrank.core.events import EventType
from shelfrank.core.session import SessionConfig
from shelfrank.datasets import movielens
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.datasets.writers import write_features, write_interactions
from shelfrank.server.cli import main
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation import edge_replay
from shelfrank.server.evaluation.edge_replay import (
    EDGE,
    STALE,
    evaluate_edge_replay,
    replay,
    replay_split,
    replay_steps,
    tune_session_config,
)
from shelfrank.server.evaluation.metrics import METRIC_NAMES
from shelfrank.server.hybrid import HybridModel

TOY_CONFIG = TrainConfig(components=8, epochs=15, seed=3, num_threads=1)
Row = tuple[str, str, EventType, float]


def interactions(rows: list[Row]) -> Interactions:
    return Interactions.from_rows([(u, i, k, t, float("nan"), "") for u, i, k, t in rows])


@pytest.fixture(scope="module")
def switching_shop() -> tuple[Interactions, FeatureTable]:
    """Shoe people whose latest session is about books, and the other way round.

    History: 15 own-category events a minute apart. Session: 10 other-category events,
    two per timestamp (five moments), every third one a view, the rest purchases."""
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    for user in range(40):
        own, other = ("shoe", "book") if user < 20 else ("book", "shoe")
        for n, item in enumerate(rng.choice(30, size=15, replace=False)):
            rows.append((f"u{user}", f"{own}{item}", EventType.PURCHASE, 1000.0 + 60 * n))
        for n, item in enumerate(rng.choice(30, size=10, replace=False)):
            kind = EventType.VIEW if n % 3 == 0 else EventType.PURCHASE
            rows.append((f"u{user}", f"{other}{item}", kind, 100_000.0 + 30 * (n // 2)))
    order = rng.permutation(len(rows))  # file order must not matter
    items = FeatureTable(
        "item_id",
        ("category",),
        [f"{p}{i}" for p in ("shoe", "book") for i in range(30)],
        [(f"category={p}",) for p in ("shoe", "book") for _ in range(30)],
    )
    return interactions([rows[i] for i in order]), items


def test_split_takes_the_last_events_without_splitting_a_timestamp() -> None:
    rows: list[Row] = [("a", f"i{n}", EventType.VIEW, float(n)) for n in range(20)]
    rows += [("b", f"i{n}", EventType.VIEW, float(min(n, 8))) for n in range(20)]  # bunched
    rows += [("c", f"i{n}", EventType.VIEW, float(n)) for n in range(15)]  # too short
    straddle = [*range(9), 9, 9, 9, *range(12, 20)]  # the cut falls inside the 9s
    rows += [("d", f"i{n}", EventType.VIEW, float(t)) for n, t in enumerate(straddle)]
    split = replay_split(interactions(rows), session_length=10, min_history=5)
    sessions: dict[str, list[float]] = {}
    for user, stamp in zip(split.sessions.user_ids, split.sessions.timestamps, strict=True):
        sessions.setdefault(user, []).append(float(stamp))
    assert sorted(sessions["a"]) == [float(n) for n in range(10, 20)]
    assert "b" not in sessions  # its last 12 events share one timestamp: nothing to replay
    assert "c" not in sessions
    assert sorted(sessions["d"]) == [float(t) for t in range(12, 20)]  # the 9s all train
    assert len(split.train) + len(split.sessions) == len(rows)
    assert split.notes["replayed_users"] == 2


def test_split_validation() -> None:
    rows: list[Row] = [("a", "i", EventType.VIEW, float("nan"))]
    with pytest.raises(ValueError, match=r"^timestamp:"):
        replay_split(interactions(rows))
    with pytest.raises(ValueError, match=r"^session_length:"):
        replay_split(interactions([]), session_length=0)
    with pytest.raises(ValueError, match=r"^min_history:"):
        replay_split(interactions([]), min_history=0)


def test_steps_are_moments_that_see_only_the_past(
    switching_shop: tuple[Interactions, FeatureTable],
) -> None:
    data, items = switching_shop
    split = replay_split(data)
    serving = HybridModel.train(split.train, TOY_CONFIG, items=items).to_serving()
    steps, dropped = replay_steps(split.sessions, serving)
    assert dropped == {"session_users_unknown": 0, "session_events_unknown_item": 0}
    assert len(steps) == 40 * 5  # five moments of two events each
    first = [s for s in steps if s.user == serving.user_ids.index("u0")]
    assert [len(s.events) for s in first] == [0, 2, 4, 6, 8]
    assert [s.targets.size for s in first] == [2] * 5
    for step in steps:
        assert all(event.timestamp < step.now for event in step.events)
        assert not np.isin(step.targets, step.exclude).any()
        assert np.isin(serving.seen_rows(serving.user_ids.id_of(step.user)), step.exclude).all()
        assert np.isin([e.row for e in step.events], step.exclude).all()
    purchases, _ = replay_steps(split.sessions, serving, frozenset({EventType.PURCHASE}))
    assert sum(s.targets.size for s in purchases) == 40 * 6  # 4 of 10 events are views


def test_without_session_signal_the_edge_is_the_stale_ranking(
    switching_shop: tuple[Interactions, FeatureTable],
) -> None:
    data, items = switching_shop
    split = replay_split(data)
    serving = HybridModel.train(split.train, TOY_CONFIG, items=items).to_serving()
    steps, _ = replay_steps(split.sessions, serving)
    results = replay(serving, steps, SessionConfig(strength=0.0))
    assert results[EDGE] == results[STALE]


def test_toy_replay_report(switching_shop: tuple[Interactions, FeatureTable]) -> None:
    data, items = switching_shop
    report = evaluate_edge_replay(data, TOY_CONFIG, items=items)
    assert report.protocol == "edge-replay"
    assert [r.name for r in report.results] == [STALE, EDGE]
    stale, edge = (report.result(name).metrics for name in (STALE, EDGE))
    for metrics in (stale, edge):
        assert {*METRIC_NAMES, "hr"} <= set(metrics)
        assert 0.0 <= metrics["hr"] <= 1.0
    # the session is about the other category: only the device can know
    assert stale["ndcg"] == 0.0
    assert edge["ndcg"] > 0.1
    assert edge["hr"] > stale["hr"]
    assert math.isnan(report.notes["ndcg_relative_improvement"])  # undefined over 0
    assert report.notes["steps"] == 200
    assert report.notes["steps_with_session"] == 160
    assert report.result(STALE).users == 40
    assert "edge-rerank" in report.table()
    json.dumps(report.to_json())


def test_tuning_never_sees_the_test_sessions(
    switching_shop: tuple[Interactions, FeatureTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, items = switching_shop
    short = {"session_length": 4, "min_history": 2}  # leaves the toy a validation session
    test_sessions = replay_split(data, **short).sessions
    held_out = set(zip(test_sessions.user_ids, test_sessions.item_ids, strict=True))
    trained_on: list[Interactions] = []
    real_train = HybridModel.train

    def spy(train: Interactions, *args: Any, **kwargs: Any) -> HybridModel:
        trained_on.append(train)
        return real_train(train, *args, **kwargs)

    monkeypatch.setattr(edge_replay.HybridModel, "train", spy)
    candidates = [SessionConfig(strength=0.0), SessionConfig(strength=4.0)]
    result = tune_session_config(data, TOY_CONFIG, candidates, items=items, **short)
    assert len(trained_on) == 1
    seen = set(zip(trained_on[0].user_ids, trained_on[0].item_ids, strict=True))
    assert not seen & held_out
    # the test sessions are the last two moments, validation the two before them
    assert len(test_sessions) == 40 * 4
    assert len(trained_on[0]) == len(data) - 40 * 4 - 40 * 4
    assert result.best.strength == 4.0
    assert result.ranked[0][1]["ndcg"] > result.stale["ndcg"]
    # strength 0 is the stale ranking (AUC is not computed while tuning: NaN != NaN)
    assert math.isnan(result.stale["auc"])
    assert {**result.ranked[1][1], "auc": 0} == {**result.stale, "auc": 0}
    with pytest.raises(ValueError, match=r"^candidates:"):
        tune_session_config(data, TOY_CONFIG, [], items=items)


def test_cli_edge_replay(switching_shop: tuple[Interactions, FeatureTable], tmp_path: Path) -> None:
    data, items = switching_shop
    write_interactions(tmp_path / "events.csv", data)
    write_features(tmp_path / "items.csv", items)
    args = ["evaluate", "--protocol", "edge-replay", "--interactions", str(tmp_path / "events.csv")]
    options = ["--epochs", "15", "--components", "8", "--seed", "3", "--threads", "1", "--quiet"]
    out = tmp_path / "report.json"
    code = main([*args, "--items", str(tmp_path / "items.csv"), *options, "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "edge-replay"
    assert set(report["models"]) == {STALE, EDGE}
    assert report["models"][EDGE]["ndcg"] > report["models"][STALE]["ndcg"]
    assert main([*args, "--test", str(tmp_path / "events.csv"), *options]) == 1


def test_ml100k_edge_rerank_beats_the_stale_model_by_ten_percent(ml100k: Path) -> None:
    """The claim of issue 4, with the committed SessionConfig defaults (tuned on the
    validation replay, not on this one)."""
    data, _ = movielens.read_ratings(ml100k / "u.data")
    report = evaluate_edge_replay(
        data,
        replace(TrainConfig(), seed=1, num_threads=1),
        items=movielens.read_items(ml100k),
        users=movielens.read_users(ml100k),
    )
    stale, edge = (report.result(name).metrics for name in (STALE, EDGE))
    assert report.notes["replayed_users"] == 943
    assert report.notes["steps"] > 4000
    assert edge["ndcg"] >= 1.10 * stale["ndcg"]
    assert edge["hr"] > stale["hr"]
    assert report.notes["ndcg_relative_improvement"] == pytest.approx(
        edge["ndcg"] / stale["ndcg"] - 1, abs=1e-4
    )
