"""Ingest throughput and freshness (issue 5), measured against the store's own floor.

Throughput, batches of 500 events, every batch a durable commit (WAL, synchronous=FULL):

- floor: raw ``sqlite3`` ``executemany`` of the same rows into the same schema, one commit
  per batch (what the store cannot beat);
- store: ``EventStore.append_events`` in-process (duplicate check, one transaction);
- server: ``Track`` over gRPC to a server in a child process, from 1 and 4 client threads
  (raw stubs with prebuilt requests, so the figure is the server's, not the client's).

Freshness: Recommend right after a Track for the same user (the event must already count:
read-your-writes, no extra calls) against Recommend for users with nothing new; the added
latency is the cost of folding the new event in.

    python benchmarks/ingest.py [--events 100000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from machine import machine_description
from serving import (
    CHANNEL_OPTIONS,
    child_server,
    prepare_state,
    serve,
    train_base,
    write_model,
)

from shelfrank.client._proto import recommender_pb2 as pb
from shelfrank.client._proto import recommender_pb2_grpc as pb_grpc
from shelfrank.core.events import EventType
from shelfrank.server.store import EventStore, StoredEvent

BATCH = 500
INSERT = (
    "INSERT INTO events (event_id, user_id, item_id, event_type, timestamp_ms, session_id,"
    " query) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def synthetic_events(count: int, users: int, items: int, seed: int, tag: str) -> list[StoredEvent]:
    rng = np.random.default_rng(seed)
    user_rows = rng.integers(0, users, count)
    item_rows = rng.integers(0, items, count)
    kinds = rng.choice([1, 2, 3, 4], count, p=[0.7, 0.15, 0.1, 0.05])
    now = int(time.time() * 1000)
    return [
        StoredEvent(f"{tag}-{i:09d}", f"u{u:06d}", f"i{it:07d}", EventType(int(k)), now - count + i)
        for i, (u, it, k) in enumerate(zip(user_rows, item_rows, kinds, strict=True))
    ]


def batches(events: list[StoredEvent]) -> list[list[StoredEvent]]:
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def raw_floor(path: Path, events: list[StoredEvent]) -> float:
    """Events/s of bare executemany + commit per batch into the store's schema."""
    EventStore(path).close()  # the same schema, indexes and pragmas
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA secure_delete=ON")
    rows = [
        (e.event_id, e.user_id, e.item_id, int(e.event_type), e.timestamp_ms, "", "")
        for e in events
    ]
    tick = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        connection.executemany(INSERT, rows[start : start + BATCH])
        connection.commit()
    elapsed = time.perf_counter() - tick
    connection.close()
    return len(rows) / elapsed


def store_rate(path: Path, events: list[StoredEvent]) -> float:
    store = EventStore(path)
    tick = time.perf_counter()
    for batch in batches(events):
        store.append_events(batch)
    elapsed = time.perf_counter() - tick
    store.close()
    return len(events) / elapsed


def track_requests(events: list[StoredEvent]) -> list[pb.TrackRequest]:
    return [
        pb.TrackRequest(
            events=[
                pb.Event(
                    event_id=e.event_id,
                    user_id=e.user_id,
                    item_id=e.item_id,
                    type=int(e.event_type),  # type: ignore[arg-type]
                    timestamp_ms=e.timestamp_ms,
                )
                for e in batch
            ]
        )
        for batch in batches(events)
    ]


def server_rate(target: str, requests: list[pb.TrackRequest], clients: int) -> dict[str, Any]:
    channels = [grpc.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(clients)]
    stubs = [pb_grpc.RecommenderStub(c) for c in channels]
    accepted = [0] * clients
    latencies: list[float] = []

    def run(index: int) -> None:
        for request in requests[index::clients]:
            tick = time.perf_counter()
            response = stubs[index].Track(request, timeout=60)
            latencies.append(time.perf_counter() - tick)
            accepted[index] += response.accepted

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    tick = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - tick
    for channel in channels:
        channel.close()
    total = sum(len(r.events) for r in requests)
    if sum(accepted) != total:
        raise RuntimeError(f"server accepted {sum(accepted)} of {total} events")
    return {
        "clients": clients,
        "events_per_s": round(total / elapsed, 1),
        "batch_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "batch_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
    }


