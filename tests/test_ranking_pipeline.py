"""One ranking pipeline: server, offline CLI and device agree, option by option; item
availability; explanations; steering (diversity, caps, exploration); bad input.

The shop: 60 users of three tastes, 150 items of three categories and ten brands, 30 of
them never interacted with (what exploration may show). The model ranks by its own score
(no blend: the device has no blend signals) and its item vectors are stored as the device
holds them (int8 per row, core/quantize.py), so the three paths get the same numbers and
any difference is the pipeline's. What int8 does to a model that is not so stored is
``tests/test_edge.py``'s congruence test (scores within a tolerance).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.client import Client, Event, FeatureFilter, Reason
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.filters import FeatureIndex
from shelfrank.core.ids import IdMap
from shelfrank.core.quantize import as_on_device
from shelfrank.core.ranking import ItemFacts, Steering, exploration_slots, steer
from shelfrank.core.scoring import ScoringTable, TopK
from shelfrank.datasets.records import FeatureTable
from shelfrank.edge import EdgeRecommender
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.app import RunningServer, ServerOptions, start
from shelfrank.server.cli import main as cli_main
from shelfrank.server.config import TrainConfig
from tests.conftest import make_interactions

USERS = [f"u{n}" for n in range(60)]
ITEMS = [f"i{n}" for n in range(150)]
CONFIG = TrainConfig(components=8, epochs=20, seed=5, num_threads=1, blend=False)


def _category(item: int) -> str:
    return ("shoes", "books", "toys")[item % 3]


@pytest.fixture(scope="module")
def shop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shelfrank.server.hybrid import HybridModel

    rng = np.random.default_rng(11)
    rows: list[tuple[str, str, str]] = []
    for user in range(60):
        taste = user % 3
        liked = [i for i in range(120) if i % 3 == taste]  # items 120..149: never touched
        for item in rng.choice(liked, size=12, replace=False):
            kind = "purchase" if rng.random() < 0.3 else "view"
            rows.append((f"u{user}", f"i{item}", kind))
        for item in rng.choice(120, size=3, replace=False):
            rows.append((f"u{user}", f"i{item}", "view"))
    items = FeatureTable(
        "item_id",
        ("category", "brand"),
        ITEMS,
        [(f"category={_category(i)}", f"brand=b{i % 10}") for i in range(150)],
    )
    users = FeatureTable("user_id", ("taste",), USERS, [(f"taste={u % 3}",) for u in range(60)])
    out = tmp_path_factory.mktemp("shop-model")
    model = HybridModel.train(make_interactions(rows), CONFIG, items=items, users=users)
    serving = model.to_serving()
    table = serving.items
    on_device = replace(
        serving,
        items=ScoringTable(table.item_ids, as_on_device(table.item_vectors), table.item_biases),
    )
    object.__setattr__(model, "to_serving", lambda: on_device)  # saved as the device holds it
    model.save(out)
    return out


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(shop_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    state = tmp_path_factory.mktemp("shop-server")
    running = start(
        ServerOptions(
            state_dir=state,
            port=_port(),
            model_dir=shop_model,
            train_config=CONFIG,
            grace_seconds=1.0,
        )
    )
    with Client(f"127.0.0.1:{running.port}") as client:  # the catalogue, as a shop loads it
        from shelfrank.client import Item

        client.upsert_items(
            Item(f"i{i}", [f"category={_category(i)}", f"brand=b{i % 10}"]) for i in range(150)
        )
    yield running
    running.stop()


def _target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@dataclass(frozen=True)
class Options:
    """One request's options, as each path spells them."""

    name: str
    filters: tuple[tuple[str, ...], ...] = ()
    unavailable: tuple[str, ...] = ()
    diversity: float = 0.0
    max_per_feature: tuple[tuple[str, int], ...] = ()
    exploration: float = 0.0

    def client_kwargs(self, user: str) -> dict[str, Any]:
        return {
            "k": 10,
            "exclude_seen": False,
            "filters": [FeatureFilter(f) for f in self.filters],
            "diversity": self.diversity,
            "max_per_feature": dict(self.max_per_feature),
            "exploration": self.exploration,
            "recommendation_id": f"congruence:{user}",
        }

    def cli_args(self, unavailable_file: Path) -> list[str]:
        args = ["--diversity", str(self.diversity), "--exploration", str(self.exploration)]
        for any_of in self.filters:
            args += ["--filter", ",".join(any_of)]
        for column, count in self.max_per_feature:
            args += ["--max-per-feature", f"{column}:{count}"]
        unavailable_file.write_text("".join(f"{i}\n" for i in self.unavailable))
        if self.unavailable:
            args += ["--unavailable", str(unavailable_file)]
        return [*args, "--recommendation-id-prefix", "congruence:"]


