"""Replicas: real ``shelfrank serve`` processes over one real PostgreSQL (the throwaway
cluster of tests/postgres.py), the first started with ``--store URL --model DIR``, the
others with ``--store URL`` alone (no state directory). Whatever one accepts, the others
serve at their next call; one trainer is elected, and when it is killed mid-fit another
takes over and every replica follows the model it publishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from shelfrank.client import Client, Event, FeatureFilter, Item, Strategy
from shelfrank.client.errors import UnavailableError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.stores import open_store
from shelfrank.server.trainer_lease import LEASE_NAME
from tests.test_store_contract import new_schema

TRIALS = 300


class Replica:
    """One ``shelfrank serve`` process; its JSON log lines are collected as they come."""

    def __init__(self, *args: str, cache: Path) -> None:
        command = [sys.executable, "-m", "shelfrank.server", "serve", "--port", "0", *args]
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("shelfrank serving on"):
            self.process.kill()
            raise RuntimeError(f"replica did not start: {line!r}")
        self.address = line.split()[-1]
        self.log: list[dict[str, object]] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.log.append(json.loads(line))
            except json.JSONDecodeError:
                self.log.append({"message": line})

    def logged(self, text: str) -> bool:
        return any(text in str(entry.get("message", "")) for entry in list(self.log))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def store_url(postgres_database: str) -> str:
    return new_schema(postgres_database)


@pytest.fixture
def replicas(store_url: str, toy_model_dir: Path, tmp_path: Path) -> Iterator[list[Replica]]:
    cache = tmp_path / "cache"
    with ExitStack() as stack:
        first = Replica("--store", store_url, "--model", str(toy_model_dir), cache=cache)
        stack.callback(first.stop)
        others = []
        for _ in range(2):
            replica = Replica("--store", store_url, cache=cache)
            stack.callback(replica.stop)
            others.append(replica)
        yield [first, *others]


def test_what_one_replica_accepts_the_others_serve_at_their_next_call(
    replicas: list[Replica],
) -> None:
    a, b, c = (Client(r.address) for r in replicas)
    with a, b, c:
        reflected = 0
        for n in range(TRIALS):
            user = f"trial-{n}"
            a.track([Event(user, "shoe1", "view"), Event(user, "shoe3", "view")])
            folded = b.recommend(user, k=5)  # no call in between: no wait, no sync
            assert folded.strategy is Strategy.FOLD_IN
            target = folded.item_ids[0]
            a.track([Event(user, target, "purchase" if n % 2 == 0 else "dismiss")])
            after = b.recommend(user, k=32)
            if target not in after.item_ids and after.strategy is Strategy.FOLD_IN:
                reflected += 1
        print(f"\nTrack on A reflected by Recommend on B: {reflected} of {TRIALS} trials")
        assert reflected == TRIALS

        a.upsert_items([Item("kettle-9000", ["category=kitchen-new"])])
        only_new = c.recommend("u0", k=3, filters=[FeatureFilter(["category=kitchen-new"])])
        assert only_new.item_ids == ("kettle-9000",)

        for client in (a, b, c):
            assert client.recommend("u3", k=3).strategy is Strategy.TRAINED
        assert b.delete_user("u3").existed
        for client in (a, b, c):
            assert client.recommend("u3", k=3).strategy is Strategy.POPULARITY


def _shop_events(users: int, items: int, per_user: int) -> list[StoredEvent]:
    events = []
    for user in range(users):
        for k in range(per_user):
            item = (user * 7 + k * 13) % items
            kind = EventType.PURCHASE if k % 4 == 0 else EventType.VIEW
            events.append(
                StoredEvent(f"e{user}-{k}", f"shopper{user}", f"sku{item}", kind, 1_700_000_000_000)
            )
    return events


def _serving(client: Client) -> str:
    return client.model_info().model_version


def test_one_trainer_is_elected_and_another_takes_over_when_it_is_killed(
    store_url: str, tmp_path: Path
) -> None:
    """Three replicas, no model yet; the store fills with enough events for a first model
    (a full fit: long enough to kill in the middle)."""
    store = open_store(store_url)
    cache = tmp_path / "cache"
    training = ["--retrain-interval", "0.5", "--trainer-lease", "3", "--epochs", "400"]
    with ExitStack() as stack:
        stack.callback(store.close)
        replicas = []
        for _ in range(3):
            replica = Replica("--store", store_url, *training, cache=cache)
            stack.callback(replica.stop)
            replicas.append(replica)
        # Elected once: one holder, and it stays the holder while all three campaign.
        holders = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            holders.add(store.lease_holder(LEASE_NAME))
            time.sleep(0.1)
        holders.discard(None)
        assert len(holders) == 1
        (holder,) = holders
        trainer = next(r for r in replicas if r.process.pid == int(holder.split(":")[1]))
        survivors = [r for r in replicas if r is not trainer]

        store.append_events(_shop_events(users=300, items=200, per_user=20))
        deadline = time.monotonic() + 60
        while not trainer.logged("training on 6000 events"):
            assert time.monotonic() < deadline, "the trainer never started training"
            time.sleep(0.05)
        time.sleep(0.5)  # into the fit (several seconds here)
        trainer.process.kill()  # kill -9, mid-fit
        trainer.process.wait(10)
        assert store.current_model() is None  # killed before publishing: nothing published
        assert not any(r.logged("training on") for r in survivors)  # it was the only one

        deadline = time.monotonic() + 180
        while (current := store.current_model()) is None:
            assert time.monotonic() < deadline, "no other process took over the training"
            time.sleep(0.05)
        published_at = time.monotonic()
        new_holder = store.lease_holder(LEASE_NAME)
        assert new_holder is not None
        assert int(new_holder.split(":")[1]) in {r.process.pid for r in survivors}
        lags = []
        for replica in survivors:
            with Client(replica.address) as client:
                while _serving(client) != current.version:
                    assert time.monotonic() - published_at < 5, "a replica did not follow"
                    time.sleep(0.05)
                lags.append(time.monotonic() - published_at)
        print(f"\nreplicas serving the new model {max(lags):.2f} s after its publication")
        late = Replica("--store", store_url, cache=tmp_path / "late-cache")
        stack.callback(late.stop)
        with Client(late.address) as client:
            assert _serving(client) == current.version  # at once: its first call


TRACKER = """
import json, sys, time
from shelfrank.client import Client, Event
from shelfrank.client.errors import ServiceError

