"""The SDK's plain types, their validation, the batching rule and import hygiene."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shelfrank.client as sdk
from shelfrank.client import (
    Comparison,
    Event,
    EventType,
    ExperimentReport,
    FeatureFilter,
    FeedbackReport,
    Impression,
    InvalidInputError,
    Item,
    Rate,
    Recommendations,
    ScoredItem,
    Strategy,
    User,
    VariantReport,
)
from shelfrank.client._convert import (
    batches,
    event_to_proto,
    impression_to_proto,
    recommendations_from,
    report_from,
    report_request,
    report_shown_requests,
    shown_impressions,
)
from shelfrank.core.errors import InvalidInputError as CoreInvalidInputError
from shelfrank.proto._generated import recommender_pb2 as pb

CLIENT = Path(__file__).resolve().parent.parent / "client"


def test_event_accepts_a_label_or_an_enum_and_stores_the_enum() -> None:
    assert Event("u", "i", "purchase").type is EventType.PURCHASE
    assert Event("u", "i", "ADD_TO_CART").type is EventType.ADD_TO_CART
    assert Event("u", "i", EventType.DISMISS).type is EventType.DISMISS
    assert Event("u", "i").type is EventType.VIEW


def test_event_defaults_and_immutability() -> None:
    event = Event("u", "i")
    assert (event.timestamp_ms, event.session_id, event.query) == (0, "", "")
    assert len(event.event_id) == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.user_id = "other"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")  # slots


def test_replace_keeps_the_event_id_and_revalidates() -> None:
    event = Event("u", "i", event_id="evt-1")
    changed = dataclasses.replace(event, type="purchase")
    assert changed.event_id == "evt-1"
    assert changed.type is EventType.PURCHASE
    with pytest.raises(InvalidInputError, match=r"^user_id:"):
        dataclasses.replace(event, user_id="")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Event("", "i"), "user_id"),
        (lambda: Event("u", ""), "item_id"),
        (lambda: Event("u", "x" * 257), "item_id"),
        (lambda: Event("u", "i", "bought"), "type"),
        (lambda: Event("u", "i", 3), "type"),
        (lambda: Event("u", "i", event_id=""), "event_id"),
        (lambda: Event("u", "i", timestamp_ms=1.5), "timestamp_ms"),
        (lambda: Event("u", "i", timestamp_ms=2**63), "timestamp_ms"),
        (lambda: Event("u", "i", session_id="s" * 257), "session_id"),
        (lambda: Event("u", "i", query=None), "query"),
        (lambda: Event("u\ud800", "i"), "user_id"),
        (lambda: Item("", ()), "item_id"),
        (lambda: Item("i", "category=shoes"), "features"),
        (lambda: Item("i", [3]), "features[0]"),
        (lambda: User("u", b"segment=x"), "features"),
        (lambda: FeatureFilter([]), "any_of"),
        (lambda: FeatureFilter("category=shoes"), "any_of"),
    ],
)
def test_bad_values_name_the_field(build: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        build()  # type: ignore[operator]
    assert str(caught.value).startswith(f"{field}:")


def test_iterables_are_stored_as_tuples() -> None:
    assert Item("i", ["a=1", "b=2"]).features == ("a=1", "b=2")
    assert User("u", (t for t in ["s=1"])).features == ("s=1",)
    assert FeatureFilter({"c=1"}).any_of == ("c=1",)
    assert hash(Item("i", ["a=1"])) == hash(Item("i", ("a=1",)))


def test_recommendations_item_ids() -> None:
    recs = Recommendations(
        items=(ScoredItem("a", 2.0), ScoredItem("b", 1.0)),
        model_version="v1",
        recommendation_id="r1",
        strategy=Strategy.ITEM,
    )
    assert recs.item_ids == ("a", "b")


def test_core_and_proto_enums_agree() -> None:
    """One EventType across the SDK: its names and values are the contract's."""
    assert {t.name: t.value for t in EventType} == {
        name: value for name, value in pb.EventType.items() if name != "EVENT_TYPE_UNSPECIFIED"
    }
    proto_strategies = {name for name, _ in pb.Strategy.items()}
    assert {s.name for s in Strategy} - {"UNKNOWN"} == proto_strategies - {"STRATEGY_UNSPECIFIED"}


ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300)


@given(user_id=ANY_TEXT, item_id=ANY_TEXT, query=ANY_TEXT)
def test_any_text_is_either_refused_or_serialises(user_id: str, item_id: str, query: str) -> None:
    """No input reaches protobuf that protobuf would choke on (e.g. lone surrogates)."""
    try:
        event = Event(user_id, item_id, "search", query=query)
    except InvalidInputError:
        return
    proto = pb.Event.FromString(event_to_proto(event).SerializeToString())
    assert (proto.user_id, proto.item_id, proto.query) == (user_id, item_id, query)
    assert 1 <= len(user_id.encode()) <= 256