OPTIONS = [
    Options("plain"),
    Options("filters", filters=(("category=shoes", "category=toys"),)),
    Options("availability", unavailable=tuple(f"i{n}" for n in range(0, 120, 4))),
    Options("diversity", diversity=0.6),
    Options("max_per_feature", max_per_feature=(("brand=", 1), ("category=", 4))),
    Options("exploration", exploration=0.3),
    Options(
        "everything",
        filters=(("category=shoes", "category=books"),),
        unavailable=("i0", "i3", "i6", "i9"),
        diversity=0.3,
        max_per_feature=(("brand=", 2),),
        exploration=0.2,
    ),
]


def test_server_cli_and_device_agree_on_top_10_for_50_users(
    server: RunningServer, shop_model: Path, tmp_path: Path
) -> None:
    users = USERS[:50]
    devices = {}
    (tmp_path / "users.txt").write_text("".join(f"{u}\n" for u in users))
    report: dict[str, dict[str, int]] = {}
    with Client(_target(server)) as client:
        for options in OPTIONS:
            everything = [f"i{n}" for n in range(150)]
            client.set_availability(everything, True)
            if options.unavailable:
                client.set_availability(options.unavailable, False)
            remote = {u: client.recommend(u, **options.client_kwargs(u)) for u in users}
            out = tmp_path / f"{options.name}.jsonl"
            code = cli_main(
                [
                    "recommend",
                    "--model",
                    str(shop_model),
                    "--users",
                    str(tmp_path / "users.txt"),
                    "--k",
                    "10",
                    "--out",
                    str(out),
                    "--quiet",
                    *options.cli_args(tmp_path / f"{options.name}-unavailable.txt"),
                ]
            )
            assert code == 0
            offline = {
                row["user_id"]: [(i["item_id"], i["score"]) for i in row["items"]]
                for row in map(json.loads, out.read_text().splitlines())
            }
            exact = 0
            apart: list[Any] = []
            for user in users:
                server_list = [(i.item_id, i.score) for i in remote[user].items]
                assert [i for i, _ in offline[user]] == [i for i, _ in server_list], (
                    options.name,
                    user,
                )
                assert np.allclose(
                    [s for _, s in offline[user]], [s for _, s in server_list], atol=1e-4
                )
                if user not in devices:
                    devices[user] = EdgeRecommender(
                        tmp_path / "devices" / user, user, _target(server), timeout=5.0
                    )
                phone = devices[user]
                assert not phone.sync().offline
                local = phone.recommend(user, **options.client_kwargs(user))
                device_list = [(i.item_id, i.score) for i in local.items]
                if [i for i, _ in device_list] == [i for i, _ in server_list]:
                    exact += 1
                else:
                    apart.append((options.name, user, server_list, device_list))
                assert (
                    np.allclose([s for _, s in device_list], [s for _, s in server_list], atol=1e-4)
                    or apart
                )
                unavailable = set(options.unavailable)
                for ranked in (server_list, offline[user], device_list):
                    assert not unavailable & {i for i, _ in ranked}
                    assert len(ranked) == 10
            report[options.name] = {"identical": exact, "different": len(apart)}
    for phone in devices.values():
        phone.close()
    print(json.dumps(report))  # the figures of the closing note
    assert all(counts["identical"] == len(users) for counts in report.values()), report


def test_unavailable_items_never_come_back_from_any_path(server: RunningServer) -> None:
    with Client(_target(server)) as client:
        client.set_availability([f"i{n}" for n in range(150)], True)
        before = client.recommend("u0", k=5, exclude_seen=False).item_ids
        result = client.set_availability([*before, "no-such-item"], False)
        assert result.changed == 5
        assert result.unknown_item_ids == ("no-such-item",)
        after = client.recommend("u0", k=50, exclude_seen=False).item_ids
        assert not set(before) & set(after)
        similar = client.similar_items(before[0] if before else "i1", k=50).item_ids
        assert not set(before) & set(similar)
        ranked = client.rank("u0", [*before, "i1"])
        assert ranked.items[0].item_id == "i1"
        assert all(math.isinf(i.score) and i.score < 0 for i in ranked.items[1:])
        again = client.set_availability(before, True)
        assert again.changed == 5
        assert set(before) <= set(client.recommend("u0", k=50, exclude_seen=False).item_ids)


