"""Ingest throughput and freshness (issue 5), measured against the store's own floor.

Throughput, batches of 500 events, every batch a durable commit (WAL, synchronous=FULL).
Every figure inserts the same rows into a copy of the same starting store (the shop's
catalogue and history already in it), because SQLite's insert rate falls as the indexes
grow (about 2.5x between 0 and 400k stored events with default settings):

- floor: raw ``sqlite3`` ``executemany`` of those rows, one commit per batch, with the
  store's schema, indexes and pragmas, plus the store's bulk merge of the user index in
  plain SQL at the same interval (the SQL the store cannot avoid); measured before and
  after the server on fresh copies, the mean is the floor. The same without the merge is
  reported beside it (``insert_only_floor``);
- store: ``SQLiteStore.append_events`` in-process (duplicate check, one transaction);
- server: ``Track`` over gRPC to a server in a child process, first 1 client thread, then 4
  (raw stubs with prebuilt requests, so the figure is the server's, not the client's).
  The floor and store figures run the same two phases in the same order.

Event ids are made by the SDK's generator (time-ordered, as the client and edge send
them); ``--ids random`` uses uuid4 hex instead, as a client with its own random ids would.

Freshness: Recommend right after a Track for the same user (the event must already count:
read-your-writes, no extra calls) against Recommend for users with nothing new; the added
latency is the cost of folding the new event in.

    python benchmarks/ingest.py [--events 100000] [--ids sdk|random] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
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

from shelfrank.core.events import EventType, StoredEvent, new_event_id
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.store import (
    WAL_CHECKPOINT_PAGES,
    WAL_SIZE_LIMIT_BYTES,
    WRITER_CACHE_KIB,
    SQLiteStore,
)
from shelfrank.server.user_events import MERGE_EVERY, merge, merged_upto

BATCH = 500
INSERT = (
    "INSERT INTO events (event_id, user_id, item_id, event_type, timestamp_ms, session_id,"
    " query, recommendation_id, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


ID_MAKERS: dict[str, Callable[[], str]] = {
    "sdk": new_event_id,
    "random": lambda: uuid.uuid4().hex,
}


def synthetic_events(
    count: int, users: int, items: int, seed: int, make_id: Callable[[], str]
) -> list[StoredEvent]:
    rng = np.random.default_rng(seed)
    user_rows = rng.integers(0, users, count)
    item_rows = rng.integers(0, items, count)
    kinds = rng.choice([1, 2, 3, 4], count, p=[0.7, 0.15, 0.1, 0.05])
    now = int(time.time() * 1000)
    return [
        StoredEvent(make_id(), f"u{u:06d}", f"i{it:07d}", EventType(int(k)), now - count + i)
        for i, (u, it, k) in enumerate(zip(user_rows, item_rows, kinds, strict=True))
    ]


def batches(events: list[StoredEvent]) -> list[list[StoredEvent]]:
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def raw_floor(
    path: Path, phases: list[list[StoredEvent]], *, merge_user_index: bool = True
) -> list[float]:
    """Events/s per phase of bare executemany + commit per batch, into the store at ``path``
    (already holding the store's schema and data) with the store's writer pragmas; with
    ``merge_user_index``, the store's bulk merge of the user index in the same commit
    whenever MERGE_EVERY events have arrived since the last one, as the store does it."""
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    for pragma in (
        "synchronous=FULL",
        "secure_delete=ON",
        f"cache_size=-{WRITER_CACHE_KIB}",
        f"wal_autocheckpoint={WAL_CHECKPOINT_PAGES}",
        f"journal_size_limit={WAL_SIZE_LIMIT_BYTES}",
    ):
        connection.execute(f"PRAGMA {pragma}")
    rates = []
    upto = merged_upto(connection)
    for events in phases:
        rows = [
            (e.event_id, e.user_id, e.item_id, int(e.event_type), e.timestamp_ms, "", "", "", 0)
            for e in events
        ]
        tick = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            connection.executemany(INSERT, rows[start : start + BATCH])
            if merge_user_index:
                last = connection.execute("SELECT MAX(seq) FROM events").fetchone()[0]
                if last - upto >= MERGE_EVERY:
                    merge(connection, upto, last)
                    upto = last
            connection.commit()
        rates.append(len(rows) / (time.perf_counter() - tick))
    connection.close()
    return rates


def store_rate(path: Path, phases: list[list[StoredEvent]]) -> list[float]:
    store = SQLiteStore(path)
    rates = []
    for events in phases:
        tick = time.perf_counter()
        for batch in batches(events):
            store.append_events(batch)
        rates.append(len(events) / (time.perf_counter() - tick))
    store.close()
    return rates


def copy_store(state_dir: Path, target: Path) -> Path:
    """A copy of the (closed) store in ``state_dir``: the same starting point for a floor."""
    target.mkdir()
    shutil.copy2(state_dir / "events.sqlite3", target / "events.sqlite3")
    return target / "events.sqlite3"


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


# -- report -------------------------------------------------------------------------------------
BARS = (
    ("events_per_s", "Track (server)", "tab:blue"),
    ("store_events_per_s", "store in-process", "tab:green"),
    ("raw_floor_events_per_s", "raw floor (with merge)", "tab:gray"),
    ("insert_only_floor_events_per_s", "raw inserts only", "lightgray"),
)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["server_track"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(BARS)
    for offset, (key, label, color) in enumerate(BARS):
        xs = [i + (offset - (len(BARS) - 1) / 2) * width for i in range(len(points))]
        ax.bar(xs, [p[key] / 1000 for p in points], width, label=label, color=color)
    ax.axhline(50, color="tab:red", linestyle="--", linewidth=1, label="target: 50k/s")
    ax.set_xticks(range(len(points)), [f"{p['clients']} client(s)" for p in points])
    ax.set_ylabel("thousand events/s (batches of 500, durable)")
    ax.set_title(f"Ingest, {result['settings']['event_ids']} event ids")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| clients | " + " | ".join(label for _, label, _ in BARS) + " | Track / floor "
        "| batch p50 / p99 ms |",
        "|---:|" + "---:|" * (len(BARS) + 2),
    ]
    for p in result["server_track"]:
        rates = " | ".join(f"{p[key]:,.0f}/s" for key, _, _ in BARS)
        lines.append(
            f"| {p['clients']} | {rates} | {p['server_vs_raw']:.0%} "
            f"| {p['batch_p50_ms']:.1f} / {p['batch_p99_ms']:.1f} |"
        )
    fresh = result["freshness"]
    lines += [
        "",
        f"Freshness: {fresh['reflected_without_extra_calls']}/{fresh['calls']} reflected with "
        f"no extra call; Recommend right after Track +{fresh['added_p50_ms']:.2f} ms p50 "
        f"({fresh['ratio_p50']:.2f}x steady).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--freshness-calls", type=int, default=300)
    parser.add_argument("--ids", choices=sorted(ID_MAKERS), default="sdk")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/ingest.json")
    parser.add_argument("--plot", default="benchmarks/results/ingest.png")
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
        "settings": {
            "events": args.events,
            "batch": BATCH,
            "durability": "WAL, FULL",
            "event_ids": args.ids,
            "user_index_merge_every": MERGE_EVERY,
        },
    }
    client_counts = (1, 4)
    with tempfile.TemporaryDirectory(prefix="shelfrank-ingest-") as tmp:
        root = Path(tmp)
        state_dir, model_dir = root / "state", root / "model"
        state_dir.mkdir()
        watermark = prepare_state(state_dir, shop)
        write_model(model_dir, base, hybrid, watermark)
        phases = [
            synthetic_events(args.events, 10_000, 100_000, 10 + c, ID_MAKERS[args.ids])
            for c in client_counts
        ]
        names = ("before", "store", "after", "insert-only")
        copies = {name: copy_store(state_dir, root / name) for name in names}
        floors = [raw_floor(copies["before"], phases)]
        insert_only = raw_floor(copies["insert-only"], phases, merge_user_index=False)
        stores = store_rate(copies["store"], phases)
        with child_server(serve, str(state_dir), str(model_dir), {}) as (target, _):
            server = [
                server_rate(target, track_requests(events), clients)
                for clients, events in zip(client_counts, phases, strict=True)
            ]
            users = list(base.user_ids.ids)
            items = list(base.item_ids.ids)
            result["freshness"] = freshness(target, users, items, args.freshness_calls)
        floors.append(raw_floor(copies["after"], phases))
    floor = [float(np.mean(pair)) for pair in zip(*floors, strict=True)]
    for point, phase_floor, phase_store, phase_insert in zip(
        server, floor, stores, insert_only, strict=True
    ):
        point["raw_floor_events_per_s"] = round(phase_floor, 1)
        point["insert_only_floor_events_per_s"] = round(phase_insert, 1)
        point["store_events_per_s"] = round(phase_store, 1)
        point["server_vs_raw"] = round(point["events_per_s"] / phase_floor, 3)
    result["server_track"] = server
    result["raw_floor_runs"] = [[round(r, 1) for r in run] for run in floors]
    best = max(server, key=lambda point: point["events_per_s"])
    result["targets"] = {
        "server_events_per_s": {"value": best["events_per_s"], "target": ">= 50000"},
        "server_vs_raw": {"value": best["server_vs_raw"], "target": ">= 0.5"},
        "store_vs_raw": {
            "value": round(best["store_events_per_s"] / best["raw_floor_events_per_s"], 3)
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    plot(result, Path(args.plot))
    print(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