class _Sized:
    def __init__(self, size: int) -> None:
        self.size = size

    def ByteSize(self) -> int:  # noqa: N802 (protobuf's name)
        return self.size


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=120), max_size=60),
    max_count=st.integers(min_value=1, max_value=10),
    max_bytes=st.integers(min_value=1, max_value=400),
)
def test_batches_keep_order_and_limits(sizes: list[int], max_count: int, max_bytes: int) -> None:
    messages = [_Sized(size) for size in sizes]

    runs = list(batches(messages, max_count=max_count, max_bytes=max_bytes))

    assert [m for _, batch in runs for m in batch] == messages  # all, once, in order
    offset = 0
    for start, batch in runs:
        assert start == offset  # how error indices get shifted
        offset += len(batch)
        assert 1 <= len(batch) <= max_count
        total = sum(m.size + 6 for m in batch)
        assert total <= max_bytes or len(batch) == 1  # an oversized message goes alone
    for (_, batch), (_, following) in itertools.pairwise(runs):
        full = len(batch) == max_count
        no_room = sum(m.size + 6 for m in batch) + following[0].size + 6 > max_bytes
        assert full or no_room  # batches are as large as the limits allow


def test_public_names_are_exported() -> None:
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert sdk.EventType is EventType


def test_no_protobuf_or_grpc_type_in_public_signatures() -> None:
    for cls in (sdk.Client, sdk.AsyncClient):
        for name, member in vars(cls).items():
            if name.startswith("_") or not callable(member):
                continue
            annotations = str(member.__annotations__)
            assert "pb2" not in annotations, name
            assert "grpc" not in annotations, name


@pytest.mark.parametrize("module", ["types.py", "_validation.py"])
def test_types_stay_free_of_grpc_and_protobuf(module: str) -> None:
    """The edge SDK reuses these result types without a transport."""
    tree = ast.parse((CLIENT / module).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in {"grpc", "google"}}
    assert not {name for name in imported if "_generated" in name or "_proto" in name}


def test_importing_the_client_does_not_import_numpy() -> None:
    code = "import sys, shelfrank.client; print('numpy' in sys.modules, 'grpc' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]


