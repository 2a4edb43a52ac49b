"""AsyncClient parity with Client, run with asyncio.run (no pytest-asyncio needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shelfrank.client import (
    AsyncClient,
    ClientClosedError,
    DeadlineExceededError,
    DeleteResult,
    Event,
    EventError,
    FailedPreconditionError,
    FeatureFilter,
    FeedbackReport,
    Impression,
    InvalidInputError,
    Item,
    NotFoundError,
    Rate,
    Recommendations,
    ScoredItem,
    ShownResult,
    Strategy,
    User,
)
from tests.test_client_servicer import RecordingServicer, serving
from tests.test_client_sync import FeedbackServicer, running_real_server


@pytest.fixture
def servicer() -> RecordingServicer:
    return RecordingServicer()


@pytest.fixture
def target(servicer: RecordingServicer) -> Iterator[str]:
    with serving(servicer) as address:
        yield address


def test_recommend_translation(target: str, servicer: RecordingServicer) -> None:
    async def scenario() -> Recommendations:
        async with AsyncClient(target, token="s3cret") as client:
            return await client.recommend(
                "user-1",
                2,
                exclude_item_ids=["i1"],
                filters=[FeatureFilter(["category=shoes"])],
                exclude_features=["brand=acme"],
                exclude_seen=False,
                user_features=["segment=runner"],
            )

    result = asyncio.run(scenario())

    (sent,) = servicer.requests["Recommend"]
    assert (sent.user_id, sent.k, list(sent.exclude_item_ids)) == ("user-1", 2, ["i1"])
    assert [list(f.any_of) for f in sent.filters] == [["category=shoes"]]
    assert list(sent.exclude_features) == ["brand=acme"]
    assert sent.HasField("exclude_seen")
    assert sent.exclude_seen is False
    assert list(sent.user_features) == ["segment=runner"]
    assert servicer.metadata["Recommend"][0]["authorization"] == "Bearer s3cret"
    assert result == Recommendations(
        items=(ScoredItem("user-1-pick0", 1.0), ScoredItem("user-1-pick1", 0.875)),
        model_version="model-7",
        recommendation_id="rec-1",
        strategy=Strategy.FOLD_IN,
    )


def test_every_method_works(target: str, servicer: RecordingServicer) -> None:
    async def scenario() -> None:
        async with AsyncClient(target) as client:
            similar = await client.similar_items("item-9", 1)
            assert similar.item_ids == ("like-item-9-0",)
            ranked = await client.rank("user-1", ["a", "b"], user_features=["x=y"])
            assert ranked.item_ids == ("b", "a")
            assert await client.upsert_items([Item("i1", ["category=shoes"])]) == 1
            assert await client.upsert_users([User("u1", ["segment=runner"])]) == 1
            assert await client.delete_user("known-user") == DeleteResult(True, 12)
            assert (await client.model_info()).users == 3_000_000_000

    asyncio.run(scenario())

    assert list(servicer.requests["Rank"][0].user_features) == ["x=y"]
    assert list(servicer.requests["UpsertItems"][0].items[0].features) == ["category=shoes"]
    assert servicer.requests["UpsertUsers"][0].users[0].user_id == "u1"


def test_track_batches_and_shifts_indices(target: str, servicer: RecordingServicer) -> None:
    events = [Event("user", "bad" if n == 10_001 else f"item-{n}") for n in range(12_000)]

    async def scenario() -> None:
        async with AsyncClient(target) as client:
            result = await client.track(events)
            assert result.accepted == 11_999
            assert result.errors == (EventError(10_001, "item_id: bad"),)

    asyncio.run(scenario())
    assert [len(r.events) for r in servicer.requests["Track"]] == [10_000, 2_000]


def test_errors_retries_and_deadlines(target: str, servicer: RecordingServicer) -> None:
    servicer.fail("SimilarItems", grpc.StatusCode.NOT_FOUND, "item_id: unknown")
    servicer.fail("Recommend", grpc.StatusCode.UNAVAILABLE, "restarting", times=2)
    servicer.stall("Rank", 2.0)

    async def scenario() -> None:
        async with AsyncClient(target) as client:
            with pytest.raises(NotFoundError, match="item_id: unknown") as caught:
                await client.similar_items("nope")
            assert caught.value.method == "SimilarItems"

            assert (await client.recommend("user-1", 1)).item_ids == ("user-1-pick0",)

            # The call stalls for 2 s: an error (not an answer) means the deadline held.
            with pytest.raises(DeadlineExceededError):
                await client.rank("user-1", ["a"], timeout=0.5)

    asyncio.run(scenario())
    assert servicer.attempts["SimilarItems"] == 1
    assert servicer.attempts["Recommend"] == 3


def test_validation_happens_before_any_rpc(target: str, servicer: RecordingServicer) -> None:
    async def scenario() -> None:
        async with AsyncClient(target) as client:
            with pytest.raises(InvalidInputError, match=r"^k:"):
                await client.recommend("user-1", 0)
            with pytest.raises(InvalidInputError, match=r"^timeout:"):
                await client.model_info(timeout=-1)

    asyncio.run(scenario())
    assert not servicer.attempts


def test_constructed_outside_a_loop_then_used_inside_one(
    target: str, servicer: RecordingServicer
) -> None:
    """The channel opens on the first call, so module-level construction works."""
    client = AsyncClient(target)

    async def scenario() -> None:
        async with client:
            await client.model_info()

    asyncio.run(scenario())
    assert servicer.attempts["GetModelInfo"] == 1


def test_a_second_event_loop_is_refused_clearly(target: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(target) as client:
            await client.model_info()  # binds the client to this loop
            with pytest.raises(RuntimeError, match="another event loop"):
                await asyncio.to_thread(asyncio.run, client.model_info())

    asyncio.run(scenario())


def test_closed_client_refuses_calls(target: str, servicer: RecordingServicer) -> None:
    async def scenario() -> None:
        client = AsyncClient(target)
        await client.model_info()
        await client.close()
        await client.close()
        with pytest.raises(ClientClosedError):
            await client.model_info()

    asyncio.run(scenario())
    assert servicer.attempts["GetModelInfo"] == 1


# --- the feedback loop ---------------------------------------------------------------------


def test_feedback_methods_mirror_the_sync_client() -> None:
    servicer = FeedbackServicer()

    async def scenario(
        target: str,
    ) -> tuple[Recommendations, ShownResult, ShownResult, FeedbackReport]:
        async with AsyncClient(target) as client:
            many = [Impression(f"device-{n}", ["a"], user_id="u1") for n in range(10_001)]
            reported = await client.report_shown(many)
            assert await client.report_shown([]) == ShownResult(0, 0)
            recs = await client.recommend("user-1", 3)
            shown = await client.shown(recs, recs.item_ids[1:], user_id="user-1")
            with pytest.raises(InvalidInputError, match=r"^item_ids\[0\]:"):
                await client.shown(recs, ["elsewhere"])
            report = await client.report("home", from_ms=1, to_ms=2)
            with pytest.raises(NotFoundError):
                await client.report("missing")
            servicer.fail("ReportShown", grpc.StatusCode.FAILED_PRECONDITION, "no impressions")
            with pytest.raises(FailedPreconditionError):
                await client.report_shown([Impression("r", ["a"])])
            return recs, reported, shown, report

    with serving(servicer) as target:
        recs, reported, shown, report = asyncio.run(scenario(target))

    assert reported == ShownResult(accepted=10_001, duplicates=0)
    assert [len(r.impressions) for r in servicer.requests["ReportShown"][:2]] == [10_000, 1]
    assert (recs.variant, recs.experiment) == ("pop", "home")
    assert shown == ShownResult(accepted=1, duplicates=0)
    sent = servicer.requests["ReportShown"][2].impressions[0]
    assert (sent.recommendation_id, list(sent.item_ids)) == (
        recs.recommendation_id,
        list(recs.item_ids[1:]),
    )
    assert (sent.surface, sent.variant, sent.experiment) == ("recommend", "pop", "home")
    (sent_report,) = servicer.requests["GetReport"][:1]
    assert (sent_report.experiment, sent_report.from_ms, sent_report.to_ms) == ("home", 1, 2)
    assert report.experiments[0].variants[0].ctr == Rate(0.25, 0.05, 0.7)


@pytest.fixture
def real_server(toy_model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    with running_real_server(toy_model_dir, tmp_path) as running:
        yield running


def test_the_feedback_loop_against_the_real_server(real_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncClient(f"127.0.0.1:{real_server.port}") as client:
            recs = await client.recommend("u3", k=3)
            assert recs.experiment == "home"
            assert await client.shown(recs, user_id="u3") == ShownResult(1, 0)
            await client.track(
                [
                    Event(
                        "u3",
                        recs.item_ids[1],
                        "purchase",
                        recommendation_id=recs.recommendation_id,
                        position=2,
                    )
                ]
            )
            report = await client.report()
            (experiment,) = report.experiments
            served = {v.name: v for v in experiment.variants}[recs.variant]
            assert (served.impressions, served.purchases) == (1, 1)
            assert json.loads(report.json)

    asyncio.run(scenario())
