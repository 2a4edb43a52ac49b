"""``shelfrank serve --workers 2``: two real server processes on one port under one
supervisor, over the embedded SQLite store and over PostgreSQL. Connections are spread
over both, a worker killed with kill -9 is restarted, and SIGTERM stops every worker
gracefully."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from shelfrank.client import Client, Event
from tests.conftest import serve_process, stop_process
from tests.test_store_contract import new_schema


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free now (for the workers' metrics)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with socket.socket() as second:
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two consecutive free ports")


def recommend_calls_served(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("shelfrank_requests_total{") and 'method="Recommend"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--state", str(tmp_path / "state")]
    url = new_schema(request.getfixturevalue("postgres_database"))
    return ["--store", url, "--state", str(tmp_path / "cache")]


def test_two_workers_share_the_port_restart_and_stop_together(
    toy_model_dir: Path, store_args: list[str]
) -> None:
    metrics = free_port_pair()
    process, address = serve_process(
        *store_args,
        "--model",
        str(toy_model_dir),
        "--workers",
        "2",
        "--metrics-port",
        str(metrics),
    )
    try:
        workers = children_of(process.pid)
        assert len(workers) == 2
        for n in range(40):  # a connection each: the kernel spreads them over the workers
            with Client(address) as client:
                assert client.recommend(f"u{n % 20}", k=3).item_ids
        served = [recommend_calls_served(metrics + i) for i in range(2)]
        print(f"\nRecommend calls per worker: {served}")
        assert sum(served) == 40
        assert min(served) > 0

        # Read-your-writes across the two workers: a Track on one connection, a Recommend
        # on others, wherever the kernel sends them.
        with Client(address) as tracker:
            tracker.track([Event("walker", "shoe1", "purchase")])
        for _ in range(6):
            with Client(address) as reader:
                assert "shoe1" not in reader.recommend("walker", k=32).item_ids

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = children_of(process.pid)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, "the killed worker was not restarted"
            time.sleep(0.1)
        for n in range(10):
            with Client(address) as client:
                assert client.recommend(f"u{n}", k=3).item_ids
        workers = now
    finally:
        code = stop_process(process, signal.SIGTERM, timeout=60)
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
