"""Operational surface: Prometheus metrics, TLS, message size limits, reflection off."""

from __future__ import annotations

import gc
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from threadpoolctl import threadpool_info

from shelfrank.core.errors import InvalidInputError
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.app import ServerOptions, start
from tests.conftest import SERVER_CONFIG

Shop = tuple[Interactions, FeatureTable, FeatureTable]
CONFIG = SERVER_CONFIG


@pytest.fixture(scope="module")
def model_dir(toy_model_dir: Path) -> Path:
    return toy_model_dir


def test_metrics_count_requests_events_and_model(model_dir: Path, tmp_path: Path) -> None:
    running = start(
        ServerOptions(
            state_dir=tmp_path, port=0, model_dir=model_dir, metrics_port=0, train_config=CONFIG
        )
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            stub.Recommend(pb.RecommendRequest(user_id="u0", k=3))
            with pytest.raises(grpc.RpcError):
                stub.Recommend(pb.RecommendRequest(user_id="u0", k=0))
            batch = pb.TrackRequest(
                events=[
                    pb.Event(event_id="m1", user_id="u0", item_id="shoe1", type=pb.VIEW),
                    pb.Event(user_id="u0", item_id="x", type=pb.VIEW),
                ]
            )
            stub.Track(batch)
            stub.Track(batch)
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    finally:
        running.stop()
    assert 'shelfrank_requests_total{code="OK",method="Recommend"} 1.0' in text
    assert 'shelfrank_requests_total{code="INVALID_ARGUMENT",method="Recommend"} 1.0' in text
    assert 'shelfrank_request_seconds_count{method="Track"} 2.0' in text
    assert 'shelfrank_events_total{outcome="accepted"} 1.0' in text
    assert 'shelfrank_events_total{outcome="duplicate"} 1.0' in text
    assert 'shelfrank_events_total{outcome="rejected"} 2.0' in text
    assert f'shelfrank_model_info{{version="{running.service.state.model_version}"}} 1.0' in text
    assert "shelfrank_model_items 32.0" in text


def test_oversized_message_is_resource_exhausted(model_dir: Path, tmp_path: Path) -> None:
    running = start(
        ServerOptions(state_dir=tmp_path, port=0, model_dir=model_dir, train_config=CONFIG)
    )
    try:
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            huge = pb.TrackRequest(
                events=[
                    pb.Event(
                        event_id=f"e{i}", user_id="u", item_id="i", query="q" * 1900, type=pb.SEARCH
                    )
                    for i in range(9_500)
                ]
            )
            with pytest.raises(grpc.RpcError) as info:
                stub.Track(huge, timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.GetModelInfo(pb.GetModelInfoRequest()).stored_events == 0
    finally:
        running.stop()


def test_reflection_can_be_switched_off(model_dir: Path, tmp_path: Path) -> None:
    running = start(
        ServerOptions(
            state_dir=tmp_path, port=0, model_dir=model_dir, reflection=False, train_config=CONFIG
        )
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                list(
                    stub.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                    )
                )
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop()


def test_start_changes_nothing_process_wide(model_dir: Path, tmp_path: Path) -> None:
    """A library or test that starts a server keeps its GC and BLAS settings."""
    gc.unfreeze()  # servers started by run() elsewhere in this process froze theirs
    limits_before = threadpool_info()
    running = start(
        ServerOptions(state_dir=tmp_path, port=0, model_dir=model_dir, train_config=CONFIG)
    )
    try:
        assert gc.get_freeze_count() == 0
        assert threadpool_info() == limits_before
    finally:
        running.stop()


# Runs the serve process's entry point; a watcher thread reports its process settings
# once the server has started, then asks it to stop as an operator would (SIGTERM).
_RUN_AND_REPORT = """
import gc, json, os, signal, sys, threading, time
from pathlib import Path
from threadpoolctl import threadpool_info
from shelfrank.server.app import ServerOptions, run
from tests.conftest import SERVER_CONFIG

def report():
    while gc.get_freeze_count() == 0:
        time.sleep(0.05)
    # BLAS threaded by OpenMP (faiss's) counts threads per calling thread: not comparable.
    blas = sorted({p["num_threads"] for p in threadpool_info()
                   if p["user_api"] == "blas" and p.get("threading_layer") != "openmp"})
    print(json.dumps({"frozen": gc.get_freeze_count(), "blas": blas}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report, daemon=True).start()
run(ServerOptions(state_dir=Path(sys.argv[1]), port=0, model_dir=Path(sys.argv[2]),
                  train_config=SERVER_CONFIG))
"""


def test_the_serve_process_freezes_start_up_objects_and_limits_blas(
    model_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, str(tmp_path), str(model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1])
    assert report["frozen"] > 10_000  # modules, the model and the catalogue at least
    assert report["blas"] == [1]  # numpy's (and scipy's) BLAS: one thread per call


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed to make a test certificate"
)
def test_tls(model_dir: Path, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=model_dir,
            tls_cert=cert,
            tls_key=key,
            train_config=CONFIG,
        )
    )
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{running.port}", credentials) as channel:
            info = pb_grpc.RecommenderStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10
            )
        assert info.model_version == running.service.state.model_version
        with grpc.insecure_channel(f"localhost:{running.port}") as plain:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.RecommenderStub(plain).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


