"""The blocking Client against a real gRPC server on loopback (see test_client_servicer)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from shelfrank.client import (
    Client,
    ClientClosedError,
    DeadlineExceededError,
    DeleteResult,
    Event,
    EventError,
    EventType,
    FailedPreconditionError,
    FeatureFilter,
    Impression,
    InvalidArgumentError,
    InvalidInputError,
    Item,
    ModelInfo,
    NotFoundError,
    Rate,
    Recommendations,
    ResourceExhaustedError,
    ScoredItem,
    ShelfrankError,
    ShownResult,
    Strategy,
    TrackResult,
    UnavailableError,
    UnimplementedError,
    User,
)
from shelfrank.client._convert import MAX_BATCH_BYTES
from shelfrank.proto._generated import recommender_pb2 as pb
from tests.test_client_servicer import RecordingServicer, serving


@pytest.fixture
def servicer() -> RecordingServicer:
    return RecordingServicer()


@pytest.fixture
def target(servicer: RecordingServicer) -> Iterator[str]:
    with serving(servicer) as address:
        yield address


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target) as opened:
        yield opened


# --- request/response translation, field by field ------------------------------------


def test_recommend_sends_every_field_and_returns_typed_results(
    client: Client, servicer: RecordingServicer
) -> None:
    result = client.recommend(
        "user-1",
        3,
        exclude_item_ids=["i1", "i2"],
        filters=[FeatureFilter(["category=shoes", "category=boots"]), FeatureFilter(("size=42",))],
        exclude_features=["brand=acme"],
        exclude_seen=False,
        user_features=["segment=runner"],
    )

    (sent,) = servicer.requests["Recommend"]
    assert sent.user_id == "user-1"
    assert sent.k == 3
    assert list(sent.exclude_item_ids) == ["i1", "i2"]
    assert [list(f.any_of) for f in sent.filters] == [
        ["category=shoes", "category=boots"],
        ["size=42"],
    ]
    assert list(sent.exclude_features) == ["brand=acme"]
    assert sent.HasField("exclude_seen")
    assert sent.exclude_seen is False
    assert list(sent.user_features) == ["segment=runner"]

    assert result == Recommendations(
        items=(
            ScoredItem("user-1-pick0", 1.0),
            ScoredItem("user-1-pick1", 0.875),
            ScoredItem("user-1-pick2", 0.75),
        ),
        model_version="model-7",
        recommendation_id="rec-1",
        strategy=Strategy.FOLD_IN,
    )
    assert result.item_ids == ("user-1-pick0", "user-1-pick1", "user-1-pick2")
    assert all(type(item.score) is float for item in result.items)


def test_recommend_defaults_send_k10_and_an_explicit_exclude_seen(
    client: Client, servicer: RecordingServicer
) -> None:
    client.recommend("user-1")

    (sent,) = servicer.requests["Recommend"]
    assert sent.k == 10
    assert sent.HasField("exclude_seen")
    assert sent.exclude_seen is True
    assert not sent.exclude_item_ids
    assert not sent.filters
    assert not sent.exclude_features
    assert not sent.user_features


@pytest.mark.parametrize(
    ("proto_strategy", "expected"),
    [
        (pb.TRAINED, Strategy.TRAINED),
        (pb.FOLD_IN, Strategy.FOLD_IN),
        (pb.FEATURES, Strategy.FEATURES),
        (pb.POPULARITY, Strategy.POPULARITY),
        (pb.ITEM, Strategy.ITEM),
        (pb.STRATEGY_UNSPECIFIED, Strategy.UNKNOWN),
        (99, Strategy.UNKNOWN),  # a strategy from a newer server must not break old clients
    ],
)
def test_strategy_translation(
    client: Client, servicer: RecordingServicer, proto_strategy: int, expected: Strategy
) -> None:
    servicer.strategy = proto_strategy
    assert client.recommend("user-1", 1).strategy is expected


def test_similar_items_sends_every_field(client: Client, servicer: RecordingServicer) -> None:
    result = client.similar_items(
        "item-9",
        2,
        filters=[FeatureFilter(["category=shoes"])],
        exclude_features=["brand=acme"],
        exclude_item_ids=["item-8"],
    )

    (sent,) = servicer.requests["SimilarItems"]
    assert sent.item_id == "item-9"
    assert sent.k == 2
    assert [list(f.any_of) for f in sent.filters] == [["category=shoes"]]
    assert list(sent.exclude_features) == ["brand=acme"]
    assert list(sent.exclude_item_ids) == ["item-8"]
    assert result.item_ids == ("like-item-9-0", "like-item-9-1")
    assert result.strategy is Strategy.ITEM
    assert result.recommendation_id == "sim-1"


def test_rank_sends_every_field_and_keeps_the_servers_order(
    client: Client, servicer: RecordingServicer
) -> None:
    result = client.rank("user-1", ["a", "b", "c"], user_features=["segment=reader"])

    (sent,) = servicer.requests["Rank"]
    assert sent.user_id == "user-1"
    assert list(sent.item_ids) == ["a", "b", "c"]
    assert list(sent.user_features) == ["segment=reader"]
    assert result.items == (ScoredItem("c", 3.0), ScoredItem("b", 2.0), ScoredItem("a", 1.0))
    assert result.strategy is Strategy.TRAINED


def test_track_sends_every_event_field(client: Client, servicer: RecordingServicer) -> None:
    event = Event(
        "user-1",
        "item-2",
        "search",
        event_id="evt-1",
        timestamp_ms=1_700_000_000_000,
        session_id="sess-3",
        query="red shoes",
    )

    result = client.track([event])

    (sent,) = servicer.requests["Track"]
    (proto,) = sent.events
    assert proto.event_id == "evt-1"
    assert proto.user_id == "user-1"
    assert proto.item_id == "item-2"
    assert proto.type == pb.SEARCH
    assert proto.timestamp_ms == 1_700_000_000_000
    assert proto.session_id == "sess-3"
    assert proto.query == "red shoes"
    assert result == TrackResult(accepted=1, duplicates=0, errors=())


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_reaches_the_server_as_the_same_proto_value(
    client: Client, servicer: RecordingServicer, event_type: EventType
) -> None:
    client.track([Event("u", "i", event_type)])
    assert servicer.requests["Track"][0].events[0].type == pb.EventType.Value(event_type.name)


def test_track_of_nothing_makes_no_rpc(client: Client, servicer: RecordingServicer) -> None:
    assert client.track([]) == TrackResult(0, 0, ())
    assert servicer.attempts["Track"] == 0


def test_track_batches_25000_events_into_3_rpcs_and_shifts_error_indices(
    client: Client, servicer: RecordingServicer
) -> None:
    bad_positions = {5, 10_007, 24_999}
    events = [
        Event("user", f"bad-{n}" if n in bad_positions else f"item-{n}") for n in range(25_000)
    ]

    result = client.track(iter(events))  # any iterable, even a one-shot iterator

    sizes = [len(request.events) for request in servicer.requests["Track"]]
    assert sizes == [10_000, 10_000, 5_000]
    sent_ids = [e.event_id for request in servicer.requests["Track"] for e in request.events]
    assert sent_ids == [event.event_id for event in events]  # order kept, nothing lost
    assert result.accepted == 25_000 - len(bad_positions)
    assert result.duplicates == 0
    assert result.errors == tuple(EventError(n, "item_id: bad") for n in sorted(bad_positions))


def test_track_splits_batches_by_size_too(client: Client, servicer: RecordingServicer) -> None:
    long_query = "q" * 2_000  # ~2 KB per event: 10,000 would be ~20 MB in one message
    events = [Event("user", f"item-{n}", "search", query=long_query) for n in range(4_000)]

    result = client.track(events)

    requests = servicer.requests["Track"]
    assert len(requests) > 1
    assert all(request.ByteSize() <= MAX_BATCH_BYTES for request in requests)
    assert sum(len(request.events) for request in requests) == 4_000
    assert result.accepted == 4_000


def test_event_ids_are_generated_unique_and_sent(
    client: Client, servicer: RecordingServicer
) -> None:
    events = [Event("user", "item") for _ in range(1_000)]

    client.track(events)

    sent_ids = [e.event_id for e in servicer.requests["Track"][0].events]
    assert sent_ids == [event.event_id for event in events]
    assert len(set(sent_ids)) == 1_000
    assert all(len(event_id) == 32 for event_id in sent_ids)


def test_resending_the_same_events_counts_duplicates(
    client: Client, servicer: RecordingServicer
) -> None:
    """Why ids are made at construction: retrying with the same objects is idempotent."""
    events = [Event("user", f"item-{n}") for n in range(3)]

    first = client.track(events)
    second = client.track(events)

    assert (first.accepted, first.duplicates) == (3, 0)
    assert (second.accepted, second.duplicates) == (0, 3)


def test_upsert_items_and_users_send_every_field(
    client: Client, servicer: RecordingServicer
) -> None:
    assert client.upsert_items([Item("i1", ["category=shoes", "brand=acme"]), Item("i2")]) == 2
    assert client.upsert_users([User("u1", ("segment=runner",))]) == 1

    (items_request,) = servicer.requests["UpsertItems"]
    assert [(i.item_id, list(i.features)) for i in items_request.items] == [
        ("i1", ["category=shoes", "brand=acme"]),
        ("i2", []),
    ]
    (users_request,) = servicer.requests["UpsertUsers"]
    assert [(u.user_id, list(u.features)) for u in users_request.users] == [
        ("u1", ["segment=runner"])
    ]


def test_upsert_items_batches_by_10000(client: Client, servicer: RecordingServicer) -> None:
    assert client.upsert_items(Item(f"i{n}") for n in range(25_000)) == 25_000
    assert [len(r.items) for r in servicer.requests["UpsertItems"]] == [10_000, 10_000, 5_000]


def test_delete_user_and_model_info(client: Client, servicer: RecordingServicer) -> None:
    assert client.delete_user("known-user") == DeleteResult(existed=True, events_deleted=12)
    assert client.delete_user("stranger") == DeleteResult(existed=False, events_deleted=0)
    assert [r.user_id for r in servicer.requests["DeleteUser"]] == ["known-user", "stranger"]

    assert client.model_info() == ModelInfo(
        model_version="model-7",
        trained_at_ms=1_700_000_000_123,
        users=3_000_000_000,
        items=42,
        stored_events=7,
    )
    assert servicer.attempts["GetModelInfo"] == 1


# --- metadata, retries, deadlines ------------------------------------------------------


def test_token_is_sent_as_bearer_metadata_on_every_call(
    target: str, servicer: RecordingServicer
) -> None:
    with Client(target, token="s3cret") as client:
        client.model_info()
        client.track([Event("u", "i")])
    for method in ("GetModelInfo", "Track"):
        assert servicer.metadata[method][0]["authorization"] == "Bearer s3cret"


def test_no_token_no_authorization_metadata(client: Client, servicer: RecordingServicer) -> None:
    client.model_info()
    assert "authorization" not in servicer.metadata["GetModelInfo"][0]


@pytest.mark.parametrize("failures", [1, 2, 3, 4])
def test_unavailable_is_retried_until_success(
    client: Client, servicer: RecordingServicer, failures: int
) -> None:
    servicer.fail("Recommend", grpc.StatusCode.UNAVAILABLE, "restarting", times=failures)

    assert client.recommend("user-1", 1).item_ids == ("user-1-pick0",)
    assert servicer.attempts["Recommend"] == failures + 1


def test_unavailable_gives_up_after_max_attempts(target: str, servicer: RecordingServicer) -> None:
    servicer.fail("GetModelInfo", grpc.StatusCode.UNAVAILABLE, "down", times=10)
    with Client(target, max_attempts=3) as client, pytest.raises(UnavailableError, match="down"):
        client.model_info()
    assert servicer.attempts["GetModelInfo"] == 3


def test_max_attempts_1_disables_retries(target: str, servicer: RecordingServicer) -> None:
    servicer.fail("GetModelInfo", grpc.StatusCode.UNAVAILABLE, "down")
    with Client(target, max_attempts=1) as client, pytest.raises(UnavailableError):
        client.model_info()
    assert servicer.attempts["GetModelInfo"] == 1


def test_a_full_track_batch_is_retried(client: Client, servicer: RecordingServicer) -> None:
    """gRPC skips retries for requests above its retry buffer (256 KiB by default)."""
    servicer.fail("Track", grpc.StatusCode.UNAVAILABLE, "restarting")
    events = [Event(f"user-{n}", f"item-{n}", session_id=f"session-{n}") for n in range(10_000)]

    result = client.track(events)

    assert servicer.requests["Track"][0].ByteSize() > 256 * 1024
    assert servicer.attempts["Track"] == 2
    assert result.accepted == 10_000


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    ],
)
def test_other_failures_are_tried_exactly_once(
    client: Client,
    servicer: RecordingServicer,
    code: grpc.StatusCode,
    error_class: type[Exception],
) -> None:
    servicer.fail("Track", code, "events: too many", times=5)
    with pytest.raises(error_class, match="events: too many"):
        client.track([Event("u", "i")])
    assert servicer.attempts["Track"] == 1


def test_a_stalled_call_fails_at_its_deadline(client: Client, servicer: RecordingServicer) -> None:
    servicer.stall("Recommend", 2.0)

    # The call stalls for 2 s: an error (not an answer) means the deadline held.
    with pytest.raises(DeadlineExceededError) as caught:
        client.recommend("user-1", timeout=0.5)

    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert caught.value.method == "Recommend"
    assert servicer.attempts["Recommend"] == 1  # a deadline is never retried


def test_the_clients_default_timeout_is_the_deadline(
    target: str, servicer: RecordingServicer
) -> None:
    servicer.stall("GetModelInfo", 2.0)  # an answer after 2 s, were there no deadline
    with Client(target, timeout=0.3) as client, pytest.raises(DeadlineExceededError):
        client.model_info()


def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        Client(f"127.0.0.1:{port}", max_attempts=2, timeout=3.0) as client,
        pytest.raises(UnavailableError) as caught,
    ):
        client.model_info()
    assert caught.value.method == "GetModelInfo"
    assert not isinstance(caught.value, grpc.RpcError)


# --- client-side validation: named field, no RPC ---------------------------------------

MANY_IDS = [f"i{n}" for n in range(10_001)]
SHOES = ["category=shoes"]

BAD_CALLS: list[tuple[str, Callable[[Client], Any], str]] = [
    ("empty user_id", lambda c: c.recommend(""), "user_id"),
    ("k zero", lambda c: c.recommend("u", 0), "k"),
    ("k too big", lambda c: c.recommend("u", 1001), "k"),
    ("k bool", lambda c: c.recommend("u", True), "k"),
    ("k float", lambda c: c.recommend("u", 2.0), "k"),
    ("long user_id", lambda c: c.recommend("é" * 129), "user_id"),
    ("exclude ids str", lambda c: c.recommend("u", exclude_item_ids="i1"), "exclude_item_ids"),
    ("empty excluded id", lambda c: c.recommend("u", 1, exclude_item_ids=["a", ""]),
     "exclude_item_ids[1]"),
    ("many excluded", lambda c: c.recommend("u", exclude_item_ids=MANY_IDS), "exclude_item_ids"),
    ("filter as tokens", lambda c: c.recommend("u", filters=[SHOES]), "filters[0]"),
    ("exclude_seen not bool", lambda c: c.recommend("u", exclude_seen=None), "exclude_seen"),
    ("feature not str", lambda c: c.recommend("u", user_features=[1]), "user_features[0]"),
    ("timeout zero", lambda c: c.recommend("u", timeout=0), "timeout"),
    ("timeout nan", lambda c: c.model_info(timeout=float("nan")), "timeout"),
    ("similar empty item", lambda c: c.similar_items(""), "item_id"),
    ("similar k", lambda c: c.similar_items("i", k=-1), "k"),
    ("rank no candidates", lambda c: c.rank("u", []), "item_ids"),
    ("rank too many", lambda c: c.rank("u", MANY_IDS), "item_ids"),
    ("rank empty candidate", lambda c: c.rank("u", ["a", ""]), "item_ids[1]"),
    ("track not events", lambda c: c.track([Event("u", "i"), {"user_id": "u"}]), "events[1]"),
    ("track one event", lambda c: c.track(Event("u", "i")), "events"),
    ("upsert not items", lambda c: c.upsert_items([User("u")]), "items[0]"),
    ("upsert not users", lambda c: c.upsert_users([Item("i")]), "users[0]"),
    ("delete empty", lambda c: c.delete_user(""), "user_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "field"),
    [(call, field) for _, call, field in BAD_CALLS],
    ids=[n for n, *_ in BAD_CALLS],
)
def test_bad_input_is_refused_before_any_rpc(
    client: Client, servicer: RecordingServicer, call: Callable[[Client], Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        call(client)
    assert str(caught.value).startswith(f"{field}:")
    assert not servicer.attempts


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target": ""}, "target"),
        ({"timeout": -1}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 6}, "max_attempts"),
        ({"token": "line\nbreak"}, "token"),
        ({"token": ""}, "token"),
        ({"root_certificates": b"PEM"}, "root_certificates"),
        ({"tls": "yes"}, "tls"),
        ({"options": [("grpc.x",)]}, "options[0]"),
    ],
)
def test_bad_constructor_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"target": "localhost:1", **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        Client(**arguments)
    assert str(caught.value).startswith(f"{field}:")


def test_a_closed_client_refuses_calls(target: str, servicer: RecordingServicer) -> None:
    client = Client(target)
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientClosedError):
        client.model_info()
    assert not servicer.attempts
    assert "closed" in repr(client)


def test_caller_options_replace_ours(target: str, servicer: RecordingServicer) -> None:
    servicer.fail("GetModelInfo", grpc.StatusCode.UNAVAILABLE, "down")
    no_retry_config = '{"methodConfig": [{"name": [{"service": "shelfrank.v1.Recommender"}]}]}'
    with (
        Client(target, options=[("grpc.service_config", no_retry_config)]) as client,
        pytest.raises(UnavailableError),
    ):
        client.model_info()
    assert servicer.attempts["GetModelInfo"] == 1


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A throw-away key and certificate for localhost (needs the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return (folder / "key.pem").read_bytes(), (folder / "cert.pem").read_bytes()


def test_tls_with_token_uses_call_credentials(self_signed: tuple[bytes, bytes]) -> None:
    servicer = RecordingServicer()
    with (
        serving(servicer, tls_key_and_cert=self_signed) as target,
        Client(target, tls=True, root_certificates=self_signed[1], token="s3cret") as client,
    ):
        assert client.model_info().model_version == "model-7"
    assert servicer.metadata["GetModelInfo"][0]["authorization"] == "Bearer s3cret"


def test_tls_refuses_an_untrusted_server(self_signed: tuple[bytes, bytes]) -> None:
    servicer = RecordingServicer()
    with (
        serving(servicer, tls_key_and_cert=self_signed) as target,
        Client(target, tls=True, max_attempts=1) as client,  # system roots only
        pytest.raises(UnavailableError),
    ):
        client.model_info()
    assert not servicer.attempts


def test_a_list_of_replicas_is_balanced_round_robin() -> None:
    first, second = RecordingServicer(), RecordingServicer()
    with serving(first) as one, serving(second) as two, Client([one, two]) as client:
        for _ in range(10):
            client.recommend("u1", k=3)
    # Round robin: both replicas answered (pick_first would send every call to one).
    calls = (len(first.requests["Recommend"]), len(second.requests["Recommend"]))
    assert min(calls) > 0
    assert sum(calls) == 10


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([], "the list of replicas is empty"),
        (["shop.example:50051"], r"target\[0\]: 'shop.example:50051' is not 'ip:port'"),
        (["127.0.0.1"], r"target\[0\]: '127.0.0.1' is not 'ip:port'"),
        (["127.0.0.1:0"], r"target\[0\]: '127.0.0.1:0' has no valid port"),
        (["127.0.0.1:1", "[::1]:2"], "IPv4 and IPv6 addresses cannot be mixed"),
        ("", "target: must not be empty"),
        (b"127.0.0.1:1", "target: expected"),
    ],
)
def test_a_bad_target_is_refused_naming_the_entry(target: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Client(target)  # type: ignore[arg-type]


# --- the feedback loop: shown lists, attributed events, reports -------------------------


class FeedbackServicer(RecordingServicer):
    """RecordingServicer plus ReportShown (deduplicating by recommendation id, as the
    contract says), a canned GetReport and labelled responses."""

    def __init__(self) -> None:
        super().__init__()
        self.shown_ids: set[str] = set()

    def Recommend(self, request: pb.RecommendRequest, context: Any) -> pb.RecommendResponse:  # noqa: N802
        response = super().Recommend(request, context)
        response.variant, response.experiment = "pop", "home"
        return response

    def ReportShown(  # noqa: N802
        self, request: pb.ReportShownRequest, context: Any
    ) -> pb.ReportShownResponse:
        self._enter("ReportShown", request, context)
        response = pb.ReportShownResponse()
        for impression in request.impressions:
            if impression.recommendation_id in self.shown_ids:
                response.duplicates += 1
            else:
                self.shown_ids.add(impression.recommendation_id)
                response.accepted += 1
        return response

    def GetReport(self, request: pb.GetReportRequest, context: Any) -> pb.GetReportResponse:  # noqa: N802
        self._enter("GetReport", request, context)
        if request.experiment == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "experiment: no experiment 'missing'")
        variant = pb.VariantReport(
            name="pop", impressions=4, clicks=1, ctr=pb.Rate(value=0.25, low=0.05, high=0.7)
        )
        return pb.GetReportResponse(
            experiments=[pb.ExperimentReport(name="home", variants=[variant])], json="{}"
        )


@pytest.fixture
def feedback() -> Iterator[tuple[Client, FeedbackServicer]]:
    servicer = FeedbackServicer()
    with serving(servicer) as address, Client(address) as opened:
        yield opened, servicer


def test_recommendations_carry_the_variant_and_experiment(
    feedback: tuple[Client, FeedbackServicer],
) -> None:
    client, _ = feedback
    recs = client.recommend("user-1", 2)
    assert (recs.variant, recs.experiment) == ("pop", "home")


def test_track_sends_the_recommendation_id_and_position(
    client: Client, servicer: RecordingServicer
) -> None:
    client.track([Event("u", "i", "view", recommendation_id="rec-1", position=2), Event("u", "j")])
    first, second = servicer.requests["Track"][0].events
    assert (first.recommendation_id, first.position) == ("rec-1", 2)
    assert (second.recommendation_id, second.position) == ("", 0)


def test_report_shown_sends_every_field_batches_and_counts_resends_as_duplicates(
    feedback: tuple[Client, FeedbackServicer],
) -> None:
    client, servicer = feedback
    impressions = [
        Impression(
            f"rec-{n}",
            ["a", "b"],
            user_id="u1",
            timestamp_ms=1_700_000_000_000,
            surface="device",
            experiment="home",
            variant="pop",
            model_version="m-1",
        )
        for n in range(10_001)
    ]

    first = client.report_shown(iter(impressions))
    again = client.report_shown(impressions[:3])

    assert first == ShownResult(accepted=10_001, duplicates=0)
    assert again == ShownResult(accepted=0, duplicates=3)
    sizes = [len(request.impressions) for request in servicer.requests["ReportShown"]]
    assert sizes == [10_000, 1, 3]
    sent = servicer.requests["ReportShown"][0].impressions[0]
    assert sent == pb.Impression(
        recommendation_id="rec-0",
        user_id="u1",
        item_ids=["a", "b"],
        timestamp_ms=1_700_000_000_000,
        surface="device",
        experiment="home",
        variant="pop",
        model_version="m-1",
    )


def test_report_shown_of_nothing_makes_no_rpc(feedback: tuple[Client, FeedbackServicer]) -> None:
    client, servicer = feedback
    assert client.report_shown([]) == ShownResult(0, 0)
    assert client.shown(client.recommend("u", 2), []) == ShownResult(0, 0)
    assert servicer.attempts["ReportShown"] == 0


def test_shown_reports_part_of_a_response_with_its_labels(
    feedback: tuple[Client, FeedbackServicer],
) -> None:
    client, servicer = feedback
    recs = client.recommend("user-1", 4)

    result = client.shown(recs, recs.item_ids[:2], user_id="user-1")

    assert result == ShownResult(accepted=1, duplicates=0)
    (request,) = servicer.requests["ReportShown"]
    (sent,) = request.impressions
    assert sent.recommendation_id == recs.recommendation_id
    assert list(sent.item_ids) == list(recs.item_ids[:2])
    assert (sent.user_id, sent.surface, sent.timestamp_ms) == ("user-1", "recommend", 0)
    assert (sent.experiment, sent.variant, sent.model_version) == ("home", "pop", "model-7")
    assert client.shown(recs) == ShownResult(accepted=0, duplicates=1)  # one per response
    with pytest.raises(InvalidInputError, match=r"^item_ids\[0\]:"):
        client.shown(recs, ["not-in-it"])
    assert servicer.attempts["ReportShown"] == 2  # the refused call sent nothing


def test_report_sends_the_range_and_returns_typed_results(
    feedback: tuple[Client, FeedbackServicer],
) -> None:
    client, servicer = feedback

    report = client.report("home", from_ms=5, to_ms=9)

    (sent,) = servicer.requests["GetReport"]
    assert (sent.experiment, sent.from_ms, sent.to_ms) == ("home", 5, 9)
    assert report.json == "{}"
    (experiment,) = report.experiments
    (variant,) = experiment.variants
    assert (experiment.name, variant.name, variant.impressions, variant.clicks) == (
        "home",
        "pop",
        4,
        1,
    )
    assert variant.ctr == Rate(0.25, 0.05, 0.7)
    assert experiment.comparisons == ()
    with pytest.raises(NotFoundError, match="missing"):
        client.report("missing")
    with pytest.raises(InvalidInputError, match=r"^to_ms:"):
        client.report(from_ms=9, to_ms=5)
    assert servicer.attempts["GetReport"] == 2


def test_a_server_recording_no_impressions_is_a_failed_precondition(
    feedback: tuple[Client, FeedbackServicer],
) -> None:
    client, servicer = feedback
    servicer.fail("ReportShown", grpc.StatusCode.FAILED_PRECONDITION, "records no impressions")
    with pytest.raises(FailedPreconditionError) as caught:
        client.report_shown([Impression("r", ["a"])])
    assert (caught.value.code, caught.value.method) == ("FAILED_PRECONDITION", "ReportShown")
    assert isinstance(caught.value, ShelfrankError)


def test_an_older_server_without_the_rpcs_is_unimplemented(client: Client) -> None:
    with pytest.raises(UnimplementedError):
        client.report_shown([Impression("r", ["a"])])
    with pytest.raises(UnimplementedError):
        client.report()


# --- against the real server -------------------------------------------------------------

EXPERIMENTS_TOML = """
[[experiment]]
name = "home"
surface = "recommend"
salt = "test-salt"
[[experiment.variant]]
name = "control"
share = 50
[[experiment.variant]]
name = "pop"
share = 50
setting = "popularity"
"""


@contextmanager
def running_real_server(model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """The real server with an experiment on ``recommend`` (imported here, so the tests
    above run even while the server does not import)."""
    from shelfrank.server.app import ServerOptions, start
    from tests.conftest import SERVER_CONFIG

    experiments = tmp_path / "experiments.toml"
    experiments.write_text(EXPERIMENTS_TOML, encoding="utf-8")
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=model_dir,
            train_config=SERVER_CONFIG,
            experiments=experiments,
        )
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def real_server(toy_model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    with running_real_server(toy_model_dir, tmp_path) as running:
        yield running


def test_the_feedback_loop_against_the_real_server(real_server: Any, tmp_path: Path) -> None:
    from shelfrank.core.experiments import assign, load_experiments

    (home,) = load_experiments(tmp_path / "experiments.toml")
    with Client(f"127.0.0.1:{real_server.port}") as client:
        recs = client.recommend("u0", k=4)
        assert (recs.experiment, recs.variant) == ("home", assign(home, "u0").name)

        assert client.shown(recs, recs.item_ids[:2], user_id="u0") == ShownResult(1, 0)
        assert client.shown(recs, recs.item_ids[:2], user_id="u0") == ShownResult(0, 1)
        clicked = recs.item_ids[0]
        tracked = client.track(
            [Event("u0", clicked, "view", recommendation_id=recs.recommendation_id, position=1)]
        )
        assert tracked.errors == ()
        device = Impression("device-list-1", ["book1", "book2"], user_id="u1")
        assert client.report_shown([device, device]).accepted == 1  # once per id

        report = client.report("home")
        (experiment,) = report.experiments
        assert experiment.name == "home"
        served = {variant.name: variant for variant in experiment.variants}[recs.variant]
        assert served.impressions == 1
        assert served.clicks == 1
        assert 0.0 <= served.ctr.low <= served.ctr.value <= served.ctr.high <= 1.0
        assert json.loads(report.json)
        with pytest.raises(NotFoundError):
            client.report("no-such-experiment")
        with pytest.raises(InvalidArgumentError, match="model_version"):
            client.report_shown([Impression("r", ["a"], model_version="m\x01")])
