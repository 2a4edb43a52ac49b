"""Scale-out (issue 15): Recommend calls/s and p50/p99 for one server process, for
``--workers N`` on one port, and for 1, 2, 4 ... replicas over one shared store, under
the same load generator in one run; the database's share of each call.

Every deployment is the real ``shelfrank serve`` command in child processes, serving the
same model (a hybrid model trained on the ml-100k-sized synthetic shop of
``benchmarks/catalogues.py``, its events stored) from the same store: the SQLite file of a
state directory by default, or the PostgreSQL database ``--store`` names (replicas then
share nothing but it). Load: ``LOAD_PROCESSES`` client processes (each its own GIL, at
nice ``LOAD_NICENESS``), the clients split evenly over them, each client its own
connection, started together at a barrier and calling back to back for ``--duration``
seconds: Recommend(k=10) for known users, and gRPC's health Check on the same deployment
(the floor: what a call costs with no work in it). Replicas are given the clients round
robin. Deployments alternate ``--rounds`` times; medians are reported.

Database share (PostgreSQL only; SQLite runs inside the server processes): the CPU seconds
the database's processes used during a point per call, against the CPU seconds of the
server processes per call; and the database transactions per call (``pg_stat_database``;
each statement outside a transaction is one).

    python benchmarks/replicas.py [--store postgresql://...] [--replicas 1,2] [--workers 2]
                                  [--clients 32] [--duration 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from catalogues import shape_for, trained_model  # benchmarks/catalogues.py
from grpc_health.v1 import health_pb2, health_pb2_grpc
from machine import (  # benchmarks/machine.py
    children_of,
    cpu_seconds,
    machine_description,
    serve_process,
)

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.stores import open_store

LOAD_PROCESSES = 4
# The load processes share the machine's cores with the servers; at nice 10 they take
# only what the servers leave (callers run on other machines in production). Every
# deployment is measured alike (benchmarks/overload.py does the same).
LOAD_NICENESS = 10
K = 10
TRACK_BATCH = 500  # events per Track call in the ingest points
TRACK_BATCHES = 400  # prebuilt per client: enough for 8 clients at 200k events/s for 8 s
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


# -- deployments ---------------------------------------------------------------------------------
class Deployment:
    """``shelfrank serve`` processes; ``addresses`` to spread clients over."""

    def __init__(self, name: str, commands: list[list[str]], env: dict[str, str]) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []
        for command in commands:
            try:
                process, address = serve_process(command, env=env)
            except RuntimeError as exc:
                raise RuntimeError(f"{name}: {exc}") from None
            self.processes.append(process)
            self.addresses.append(address)

    def pids(self) -> list[int]:
        """Every server process (a supervisor's workers included)."""
        found = []
        for process in self.processes:
            found.append(process.pid)
            found += children_of(process.pid)
        return found

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def postgres_pids() -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


# -- load ----------------------------------------------------------------------------------------
def load_part(
    addresses: list[str],
    method: str,
    users: list[str],
    clients: list[int],
    seconds: float,
    ready: Any,
    results: Any,
) -> None:
    """One load process: a thread per client index in ``clients``, each on its own
    connection to ``addresses[index % len]``, calling back to back for ``seconds`` once
    every process is connected (``ready``)."""
    os.nice(LOAD_NICENESS)
    channels = {
        index: grpc.insecure_channel(addresses[index % len(addresses)], options=CHANNEL_OPTIONS)
        for index in clients
    }
    for channel in channels.values():
        grpc.channel_ready_future(channel).result(timeout=60)
    # Track batches are built before the start: the figure is the server's, not the client's.
    track_batches = {
        index: [new_batch(f"{os.getpid()}-{index}-{b}", users) for b in range(TRACK_BATCHES)]
        if method == "track"
        else []
        for index in clients
    }
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    ready.wait(timeout=300)
    end = time.time() + seconds

    def client(index: int) -> None:
        nonlocal failures
        channel = channels[index]
        if method == "health":
            health = health_pb2_grpc.HealthStub(channel)
            request: Any = health_pb2.HealthCheckRequest()

            def call(n: int) -> object:
                return health.Check(request, timeout=30)
        elif method == "track":
            tracker = pb_grpc.RecommenderStub(channel)
            batches = track_batches[index]

            def call(n: int) -> object:
                if not batches:
                    raise RuntimeError("out of prebuilt Track batches: raise TRACK_BATCHES")
                return tracker.Track(batches.pop(), timeout=60)
        else:
            stub = pb_grpc.RecommenderStub(channel)
            requests = [pb.RecommendRequest(user_id=user, k=K) for user in users]

            def call(n: int) -> object:
                return stub.Recommend(requests[n % len(requests)], timeout=30)

        mine: list[float] = []
        n = index * 7919
        lost = 0
        while time.time() < end:
            start = time.perf_counter()
            try:
                call(n)
                mine.append(time.perf_counter() - start)
            except (grpc.RpcError, RuntimeError):
                lost += 1
                if method == "track" and not track_batches[index]:
                    break
            n += 1
        with lock:
            latencies.extend(mine)
            failures += lost

    threads = [threading.Thread(target=client, args=(index,)) for index in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((latencies, failures))
    for channel in channels.values():
        channel.close()


def new_batch(prefix: str, users: list[str]) -> pb.TrackRequest:
    """TRACK_BATCH new events (ids never used before), users and items spread."""
    return pb.TrackRequest(
        events=[
            pb.Event(
                event_id=f"{prefix}-{k}",
                user_id=users[(zlib.crc32(prefix.encode()) + k * 31) % len(users)],
                item_id=f"sku{(k * 13) % 1682}",
                type=pb.VIEW,
                timestamp_ms=1_700_000_000_000 + k,
            )
            for k in range(TRACK_BATCH)
        ]
    )


def measure(
    deployment: Deployment,
    method: str,
    users: list[str],
    clients: int,
    seconds: float,
    store_url: str | None,
) -> dict[str, Any]:
    context = mp.get_context("spawn")
    ready = context.Barrier(LOAD_PROCESSES + 1)
    results = context.Queue()
    parts = [list(range(p, clients, LOAD_PROCESSES)) for p in range(LOAD_PROCESSES)]
    workers = [
        context.Process(
            target=load_part,
            args=(deployment.addresses, method, users, part, seconds, ready, results),
        )
        for part in parts
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=300)
    pids = deployment.pids()
    db_pids = postgres_pids() if store_url else []
    server_before, db_before = cpu_seconds(pids), cpu_seconds(db_pids)
    xacts_before = database_transactions(store_url)
    started = time.perf_counter()
    latencies: list[float] = []
    failures = 0
    for _ in workers:
        part, lost = results.get(timeout=seconds + 180)
        latencies += part
        failures += lost
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    calls = len(latencies)
    ms = np.array(latencies) * 1000
    point: dict[str, Any] = {
        "calls_per_s": calls / seconds,
        "events_per_s": calls * TRACK_BATCH / seconds if method == "track" else None,
        "p50_ms": float(np.percentile(ms, 50)) if calls else None,
        "p99_ms": float(np.percentile(ms, 99)) if calls else None,
        "failures": failures,
        "server_cpu_ms_per_call": (cpu_seconds(pids) - server_before) * 1000 / max(calls, 1),
        "elapsed_s": elapsed,
    }
    if store_url:
        point["db_cpu_ms_per_call"] = (cpu_seconds(db_pids) - db_before) * 1000 / max(calls, 1)
        point["db_transactions_per_call"] = (database_transactions(store_url) - xacts_before) / max(
            calls, 1
        )
    return point


def database_transactions(store_url: str | None) -> int:
    if not store_url:
        return 0
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


# -- the raw floor of ingest --------------------------------------------------------------------
RAW_TABLE_SQLITE = """
CREATE TABLE IF NOT EXISTS raw_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, event_type INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL, session_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '')
"""


def raw_rows(prefix: str, users: list[str]) -> list[tuple[Any, ...]]:
    batch = new_batch(prefix, users)
    return [(e.event_id, e.user_id, e.item_id, 1, e.timestamp_ms, "", "") for e in batch.events]


def raw_floor(location: str, users: list[str], seconds: float) -> float:
    """Events/s of a bare batched insert of TRACK_BATCH new rows and a durable commit per
    batch, into a table shaped like ``events`` in the same database: the floor under the
    store (no duplicate check against erasures, no counter, no per-user bookkeeping;
    on PostgreSQL the table has all of ``events``' indexes, on SQLite its keys and unique
    id). Only the inserts and commits are timed: building the rows is the load
    generator's work, as the store's clients send prebuilt batches."""
    done = 0
    busy = 0.0  # seconds spent inserting and committing
    end = time.perf_counter() + seconds
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS raw_events (LIKE events INCLUDING ALL)")
            connection.commit()
            seq = int(
                connection.execute("SELECT COALESCE(MAX(seq), 0) FROM raw_events").fetchone()[0]
            )  # type: ignore[index]
            while time.perf_counter() < end:
                rows = raw_rows(f"raw-{time.time_ns()}", users)
                seqs = list(range(seq + 1, seq + 1 + len(rows)))
                columns = [seqs, *map(list, zip(*rows, strict=True))]
                began = time.perf_counter()
                # Binary arrays (%b), as the store sends them: text arrays cost psycopg
                # about ten times as much to write, and would lower the floor.
                connection.execute(
                    "INSERT INTO raw_events (seq, event_id, user_id, item_id, event_type,"
                    " timestamp_ms, session_id, query) SELECT * FROM unnest(%b::bigint[],"
                    " %b::text[], %b::text[], %b::text[], %b::smallint[], %b::bigint[],"
                    " %b::text[], %b::text[])",
                    columns,
                )
                connection.commit()
                busy += time.perf_counter() - began
                seq += len(rows)
                done += len(rows)
    else:
        connection = sqlite3.connect(Path(location) / "events.sqlite3", isolation_level="DEFERRED")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(RAW_TABLE_SQLITE)
        connection.commit()
        while time.perf_counter() < end:
            rows = raw_rows(f"raw-{time.time_ns()}", users)
            began = time.perf_counter()
            connection.executemany(
                "INSERT INTO raw_events (event_id, user_id, item_id, event_type, timestamp_ms,"
                " session_id, query) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.commit()
            busy += time.perf_counter() - began
            done += len(rows)
        connection.close()
    return done / busy


# -- set-up --------------------------------------------------------------------------------------
def prepare_store(location: str, shop: Any) -> None:
    store = open_store(location)
    try:
        store.upsert_items(list(shop.items.as_dict().items()))
        store.upsert_users(list(shop.users.as_dict().items()))
        it = shop.interactions
        events = [
            StoredEvent(event_id, user, item, EventType(int(kind)), int(stamp * 1000))
            for user, item, kind, stamp, event_id in zip(
                it.user_ids, it.item_ids, it.event_types, it.timestamps, it.event_ids, strict=True
            )
        ]
        for start in range(0, len(events), 5000):
            store.append_events(events[start : start + 5000])
    finally:
        store.close()


def ingest_points(
    location: str,
    plans: list[tuple[str, list[list[str]]]],
    env: dict[str, str],
    users: list[str],
    clients: int,
    seconds: float,
) -> dict[str, Any]:
    """Track events/s of one process and of the workers, each against the raw floor of the
    same database, measured before and after them (the mean is the floor)."""
    floors = [raw_floor(location, users, seconds)]
    points = []
    for name, commands in plans:
        deployment = Deployment(name, commands, env)
        try:
            point = measure(deployment, "track", users, clients, seconds, None)
        finally:
            deployment.stop()
        point["name"] = name
        print(json.dumps(point), flush=True)
        points.append(point)
    floors.append(raw_floor(location, users, seconds))
    floor = sum(floors) / len(floors)
    for point in points:
        point["vs_raw_floor"] = point["events_per_s"] / floor
    return {"raw_floor_events_per_s": floor, "raw_floor_runs": floors, "points": points}


def median_entry(name: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, the round with the median calls/s (its other figures with it)."""
    median: dict[str, Any] = {"name": name, "rounds": len(entries)}
    for method in ("recommend", "health"):
        ordered = sorted(entries, key=lambda entry: entry[method]["calls_per_s"])
        median[method] = ordered[len(ordered) // 2][method]
        median[method]["calls_per_s_all_rounds"] = [e[method]["calls_per_s"] for e in entries]
    return median


def markdown(result: dict[str, Any]) -> str:
    if not result["deployments"]:
        return markdown_ingest(result)
    lines = [
        f"Store: {result['store']}; {result['clients']} clients in {LOAD_PROCESSES} load"
        f" processes (nice {LOAD_NICENESS}); {result['duration_s']} s per point; median of"
        f" {result['deployments'][0]['rounds']} alternating rounds; machine: {result['machine']}",
        "",
        "| deployment | Recommend calls/s | vs one process | p50 ms | p99 ms"
        " | floor (health) calls/s | share of floor | server CPU ms/call | DB CPU ms/call"
        " | DB transactions/call |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = result["deployments"][0]["recommend"]["calls_per_s"]
    for entry in result["deployments"]:
        rec, floor = entry["recommend"], entry["health"]
        db_cpu = rec.get("db_cpu_ms_per_call")
        db_tx = rec.get("db_transactions_per_call")
        lines.append(
            f"| {entry['name']} | {rec['calls_per_s']:.0f} | {rec['calls_per_s'] / base:.2f}x"
            f" | {rec['p50_ms']:.2f} | {rec['p99_ms']:.2f} | {floor['calls_per_s']:.0f}"
            f" | {rec['calls_per_s'] / floor['calls_per_s']:.0%}"
            f" | {rec['server_cpu_ms_per_call']:.3f}"
            f" | {'' if db_cpu is None else f'{db_cpu:.3f}'}"
            f" | {'' if db_tx is None else f'{db_tx:.2f}'} |"
        )
    return "\n".join(lines) + "\n" + markdown_ingest(result)


def markdown_ingest(result: dict[str, Any]) -> str:
    lines: list[str] = []
    ingest = result.get("ingest")
    if ingest:
        lines += [
            "",
            f"Track ({TRACK_BATCH} events a call): raw batched insert floor"
            f" {ingest['raw_floor_events_per_s']:,.0f} events/s (runs:"
            f" {', '.join(f'{r:,.0f}' for r in ingest['raw_floor_runs'])})",
            "",
            "| deployment | events/s | vs raw floor | batch p50 / p99 ms |",
            "|---|---|---|---|",
        ]
        for point in ingest["points"]:
            lines.append(
                f"| {point['name']} | {point['events_per_s']:,.0f} | {point['vs_raw_floor']:.0%}"
                f" | {point['p50_ms']:.1f} / {point['p99_ms']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", help="PostgreSQL URL (default: a SQLite state directory)")
    parser.add_argument("--replicas", default="", help="replica counts, e.g. 1,2 (capped by cores)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the one-port point")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternations; medians reported (0: Track only)"
    )
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--track-clients", type=int, default=8, help="clients of the ingest points")
    parser.add_argument("--no-track", action="store_true", help="skip the ingest points")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to check it runs")
    parser.add_argument("--out", default="benchmarks/results/replicas.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    replica_counts = [int(n) for n in args.replicas.split(",") if n] or [
        n for n in (1, 2, 4, 8, 16) if n <= cores
    ]
    replica_counts = [n for n in replica_counts if n <= cores]
    duration = 1.0 if args.smoke else args.duration
    if args.smoke:
        args.rounds = 1
    clients = 8 if args.smoke else args.clients
    shop, model_dir, _ = trained_model(shape_for(1682), quiet=True)
    users = list(dict.fromkeys(shop.interactions.user_ids))[: args.users]
    result: dict[str, Any] = {
        "machine": machine_description(),
        "store": "PostgreSQL" if args.store else "SQLite",
        "clients": clients,
        "duration_s": duration,
        "deployments": [],
    }
    with tempfile.TemporaryDirectory(prefix="shelfrank-replicas-") as scratch, ExitStack():
        root = Path(scratch)
        state = root / "state"
        location = args.store or str(state)
        prepare_store(location, shop)
        env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
        store_args = ["--store", args.store] if args.store else ["--state", str(state)]
        common = [*store_args, "--role", "server"]
        # The model enters the store once (this first process imports it), then every
        # deployment serves it from the store.
        first = Deployment("import", [[*store_args, "--model", str(model_dir), "--port", "0"]], env)
        first.stop()
        plans: list[tuple[str, list[list[str]]]] = [
            ("1 process", [[*common, "--port", "0"]]),
            (
                f"--workers {args.workers} (one port)",
                [[*common, "--port", "0", "--workers", str(args.workers)]],
            ),
        ]
        for n in replica_counts:
            if n > 1:
                plans.append((f"{n} replicas", [[*common, "--port", "0"] for _ in range(n)]))
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plans}
        for round_number in range(args.rounds):  # deployments alternate: drift hits all
            for name, commands in plans:
                deployment = Deployment(name, commands, env)
                try:
                    for address in deployment.addresses:  # warm: compiled search, first reads
                        with grpc.insecure_channel(address) as channel:
                            stub = pb_grpc.RecommenderStub(channel)
                            for user in users[:50]:
                                stub.Recommend(pb.RecommendRequest(user_id=user, k=K), timeout=30)
                    entry: dict[str, Any] = {"name": name, "round": round_number}
                    for method in ("recommend", "health"):
                        entry[method] = measure(
                            deployment, method, users, clients, duration, args.store
                        )
                finally:
                    deployment.stop()
                print(json.dumps(entry), flush=True)
                rounds[name].append(entry)
        result["rounds"] = rounds
        result["deployments"] = [
            median_entry(name, entries) for name, entries in rounds.items() if entries
        ]
        if not args.no_track:
            result["ingest"] = ingest_points(
                location, plans[:2], env, users, 4 if args.smoke else args.track_clients, duration
            )
    result["markdown"] = markdown(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(result["markdown"])


if __name__ == "__main__":
    main()
