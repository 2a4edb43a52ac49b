"""The server end to end over real gRPC on a loopback port, using only the generated
stubs (what a client in any language has)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.app import RunningServer, ServerOptions, start
from tests.conftest import SERVER_CONFIG

Shop = tuple[Interactions, FeatureTable, FeatureTable]
CONFIG = SERVER_CONFIG


@pytest.fixture(scope="module")
def model_dir(toy_model_dir: Path) -> Path:
    return toy_model_dir


@dataclass
class Live:
    running: RunningServer
    channel: grpc.Channel
    stub: pb_grpc.RecommenderStub
    state_dir: Path


def _start(state_dir: Path, model_dir: Path | None, **options: object) -> Live:
    running = start(
        ServerOptions(
            state_dir=state_dir,
            port=0,
            model_dir=model_dir,
            train_config=CONFIG,
            grace_seconds=2.0,
            **options,
        )
    )  # type: ignore[arg-type]
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    return Live(running, channel, pb_grpc.RecommenderStub(channel), state_dir)


@pytest.fixture
def live(model_dir: Path, tmp_path: Path) -> Iterator[Live]:
    server = _start(tmp_path / "state", model_dir)
    yield server
    server.channel.close()
    server.running.stop()


def shop_history(interactions: Interactions, prefix: str) -> list[pb.Event]:
    """The toy shop's events as Track messages (ids ``<prefix><n>``)."""
    rows = zip(interactions.user_ids, interactions.item_ids, interactions.event_types, strict=True)
    return [event(f"{prefix}{n}", u, i, int(t)) for n, (u, i, t) in enumerate(rows)]


def ids(response: pb.RecommendResponse) -> list[str]:
    return [item.item_id for item in response.items]


def event(event_id: str, user: str, item: str, kind: int = pb.VIEW, **fields: object) -> pb.Event:
    return pb.Event(event_id=event_id, user_id=user, item_id=item, type=kind, **fields)  # type: ignore[arg-type]


def test_recommend_for_known_new_and_profiled_users(live: Live) -> None:
    known = live.stub.Recommend(pb.RecommendRequest(user_id="u0", k=5))
    assert len(known.items) == 5
    assert known.strategy == pb.TRAINED
    assert known.model_version == live.running.service.state.model_version
    assert known.recommendation_id
    stranger = live.stub.Recommend(pb.RecommendRequest(user_id="nobody", k=3))
    assert stranger.strategy == pb.POPULARITY
    runner = live.stub.Recommend(
        pb.RecommendRequest(user_id="new", k=5, user_features=["segment=runner"])
    )
    assert runner.strategy == pb.FEATURES
    assert sum(i.startswith("shoe") for i in ids(runner)) >= 4


def test_read_your_writes_for_a_new_user_and_exclusions(live: Live) -> None:
    response = live.stub.Track(
        pb.TrackRequest(events=[event(f"r{i}", "fresh", f"book{i}") for i in (1, 2, 4)])
    )
    assert (response.accepted, response.duplicates, len(response.errors)) == (3, 0, 0)
    after = live.stub.Recommend(pb.RecommendRequest(user_id="fresh", k=5))
    assert after.strategy == pb.FOLD_IN
    assert all(i.startswith("book") for i in ids(after))
    top = ids(after)[0]
    live.stub.Track(
        pb.TrackRequest(
            events=[
                event("buy", "fresh", top, pb.PURCHASE),
                event("no", "fresh", ids(after)[1], pb.DISMISS),
            ]
        )
    )
    again = ids(live.stub.Recommend(pb.RecommendRequest(user_id="fresh", k=10)))
    assert top not in again
    assert ids(after)[1] not in again
    with_seen = ids(
        live.stub.Recommend(pb.RecommendRequest(user_id="fresh", k=30, exclude_seen=False))
    )
    assert top in with_seen


def test_known_user_vector_reflects_new_events(live: Live) -> None:
    before = live.stub.Recommend(pb.RecommendRequest(user_id="u1", k=5))  # a shoe buyer
    assert sum(i.startswith("shoe") for i in ids(before)) >= 4
    events = [
        event(f"b{i}-{n}", "u1", f"book{i}", pb.PURCHASE) for n in range(3) for i in range(12)
    ]
    live.stub.Track(pb.TrackRequest(events=events))
    after = live.stub.Recommend(pb.RecommendRequest(user_id="u1", k=5))
    assert after.strategy == pb.TRAINED
    assert sum(i.startswith("book") for i in ids(after)) >= 3