name, batches, addresses = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
acknowledged, duplicates, failed_calls = [], 0, 0
print("ready", flush=True)
with Client(addresses, timeout=20) as client:
    for batch in range(batches):
        events = [
            Event(f"{name}-user{k % 7}", f"sku{k % 40}", "view", event_id=f"{name}-{batch}-{k}")
            for k in range(50)
        ]
        for attempt in range(5):  # the channel retries UNAVAILABLE; this covers the rest
            try:
                result = client.track(events)
                break
            except ServiceError:
                failed_calls += 1
                time.sleep(0.2)
        else:
            sys.exit(f"batch {batch} never acknowledged")
        acknowledged += [e.event_id for e in events]
        duplicates += result.duplicates
print(json.dumps({"acknowledged": acknowledged, "duplicates": duplicates,
                  "failed_calls": failed_calls}), flush=True)
"""


def test_killing_one_of_three_replicas_loses_no_acknowledged_event(
    replicas: list[Replica], store_url: str
) -> None:
    addresses = [r.address for r in replicas]
    trackers = [
        subprocess.Popen(
            [sys.executable, "-c", TRACKER, f"client{n}", "120", *addresses],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        for tracker in trackers:
            assert tracker.stdout is not None
            assert tracker.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the clients are tracking through all three
        victim = replicas[1]
        victim.process.kill()  # kill -9 while batches are in flight
        victim.process.wait(10)
        reports = []
        for tracker in trackers:
            out, _ = tracker.communicate(timeout=300)
            assert tracker.returncode == 0  # every client finished
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for tracker in trackers:
            if tracker.poll() is None:
                tracker.kill()
    acknowledged = {event_id for report in reports for event_id in report["acknowledged"]}
    store = open_store(store_url)
    try:
        stored = {event.event_id for _, event in store.iter_events()}
    finally:
        store.close()
    lost = acknowledged - stored
    duplicates = sum(report["duplicates"] for report in reports)
    failed = sum(report["failed_calls"] for report in reports)
    print(
        f"\n{len(acknowledged)} events acknowledged by 3 replicas (one killed mid-load),"
        f" {len(lost)} lost, {duplicates} duplicates reported, {failed} calls failed after"
        " the channel's retries and were sent again"
    )
    assert len(acknowledged) == 4 * 120 * 50
    assert lost == set()


def test_a_replica_rides_out_the_database_going_away(
    crashable_postgres: tuple[Any, str], toy_model_dir: Path, tmp_path: Path
) -> None:
    """PostgreSQL dies under a serving replica: Track answers UNAVAILABLE (never an
    acknowledgement without a commit), Recommend and SimilarItems keep answering from the
    model and catalogue in memory (without personal data: the store would have to confirm
    it), and when the database is back everything works again without a restart."""
    cluster, url = crashable_postgres
    replica = Replica("--store", url, "--model", str(toy_model_dir), cache=tmp_path / "cache")
    try:
        with Client(replica.address, max_attempts=1, timeout=10) as client:
            assert client.recommend("u0", k=3).strategy is Strategy.TRAINED
            cluster.crash()
            with pytest.raises(UnavailableError):
                client.track([Event("u0", "shoe1", "purchase", event_id="while-down")])
            degraded = client.recommend("u0", k=3)
            assert degraded.strategy is Strategy.POPULARITY
            assert len(degraded.item_ids) == 3
            assert client.similar_items("shoe1", k=3).item_ids
            cluster.restart()
            deadline = time.monotonic() + 60
            while True:
                try:
                    stored = client.track([Event("u0", "shoe1", "purchase", event_id="back")])
                    break
                except UnavailableError:
                    assert time.monotonic() < deadline, "the store never came back"
                    time.sleep(0.2)
            assert stored.accepted == 1
            back = client.recommend("u0", k=32)
            assert back.strategy is Strategy.TRAINED
            assert "shoe1" not in back.item_ids  # the purchase made after the return counts
        store = open_store(url)
        try:
            ids = {event.event_id for _, event in store.iter_events()}
        finally:
            store.close()
        assert ids == {"back"}  # the refused Track stored nothing
    finally:
        replica.stop()
