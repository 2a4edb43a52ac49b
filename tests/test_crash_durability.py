"""Crash durability: ``kill -9`` the real server at random moments while several clients
ingest, restart it, and check that nothing acknowledged was lost or stored twice.

``make test`` runs 2 crashes; ``make test-slow`` runs the full 20 over 10,000 events.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.store import SQLiteStore
from tests.conftest import serve_process, stop_process

CLIENTS = 4
BATCH = 50


def batches_for(total: int) -> list[list[str]]:
    ids = [f"crash-{n:06d}" for n in range(total)]
    return [ids[i : i + BATCH] for i in range(0, total, BATCH)]


def send(stub: pb_grpc.RecommenderStub, ids: list[str]) -> bool:
    request = pb.TrackRequest(
        events=[
            pb.Event(event_id=e, user_id=f"user{hash(e) % 50}", item_id="i000001", type=pb.VIEW)
            for e in ids
        ]
    )
    try:
        response = stub.Track(request, timeout=10)
    except grpc.RpcError:
        return False  # not acknowledged: it will be sent again after the restart
    return response.accepted + response.duplicates == len(ids)


def start_and_wait(state: Path) -> tuple[subprocess.Popen[str], int]:
    """The server and its port once it answers a Recommend (restart times are measured by
    benchmarks, not asserted here)."""
    began = time.monotonic()
    process, address = serve_process("--state", str(state), "--threads", "1")
    port = int(address.rsplit(":", 1)[1])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        while True:
            try:
                stub.Recommend(pb.RecommendRequest(user_id="probe", k=1), timeout=5)
                break
            except grpc.RpcError:
                if time.monotonic() - began > 60:
                    raise
                time.sleep(0.05)
    return process, port


def check_store(path: Path, acknowledged: set[str]) -> None:
    store = SQLiteStore(path)  # opening recovers the WAL, as a restart does
    try:
        assert store.integrity_check() == "ok"
        stored = [e.event_id for _, e in store.iter_events() if e.event_id.startswith("crash-")]
        assert len(stored) == len(set(stored)), "an event id is stored twice"
        missing = acknowledged - set(stored)
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    finally:
        store.close()
    with sqlite3.connect(path) as raw:  # the unique index itself agrees
        (dupes,) = raw.execute("SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM events").fetchone()
        assert dupes == 0


def crash_rounds(state: Path, crashes: int, total: int, seed: int) -> None:
    rng = random.Random(seed)
    pending = batches_for(total)
    acknowledged: set[str] = set()
    lock = threading.Lock()
    # The first start finds no model and serves popularity; a clean stop, then crashes.
    process, _ = start_and_wait(state)
    stop_process(process, signal.SIGTERM, timeout=60)
    for _ in range(crashes):
        process, port = start_and_wait(state)
        queue = list(pending)
        rng.shuffle(queue)

        def client(work: list[list[str]], port: int = port) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecommenderStub(channel)
                for ids in work:
                    if not send(stub, ids):
                        return
                    with lock:
                        acknowledged.update(ids)

        threads = [
            threading.Thread(target=client, args=(queue[i::CLIENTS],)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 0.6))  # a random moment during ingestion
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        for thread in threads:
            thread.join(timeout=30)
        check_store(state / "events.sqlite3", acknowledged)
        pending = [ids for ids in pending if not set(ids) <= acknowledged]
    # Finish the ingestion and check once more that every event is there exactly once.
    process, port = start_and_wait(state)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        for ids in pending:
            assert send(stub, ids)
            acknowledged.update(ids)
    stop_process(process, signal.SIGTERM, timeout=60)
    check_store(state / "events.sqlite3", acknowledged)
    assert len(acknowledged) == total


def test_kill_9_during_ingestion_loses_nothing_acknowledged(tmp_path: Path) -> None:
    crash_rounds(tmp_path / "state", crashes=2, total=1_000, seed=1)


@pytest.mark.slow
def test_twenty_kill_9s_during_ingestion_of_10000_events(tmp_path: Path) -> None:
    crash_rounds(tmp_path / "state", crashes=20, total=10_000, seed=2)