def test_replayed_batch_is_stored_once(live: Live) -> None:
    batch = pb.TrackRequest(events=[event(f"e{i}", "u3", "shoe1") for i in range(5)])
    results = [live.stub.Track(batch) for _ in range(3)]
    assert [(r.accepted, r.duplicates) for r in results] == [(5, 0), (0, 5), (0, 5)]
    assert live.stub.GetModelInfo(pb.GetModelInfoRequest()).stored_events == 5


def test_invalid_events_are_reported_per_index_and_valid_ones_stored(live: Live) -> None:
    response = live.stub.Track(
        pb.TrackRequest(
            events=[
                event("ok1", "u5", "shoe1"),
                event("", "u5", "shoe1"),
                event("bad-type", "u5", "shoe1", 42),
                event("future", "u5", "shoe1", timestamp_ms=10**15),
                event("no-item", "u5", ""),
                event("ok2", "u5", "brand-new-item"),
            ]
        )
    )
    assert response.accepted == 2
    errors = {e.index: e.message for e in response.errors}
    assert set(errors) == {1, 2, 3, 4}
    assert "event_id" in errors[1]
    assert "type" in errors[2]
    assert "timestamp_ms" in errors[3]
    assert "item_id" in errors[4]


def test_upserted_item_is_recommendable_at_once(live: Live) -> None:
    live.stub.UpsertItems(
        pb.UpsertItemsRequest(
            items=[pb.Item(item_id="shoe-new", features=["category=shoes", "brand=fresh"])]
        )
    )
    only_new_brand = live.stub.Recommend(
        pb.RecommendRequest(user_id="u0", k=5, filters=[pb.FeatureFilter(any_of=["brand=fresh"])])
    )
    assert ids(only_new_brand) == ["shoe-new"]
    shoes = ids(
        live.stub.Recommend(
            pb.RecommendRequest(
                user_id="u0",
                k=40,
                filters=[pb.FeatureFilter(any_of=["category=shoes"])],
                exclude_seen=False,
            )
        )
    )
    assert "shoe-new" in shoes
    assert all(i.startswith("shoe") for i in shoes)
    no_shoes = ids(
        live.stub.Recommend(
            pb.RecommendRequest(user_id="u0", k=40, exclude_features=["category=shoes"])
        )
    )
    assert not any(i.startswith("shoe") for i in no_shoes)


def test_similar_items_and_rank(live: Live) -> None:
    similar = live.stub.SimilarItems(pb.SimilarItemsRequest(item_id="book3", k=5))
    assert "book3" not in ids(similar)
    assert sum(i.startswith("book") for i in ids(similar)) >= 4
    with pytest.raises(grpc.RpcError) as info:
        live.stub.SimilarItems(pb.SimilarItemsRequest(item_id="nope", k=5))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "item_id" in info.value.details()
    ranked = live.stub.Rank(
        pb.RankRequest(user_id="u0", item_ids=["book1", "ghost", "shoe3", "shoe4"])
    )
    order = ids(ranked)
    assert order[-1] == "ghost"
    assert sorted(order[:2]) == ["shoe3", "shoe4"]
    scores = [i.score for i in ranked.items[:3]]
    assert scores == sorted(scores, reverse=True)


def test_delete_user_erases_everything(live: Live) -> None:
    live.stub.Track(pb.TrackRequest(events=[event("d1", "u2", "book1", pb.PURCHASE)]))
    deleted = live.stub.DeleteUser(pb.DeleteUserRequest(user_id="u2"))
    assert deleted.existed
    assert deleted.events_deleted == 1
    after = live.stub.Recommend(pb.RecommendRequest(user_id="u2", k=3))
    assert after.strategy == pb.POPULARITY
    assert live.running.service.store.events_for_user("u2") == []


