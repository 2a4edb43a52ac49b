"""The dashboard's JSON API through a real server on loopback ports (gRPC and HTTP in one
process), called with httpx as a script would: bearer token, no cookies."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import pytest

from shelfrank.client import Client, Event, EventType
from shelfrank.server.app import RunningServer, ServerOptions, start
from shelfrank.server.cli import main
from shelfrank.server.dashboard.api import Api
from shelfrank.server.dashboard.auth import Access
from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.errors import HTTP_STATUS
from shelfrank.server.dashboard.openapi import document
from shelfrank.server.dashboard.sampler import ReplicaSampler
from shelfrank.server.grpc_servicer import STATUS_FOR
from shelfrank.server.storage import ReplicaSample
from tests.conftest import SERVER_CONFIG

TOKEN = "sesame-for-the-dashboard"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def serve(model_dir: Path, state: Path, **options: Any) -> RunningServer:
    return start(
        ServerOptions(
            state_dir=state,
            port=0,
            model_dir=model_dir,
            train_config=SERVER_CONFIG,
            token=TOKEN,
            http_port=0,
            **options,
        )
    )


@pytest.fixture(scope="module")
def server(
    toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = serve(toy_model_dir, tmp_path_factory.mktemp("dashboard") / "state")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{server.http_port}", headers=BEARER, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def grpc_client(server: RunningServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", token=TOKEN) as client:
        yield client


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def stored_impressions(server: RunningServer) -> int:
    feedback = server.service.feedback
    assert feedback is not None
    feedback.flush()
    return len(list(server.service.store.impressions_between(0, 2**62)))


def served_total(server: RunningServer) -> float:
    return sum(
        sample.value
        for metric in server.metrics.registry.collect()
        if metric.name == "shelfrank_served"
        for sample in metric.samples
        if sample.name == "shelfrank_served_total"
    )


def test_health_needs_no_token(server: RunningServer) -> None:
    response = httpx.get(f"http://127.0.0.1:{server.http_port}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_overview_shows_the_serving_model_counts_and_load_samples(
    server: RunningServer, http: httpx.Client, grpc_client: Client
) -> None:
    dashboard = server.dashboard
    assert dashboard is not None
    dashboard.sampler.stop()  # this test takes the samples itself: no interval in between
    dashboard.sampler.sample()  # the interval starts now
    for user in ("u1", "u2", "u3"):
        grpc_client.recommend(user, k=3)
    grpc_client.track([Event("u1", "shoe2", EventType.VIEW)])
    sample = dashboard.sampler.record()
    assert sample is not None
    assert sample.values["recommend_calls"] == 3
    assert sample.values["events_per_s"] > 0
    assert 0 < sample.values["recommend_p50_ms"] <= sample.values["recommend_p99_ms"]

    overview = http.get("/api/overview").json()
    state = server.service.state
    assert overview["model"]["version"] == state.model_version
    assert overview["model"]["trained"] is True
    assert overview["model"]["published_ms"] == state.trained_at_ms
    assert overview["model"]["age_s"] >= 0
    assert overview["trainer"]["role"] == "all"
    counts = overview["counts"]
    assert counts["items"] == len(state.model.item_ids) == 32
    assert counts["available_items"] <= counts["items"]
    assert counts["events"] == server.service.store.counts().events >= 1
    (replica,) = [r for r in overview["replicas"] if r["replica"] == overview["this_replica"]]
    last = replica["samples"][-1]
    assert last["time_ms"] == sample.time_ms
    assert last["recommend_calls"] == 3
    assert last["recommend_p99_ms"] == pytest.approx(sample.values["recommend_p99_ms"])


def test_a_user_look_shows_history_and_explained_recommendations_without_recording(
    server: RunningServer, http: httpx.Client, grpc_client: Client
) -> None:
    grpc_client.track(
        [
            Event("u4", "shoe5", EventType.VIEW, timestamp_ms=1_000),
            Event("u4", "shoe7", EventType.ADD_TO_CART, timestamp_ms=2_000),
        ]
    )
    impressions, served = stored_impressions(server), served_total(server)
    response = http.get("/api/users/u4", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u4"
    assert body["profile"] == []
    assert body["events"] == [  # newest first
        {"time_ms": 2_000, "type": "add_to_cart", "item_id": "shoe7", "query": ""},
        {"time_ms": 1_000, "type": "view", "item_id": "shoe5", "query": ""},
    ]
    recommendations = body["recommendations"]
    assert recommendations["model_version"] == server.service.state.model_version
    assert recommendations["strategy"] in {"trained", "fold-in"}
    assert len(recommendations["items"]) == 4
    for item in recommendations["items"]:
        explanation = item["explanation"]
        assert explanation["reason"]
        assert explanation["contributions"]
        total = sum(c["value"] for c in explanation["contributions"]) + explanation["rest"]
        assert total == pytest.approx(item["score"], abs=1e-4)
    # A look is no response: nothing recorded, nothing counted as served.
    assert (stored_impressions(server), served_total(server)) == (impressions, served)


def test_a_user_known_only_by_a_profile_is_found(http: httpx.Client, grpc_client: Client) -> None:
    from shelfrank.client import User

    grpc_client.upsert_users([User("newcomer", ["segment=runner"])])
    body = http.get("/api/users/newcomer").json()
    assert body["profile"] == ["segment=runner"]
    assert body["events"] == []


def test_unknown_users_and_bad_parameters_are_refused_as_over_grpc(http: httpx.Client) -> None:
    assert error_of(http.get("/api/users/nobody")) == (
        404,
        "NOT_FOUND",
        "user_id: unknown user 'nobody'",
    )
    assert error_of(http.get("/api/users/u0", params={"k": 0})) == (
        400,
        "INVALID_ARGUMENT",
        "k: must be between 1 and 1000, got 0",
    )
    assert error_of(http.get("/api/users/u0", params={"k": "ten"}))[:2] == (
        400,
        "INVALID_ARGUMENT",
    )
    status, code, message = error_of(http.get("/api/users/" + quote("a\x01b", safe="")))
    assert (status, code) == (400, "INVALID_ARGUMENT")
    assert message == "user_id: must not contain control characters"


def test_what_if_ranks_as_if_tracked_and_stores_nothing(
    server: RunningServer, http: httpx.Client
) -> None:
    before_look = http.get("/api/users/u0", params={"k": 5}).json()["recommendations"]
    top = before_look["items"][0]["item_id"]
    events, impressions = server.service.store.counts().events, stored_impressions(server)
    response = http.post(
        "/api/users/u0/what-if",
        json={
            "events": [{"item_id": top, "type": "purchase"}, {"item_id": "book1", "type": "view"}],
            "features": ["segment=reader"],
            "k": 5,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [i["item_id"] for i in body["before"]["items"]] == [
        i["item_id"] for i in before_look["items"]
    ]
    after = [i["item_id"] for i in body["after"]["items"]]
    assert top not in after  # bought: excluded, as a tracked purchase would be
    assert after != [i["item_id"] for i in body["before"]["items"]]
    assert all(i["explanation"] for i in body["after"]["items"])
    assert server.service.store.counts().events == events
    assert stored_impressions(server) == impressions


def test_a_what_if_leaves_no_vector_behind_for_the_next_real_event(
    server: RunningServer, http: httpx.Client, grpc_client: Client
) -> None:
    """A what-if's vector counts one fresh event more than the user's stored ones: were it
    cached, the user's next real event (one fresh event more too) would be served it."""
    user = "cache-check"
    grpc_client.track([Event(user, "shoe1", EventType.VIEW)])
    response = http.post(
        f"/api/users/{user}/what-if",
        json={"events": [{"item_id": "book3", "type": "purchase"}], "k": 8},
    )
    assert response.status_code == 200, response.text
    grpc_client.track([Event(user, "shoe2", EventType.VIEW)])
    served = grpc_client.recommend(user, k=8)
    service = server.service
    _, cached_vector = service.user_vector(user)
    with service._vectors_lock:
        service._vectors.clear()
    _, fresh_vector = service.user_vector(user)
    assert np.array_equal(cached_vector.vector, fresh_vector.vector)
    fresh = grpc_client.recommend(user, k=8)  # computed again: nothing cached any more
    assert [(i.item_id, i.score) for i in served.items] == [
        (i.item_id, i.score) for i in fresh.items
    ]
    # And it differs from what the what-if's vector ranks: the check can tell them apart.
    hypothetical = response.json()["after"]["items"]
    assert [i["item_id"] for i in hypothetical] != [i.item_id for i in served.items]


