"""``shelfrank serve`` as a real process: first start on demo data (``--demo``), SIGTERM
under load."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.store import SQLiteStore
from tests.conftest import serve_process, stop_process

GRACE_SECONDS = 3.0


def _serve(state: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    process, address = serve_process(
        "--state", str(state), "--grace", str(GRACE_SECONDS), "--threads", "1", *args
    )
    return process, int(address.rsplit(":", 1)[1])


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    # A generous bound that only catches a hang (a loaded machine is slow): how fast the
    # server stops is not a unit test's claim.
    return stop_process(process, sig, timeout=GRACE_SECONDS + 30)


def test_sigterm_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    process, port = _serve(tmp_path / "state")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            batch = 0
            while not stop.is_set():
                ids = [f"w{worker}-b{batch}-{i}" for i in range(50)]
                request = pb.TrackRequest(
                    events=[
                        pb.Event(
                            event_id=e, user_id=f"user{worker}", item_id="i000001", type=pb.VIEW
                        )
                        for e in ids
                    ]
                )
                try:
                    response = stub.Track(request, timeout=10)
                except grpc.RpcError:
                    return  # the server is going away
                assert response.accepted == 50
                with lock:
                    acknowledged.extend(ids)
                batch += 1

    workers = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 2_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Watch health from a connection opened before the signal: it must turn NOT_SERVING
    # at once, before in-flight calls finish.
    watch_channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    updates = health_pb2_grpc.HealthStub(watch_channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=GRACE_SECONDS + 30
    )
    assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
    running_when_not_serving: list[bool] = []

    def watch() -> None:
        try:
            for update in updates:
                if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    # Still running when it says so: NOT_SERVING comes first, the exit after.
                    running_when_not_serving.append(process.poll() is None)
                    return
        except grpc.RpcError:
            return

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = _stop(process)  # within the grace period plus a margin, or the test fails
    watcher.join(timeout=5)
    watch_channel.close()
    assert running_when_not_serving == [True], "health never reported NOT_SERVING in time"
    stop.set()
    for worker in workers:
        worker.join(timeout=15)
    assert code == 0
    assert len(acknowledged) >= 2_000
    store = SQLiteStore(tmp_path / "state" / "events.sqlite3")
    stored = {e.event_id for _, e in store.iter_events() if e.event_id.startswith("w")}
    assert set(acknowledged) <= stored
    assert store.integrity_check() == "ok"


def test_restarted_process_serves_the_same_model(tmp_path: Path) -> None:
    process, port = _serve(tmp_path / "state", "--demo")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        first = pb_grpc.RecommenderStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert _stop(process, signal.SIGINT) == 0
    assert first.stored_events == 60_000  # the demo data lives in the store like any other
    process, port = _serve(tmp_path / "state")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            second = pb_grpc.RecommenderStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10
            )
        assert second.model_version == first.model_version
        assert second.stored_events == first.stored_events
    finally:
        _stop(process)


def test_sigterm_delivered_to_a_grpc_thread_still_stops_the_server(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    # The kernel may hand a process-wide SIGTERM to any thread; aimed here at one of the
    # server's non-main threads, where a main thread blocked in one untimed wait never
    # runs the Python handler (this hung CI once).
    process, _ = serve_process("--state", str(tmp_path / "state"), "--model", str(toy_model_dir))
    other_threads = [
        int(tid) for tid in os.listdir(f"/proc/{process.pid}/task") if int(tid) != process.pid
    ]
    assert other_threads, "the server runs gRPC threads besides its main thread"
    os.kill(max(other_threads), signal.SIGTERM)  # kill(2) with a thread id: that thread
    try:
        code = process.wait(timeout=30)  # the bug this guards against hung for ever
    finally:
        stop_process(process, signal.SIGKILL)  # no-op once it exited; a hung one dies
    assert code == 0