@pytest.mark.parametrize(
    ("call", "code", "field"),
    [
        (
            lambda s: s.Recommend(pb.RecommendRequest(user_id="u0", k=0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "k",
        ),
        (
            lambda s: s.Recommend(pb.RecommendRequest(user_id="u0", k=1001)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "k",
        ),
        (
            lambda s: s.Recommend(pb.RecommendRequest(user_id="", k=3)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_id",
        ),
        (
            lambda s: s.Recommend(pb.RecommendRequest(user_id="x" * 257, k=3)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_id",
        ),
        (
            lambda s: s.Recommend(
                pb.RecommendRequest(user_id="u", k=3, filters=[pb.FeatureFilter()])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "filters[0]",
        ),
        (
            lambda s: s.Rank(pb.RankRequest(user_id="u")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "item_ids",
        ),
        (lambda s: s.Track(pb.TrackRequest()), grpc.StatusCode.INVALID_ARGUMENT, "events"),
        (
            lambda s: s.Track(
                pb.TrackRequest(events=[event(f"x{i}", "u", "i") for i in range(10_001)])
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "events",
        ),
        (
            lambda s: s.UpsertItems(
                pb.UpsertItemsRequest(items=[pb.Item(item_id="a", features=["nocolumn"])])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "items[0].features[0]",
        ),
        (
            lambda s: s.DeleteUser(pb.DeleteUserRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_id",
        ),
    ],
)
def test_bad_input_gives_the_right_code_and_names_the_field(
    live: Live, call: object, code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(live.stub)  # type: ignore[operator]
    assert info.value.code() == code
    assert field in info.value.details()
    assert live.stub.GetModelInfo(pb.GetModelInfoRequest()).stored_events == 0


def test_health_and_reflection_answer(live: Live) -> None:
    health = health_pb2_grpc.HealthStub(live.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="shelfrank.v1.Recommender")).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    stub = reflection_pb2_grpc.ServerReflectionStub(live.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"shelfrank.v1.Recommender", "grpc.health.v1.Health"} <= names


def test_restart_keeps_events_dedup_and_model_version(model_dir: Path, tmp_path: Path) -> None:
    first = _start(tmp_path / "state", model_dir)
    version = first.stub.GetModelInfo(pb.GetModelInfoRequest()).model_version
    first.stub.Track(pb.TrackRequest(events=[event("keep", "fresh", "book2", pb.PURCHASE)]))
    first.channel.close()
    first.running.stop()
    second = _start(tmp_path / "state", None)
    try:
        info = second.stub.GetModelInfo(pb.GetModelInfoRequest())
        assert info.model_version == version
        assert info.stored_events == 1
        assert (
            second.stub.Track(
                pb.TrackRequest(events=[event("keep", "fresh", "book2", pb.PURCHASE)])
            ).duplicates
            == 1
        )
        assert "book2" not in ids(second.stub.Recommend(pb.RecommendRequest(user_id="fresh", k=20)))
    finally:
        second.channel.close()
        second.running.stop()


def test_retrain_swaps_in_a_new_version_without_losing_events(live: Live, toy_shop: Shop) -> None:
    # Retraining learns from the store: load the shop's history and catalogue into it.
    interactions, items, users = toy_shop
    history = shop_history(interactions, "h")
    assert live.stub.Track(pb.TrackRequest(events=history)).accepted == len(history)
    live.stub.UpsertItems(
        pb.UpsertItemsRequest(
            items=[pb.Item(item_id=i, features=list(t)) for i, t in items.as_dict().items()]
        )
    )
    live.stub.UpsertUsers(
        pb.UpsertUsersRequest(
            users=[pb.User(user_id=u, features=list(t)) for u, t in users.as_dict().items()]
        )
    )
    live.stub.Track(
        pb.TrackRequest(events=[event(f"t{i}", "later", f"book{i}", pb.PURCHASE) for i in range(6)])
    )
    old = live.stub.GetModelInfo(pb.GetModelInfoRequest())
    version = live.running.retrainer.retrain_now()
    assert version is not None
    info = live.stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_version == version != old.model_version
    after = live.stub.Recommend(pb.RecommendRequest(user_id="later", k=5))
    assert after.strategy == pb.TRAINED  # now inside the model
    assert all(i.startswith("book") for i in ids(after))
    assert not {f"book{i}" for i in range(6)} & set(ids(after))
    assert live.running.retrainer.last_kind == "incremental"
    assert live.running.retrainer.retrain_now() is None  # nothing new
    full = live.running.retrainer.retrain_now(full=True)
    assert live.running.retrainer.last_kind == "full"
    assert live.stub.GetModelInfo(pb.GetModelInfoRequest()).model_version == full
    assert all(
        i.startswith("book")
        for i in ids(live.stub.Recommend(pb.RecommendRequest(user_id="later", k=5)))
    )
    # after an erasure the next round is a full retrain, so no learned trace of the user stays
    live.stub.DeleteUser(pb.DeleteUserRequest(user_id="later"))
    live.stub.Track(pb.TrackRequest(events=[event("after-erase", "u0", "shoe2")]))
    live.running.retrainer.retrain_now()
    assert live.running.retrainer.last_kind == "full"
    assert "later" not in live.running.service.state.model.user_ids


def test_token_auth(model_dir: Path, tmp_path: Path) -> None:
    server = _start(tmp_path / "state", model_dir, token="s3cret")
    try:
        with pytest.raises(grpc.RpcError) as info:
            server.stub.GetModelInfo(pb.GetModelInfoRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            server.stub.GetModelInfo(
                pb.GetModelInfoRequest(), metadata=[("authorization", "Bearer nope")]
            )
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = server.stub.GetModelInfo(
            pb.GetModelInfoRequest(), metadata=[("authorization", "Bearer s3cret")]
        )
        assert ok.model_version
        health = health_pb2_grpc.HealthStub(server.channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        server.channel.close()
        server.running.stop()


def test_concurrent_reads_writes_and_swaps_never_fail(live: Live, toy_shop: Shop) -> None:
    interactions, _, _ = toy_shop
    history = shop_history(interactions, "c")
    live.stub.Track(pb.TrackRequest(events=history))
    failures: list[BaseException] = []
    versions: set[str] = set()
    stop = threading.Event()

    def reader(worker: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                user = f"conc{worker}"
                live.stub.Track(
                    pb.TrackRequest(events=[event(f"conc{worker}-{n}", user, f"book{n % 16}")])
                )
                response = live.stub.Recommend(pb.RecommendRequest(user_id=user, k=5))
                versions.add(response.model_version)
                assert len(response.items) == 5
            except BaseException as exc:  # collected and asserted on below
                failures.append(exc)
                return
            n += 1

    threads = [threading.Thread(target=reader, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    swapped = [live.running.retrainer.retrain_now(force=True) for _ in range(3)]
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert all(swapped)
    assert set(swapped) & versions  # requests were answered by the new versions too


def test_ingest_loads_history_once_and_retraining_learns_from_it(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    from shelfrank.server.cli import main

    (tmp_path / "history.csv").write_text(
        "user_id,item_id,event_type\n" + "".join(f"hist,book{i},purchase\n" for i in range(8))
    )
    (tmp_path / "items.csv").write_text("item_id,category\nbook1,books\n")
    for _ in range(2):  # idempotent
        assert (
            main(
                [
                    "ingest",
                    "--state",
                    str(tmp_path / "state"),
                    "--interactions",
                    str(tmp_path / "history.csv"),
                    "--items",
                    str(tmp_path / "items.csv"),
                    "--quiet",
                ]
            )
            == 0
        )
    server = _start(tmp_path / "state", toy_model_dir)
    try:
        assert server.stub.GetModelInfo(pb.GetModelInfoRequest()).stored_events == 8
        server.running.retrainer.retrain_now(full=True)
        assert "hist" in server.running.service.state.model.user_ids
    finally:
        server.channel.close()
        server.running.stop()


def test_erasure_and_catalogue_changes_survive_a_restart(model_dir: Path, tmp_path: Path) -> None:
    first = _start(tmp_path / "state", model_dir)
    first.stub.UpsertItems(
        pb.UpsertItemsRequest(
            items=[
                pb.Item(item_id="new-sku", features=["category=shoes"]),
                pb.Item(item_id="shoe1", features=["category=sale"]),
            ]
        )
    )
    assert first.stub.DeleteUser(pb.DeleteUserRequest(user_id="u1")).existed
    retry = first.stub.DeleteUser(pb.DeleteUserRequest(user_id="u1"))
    assert not retry.existed  # as the proto says: a retry reports existed=false
    first.channel.close()
    first.running.stop()
    second = _start(tmp_path / "state", model_dir)  # same --model again: not re-imported over state
    try:
        assert (
            second.stub.Recommend(pb.RecommendRequest(user_id="u1", k=3)).strategy == pb.POPULARITY
        )
        assert second.stub.GetModelInfo(pb.GetModelInfoRequest()).users == 19
        sale = second.stub.Recommend(
            pb.RecommendRequest(
                user_id="u0",
                k=5,
                filters=[pb.FeatureFilter(any_of=["category=sale"])],
                exclude_seen=False,
            )
        )
        assert ids(sale) == ["shoe1"]
        assert (
            len(second.stub.SimilarItems(pb.SimilarItemsRequest(item_id="new-sku", k=3)).items) == 3
        )
    finally:
        second.channel.close()
        second.running.stop()


def test_catalogue_changes_during_training_survive_the_swap(live: Live, toy_shop: Shop) -> None:
    from shelfrank.server import hybrid

    interactions, _, _ = toy_shop
    history = shop_history(interactions, "s")
    live.stub.Track(pb.TrackRequest(events=history))
    service = live.running.service
    real_train = hybrid.HybridModel.train

    def train_while_the_shop_edits(*args: object, **kwargs: object) -> hybrid.HybridModel:
        service.upsert_items([("shoe1", ("category=sale",))])  # an UpsertItems mid-training
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hybrid.HybridModel, "train", train_while_the_shop_edits)
        live.running.retrainer.retrain_now(full=True)
    assert service.state.item_tokens("shoe1") == ("category=sale",)


def test_storage_failures_are_unavailable_and_bugs_internal_without_details(live: Live) -> None:
    import sqlite3

    service = live.running.service

    def locked(group: object) -> object:
        raise sqlite3.OperationalError("database is locked: /secret/path/events.sqlite3")

    def bug(query: object) -> object:
        raise ZeroDivisionError("internal detail")

    with pytest.MonkeyPatch.context() as patch:
        # Inside the store: its public methods map SQLite's errors to StorageError, the
        # only storage error the gRPC layer knows.
        patch.setattr(service.store, "_append_group", locked)
        patch.setattr(service, "recommend", bug)
        with pytest.raises(grpc.RpcError) as unavailable:
            live.stub.Track(pb.TrackRequest(events=[event("x", "u", "i")]))
        with pytest.raises(grpc.RpcError) as internal:
            live.stub.Recommend(pb.RecommendRequest(user_id="u0", k=3))
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "/secret" not in unavailable.value.details()
    assert internal.value.code() == grpc.StatusCode.INTERNAL
    assert "internal detail" not in internal.value.details()


def test_control_characters_are_rejected(live: Live) -> None:
    with pytest.raises(grpc.RpcError) as info:
        live.stub.UpsertItems(
            pb.UpsertItemsRequest(items=[pb.Item(item_id="a", features=["c=b\x1fc"])])
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as many:
        live.stub.SimilarItems(
            pb.SimilarItemsRequest(
                item_id="shoe1", k=3, filters=[pb.FeatureFilter(any_of=["c=a"])] * 101
            )
        )
    assert many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_approximate_search_serves_the_same_top_items_with_exact_exclusions(
    model_dir: Path, tmp_path: Path
) -> None:
    from shelfrank.server.ann import AnnConfig, SearchPolicy

    exact = _start(tmp_path / "exact", model_dir, search=SearchPolicy(mode="exact"))
    approximate = _start(
        tmp_path / "ann", model_dir, search=SearchPolicy(mode="ann", ann=AnnConfig(build_threads=1))
    )
    try:
        assert approximate.running.service.state.model.items.approximate is not None
        users = list(exact.running.service.state.model.user_ids.ids)[:20]
        same = 0
        for user in users:
            request = pb.RecommendRequest(user_id=user, k=5, exclude_item_ids=["shoe1", "book1"])
            want = ids(exact.stub.Recommend(request, timeout=10))
            got = ids(approximate.stub.Recommend(request, timeout=10))
            assert len(got) == 5
            assert not {"shoe1", "book1"} & set(got)
            same += want == got
        assert same >= 18  # a toy catalogue: the graph search finds the exact answer
    finally:
        for server in (exact, approximate):
            server.channel.close()
            server.running.stop()


def test_a_corrupt_model_is_refused_before_it_is_imported(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from shelfrank.core.errors import ModelFileError
    from shelfrank.server.registry import ModelRegistry

    bad = tmp_path / "bad-model"
    shutil.copytree(model_dir, bad)
    victim = next(bad.glob("*.npz"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    from shelfrank.server.store import SQLiteStore

    store = SQLiteStore(tmp_path / "state" / "events.sqlite3")
    registry = ModelRegistry(store, tmp_path / "state")
    with pytest.raises(ModelFileError, match="sha256 does not match"):
        registry.import_once(bad)
    assert registry.current_version() is None
    assert not store.has_model(json.loads((bad / "manifest.json").read_text())["model_version"])
    store.close()


def test_an_erased_user_leaves_the_next_retrain_and_replays_do_not_resurrect(
    live: Live, toy_shop: tuple[Interactions, FeatureTable, FeatureTable]
) -> None:
    history = shop_history(toy_shop[0], "h")
    live.stub.Track(pb.TrackRequest(events=history), timeout=30)
    retrainer = live.running.retrainer
    retrainer.retrain_now(full=True)
    assert "u3" in live.running.service.state.model.user_ids
    mine = [e for e in history if e.user_id == "u3"]
    assert live.stub.DeleteUser(pb.DeleteUserRequest(user_id="u3")).events_deleted == len(mine)
    retrainer.retrain_now()  # an erasure since the last model forces a full retrain
    assert retrainer.last_kind == "full"
    assert "u3" not in live.running.service.state.model.user_ids
    replay = live.stub.Track(pb.TrackRequest(events=mine), timeout=30)
    assert (replay.accepted, replay.duplicates) == (0, len(mine))
    after = live.stub.Recommend(pb.RecommendRequest(user_id="u3", k=3))
    assert after.strategy == pb.POPULARITY
    assert live.running.service.store.events_for_user("u3") == []


def test_a_stalled_track_times_out_on_time_and_its_batch_is_stored_whole_or_not_at_all(
    live: Live,
) -> None:
    """A 2 s stall in the store against a 500 ms deadline: the client gets
    DEADLINE_EXCEEDED within 600 ms; the batch lands atomically later and a retry with the
    same ids stores nothing twice."""
    from shelfrank.client import Client, Event
    from shelfrank.client.errors import DeadlineExceededError

    store = live.running.service.store
    events = [Event(user_id=f"s{i % 3}", item_id="shoe1", type="view") for i in range(200)]
    held = threading.Event()

    def stall() -> None:
        with store._lock:  # the writer is busy (a long checkpoint, a slow disk)
            held.set()
            time.sleep(2.0)

    staller = threading.Thread(target=stall)
    staller.start()
    held.wait(5)
    with Client(f"127.0.0.1:{live.running.port}", max_attempts=1) as client:
        # The writer is held for 2 s: an error (not an answer) means the deadline held.
        with pytest.raises(DeadlineExceededError):
            client.track(events, timeout=0.5)
        staller.join()
        ids = {e.event_id for e in events}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stored = {e.event_id for _, e in store.iter_events()} & ids
            if stored:
                break
            time.sleep(0.05)
        assert stored in (set(), ids)  # never part of the batch
        retry = client.track(events, timeout=5)
        assert retry.accepted + retry.duplicates == len(events)
    stored = [e.event_id for _, e in store.iter_events() if e.event_id in ids]
    assert sorted(stored) == sorted(ids)


def test_a_new_model_that_cannot_load_is_never_served_nor_made_current(
    live: Live,
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shelfrank.core.errors import ModelFileError
    from shelfrank.server.hybrid import HybridModel

    registry = live.running.retrainer.registry
    store = live.running.service.store
    before = (live.running.service.state.model_version, registry.current_version())
    written: list[str] = []
    original_save = HybridModel.save

    def save_then_damage(self: HybridModel, folder: Path, **kwargs: object) -> object:
        manifest = original_save(self, folder, **kwargs)  # type: ignore[arg-type]
        victim = next(Path(folder).glob("*.npz"))
        victim.write_bytes(victim.read_bytes()[:100])  # a truncated write
        written.append(self.model_version)
        return manifest

    monkeypatch.setattr(HybridModel, "save", save_then_damage)
    live.stub.Track(pb.TrackRequest(events=shop_history(toy_shop[0], "bad")), timeout=30)
    with pytest.raises(ModelFileError):
        live.running.retrainer.retrain_now(full=True)
    assert written
    assert not store.has_model(written[0])
    assert (live.running.service.state.model_version, registry.current_version()) == before
    assert live.stub.Recommend(pb.RecommendRequest(user_id="u1", k=3)).items


def test_a_damaged_local_copy_is_fetched_again_from_the_store(live: Live) -> None:
    registry = live.running.retrainer.registry
    version = registry.current_version()
    assert version is not None
    victim = next((registry.root / version).glob("*.npz"))
    victim.write_bytes(victim.read_bytes()[:100])
    copy = registry.local_copy(version)
    assert (copy / victim.name).read_bytes() == dict(registry.store.model_files(version))[
        victim.name
    ]
    assert registry.load(version).model_version == version
