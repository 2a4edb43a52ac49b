"""Event rate limits: token buckets per user and per connection, all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.app import ServerOptions, start
from shelfrank.server.rate_limit import RateLimiter
from shelfrank.server.requests import EventLimits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=20, clock=clock)
    assert limiter.take_all({"u": 20}) is None
    assert limiter.take_all({"u": 1}) == "u"
    clock.now = 0.5  # 5 tokens back
    assert limiter.take_all({"u": 6}) == "u"
    assert limiter.take_all({"u": 5}) is None
    clock.now = 100.0  # never more than the burst
    assert limiter.take_all({"u": 21}) == "u"
    assert limiter.take_all({"u": 20}) is None


def test_a_refusal_takes_nothing_from_any_key() -> None:
    limiter = RateLimiter(rate=1, burst=10, clock=Clock())
    assert limiter.take_all({"a": 9}) is None
    assert limiter.take_all({"b": 5, "a": 5}) == "a"
    assert limiter.take_all({"b": 10}) is None  # b lost nothing to the refused call


def test_given_back_tokens_never_exceed_the_burst() -> None:
    limiter = RateLimiter(rate=1, burst=10, clock=Clock())
    assert limiter.take_all({"a": 4}) is None
    limiter.give_back({"a": 4, "never-taken": 3})
    assert limiter.take_all({"a": 11}) == "a"
    assert limiter.take_all({"a": 10}) is None
    assert len(limiter) == 1  # giving back creates no bucket


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=100, burst=10, max_keys=100, clock=clock)
    for i in range(100):
        limiter.take_all({f"u{i}": 1})
    clock.now = 1.0  # every bucket is full again
    limiter.take_all({"new": 1})
    assert len(limiter) <= 100


class ReferenceBuckets:
    """The plain token bucket: tokens and the time they were counted, per key."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def level(self, key: str, now: float) -> float:
        tokens, at = self.buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take_all(self, amounts: dict[str, int], now: float) -> str | None:
        levels = {key: self.level(key, now) for key in amounts}
        for key, amount in amounts.items():
            if amount > levels[key]:
                return key
        for key, amount in amounts.items():
            self.buckets[key] = (levels[key] - amount, now)
        return None

    def give_back(self, amounts: dict[str, int], now: float) -> None:
        for key, amount in amounts.items():
            if key in self.buckets:
                self.buckets[key] = (min(self.burst, self.level(key, now) + amount), now)


calls = st.lists(
    st.tuples(
        st.integers(0, 12),  # quarter seconds to wait before the call
        st.booleans(),  # give back instead of take
        st.dictionaries(st.sampled_from("abc"), st.integers(0, 14), min_size=1),
    ),
    max_size=40,
)


@given(calls, st.sampled_from([1, 2, 4]), st.integers(1, 12))
def test_the_limiter_decides_exactly_as_a_plain_token_bucket(
    script: list[tuple[int, bool, dict[str, int]]], rate: int, burst: int
) -> None:
    # Quarter seconds and these rates keep every float exact: decisions must be equal.
    clock = Clock()
    limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
    reference = ReferenceBuckets(rate, burst)
    for wait, give_back, amounts in script:
        clock.now += wait / 4
        if give_back:
            limiter.give_back(amounts)
            reference.give_back(amounts, clock.now)
        else:
            assert limiter.take_all(amounts) == reference.take_all(amounts, clock.now)


@given(st.sampled_from([3, 7, 10, 50, 100_000]), st.integers(1, 2_000), st.floats(0, 1e6))
def test_a_full_burst_passes_in_unit_steps_at_inexact_rates(
    rate: int, burst: int, start: float
) -> None:
    clock = Clock()
    clock.now = start
    limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
    assert all(limiter.take_all({"u": 1}) is None for _ in range(burst))
    assert limiter.take_all({"u": 1}) == "u"
    fresh = RateLimiter(rate=rate, burst=burst, clock=clock)
    assert fresh.take_all({"v": burst + 1}) == "v"
    assert fresh.take_all({"v": burst}) is None


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate and burst must be positive"):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="per_user_rate: must be >= 0"):
        EventLimits(per_user_rate=-1)


def track(stub: pb_grpc.RecommenderStub, user: str, count: int, prefix: str) -> pb.TrackResponse:
    events = [
        pb.Event(event_id=f"{prefix}{i}", user_id=user, item_id="shoe1", type=pb.VIEW)
        for i in range(count)
    ]
    return stub.Track(pb.TrackRequest(events=events), timeout=10)  # type: ignore[no-any-return]


def test_track_over_a_users_or_a_connections_rate_is_resource_exhausted(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    # Slow refills (one token in 10 s): the test's own duration cannot refill a bucket.
    limits = EventLimits(
        per_user_rate=0.1, per_user_burst=30, per_connection_rate=0.1, per_connection_burst=100
    )
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state", port=0, model_dir=toy_model_dir, event_limits=limits
        )
    )
    try:
        # Own subchannel pools: each channel is its own TCP connection (the limit's key).
        own = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=own) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            assert track(stub, "u1", 30, "a").accepted == 30
            with pytest.raises(grpc.RpcError) as refused:
                track(stub, "u1", 5, "b")
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "user_id 'u1'" in (refused.value.details() or "")
            # Other users still get through, until the connection's budget runs out; the
            # refused batch did not count against it (70 left: 30 + 30 + 10).
            assert track(stub, "u2", 30, "c").accepted == 30
            assert track(stub, "u3", 30, "d").accepted == 30
            assert track(stub, "u6", 10, "g").accepted == 10
            with pytest.raises(grpc.RpcError) as refused:
                track(stub, "u4", 30, "e")
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "connection" in (refused.value.details() or "")
        # A refused call stored nothing.
        stored = {e.event_id for _, e in running.service.store.iter_events()}
        assert not any(i.startswith(("b", "e")) for i in stored)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=own) as other:
            # A new connection has its own budget.
            assert track(pb_grpc.RecommenderStub(other), "u5", 30, "f").accepted == 30
    finally:
        running.stop()


def test_the_event_rate_counts_per_named_caller_not_per_connection(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    """Behind a balancer every connection comes from it: a caller's budget follows its
    token over any number of connections, and another caller has its own."""
    limits = EventLimits(
        per_user_rate=0.1, per_user_burst=1000, per_connection_rate=0.1, per_connection_burst=50
    )
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            event_limits=limits,
            callers={"shop-a": "token-a", "shop-b": "token-b"},
        )
    )
    own = [("grpc.use_local_subchannel_pool", 1)]

    def as_caller(token: str, user: str, count: int, prefix: str) -> pb.TrackResponse:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=own) as channel:
            events = [
                pb.Event(event_id=f"{prefix}{i}", user_id=user, item_id="shoe1", type=pb.VIEW)
                for i in range(count)
            ]
            return pb_grpc.RecommenderStub(channel).Track(  # type: ignore[no-any-return]
                pb.TrackRequest(events=events),
                timeout=10,
                metadata=[("authorization", f"Bearer {token}")],
            )

    try:
        assert as_caller("token-a", "u1", 30, "a").accepted == 30
        assert as_caller("token-a", "u2", 20, "b").accepted == 20  # a new connection
        with pytest.raises(grpc.RpcError) as refused:
            as_caller("token-a", "u3", 5, "c")  # and another: the same caller's budget
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "from this caller" in (refused.value.details() or "")
        assert as_caller("token-b", "u3", 50, "d").accepted == 50  # its own budget
        with pytest.raises(grpc.RpcError) as unknown:
            as_caller("token-c", "u4", 1, "e")
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop()