def test_explanations_sum_to_the_score_and_name_the_history(server: RunningServer) -> None:
    with Client(_target(server)) as client:
        client.set_availability([f"i{n}" for n in range(150)], True)
        client.track([Event("fresh", "i3", "view"), Event("fresh", "i6", "purchase")])
        for user in ("u0", "u1", "fresh", "nobody-at-all"):
            for response in (
                client.recommend(user, k=10, explain=True),
                client.rank(user, ["i1", "i2", "i4", "i140"], explain=True),
            ):
                for item in response.items:
                    assert item.explanation is not None
                    assert abs(item.explanation.total - item.score) <= 1e-4
        fresh = client.recommend("fresh", k=10, explain=True)
        assert any(item.explanation.because_item_ids for item in fresh.items)  # type: ignore[union-attr]
        for item in fresh.items:
            assert set(item.explanation.because_item_ids) <= {"i3", "i6"}  # type: ignore[union-attr]
        anonymous = client.recommend("nobody-at-all", k=3, explain=True)
        assert {i.explanation.reason for i in anonymous.items} == {Reason.POPULAR}  # type: ignore[union-attr]
        similar = client.similar_items("i1", k=3, explain=True)
        assert all(i.explanation.reason is Reason.SIMILAR_ITEM for i in similar.items)  # type: ignore[union-attr]
        plain = client.recommend("u0", k=10)
        assert all(i.explanation is None for i in plain.items)


def test_exploration_is_placed_by_the_recommendation_id(server: RunningServer) -> None:
    with Client(_target(server)) as client:
        client.set_availability([f"i{n}" for n in range(150)], True)
        lists = {
            rid: client.recommend("u0", k=10, exploration=0.3, recommendation_id=rid, explain=True)
            for rid in ("a", "b", "a")
        }
        first = client.recommend("u0", k=10, exploration=0.3, recommendation_id="a")
        assert first.item_ids == lists["a"].item_ids
        assert first.recommendation_id == "a"
        explored = [
            i.item_id
            for i in lists["a"].items
            if i.explanation is not None and i.explanation.reason is Reason.EXPLORATION
        ]
        assert 2 <= len(explored) <= 4  # 0.3 * 10 = 3 in expectation: 3 exactly
        assert all(int(item[1:]) >= 120 for item in explored)  # never interacted with


def test_steering_options_are_checked_naming_the_field(server: RunningServer) -> None:
    with grpc.insecure_channel(_target(server)) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        cases = [
            (pb.RecommendRequest(user_id="u0", k=5, diversity=1.5), "diversity"),
            (pb.RecommendRequest(user_id="u0", k=5, exploration=-0.1), "exploration"),
            (
                pb.RecommendRequest(user_id="u0", k=5, max_per_feature={"brand": 2}),
                "max_per_feature",
            ),
            (
                pb.RecommendRequest(user_id="u0", k=5, max_per_feature={"brand=": 0}),
                "max_per_feature",
            ),
            (pb.RecommendRequest(user_id="u0", k=5, exclude_within_ms=-1), "exclude_within_ms"),
            (
                pb.RecommendRequest(user_id="u0", k=5, exclude_event_types=[9]),
                "exclude_event_types",
            ),
        ]
        for request, field in cases:
            with pytest.raises(grpc.RpcError) as raised:
                stub.Recommend(request)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field in (raised.value.details() or ""), (field, raised.value.details())
        with pytest.raises(grpc.RpcError) as raised:
            stub.SetAvailability(pb.SetAvailabilityRequest(item_ids=[]))
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_recently_viewed_items_can_be_excluded(server: RunningServer) -> None:
    with Client(_target(server)) as client:
        client.set_availability([f"i{n}" for n in range(150)], True)
        top = client.recommend("u7", k=2, exclude_seen=False).item_ids
        client.track([Event("u7", item, "view") for item in top])
        assert set(top) <= set(client.recommend("u7", k=10, exclude_seen=False).item_ids)
        without = client.recommend(
            "u7", k=10, exclude_seen=False, exclude_event_types=["view"], exclude_within_ms=60_000
        )
        assert not set(top) & set(without.item_ids)


# -- the pipeline's properties, on random tables -------------------------------------------------


