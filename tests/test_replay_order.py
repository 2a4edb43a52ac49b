"""Replay and order (issue 6): however an event set arrives through Track (permuted,
duplicated, interleaved from several batches and clients), the stored log holds the same
events, and with one thread and a fixed seed the retrained model is bit-identical."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfrank.core.model_format import read_model_directory
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.app import RunningServer, ServerOptions, start
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.requests import EventLimits
from shelfrank.server.retrainer import store_features, store_interactions

KINDS = [pb.VIEW, pb.ADD_TO_CART, pb.PURCHASE, pb.SEARCH, pb.DISMISS]
EVENTS = [
    pb.Event(
        event_id=f"e{n:03d}",
        user_id=f"u{n % 7}",
        item_id=f"shoe{(n * 5) % 13}",
        type=KINDS[n % 5],
        timestamp_ms=1_700_000_000_000 + 1_000 * n,
    )
    for n in range(60)
]
CONFIG = TrainConfig(components=4, epochs=3, seed=11, num_threads=1)


def fresh_server(model_dir: Path, state_dir: Path) -> RunningServer:
    return start(
        ServerOptions(
            state_dir=state_dir,
            port=0,
            model_dir=model_dir,
            event_limits=EventLimits(per_user_rate=0, per_connection_rate=0),
        )
    )


def deliver(server: RunningServer, order: list[int], cuts: list[int]) -> None:
    """Send EVENTS in ``order`` (indices may repeat) as batches cut at ``cuts``."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        bounds = [0, *sorted({c for c in cuts if 0 < c < len(order)}), len(order)]
        for start_, stop in itertools.pairwise(bounds):
            chunk = [EVENTS[i] for i in order[start_:stop]]
            if chunk:
                stub.Track(pb.TrackRequest(events=chunk), timeout=10)


def stored(server: RunningServer) -> set[tuple[object, ...]]:
    return {
        (e.event_id, e.user_id, e.item_id, int(e.event_type), e.timestamp_ms)
        for _, e in server.service.store.iter_events()
        if e.event_id.startswith("e")
    }


def retrained_arrays(server: RunningServer, out: Path) -> dict[str, np.ndarray]:
    store = server.service.store
    model = HybridModel.train(
        store_interactions(store, store.last_seq()),
        CONFIG,
        items=store_features(store.item_features(), "item_id"),
        users=store_features(store.user_features(), "user_id"),
    )
    model.save(out)
    artifact = read_model_directory(out)
    return {f"{g}/{k}": v for g, arrays in artifact.groups.items() for k, v in arrays.items()}


orders = st.lists(st.integers(0, len(EVENTS) - 1), min_size=len(EVENTS), max_size=90).map(
    lambda extra: list(range(len(EVENTS))) + extra  # every event at least once, some again
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first=orders.flatmap(st.permutations),
    second=orders.flatmap(st.permutations),
    cuts_a=st.lists(st.integers(1, 150), max_size=6),
    cuts_b=st.lists(st.integers(1, 150), max_size=6),
)
def test_any_arrival_order_stores_the_same_log_and_trains_the_same_model(
    toy_model_dir: Path,
    first: list[int],
    second: list[int],
    cuts_a: list[int],
    cuts_b: list[int],
) -> None:
    # one scratch folder an example, removed with it: hypothesis runs many examples
    with tempfile.TemporaryDirectory(prefix="replay-") as scratch_name:
        scratch = Path(scratch_name)
        a = fresh_server(toy_model_dir, scratch / "server-a")
        b = fresh_server(toy_model_dir, scratch / "server-b")
        try:
            deliver(a, first, cuts_a)
            deliver(b, second, cuts_b)
            assert stored(a) == stored(b)
            assert len(stored(a)) == len(EVENTS)
            left = retrained_arrays(a, scratch / "model-a")
            right = retrained_arrays(b, scratch / "model-b")
        finally:
            a.stop()
            b.stop()
    assert left.keys() == right.keys()
    for name in left:
        assert np.array_equal(left[name], right[name]), f"{name} differs with the arrival order"