@contextmanager
def _stalled_recommends(
    options: ServerOptions,
) -> Iterator[tuple[pb_grpc.RecommenderStub, threading.Semaphore, threading.Event]]:
    """A server whose Recommend calls signal ``entered`` and then wait for ``release``; a
    stub to it. The server is stopped (everything released) on the way out."""
    running = start(options)
    release = threading.Event()
    entered = threading.Semaphore(0)
    original = running.service.recommend

    def stalled(query: object) -> object:
        entered.release()
        release.wait(10)
        return original(query)  # type: ignore[arg-type]

    running.service.recommend = stalled  # type: ignore[method-assign]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.RecommenderStub(channel), entered, release
    finally:
        release.set()
        running.stop()


STALLED_REQUEST = pb.RecommendRequest(user_id="u1", k=3)


def _sent(
    stub: pb_grpc.RecommenderStub, entered: threading.Semaphore, *, calls: int, running: int
) -> list[grpc.Future]:
    """``calls`` Recommend calls sent, once ``running`` of them are in the service."""
    sent = [stub.Recommend.future(STALLED_REQUEST, timeout=10) for _ in range(calls)]
    for _ in range(running):
        assert entered.acquire(timeout=5)
    return sent


def test_rpc_threads_bound_the_calls_running_at_once(model_dir: Path, tmp_path: Path) -> None:
    """With 2 handler threads, a third admitted call waits for a thread (it is neither
    refused nor run) and completes once one is free."""
    with pytest.raises(InvalidInputError, match="rpc_threads"):
        start(ServerOptions(state_dir=tmp_path / "bad", port=0, model_dir=model_dir, rpc_threads=0))
    options = ServerOptions(
        state_dir=tmp_path / "state", port=0, model_dir=model_dir, rpc_threads=2
    )
    with _stalled_recommends(options) as (stub, entered, release):
        calls = _sent(stub, entered, calls=3, running=2)
        assert not entered.acquire(timeout=0.5)  # the third waits for a thread
        assert not calls[2].done()
        release.set()
        assert entered.acquire(timeout=5)  # and runs once one is free
        assert all(len(call.result().items) == 3 for call in calls)


def test_calls_beyond_the_admission_limit_are_shed_at_once(model_dir: Path, tmp_path: Path) -> None:
    """Overload: with 2 calls admitted, a third is refused immediately (RESOURCE_EXHAUSTED),
    and admitted calls complete normally once they are released."""
    options = ServerOptions(
        state_dir=tmp_path / "state", port=0, model_dir=model_dir, max_concurrent_rpcs=2
    )
    with _stalled_recommends(options) as (stub, entered, release):
        admitted = _sent(stub, entered, calls=2, running=2)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Recommend(STALLED_REQUEST, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert all(len(call.result().items) == 3 for call in admitted)
        assert len(stub.Recommend(STALLED_REQUEST, timeout=5).items) == 3  # capacity is back


def test_an_address_that_cannot_be_bound_is_a_bind_error(model_dir: Path, tmp_path: Path) -> None:
    from shelfrank.core.errors import ShelfrankError
    from shelfrank.server.app import BindError

    # TEST-NET-3 (RFC 5737): no interface of this machine has it, nothing is sent.
    options = ServerOptions(
        state_dir=tmp_path, host="203.0.113.1", port=0, model_dir=model_dir, train_config=CONFIG
    )
    with pytest.raises(BindError, match=re.escape("cannot bind 203.0.113.1:0")) as refused:
        start(options)
    assert isinstance(refused.value, ShelfrankError)