def test_default_event_ids_are_uuid7_and_sort_by_creation_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uuid

    import shelfrank.core.events as events

    clock = iter(range(1_700_000_000_000, 1_700_000_000_000 + 1000))
    monkeypatch.setattr(events.time, "time_ns", lambda: next(clock) * 1_000_000)
    ids = [Event("u1", "i1").event_id for _ in range(200)]
    assert ids == sorted(ids)  # one millisecond apart: in creation order
    assert len(set(ids)) == 200
    parsed = uuid.UUID(hex=ids[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert int(ids[0][:12], 16) == 1_700_000_000_000
    # Within one millisecond the random part differs.
    monkeypatch.setattr(events.time, "time_ns", lambda: 5_000_000)
    same_ms = {Event("u1", "i1").event_id for _ in range(100)}
    assert len(same_ms) == 100
    assert {i[:12] for i in same_ms} == {"000000000005"}


# --- feedback: recommendation ids, positions, impressions, reports ----------------------


def test_event_carries_its_recommendation_id_and_position_to_the_proto() -> None:
    event = Event("u", "i", "purchase", recommendation_id="rec-1", position=3)
    assert (event.recommendation_id, event.position) == ("rec-1", 3)
    proto = pb.Event.FromString(event_to_proto(event).SerializeToString())
    assert (proto.recommendation_id, proto.position) == ("rec-1", 3)
    plain = Event("u", "i")
    assert (plain.recommendation_id, plain.position) == ("", 0)
    assert (event_to_proto(plain).recommendation_id, event_to_proto(plain).position) == ("", 0)


def test_recommendation_id_and_position_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Event("u", "i", "view", None, 0, "", "", "rec-1")  # type: ignore[misc]


def _server_accepts_recommendation_id(value: str) -> bool:
    from shelfrank.server.requests import check_recommendation_id

    try:
        check_recommendation_id(value)
    except CoreInvalidInputError:
        return False
    return True


@given(ANY_TEXT)
def test_recommendation_id_is_checked_as_the_server_checks_it(value: str) -> None:
    """Mirrors server/requests.py check_recommendation_id: empty, or 1..128 characters of
    at most 256 UTF-8 bytes without control characters (plus: encodable at all)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        encodable = False
    else:
        encodable = True
    if encodable and _server_accepts_recommendation_id(value):
        assert Event("u", "i", recommendation_id=value).recommendation_id == value
    else:
        with pytest.raises(InvalidInputError, match=r"^recommendation_id:"):
            Event("u", "i", recommendation_id=value)


@pytest.mark.parametrize(
    "value",
    ["r" * 128, "rec-\u00fc", "a b", "\U0001f600" * 64],
)
def test_recommendation_id_edge_cases_accepted(value: str) -> None:
    assert Event("u", "i", recommendation_id=value).recommendation_id == value


@pytest.mark.parametrize(
    "value",
    ["r" * 129, "tab\there", "nl\n", "del\x7f", "\x00", "\ud800", "\U0001f600" * 65, 5, None],
)
def test_recommendation_id_edge_cases_refused(value: object) -> None:
    with pytest.raises(InvalidInputError, match=r"^recommendation_id:"):
        Event("u", "i", recommendation_id=value)  # type: ignore[arg-type]


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_position_is_a_non_negative_int32(value: int) -> None:
    if 0 <= value <= 2**31 - 1:
        assert Event("u", "i", position=value).position == value
        assert event_to_proto(Event("u", "i", position=value)).position == value
    else:
        with pytest.raises(InvalidInputError, match=r"^position:"):
            Event("u", "i", position=value)


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_position_refuses_non_integers(value: object) -> None:
    with pytest.raises(InvalidInputError, match=r"^position:"):
        Event("u", "i", position=value)  # type: ignore[arg-type]


def test_impression_defaults_and_proto_round_trip() -> None:
    impression = Impression("rec-1", iter(["a", "b"]))
    assert impression.item_ids == ("a", "b")
    assert (impression.user_id, impression.timestamp_ms, impression.surface) == ("", 0, "device")
    assert (impression.experiment, impression.variant, impression.model_version) == ("", "", "")
    full = Impression(
        "rec-2",
        ["c"],
        user_id="u1",
        timestamp_ms=1_700_000_000_000,
        surface="rank",
        experiment="home",
        variant="pop",
        model_version="m-1",
    )
    proto = pb.Impression.FromString(impression_to_proto(full).SerializeToString())
    assert proto == pb.Impression(
        recommendation_id="rec-2",
        user_id="u1",
        item_ids=["c"],
        timestamp_ms=1_700_000_000_000,
        surface="rank",
        experiment="home",
        variant="pop",
        model_version="m-1",
    )
    assert Impression("r", ["a"], surface="").surface == "device"  # the contract's default
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.variant = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Impression("", ["a"]), "recommendation_id"),
        (lambda: Impression("r" * 129, ["a"]), "recommendation_id"),
        (lambda: Impression("r\n", ["a"]), "recommendation_id"),
        (lambda: Impression("r", []), "item_ids"),
        (lambda: Impression("r", "abc"), "item_ids"),
        (lambda: Impression("r", ["a"] * 1001), "item_ids"),
        (lambda: Impression("r", ["a", ""]), "item_ids[1]"),
        (lambda: Impression("r", ["a"], user_id="u" * 257), "user_id"),
        (lambda: Impression("r", ["a"], timestamp_ms=-1), "timestamp_ms"),
        (lambda: Impression("r", ["a"], timestamp_ms=2**63), "timestamp_ms"),
        (lambda: Impression("r", ["a"], surface="home"), "surface"),
        (lambda: Impression("r", ["a"], experiment=3), "experiment"),  # type: ignore[arg-type]
        (lambda: Impression("r", ["a"], variant="v" * 257), "variant"),
        (lambda: Impression("r", ["a"], model_version=None), "model_version"),  # type: ignore[arg-type]
    ],
)
def test_bad_impressions_name_the_field(build: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        build()  # type: ignore[operator]
    assert str(caught.value).startswith(f"{field}:")


def test_impressions_are_batched_and_validated_before_any_request() -> None:
    many = [Impression(f"r{n}", ["a"]) for n in range(10_001)]
    requests = list(report_shown_requests(many))
    assert [len(r.impressions) for r in requests] == [10_000, 1]
    assert list(report_shown_requests([])) == []
    with pytest.raises(InvalidInputError, match=r"^impressions\[1\]:"):
        report_shown_requests([Impression("r", ["a"]), "r2"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"^impressions:"):
        report_shown_requests(Impression("r", ["a"]))  # type: ignore[arg-type]


def _recommendations(**labels: str) -> Recommendations:
    return Recommendations(
        items=(ScoredItem("a", 3.0), ScoredItem("b", 2.0), ScoredItem("c", 1.0)),
        model_version="m-7",
        recommendation_id="rec-9",
        strategy=Strategy.TRAINED,
        **labels,
    )


def test_recommendations_carry_the_variant_and_experiment_of_the_response() -> None:
    response = pb.RecommendResponse(
        items=[pb.ScoredItem(item_id="a", score=1.0)],
        model_version="m",
        recommendation_id="r",
        strategy=pb.TRAINED,
        variant="pop",
        experiment="home",
    )
    recs = recommendations_from(response)
    assert (recs.variant, recs.experiment) == ("pop", "home")
    plain = recommendations_from(pb.RecommendResponse(recommendation_id="r"))
    assert (plain.variant, plain.experiment) == ("", "")


def test_shown_reports_the_response_as_it_was_labelled() -> None:
    recs = _recommendations(variant="pop", experiment="home")
    (everything,) = shown_impressions(recs, None, "u1")
    assert everything == Impression(
        "rec-9",
        ["a", "b", "c"],
        user_id="u1",
        surface="recommend",
        experiment="home",
        variant="pop",
        model_version="m-7",
    )
    (part,) = shown_impressions(recs, ["c", "a"], "")
    assert part.item_ids == ("c", "a")  # in the order shown
    assert shown_impressions(recs, [], "u1") == []  # nothing shown: nothing to report
    assert shown_impressions(dataclasses.replace(recs, items=()), None, "u1") == []
    with pytest.raises(InvalidInputError, match=r"^item_ids\[1\]: 'z' is not one"):
        shown_impressions(recs, ["a", "z"], "")
    with pytest.raises(InvalidInputError, match=r"^recommendations:"):
        shown_impressions("rec-9", None, "")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^user_id:"):
        shown_impressions(recs, None, "u" * 300)


def test_report_request_checks_the_time_range() -> None:
    assert report_request("", 0, 0) == pb.GetReportRequest()
    assert report_request("home", 5, 9) == pb.GetReportRequest(
        experiment="home", from_ms=5, to_ms=9
    )
    for start, end, field in [
        (-1, 0, "from_ms"),
        (0, -1, "to_ms"),
        (9, 9, "to_ms"),
        (9, 5, "to_ms"),
    ]:
        with pytest.raises(InvalidInputError, match=f"^{field}:"):
            report_request("", start, end)
    with pytest.raises(InvalidInputError, match=r"^experiment:"):
        report_request(None, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^from_ms:"):
        report_request("", 1.5, 0)  # type: ignore[arg-type]


def test_report_converts_every_field() -> None:
    def rate(base: float) -> pb.Rate:
        return pb.Rate(value=base, low=base - 0.01, high=base + 0.01)

    response = pb.GetReportResponse(
        experiments=[
            pb.ExperimentReport(
                name="home",
                variants=[
                    pb.VariantReport(
                        name="control",
                        impressions=2**40,  # int64 all the way
                        clicks=7,
                        carts=3,
                        purchases=2,
                        dismissals=1,
                        ctr=rate(0.5),
                        add_to_cart_rate=rate(0.25),
                        conversion=rate(0.125),
                        dismissal_rate=rate(0.0625),
                    )
                ],
                comparisons=[
                    pb.Comparison(
                        variant="pop",
                        control="control",
                        metric="ctr",
                        difference=-0.5,
                        low=-0.75,
                        high=-0.25,
                        always_valid_low=-1.0,
                        always_valid_high=0.5,
                        p_value=0.25,
                        verdict="no difference yet",
                    )
                ],
            )
        ],
        json='{"experiments": []}',
    )
    report = report_from(pb.GetReportResponse.FromString(response.SerializeToString()))
    assert report == FeedbackReport(
        experiments=(
            ExperimentReport(
                name="home",
                variants=(
                    VariantReport(
                        name="control",
                        impressions=2**40,
                        clicks=7,
                        carts=3,
                        purchases=2,
                        dismissals=1,
                        ctr=Rate(0.5, 0.49, 0.51),
                        add_to_cart_rate=Rate(0.25, 0.24, 0.26),
                        conversion=Rate(0.125, 0.115, 0.135),
                        dismissal_rate=Rate(0.0625, 0.0525, 0.0725),
                    ),
                ),
                comparisons=(
                    Comparison(
                        variant="pop",
                        control="control",
                        metric="ctr",
                        difference=-0.5,
                        low=-0.75,
                        high=-0.25,
                        always_valid_low=-1.0,
                        always_valid_high=0.5,
                        p_value=0.25,
                        verdict="no difference yet",
                    ),
                ),
            ),
        ),
        json='{"experiments": []}',
    )
    assert report_from(pb.GetReportResponse()) == FeedbackReport(experiments=(), json="")


def test_report_types_mirror_the_proto_field_names() -> None:
    pairs = [
        (Rate, pb.Rate),
        (VariantReport, pb.VariantReport),
        (Comparison, pb.Comparison),
        (ExperimentReport, pb.ExperimentReport),
        (FeedbackReport, pb.GetReportResponse),
        (Impression, pb.Impression),
    ]
    for ours, proto in pairs:
        names = {f.name for f in dataclasses.fields(ours)}  # type: ignore[arg-type]
        assert names == set(proto.DESCRIPTOR.fields_by_name), ours.__name__