def test_what_if_of_more_than_a_batch_is_refused_before_reading_its_events(
    http: httpx.Client,
) -> None:
    from shelfrank.server.requests import MAX_BATCH

    too_many = ["not even an object"] * (MAX_BATCH + 1)
    response = http.post("/api/users/u0/what-if", json={"events": too_many})
    assert error_of(response) == (
        429,
        "RESOURCE_EXHAUSTED",
        f"events: at most {MAX_BATCH} per request, got {MAX_BATCH + 1}",
    )


def test_with_exploration_an_empty_what_if_changes_nothing_and_looks_are_stable(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    from shelfrank.core.ranking import Steering
    from shelfrank.server.requests import RecommendQuery

    running = serve(toy_model_dir, tmp_path / "state", steering=Steering(exploration=0.5))
    try:
        service = running.service
        # Exploration really depends on the key here: two keys, two lists.
        lists = {
            tuple(
                item
                for item, _ in service.recommend(
                    RecommendQuery(user_id="u1", k=8, recommendation_id=f"key-{n}"),
                    record=False,
                ).items
            )
            for n in range(8)
        }
        assert len(lists) > 1
        base = f"http://127.0.0.1:{running.http_port}"
        with httpx.Client(base_url=base, headers=BEARER, timeout=30) as http:
            compared = http.post("/api/users/u1/what-if", json={"k": 8}).json()
            assert compared["before"] == compared["after"]
            looks = [http.get("/api/users/u1", params={"k": 8}).json() for _ in range(2)]
        assert looks[0]["recommendations"] == looks[1]["recommendations"]  # a reload
        assert looks[0]["recommendations"] == compared["before"]
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"events": [{"item_id": "shoe1", "type": "stare"}]}, "events[0].type: unknown event"),
        ({"events": [{"item_id": "", "type": "view"}]}, "events[0].item_id: must not be empty"),
        ({"events": [{"item_id": 7, "type": "view"}]}, "events[0].item_id: must be a string"),
        ({"events": ["shoe1"]}, "events[0]: must be an object"),
        ({"features": ["no-equals"]}, "features[0]: 'no-equals' is not a 'column=value' token"),
        ({"k": 0}, "k: must be between 1 and 1000, got 0"),
        ({"k": True}, "k: must be an integer"),
    ],
)
def test_what_if_validates_as_track_and_recommend(
    http: httpx.Client, body: dict[str, Any], expected: str
) -> None:
    status, code, message = error_of(http.post("/api/users/u0/what-if", json=body))
    assert (status, code) == (400, "INVALID_ARGUMENT")
    assert message.startswith(expected)


