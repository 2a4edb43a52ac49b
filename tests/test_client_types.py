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
    Event,
    EventType,
    FeatureFilter,
    InvalidInputError,
    Item,
    Recommendations,
    ScoredItem,
    Strategy,
    User,
)
from shelfrank.client._convert import batches, event_to_proto
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