def _table(n: int, seed: int) -> tuple[FeatureIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocabulary = IdMap([f"brand=b{b}" for b in range(4)] + [f"colour=c{c}" for c in range(3)])
    tokens = [[int(rng.integers(4)), 4 + int(rng.integers(3))] for _ in range(n)]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(t) for t in tokens], out=indptr[1:])
    index = FeatureIndex(vocabulary, indptr, np.array([c for t in tokens for c in t], np.int64), n)
    return index, rng.normal(size=(n, 4)).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 12),
    diversity=st.sampled_from([0.0, 0.2, 0.7, 1.0]),
    cap=st.sampled_from([0, 1, 2]),
    exploration=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    key=st.text(min_size=1, max_size=8),
    seed=st.integers(0, 1000),
)
def test_steering_keeps_its_promises(
    n: int, k: int, diversity: float, cap: int, exploration: float, key: str, seed: int
) -> None:
    features, vectors = _table(n, seed)
    rng = np.random.default_rng(seed + 1)
    scores = rng.normal(size=n).astype(np.float32)
    order = np.lexsort((np.arange(n), -scores))
    best = TopK(order.astype(np.int64), scores[order])
    new = np.flatnonzero(rng.random(n) < 0.3).astype(np.int64)
    steering = Steering(
        diversity=diversity,
        max_per_feature=(("brand=", cap),) if cap else (),
        exploration=exploration,
    )
    facts = ItemFacts(
        vectors=lambda rows: vectors[rows],
        features=features,
        exploration=lambda: new,
        scores=lambda rows: scores[rows],
    )
    ranked, explores = steer(best, k, steering, facts, key)
    again, _ = steer(best, k, steering, facts, key)
    rows = ranked.indices.tolist()
    assert rows == again.indices.tolist()  # one key, one list
    assert len(set(rows)) == len(rows) <= k
    assert np.allclose(ranked.scores, scores[ranked.indices])  # exact scores reported
    assert set(ranked.indices[explores].tolist()) <= set(new.tolist())
    assert int(explores.sum()) <= exploration_slots(k, exploration, key)
    if cap:
        brands = features.column_values("brand=")
        counts: dict[int, int] = {}
        for row in rows:
            for value in brands.get(row, ()):
                counts[value] = counts.get(value, 0) + 1
        assert max(counts.values(), default=0) <= cap
    elif not exploration:
        assert len(rows) == min(k, n)
    if not steering.active:
        assert rows == order[:k].tolist()  # nothing asked: the score order, exactly


def test_exploration_slots_average_the_share() -> None:
    slots = [exploration_slots(10, 0.15, f"key-{n}") for n in range(4000)]
    assert set(slots) == {1, 2}
    assert abs(np.mean(slots) - 1.5) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"diversity": 2.0}, "diversity"),
        ({"exploration": float("nan")}, "exploration"),
        ({"max_per_feature": (("brand", 2),)}, "max_per_feature"),
        ({"max_per_feature": (("brand=", 0),)}, "max_per_feature"),
        ({"exploration_max_age_ms": -1}, "exploration_max_age_ms"),
    ],
)
def test_steering_refuses_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        Steering(**kwargs)


def test_the_device_explains_its_own_scores_with_the_session(
    shop_model: Path, tmp_path: Path
) -> None:
    phone = EdgeRecommender(tmp_path / "phone", "u0", snapshot=shop_model)
    try:
        plain = phone.recommend(k=10, explain=True, exploration=0.2, recommendation_id="x")
        for item in plain.items:
            assert item.explanation is not None
            assert abs(item.explanation.total - item.score) <= 1e-4
        assert any(i.explanation.reason is Reason.EXPLORATION for i in plain.items)  # type: ignore[union-attr]
        for item_id in ("i1", "i4"):
            phone.track("view", item_id)
        reranked = phone.recommend(k=10, explain=True)
        for item in reranked.items:
            assert item.explanation is not None
            assert abs(item.explanation.total - item.score) <= 1e-4
            assert set(item.explanation.because_item_ids) <= {"i1", "i4"}
        assert any(i.explanation.because_item_ids for i in reranked.items)  # type: ignore[union-attr]
        ranked = phone.rank(item_ids=["i2", "i5", "nope"], explain=True)
        assert [abs(i.explanation.total - i.score) <= 1e-4 for i in ranked.items[:2]] == [True] * 2  # type: ignore[union-attr]
    finally:
        phone.close()