def test_bodies_that_are_not_json_objects_are_refused(http: httpx.Client) -> None:
    response = http.post(
        "/api/users/u0/what-if", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert error_of(response) == (400, "INVALID_ARGUMENT", "body: not valid JSON")
    response = http.post("/api/items/shoe1/availability", json=[True])
    assert error_of(response) == (400, "INVALID_ARGUMENT", "body: must be a JSON object")
    response = http.post("/api/items/shoe1/availability", json={"available": "no"})
    assert error_of(response) == (400, "INVALID_ARGUMENT", "available: must be true or false")


@pytest.mark.parametrize("declared", [True, False])
def test_bodies_beyond_the_limit_are_refused_as_too_large(declared: bool) -> None:
    import asyncio

    from starlette.requests import Request

    from shelfrank.server.dashboard.inputs import read_body
    from shelfrank.server.requests import TooLargeError

    chunks = [b"x" * 600, b"x" * 600]
    headers = [(b"content-length", b"1200")] if declared else []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
    with pytest.raises(TooLargeError, match="body: at most 1000 bytes"):
        asyncio.run(read_body(request, 1000))


def test_an_item_look_shows_features_similar_items_and_what_was_shown_and_clicked(
    server: RunningServer, http: httpx.Client, grpc_client: Client
) -> None:
    response = grpc_client.recommend("u5", k=4)
    shown = response.items[0].item_id
    path = "/api/items/" + quote(shown, safe="")
    stored_impressions(server)  # flushed: counted by the store
    before = http.get(path).json()
    again = grpc_client.recommend("u5-other", k=32)  # every item: this one too
    assert shown in [i.item_id for i in again.items]
    grpc_client.track(
        [
            Event("u5", shown, EventType.VIEW, recommendation_id=response.recommendation_id),
            Event("u5", shown, EventType.VIEW),  # no id: no click on a response counted
        ]
    )
    impressions, served = stored_impressions(server), served_total(server)
    body = http.get(path).json()
    assert body["item_id"] == shown
    assert body["features"] in (["category=shoes"], ["category=books"])
    assert body["available"] is True
    assert body["window_days"] == 7
    # Shown: one more response held it; clicked: one view carried the id of one that did.
    assert (body["shown"], body["clicked"]) == (before["shown"] + 1, before["clicked"] + 1)
    assert body["shown"] >= 2
    similar = body["similar"]
    assert similar["strategy"] == "item"
    assert shown not in [i["item_id"] for i in similar["items"]]
    assert all(i["explanation"]["reason"] == "similar_item" for i in similar["items"])
    assert (stored_impressions(server), served_total(server)) == (impressions, served)
    from shelfrank.client import Item

    grpc_client.upsert_items([Item("never-shown", ["category=books"])])
    never = http.get("/api/items/never-shown").json()
    assert (never["shown"], never["clicked"]) == (0, 0)


def test_unknown_items_are_404(http: httpx.Client) -> None:
    assert error_of(http.get("/api/items/no-such-item")) == (
        404,
        "NOT_FOUND",
        "item_id: unknown item 'no-such-item'",
    )
    response = http.post("/api/items/no-such-item/availability", json={"available": False})
    assert error_of(response)[:2] == (404, "NOT_FOUND")


def test_availability_is_audited_and_taken_off_the_next_grpc_recommend(
    server: RunningServer, http: httpx.Client, grpc_client: Client
) -> None:
    first = grpc_client.recommend("u6", k=5).items[0].item_id
    path = "/api/items/" + quote(first, safe="")
    audited = len(http.get(path).json()["audit"])
    response = http.post(path + "/availability", json={"available": False})
    assert response.status_code == 200, response.text
    assert response.json() == {"changed": True, "available": False}
    assert first not in [i.item_id for i in grpc_client.recommend("u6", k=5).items]
    again = http.post(path + "/availability", json={"available": False}).json()
    assert again == {"changed": False, "available": False}
    body = http.get(path).json()
    assert body["available"] is False
    assert len(body["audit"]) == audited + 1  # the no-op wrote no entry
    assert body["audit"][0]["actor"] == "default"  # the caller the token names
    assert body["audit"][0]["action"] == "availability"
    assert body["audit"][0]["detail"] == "available=false"
    http.post(path + "/availability", json={"available": True})
    assert http.get(path).json()["audit"][0]["detail"] == "available=true"


def test_grpc_set_availability_is_audited_with_its_caller(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    running = serve(toy_model_dir, tmp_path / "state", callers={"merchandiser": "m-token"})
    try:
        base = f"http://127.0.0.1:{running.http_port}"
        with (
            Client(f"127.0.0.1:{running.port}", token="m-token") as client,
            httpx.Client(base_url=base, headers=BEARER, timeout=30) as http,
        ):
            result = client.set_availability(["shoe3", "shoe4", "nothing-such"], False)
            assert (result.changed, list(result.unknown_item_ids)) == (2, ["nothing-such"])
            for item in ("shoe3", "shoe4"):
                (entry,) = http.get(f"/api/items/{item}").json()["audit"]
                assert entry["actor"] == "merchandiser"  # the caller its token names
                assert (entry["action"], entry["detail"]) == ("availability", "available=false")
            # shoe3 is unavailable already: only shoe5 changes, and only it is audited.
            assert client.set_availability(["shoe3", "shoe5"], False).changed == 1
            assert len(http.get("/api/items/shoe3").json()["audit"]) == 1
            assert len(http.get("/api/items/shoe5").json()["audit"]) == 1
            assert client.set_availability(["shoe3"], False).changed == 0
            assert len(http.get("/api/items/shoe3").json()["audit"]) == 1
            client.set_availability(["shoe3"], True)
            latest = http.get("/api/items/shoe3").json()["audit"]
            assert [e["detail"] for e in latest] == ["available=true", "available=false"]
    finally:
        running.stop()


def test_without_tokens_grpc_changes_are_audited_as_anonymous(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
        )
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            client.set_availability(["book2"], False)
        (entry,) = running.service.store.audit_entries("item:book2")
        assert (entry.actor, entry.detail) == ("anonymous", "available=false")
    finally:
        running.stop()


def test_experiments_serve_the_feedback_report(http: httpx.Client) -> None:
    body = http.get("/api/experiments").json()
    assert body["experiments"] == []
    assert {"traffic", "unattributed", "window_ms", "generated_ms"} <= body.keys()


def test_stored_evaluations_and_their_files(server: RunningServer, http: httpx.Client) -> None:
    report = {"protocol": "holdout", "ndcg": float("nan"), "recall": 0.25}
    server.service.store.save_evaluation(
        "20260101T000000Z-holdout",
        [("report.json", json.dumps(report).encode()), ("recall.png", PNG)],
    )
    listed = http.get("/api/evaluations").json()["evaluations"]
    (entry,) = [e for e in listed if e["name"] == "20260101T000000Z-holdout"]
    assert sorted(entry["files"]) == ["recall.png", "report.json"]
    one = http.get("/api/evaluations/20260101T000000Z-holdout").json()
    assert one["report"] == {"protocol": "holdout", "ndcg": None, "recall": 0.25}
    assert one["saved_ms"] == entry["saved_ms"]
    png = http.get("/api/evaluations/20260101T000000Z-holdout/files/recall.png")
    assert (png.status_code, png.headers["content-type"], png.content) == (200, "image/png", PNG)
    stored = http.get("/api/evaluations/20260101T000000Z-holdout/files/report.json")
    assert stored.headers["content-type"] == "application/json"
    assert json.loads(stored.content)["recall"] == 0.25
    assert error_of(http.get("/api/evaluations/nope"))[:2] == (404, "NOT_FOUND")
    missing = http.get("/api/evaluations/20260101T000000Z-holdout/files/nope.png")
    assert error_of(missing)[:2] == (404, "NOT_FOUND")


def test_unknown_api_paths_are_json_404_and_other_methods_405(http: httpx.Client) -> None:
    assert error_of(http.get("/api/nothing-here"))[:2] == (404, "NOT_FOUND")
    for response in (http.post("/api/overview"), http.delete("/api/items/shoe1")):
        assert error_of(response)[:2] == (405, "METHOD_NOT_ALLOWED")
        assert "GET" in response.headers["allow"]


def test_the_openapi_document_describes_every_api_route(
    server: RunningServer, http: httpx.Client
) -> None:
    served = http.get("/api/openapi.json").json()
    assert served["openapi"].startswith("3.1")
    assert served == json.loads(json.dumps(document()))
    context = DashboardContext(service=server.service, access=Access({}), replica="r", role="all")
    routes = {
        (route.path.replace(":path}", "}"), method.lower())
        for route in Api(context).routes()
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, item in served["paths"].items() for method in item}
    assert routes == described
    for item in served["paths"].values():
        for operation in item.values():
            assert "200" in operation["responses"]


def test_one_http_status_per_grpc_code_and_one_of_http_only() -> None:
    grpc_codes = {code.name for code in grpc.StatusCode} - {"OK"}
    assert set(HTTP_STATUS) == grpc_codes | {"METHOD_NOT_ALLOWED"}
    assert {code.name for _, code in STATUS_FOR} <= set(HTTP_STATUS)
    assert HTTP_STATUS["RESOURCE_EXHAUSTED"] == 429
    assert HTTP_STATUS["FAILED_PRECONDITION"] == 400
    assert HTTP_STATUS["METHOD_NOT_ALLOWED"] == 405
    assert HTTP_STATUS["NOT_FOUND"] == 404


def test_the_sampler_computes_exact_quantiles_of_the_interval() -> None:
    class Store:
        def __init__(self) -> None:
            self.samples: list[ReplicaSample] = []

        def record_replica_sample(self, sample: ReplicaSample) -> None:
            self.samples.append(sample)

    totals = [(10.0, 100.0)]
    ring: deque[float] = deque(maxlen=1000)
    ring.extend([9.0, 9.0])  # before the start: no interval's
    sampler = ReplicaSampler(
        Store(),  # type: ignore[arg-type]
        "here",
        latencies=ring,
        totals=lambda: totals[-1],
    )
    sampler.start()
    try:
        latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
        ring.extend(latencies)
        totals.append((30.0, 200.0))
        sample = sampler.sample()
        assert sample.replica == "here"
        assert sample.values["recommend_calls"] == 100
        assert sample.values["events_per_s"] > 0
        # Worked by hand (linear interpolation between the closest ranks): the median of
        # 1..100 ms lies halfway between the 50th and 51st, the 99th percentile at 99.01
        # (rank 1 + 0.99 * 99 = 99.01, between 99 and 100 ms).
        assert sample.values["recommend_p50_ms"] == pytest.approx(50.5)
        assert sample.values["recommend_p99_ms"] == pytest.approx(99.01)
        assert len(ring) == 0
        quiet = sampler.sample()  # nothing called since: no latency figures
        assert "recommend_p50_ms" not in quiet.values
        assert quiet.values["recommend_calls"] == 0
    finally:
        sampler.stop()


def dashboard_threads() -> set[threading.Thread]:
    names = {"shelfrank-dashboard-sampler", "shelfrank-dashboard-http"}
    return {thread for thread in threading.enumerate() if thread.name in names}


def test_the_dashboard_is_off_by_default(toy_model_dir: Path, tmp_path: Path) -> None:
    before = dashboard_threads()  # other tests' servers may run
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
        )
    )
    try:
        assert running.http_port is None
        assert running.dashboard is None
        assert running.metrics.recommend_latencies is None  # nothing kept per call
        assert dashboard_threads() == before
    finally:
        running.stop()


