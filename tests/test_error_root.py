"""One error root: whatever a caller of the client, the async client or the edge passes,
and in whatever state the object or the server is, every exception is a ShelfrankError.

Complete by construction: the public callables are found by introspection (every name in
``shelfrank.client.__all__`` and ``shelfrank.edge.__all__``; of a class, its constructor
and every public method and property it defines) and each needs a case here, or a reason
to be exempt, else ``test_every_public_callable_has_a_case`` fails. A case holds arguments
that work (checked against a real server, so each refused variant differs from a working
call in the one place it names) and variants that must be refused with a ShelfrankError.
Hypothesis then puts junk into each parameter in turn: the call works or raises a
ShelfrankError, never anything else. The calls are also made on closed objects and
against a port nobody listens on. The async client must offer every method of the sync
one, with the same parameters (``test_the_async_client_mirrors_the_sync_one``).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import itertools
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shelfrank.client
import shelfrank.edge
from shelfrank.client import (
    AsyncClient,
    Client,
    ClientClosedError,
    Event,
    FeatureFilter,
    Impression,
    Item,
    NotFoundError,
    Recommendations,
    ScoredItem,
    ServiceError,
    Strategy,
    User,
)
from shelfrank.core.errors import (
    ClosedError,
    InvalidInputError,
    ModelFileError,
    ShelfrankError,
    StorageError,
)
from shelfrank.edge import EdgeRecommender, NoSnapshotError, SessionConfig
from shelfrank.server.app import RunningServer, ServerOptions, start
from tests.conftest import SERVER_CONFIG

Args = dict[str, Any]


@dataclass(frozen=True)
class World:
    """Where the cases run: a real server, a port nobody listens on, a model directory
    the edge can start from, and a scratch folder."""

    target: str
    dead_target: str
    model_dir: Path
    tmp: Path
    _names: Iterator[int] = field(default_factory=itertools.count, compare=False)

    def fresh(self, prefix: str) -> Path:
        """A path nothing exists at yet."""
        return self.tmp / f"{prefix}-{next(self._names)}"

    @property
    def a_file(self) -> Path:
        """A regular file, where the cases put a folder that then cannot be made."""
        path = self.tmp / "a-file"
        path.write_text("not a folder")
        return path


Variant = Args | Callable[[World], Args]


@dataclass(frozen=True)
class Case:
    """``valid``: arguments that work; ``refused``: each replaces some of them and must
    make the call raise a ShelfrankError."""

    valid: Variant = field(default_factory=dict)
    refused: tuple[Variant, ...] = ()

    def valid_args(self, world: World) -> Args:
        return dict(self.valid(world) if callable(self.valid) else self.valid)

    def refused_args(self, world: World) -> list[tuple[set[str], Args]]:
        """Each refused variant: the names it replaces, and the whole arguments."""
        base = self.valid_args(world)
        variants = [v(world) if callable(v) else v for v in self.refused]
        return [(set(v), {**base, **v}) for v in variants]


# -- the cases ------------------------------------------------------------------------------

# Shared by Client and AsyncClient (they have the same methods and parameters).
CLIENT_CASES: dict[str, Case] = {
    "__init__": Case(
        lambda w: {"target": w.target},
        (
            {"target": ""},
            {"target": 5},
            {"target": "\ud800"},
            {"token": ""},
            {"token": "clé"},
            {"token": b"t"},
            {"timeout": 0},
            {"timeout": float("nan")},
            {"timeout": 1e12},  # gRPC would wrap the deadline into the past
            {"timeout": "5"},
            {"tls": "yes"},
            {"root_certificates": "PEM"},
            {"root_certificates": b"PEM"},  # without tls
            {"max_attempts": 0},
            {"max_attempts": 6},
            {"max_attempts": 2.0},
            {"options": 5},
            {"options": "grpc.x"},
            {"options": [("grpc.x",)]},
            {"options": [("grpc.x", None)]},
        ),
    ),
    "recommend": Case(
        {"user_id": "u0", "k": 3},
        (
            {"user_id": ""},
            {"user_id": 7},
            {"user_id": "x" * 257},
            {"k": 0},
            {"k": 1001},
            {"k": "3"},
            {"k": True},
            {"exclude_item_ids": "book1"},
            {"exclude_item_ids": [1]},
            {"filters": [["category=shoes"]]},  # lists, not FeatureFilter
            {"filters": FeatureFilter(["category=shoes"])},  # one filter, not a list
            {"exclude_features": "brand=x"},
            {"exclude_seen": "no"},
            {"user_features": [None]},
            {"diversity": -0.1},
            {"diversity": 1.5},
            {"diversity": "some"},
            {"max_per_feature": {"brand": 2}},  # a column needs its '='
            {"max_per_feature": {"brand=x": 2}},
            {"max_per_feature": {"brand=": 0}},
            {"max_per_feature": [("brand=", 2)]},
            {"exploration": float("nan")},
            {"exploration": 2},
            {"exploration_max_age_ms": -1},
            {"exclude_event_types": ["nope"]},
            {"exclude_event_types": "view"},
            {"exclude_within_ms": -5},
            {"recommendation_id": "r" * 129},
            {"recommendation_id": 5},
            {"explain": "yes"},
            {"timeout": -1},
        ),
    ),
    "set_availability": Case(
        {"item_ids": ["shoe1", "not-in-catalogue"], "available": True},
        (
            {"item_ids": []},
            {"item_ids": "shoe1"},
            {"item_ids": [""]},
            {"item_ids": ["x"] * 10_001},
            {"available": "no"},
            {"available": None},
        ),
    ),
    "similar_items": Case(
        {"item_id": "shoe1", "k": 2},
        (
            {"item_id": ""},
            {"item_id": "no-such-item"},  # refused by the server: NotFoundError
            {"k": -1},
            {"filters": "category=shoes"},
            {"exclude_features": [3]},
            {"exclude_item_ids": None},
            {"explain": 1},
            {"timeout": "1"},
        ),
    ),
    "rank": Case(
        {"user_id": "u0", "item_ids": ["shoe1", "book2", "unknown-item"]},
        (
            {"user_id": None},
            {"item_ids": []},
            {"item_ids": "shoe1"},
            {"item_ids": ["x"] * 10_001},
            {"item_ids": ["shoe1", ""]},
            {"user_features": "segment=runner"},
            {"explain": None},
        ),
    ),
    "track": Case(
        lambda w: {"events": [Event("u0", "shoe1", "view")]},
        (
            {"events": Event("u0", "shoe1")},  # one event, not a list
            {"events": ["u0,shoe1,view"]},
            {"events": None},
            {"erasure_seen": -1},
            {"erasure_seen": "1"},
            {"erasure_seen": 2**64},
            {"timeout": 0},
        ),
    ),
    "report_shown": Case(
        lambda w: {"impressions": [Impression("shown-1", ["shoe1"], user_id="u0")]},
        (
            {"impressions": Impression("shown-1", ["shoe1"])},  # one, not a list
            {"impressions": ["shown-1"]},
            {"impressions": None},
            {"timeout": 0},
        ),
    ),
    "shown": Case(
        lambda w: {
            "recommendations": Recommendations(
                items=(ScoredItem("shoe1", 1.0), ScoredItem("book2", 0.5)),
                model_version="m",
                recommendation_id="shown-2",
                strategy=Strategy.TRAINED,
            ),
            "item_ids": ["book2"],
            "user_id": "u0",
        },
        (
            {"recommendations": "shown-2"},
            {"item_ids": "book2"},
            {"item_ids": ["book9"]},  # not one of the recommendations
            {"user_id": 5},
            {"timeout": -1},
        ),
    ),
    "report": Case(
        {},
        (
            {"experiment": "no-such-experiment"},  # refused by the server: NotFoundError
            {"experiment": 5},
            {"from_ms": -1},
            {"to_ms": -1},
            {"from_ms": 5, "to_ms": 5},
            {"from_ms": 1.5},
            {"timeout": "1"},
        ),
    ),
    "upsert_items": Case(
        lambda w: {"items": [Item("new-item", ["category=shoes"])]},
        (
            {"items": Item("new-item")},
            {"items": [("new-item", ["category=shoes"])]},
            {"items": 3},
        ),
    ),
    "upsert_users": Case(
        lambda w: {"users": [User("new-user", ["segment=runner"])]},
        ({"users": User("new-user")}, {"users": [{"user_id": "u"}]}, {"users": b"u"}),
    ),
    "delete_user": Case({"user_id": "nobody-here"}, ({"user_id": ""}, {"user_id": b"u0"})),
    "model_info": Case({}, ({"timeout": -1}, {"timeout": float("inf")}, {"timeout": "1"})),
    "fetch_snapshot": Case(
        lambda w: {"user_id": "u0", "destination": w.fresh("download")},
        (
            {"user_id": ""},
            {"destination": 5},
            {"destination": ""},
            {"destination": "a\0b"},
            {"have_version": 3},
            lambda w: {"destination": w.a_file / "below-a-file"},  # StorageError
        ),
    ),
    "close": Case(),
}
# The methods that make RPCs (the others are the constructor and close).
RPC_METHODS = sorted(set(CLIENT_CASES) - {"__init__", "close"})

# Values callers build and pass in; EventType is also the edge's.
VALUE_CASES: dict[tuple[str, str], Case] = {
    ("Event", "__init__"): Case(
        {"user_id": "u0", "item_id": "shoe1"},
        (
            {"type": "like"},
            {"type": 9},
            {"user_id": ""},
            {"item_id": None},
            {"event_id": ""},
            {"timestamp_ms": 2**63},
            {"timestamp_ms": 1.5},
            {"session_id": "x" * 300},
            {"query": 5},
            {"recommendation_id": "r" * 129},
            {"recommendation_id": "r\n"},
            {"position": -1},
            {"position": 1.0},
        ),
    ),
    ("Impression", "__init__"): Case(
        {"recommendation_id": "r1", "item_ids": ["shoe1"]},
        (
            {"recommendation_id": ""},
            {"recommendation_id": "r" * 129},
            {"item_ids": []},
            {"item_ids": "shoe1"},
            {"item_ids": ["x"] * 1001},
            {"user_id": 5},
            {"timestamp_ms": -1},
            {"surface": "home"},
            {"experiment": None},
            {"variant": "v" * 257},
            {"model_version": 1},
        ),
    ),
    ("Item", "__init__"): Case(
        {"item_id": "i1", "features": ["a=b"]},
        ({"item_id": ""}, {"features": "a=b"}, {"features": [1]}),
    ),
    ("User", "__init__"): Case(
        {"user_id": "u1", "features": ["a=b"]},
        ({"user_id": 1}, {"features": "a=b"}, {"features": [b"a=b"]}),
    ),
    ("FeatureFilter", "__init__"): Case(
        {"any_of": ["a=b"]}, ({"any_of": []}, {"any_of": "a=b"}, {"any_of": [None]})
    ),
    ("EventType", "__init__"): Case({"value": 3}, ({"value": 99}, {"value": "view"})),
    ("EventType", "label"): Case(),  # a property
    ("EventType", "parse"): Case(
        {"text": "add_to_cart"}, ({"text": "like"}, {"text": 3}, {"text": None})
    ),
}

EDGE_CASES: dict[tuple[str, str], Case] = {
    ("EdgeRecommender", "__init__"): Case(
        lambda w: {
            "path": w.fresh("device"),
            "user_id": "u0",
            "target": w.target,
            "snapshot": w.model_dir,
        },
        (
            {"path": 5},
            {"path": ""},
            {"path": "a\0b"},
            lambda w: {"path": w.a_file},  # StorageError
            {"user_id": ""},
            {"user_id": 42},
            {"target": ""},
            {"target": 5},
            {"token": "clé"},
            {"snapshot": 3},
            lambda w: {"snapshot": w.fresh("no-model")},  # ModelFileError
            {"memory_budget_bytes": -1},
            {"memory_budget_bytes": 1.5},
            {"session": {"strength": 1.0}},
            {"session_window_seconds": float("inf")},
            {"session_window_seconds": -1},
            {"rerank_depth": 0},
            {"timeout": 0},
            {"max_attempts": 9},
            {"clock": 5},
            {"experiments": "home"},
            {"experiments": [3]},
        ),
    ),
    ("EdgeRecommender", "track"): Case(
        {"event_type": "view", "item_id": "book1"},
        (
            {"event_type": "like"},
            {"event_type": 9},
            {"event_type": None},
            {"item_id": ""},
            {"item_id": 5},
            {"session_id": 1},
            {"query": None},
            {"timestamp_ms": "now"},
            {"timestamp_ms": 2**64},
            {"recommendation_id": "r" * 129},
            {"position": -1},
        ),
    ),
    ("EdgeRecommender", "recommend"): Case(
        {"k": 3, "filters": [FeatureFilter(["category=books"])]},
        (
            {"user_id": "someone-else"},
            {"user_id": 3},
            {"k": 0},
            {"k": 1001},
            {"k": 2.5},
            {"exclude_seen": None},
            {"exclude_item_ids": "book1"},
            {"filters": [["category=books"]]},  # lists, not FeatureFilter (as the client)
            {"filters": FeatureFilter(["category=books"])},
            {"exclude_features": "category=books"},
            {"user_features": "segment=runner"},
            {"use_session": "yes"},
            {"diversity": -1},
            {"diversity": 1.5},
            {"diversity": "a lot"},
            {"max_per_feature": {"category": 1}},
            {"max_per_feature": {"category=": -1}},
            {"exploration": 1.01},
            {"exploration_max_age_ms": -1},
            {"exclude_event_types": ["nope"]},
            {"exclude_within_ms": -1},
            {"recommendation_id": "r" * 129},
            {"explain": "yes"},
        ),
    ),
    ("EdgeRecommender", "rank"): Case(
        {"item_ids": ["book1", "shoe1", "unknown-item"]},
        (
            {"user_id": "someone-else"},
            {"item_ids": "book1"},
            {"item_ids": []},
            {"item_ids": [1]},
            {"use_session": 1},
            {"explain": 0},
        ),
    ),
    ("EdgeRecommender", "sync"): Case(),
    ("EdgeRecommender", "forget"): Case(),
    ("EdgeRecommender", "pending_events"): Case(),
    ("EdgeRecommender", "pending_impressions"): Case(),
    ("EdgeRecommender", "cached_bytes"): Case(),
    ("EdgeRecommender", "close"): Case(),
    ("EdgeRecommender", "snapshot"): Case(),  # a property
    ("SessionConfig", "__init__"): Case(
        {},
        (
            {"strength": -1},
            {"half_life_seconds": 0},
            {"half_life_events": "1"},
            {"max_events": 0},
            {"diversity_depth": 1.5},
            {"dismiss_weight": 1},
            {"view_weight": float("nan")},
        ),
    ),
    ("SessionConfig", "event_weights"): Case(),  # a property
}

# Parameters whose messages name the field as the data calls it.
MESSAGE_NAMES = {"text": "event_type", "value": "event_type"}

# Exported names callers never call with input of their own: results the library builds.
EXEMPT = {
    "AsyncRecommender": "an interface (its implementations have cases)",
    "Recommender": "an interface (its implementations have cases)",
    "AvailabilityResult": "a result",
    "Contribution": "a result's part",
    "Explanation": "a result's part",
    "Reason": "a result's enum",
    "DeleteResult": "a result",
    "EventError": "a result",
    "ModelInfo": "a result",
    "Recommendations": "a result",
    "ScoredItem": "a result",
    "SnapshotInfo": "a result",
    "TrackResult": "a result",
    "Strategy": "a result's enum",
    "SyncResult": "a result",
    "ShownResult": "a result",
    "FeedbackReport": "a result",
    "ExperimentReport": "a result's part",
    "VariantReport": "a result's part",
    "Comparison": "a result's part",
    "Rate": "a result's part",
}


# -- what the public surface is ---------------------------------------------------------------


def public_members(cls: type) -> set[str]:
    """The constructor and the public methods and properties ``cls`` itself defines
    (dunder protocol methods such as ``__enter__`` are not counted)."""
    members = {"__init__"}
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property | classmethod | staticmethod) or inspect.isfunction(value):
            members.add(name)
    return members


def surface(module: ModuleType) -> dict[tuple[str, str], Any]:
    """(exported name, member) of every callable a module exports, exceptions and
    exempt results aside."""
    found: dict[tuple[str, str], Any] = {}
    for name in module.__all__:
        exported = getattr(module, name)
        if name in EXEMPT or (isinstance(exported, type) and issubclass(exported, BaseException)):
            continue
        if isinstance(exported, type):
            for member in public_members(exported):
                found[(name, member)] = exported
        elif callable(exported):
            found[(name, "__call__")] = exported
    return found


ALL_CASES = {
    **{("Client", m): c for m, c in CLIENT_CASES.items()},
    **{("AsyncClient", m): c for m, c in CLIENT_CASES.items()},
    **VALUE_CASES,
    **EDGE_CASES,
}


def test_every_public_callable_has_a_case() -> None:
    public = set(surface(shelfrank.client)) | set(surface(shelfrank.edge))
    assert public - set(ALL_CASES) == set(), "add a case for each new public callable"
    assert set(ALL_CASES) - public == set(), "a case for something that is no longer public"
    for name in EXEMPT:
        assert name in shelfrank.client.__all__ or name in shelfrank.edge.__all__


def test_the_async_client_mirrors_the_sync_one() -> None:
    assert public_members(AsyncClient) == public_members(Client)
    for name in public_members(Client):
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(aio) == inspect.signature(sync), name
        assert inspect.iscoroutinefunction(aio) == (name != "__init__"), name
        assert not inspect.iscoroutinefunction(sync), name


# -- fixtures --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start(
        ServerOptions(
            state_dir=tmp_path_factory.mktemp("state"),
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def world(
    server: RunningServer, toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> World:
    return World(
        target=f"127.0.0.1:{server.port}",
        dead_target=f"127.0.0.1:{free_port()}",
        model_dir=toy_model_dir,
        tmp=tmp_path_factory.mktemp("error-root"),
    )


# -- calling ---------------------------------------------------------------------------------


def outcome(call: Callable[[], object]) -> ShelfrankError | None:
    """None if the call worked, the ShelfrankError if it raised one; anything else fails
    the test, naming what leaked."""
    try:
        result = call()
    except ShelfrankError as error:
        return error
    except BaseException as error:  # the point: nothing else may come out
        pytest.fail(f"leaked {type(error).__module__}.{type(error).__name__}: {error}")
    if isinstance(result, Client):  # a constructor's
        result.close()
    return None


def refused(call: Callable[[], object]) -> ShelfrankError:
    error = outcome(call)
    if error is None:
        pytest.fail("accepted")
    return error


def client_call(world: World, member: str, args: Args, *, target: str | None = None) -> object:
    """One call of a Client method (a client of its own unless ``member`` is the
    constructor); returns what it returned."""
    if member == "__init__":
        return Client(**args)
    with Client(target or world.target, max_attempts=1, timeout=5.0) as client:
        return getattr(client, member)(**args)


def async_call(world: World, member: str, args: Args, *, target: str | None = None) -> object:
    async def scenario() -> object:
        if member == "__init__":
            await AsyncClient(**args).close()
            return None
        async with AsyncClient(target or world.target, max_attempts=1, timeout=5.0) as client:
            return await getattr(client, member)(**args)

    return asyncio.run(scenario())


def device(world: World, *, target: str | None = None, snapshot: bool = True) -> EdgeRecommender:
    return EdgeRecommender(
        world.fresh("device"),
        "u0",
        target or world.target,
        snapshot=world.model_dir if snapshot else None,
        max_attempts=1,
    )


def member_call(obj: object, member: str, args: Args) -> object:
    """Call a method, or read a property (which takes no arguments)."""
    if isinstance(inspect.getattr_static(type(obj), member, None), property):
        return getattr(obj, member)
    return getattr(obj, member)(**args)


def exported(owner: str) -> Any:
    return getattr(shelfrank.client, owner, None) or getattr(shelfrank.edge, owner)


def value_call(world: World, owner: str, member: str, args: Args) -> object:
    """The constructor of an exported value type, or a method or property of an
    instance built from its working constructor arguments (a classmethod on the class)."""
    cls = exported(owner)
    if member == "__init__":
        return cls(**args)
    if isinstance(inspect.getattr_static(cls, member), classmethod):
        return getattr(cls, member)(**args)
    instance = cls(**ALL_CASES[(owner, "__init__")].valid_args(world))
    return member_call(instance, member, args)


def edge_call(world: World, member: str, args: Args) -> object:
    if member == "__init__":
        # Constructed, then used offline: the arguments take effect on these calls.
        phone = EdgeRecommender(**args)
        try:
            phone.track("view", "book1")
            phone.recommend(k=3)
            phone.rank(item_ids=["book1", "shoe1"])
        finally:
            phone.close()
        return None
    phone = device(world)
    try:
        return member_call(phone, member, args)
    finally:
        phone.close()


def any_call(world: World, key: tuple[str, str], args: Args) -> object:
    owner, member = key
    if owner == "Client":
        return client_call(world, member, args)
    if owner == "AsyncClient":
        return async_call(world, member, args)
    if owner == "EdgeRecommender":
        return edge_call(world, member, args)
    return value_call(world, owner, member, args)


KEYS = sorted(ALL_CASES)


def ids(key: tuple[str, str]) -> str:
    return ".".join(key)


# -- the checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=ids)
def test_the_working_arguments_work(world: World, key: tuple[str, str]) -> None:
    """So every refused variant below differs from a working call only where it says."""
    assert outcome(lambda: any_call(world, key, ALL_CASES[key].valid_args(world))) is None


@pytest.mark.parametrize("key", [k for k in KEYS if ALL_CASES[k].refused], ids=ids)
def test_invalid_input_is_refused_with_a_shelfrank_error(
    world: World, key: tuple[str, str]
) -> None:
    for replaced, args in ALL_CASES[key].refused_args(world):
        error = refused(functools.partial(any_call, world, key, args))
        if isinstance(error, NotFoundError | StorageError | ModelFileError):
            continue  # refused by the server, or by the file system: no argument to name
        # Refused as input: the message starts with the argument's name ("k: ...",
        # "filters[0]: ...") or the name it goes by in the data ("event_type").
        assert isinstance(error, InvalidInputError), (args, error)
        named = str(error).split(":")[0].split("[")[0]
        assert named in replaced | {MESSAGE_NAMES.get(name) for name in replaced}, (args, error)


@pytest.mark.parametrize("member", [*RPC_METHODS, "close"])
@pytest.mark.parametrize("call", [client_call, async_call], ids=["Client", "AsyncClient"])
def test_a_closed_client_refuses_every_call(
    world: World, call: Callable[..., object], member: str
) -> None:
    args = CLIENT_CASES[member].valid_args(world)

    def on_closed_sync() -> object:
        client = Client(world.target)
        client.close()
        return getattr(client, member)(**args)

    async def on_closed_async() -> object:
        client = AsyncClient(world.target)
        await client.close()
        return await getattr(client, member)(**args)

    run = on_closed_sync if call is client_call else lambda: asyncio.run(on_closed_async())
    if member == "close":
        assert outcome(run) is None  # closing twice is harmless
    else:
        assert isinstance(refused(run), ClientClosedError)


@pytest.mark.parametrize("member", RPC_METHODS)
@pytest.mark.parametrize("call", [client_call, async_call], ids=["Client", "AsyncClient"])
def test_an_unreachable_server_is_a_service_error(
    world: World, call: Callable[..., object], member: str
) -> None:
    args = CLIENT_CASES[member].valid_args(world)
    error = refused(lambda: call(world, member, args, target=world.dead_target))
    assert isinstance(error, ServiceError)
    assert error.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


EDGE_MEMBERS = sorted(m for (owner, m) in EDGE_CASES if owner == "EdgeRecommender")
STILL_WORKS_WHEN_CLOSED = {"close", "cached_bytes", "snapshot"}


@pytest.mark.parametrize("member", [m for m in EDGE_MEMBERS if m != "__init__"])
def test_a_closed_device_refuses_what_needs_its_storage(world: World, member: str) -> None:
    args = EDGE_CASES[("EdgeRecommender", member)].valid_args(world)
    phone = device(world)
    phone.close()
    if member in STILL_WORKS_WHEN_CLOSED:
        assert outcome(lambda: member_call(phone, member, args)) is None
    else:
        assert isinstance(refused(lambda: member_call(phone, member, args)), ClosedError)


@pytest.mark.parametrize("member", ["recommend", "rank", "snapshot"])
def test_a_device_without_a_snapshot_says_so(world: World, member: str) -> None:
    args = EDGE_CASES[("EdgeRecommender", member)].valid_args(world)
    phone = device(world, snapshot=False)
    try:
        assert isinstance(refused(lambda: member_call(phone, member, args)), NoSnapshotError)
    finally:
        phone.close()


def test_a_device_without_a_server_refuses_to_sync(world: World) -> None:
    phone = EdgeRecommender(world.fresh("device"), "u0", snapshot=world.model_dir)
    try:
        error = refused(phone.sync)
        assert isinstance(error, InvalidInputError)
        assert str(error).startswith("target:")
    finally:
        phone.close()


def test_extreme_but_valid_settings_work(world: World) -> None:
    phone = EdgeRecommender(
        world.fresh("device"),
        "u0",
        snapshot=world.model_dir,
        memory_budget_bytes=0,
        session_window_seconds=1e308,
        rerank_depth=10**9,
        session=SessionConfig(strength=1e6, diversity=1e6, half_life_seconds=1e-300),
    )
    try:
        phone.track("view", "book1", timestamp_ms=-(2**63))
        phone.track("view", "book2", timestamp_ms=2**63 - 1)
        assert len(phone.recommend(k=1000).items) == 32  # every item: views exclude none
        assert len(phone.rank(item_ids=["book1", "nothing"]).items) == 2
    finally:
        phone.close()


def test_a_sync_with_the_server_unreachable_reports_offline(world: World) -> None:
    phone = device(world, target=world.dead_target)
    try:
        phone.track("view", "book1")
        result = phone.sync()
        assert (result.offline, result.pending) == (True, 1)
    finally:
        phone.close()


# -- junk in every parameter -----------------------------------------------------------------

TEXT_JUNK = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "\0", "\ud800", "x" * 257, "é" * 200, "view", "shoe1", "u0"]),
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT_JUNK,
    st.binary(max_size=16),
    st.lists(TEXT_JUNK, max_size=3),
    st.lists(st.integers(), max_size=3),
    st.lists(st.lists(TEXT_JUNK, max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
    st.builds(lambda: [Event("u0", "shoe1")]),
)
# Paths stay relative (the test runs in a scratch folder): the process may run as root.
PATH_JUNK = st.one_of(
    JUNK.filter(lambda value: not isinstance(value, str)),
    st.sampled_from(["", "\0", "a\0b", "\ud800"]),
    st.text(max_size=20).map(lambda text: "junk-" + text.replace("/", "-")),
)
PATH_PARAMETERS = {"path", "destination", "snapshot"}


def parameters(key: tuple[str, str]) -> list[str]:
    owner, member = key
    cls = exported(owner)
    if isinstance(inspect.getattr_static(cls, member), property):
        return []
    function = getattr(cls, member)
    if member == "__init__" and isinstance(cls, enum.EnumMeta):
        return ["value"]
    return [
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if name not in {"self", "cls"}
        and parameter.kind not in {parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD}
    ]


FUZZED = [key for key in KEYS if parameters(key)]


@pytest.mark.parametrize("key", FUZZED, ids=ids)
@settings(
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # monkeypatch: chdir only
)
@given(data=st.data())
def test_junk_in_any_parameter_works_or_raises_a_shelfrank_error(
    world: World, monkeypatch: pytest.MonkeyPatch, key: tuple[str, str], data: st.DataObject
) -> None:
    monkeypatch.chdir(world.tmp)
    name = data.draw(st.sampled_from(parameters(key)), label="parameter")
    value = data.draw(PATH_JUNK if name in PATH_PARAMETERS else JUNK, label="value")
    args = {**ALL_CASES[key].valid_args(world), name: value}
    outcome(lambda: any_call(world, key, args))


def test_the_junk_reaches_every_parameter() -> None:
    """Only what takes no argument escapes the junk; the introspection finds parameters."""
    assert {key for key in KEYS if key not in FUZZED} == {
        *{(owner, "close") for owner in ("Client", "AsyncClient", "EdgeRecommender")},
        *{
            ("EdgeRecommender", m)
            for m in ("sync", "forget", "pending_events", "pending_impressions", "cached_bytes")
        },
        ("EdgeRecommender", "snapshot"),
        ("SessionConfig", "event_weights"),
        ("EventType", "label"),
    }
    assert parameters(("Client", "recommend"))[:2] == ["user_id", "k"]
    assert "snapshot" in parameters(("EdgeRecommender", "__init__"))
    assert parameters(("EventType", "__init__")) == ["value"]