def freshness(target: str, users: list[str], items: list[str], calls: int) -> dict[str, Any]:
    """Recommend latency right after Track for the same user vs for an untouched user."""
    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    stub = pb_grpc.RecommenderStub(channel)
    after, steady = [], []
    reflected = 0
    for i in range(calls):
        user, other = users[(2 * i) % len(users)], users[(2 * i + 1) % len(users)]
        before = stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
        # Buying the top recommendation must remove it from the very next response.
        item = before.items[0].item_id if before.items else items[i % len(items)]
        stub.Track(
            pb.TrackRequest(
                events=[
                    pb.Event(event_id=f"fresh-{i}", user_id=user, item_id=item, type=pb.PURCHASE)
                ]
            ),
            timeout=10,
        )
        tick = time.perf_counter()
        response = stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
        after.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        stub.Recommend(pb.RecommendRequest(user_id=other, k=10), timeout=10)
        steady.append(time.perf_counter() - tick)
        if item not in {s.item_id for s in response.items}:
            reflected += 1
    channel.close()
    after_p50 = float(np.percentile(after, 50)) * 1000
    steady_p50 = float(np.percentile(steady, 50)) * 1000
    return {
        "calls": calls,
        "recommend_after_track_p50_ms": round(after_p50, 3),
        "recommend_steady_p50_ms": round(steady_p50, 3),
        "added_p50_ms": round(after_p50 - steady_p50, 3),
        "ratio_p50": round(after_p50 / steady_p50, 3),
        "reflected_without_extra_calls": reflected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--freshness-calls", type=int, default=300)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/ingest.json")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.freshness_calls = 5_000, 20
    shape = {"items": 400, "users": 300, "events": 5_000, "epochs": 1}
    if not args.smoke:
        shape = {"items": 1682, "users": 943, "events": 100_000, "epochs": 2}
    shop, hybrid = train_base(**shape)
    base = hybrid.to_serving()
    result: dict[str, Any] = {
        "machine": machine_description(),
        "settings": {"events": args.events, "batch": BATCH, "durability": "WAL, FULL"},
    }
    with tempfile.TemporaryDirectory(prefix="shelfrank-ingest-") as tmp:
        root = Path(tmp)
        floors, stores = [], []
        for round_ in range(2):  # alternate, so drift hits both alike
            events = synthetic_events(args.events, 10_000, 100_000, round_, f"r{round_}")
            floors.append(raw_floor(root / f"raw-{round_}.sqlite3", events))
            stores.append(store_rate(root / f"store-{round_}.sqlite3", events))
        floor = float(np.median(floors))
        result["raw_executemany_events_per_s"] = round(floor, 1)
        result["store_append_events_per_s"] = round(float(np.median(stores)), 1)

        state_dir, model_dir = root / "state", root / "model"
        state_dir.mkdir()
        watermark = prepare_state(state_dir, shop)
        write_model(model_dir, base, hybrid, watermark)
        with child_server(serve, str(state_dir), str(model_dir), {}) as (target, _):
            server = []
            for clients in (1, 4):
                events = synthetic_events(args.events, 10_000, 100_000, 10 + clients, f"s{clients}")
                server.append(server_rate(target, track_requests(events), clients))
            result["server_track"] = server
            users = list(base.user_ids.ids)
            items = list(base.item_ids.ids)
            result["freshness"] = freshness(target, users, items, args.freshness_calls)
    best = max(s["events_per_s"] for s in result["server_track"])
    result["targets"] = {
        "server_events_per_s": {"value": best, "target": ">= 50000"},
        "server_vs_raw": {"value": round(best / floor, 3), "target": ">= 0.5"},
        "store_vs_raw": {"value": round(result["store_append_events_per_s"] / floor, 3)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