def test_stop_ends_the_dashboard(toy_model_dir: Path, tmp_path: Path) -> None:
    before = dashboard_threads()
    running = serve(toy_model_dir, tmp_path / "state")
    port = running.http_port
    assert port is not None
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    started = dashboard_threads() - before
    assert {thread.name for thread in started} == {
        "shelfrank-dashboard-sampler",
        "shelfrank-dashboard-http",
    }
    running.stop()
    assert not any(thread.is_alive() for thread in started)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_a_dashboard_port_in_use_fails_the_start(toy_model_dir: Path, tmp_path: Path) -> None:
    from shelfrank.server.app import BindError

    running = serve(toy_model_dir, tmp_path / "first")
    try:
        with pytest.raises(BindError, match="dashboard"):
            start(
                ServerOptions(
                    state_dir=tmp_path / "second",
                    port=0,
                    model_dir=toy_model_dir,
                    train_config=SERVER_CONFIG,
                    http_port=running.http_port,
                )
            )
    finally:
        running.stop()


def test_serve_takes_the_http_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from shelfrank.server import app

    started: list[ServerOptions] = []
    monkeypatch.setattr(app, "run", started.append)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["serve", "--state", str(tmp_path)]) == 0
        assert main(["serve", "--state", str(tmp_path), "--http-port", "8080"]) == 0
        assert main(["serve", "--state", str(tmp_path), "--http-port", "0"]) == 0
        named = ["--http-allowed-host", "shop.example", "--http-allowed-host", "*.shop.example"]
        assert main(["serve", "--state", str(tmp_path), "--http-port", "0", *named]) == 0
        # Workers share one gRPC port; a dashboard port cannot be shared so.
        with_workers = ["--workers", "2", "--http-port", "0"]
        assert main(["serve", "--state", str(tmp_path), *with_workers]) != 0
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    assert [options.http_port for options in started] == [None, 8080, 0, 0]
    assert [options.http_allowed_hosts for options in started] == [
        (),
        (),
        (),
        ("shop.example", "*.shop.example"),
    ]
