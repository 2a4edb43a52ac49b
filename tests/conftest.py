"""Shared fixtures: the MovieLens-100k folder (skipped when absent) and small data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from tests.postgres import (  # noqa: F401 (fixtures)
    crashable_postgres,
    postgres_database,
    postgres_server,
    postgres_url,
)

REPO = Path(__file__).resolve().parent.parent


def every_rpc() -> list[tuple[Any, Any, Any]]:
    """(pb2 module, service, method) descriptors for every RPC of the public contract."""
    from shelfrank.proto._generated import edge_sync_pb2, recommender_pb2

    return [
        (module, service, method)
        for module in (recommender_pb2, edge_sync_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


ML100K = Path(os.environ.get("SHELFRANK_ML100K", REPO.parent / "shared" / "data" / "ml-100k"))


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(
            f"MovieLens-100k not found at {ML100K} (licence forbids shipping it; set "
            "SHELFRANK_ML100K to its folder)"
        )
    return ML100K


def make_interactions(rows: list[tuple[str, str, str]]) -> Interactions:
    """Interactions from (user, item, event label) triples."""
    return Interactions.from_rows(
        [(u, i, EventType.parse(t), float(n), float("nan"), "") for n, (u, i, t) in enumerate(rows)]
    )


@pytest.fixture(scope="session")
def toy_shop() -> tuple[Interactions, FeatureTable, FeatureTable]:
    """Two tastes: users u0..u9 buy shoes, u10..u19 buy books; features say so too."""
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, str]] = []
    for user in range(20):
        prefix = "shoe" if user < 10 else "book"
        for item in rng.choice(15, size=8, replace=False):
            rows.append((f"u{user}", f"{prefix}{item}", "purchase" if item % 3 == 0 else "view"))
    items = FeatureTable(
        "item_id",
        ("category",),
        [f"{p}{i}" for p in ("shoe", "book") for i in range(16)],
        [(f"category={p}s",) for p in ("shoe", "book") for _ in range(16)],
    )
    users = FeatureTable(
        "user_id",
        ("segment",),
        [f"u{u}" for u in range(20)],
        [("segment=runner",) if u < 10 else ("segment=reader",) for u in range(20)],
    )
    return make_interactions(rows), items, users


# Small, fast and reproducible: the model the server tests serve.
SERVER_CONFIG = TrainConfig(components=8, epochs=15, seed=3, num_threads=1)


@pytest.fixture(scope="session")
def toy_model_dir(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A model directory trained on :func:`toy_shop` with :data:`SERVER_CONFIG`."""
    from shelfrank.server.hybrid import HybridModel

    interactions, items, users = toy_shop
    out = tmp_path_factory.mktemp("toy-model")
    HybridModel.train(interactions, SERVER_CONFIG, items=items, users=users).save(out)
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``shelfrank ARGS`` as its own process (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "shelfrank.server", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def ml100k_csvs(ml100k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-100k converted once to the import format (ua.base.csv, items.csv, ...)."""
    from shelfrank.server.cli import main

    out = tmp_path_factory.mktemp("ml100k-csv")
    assert main(["import-movielens", "--dir", str(ml100k), "--out", str(out)]) == 0
    return out


def serve_process(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``shelfrank serve --port 0 ARGS`` and return it with its ``host:port`` once up."""
    command = [sys.executable, "-m", "shelfrank.server", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    if process.stdout is None:
        raise RuntimeError("no stdout pipe")
    line = process.stdout.readline()  # blocks until the server prints its address (or dies)
    if not line.startswith("shelfrank serving on"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, line.split()[-1]


def stop_process(
    process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 20.0
) -> int:
    """Signal the server and wait for it; returns its exit code. A server that does not
    exit in time is killed (so no process outlives the test) and the timeout re-raised."""
    process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()


def run_benchmark(script: str, out: Path, *args: str, timeout: float = 1800) -> Any:
    """Run ``benchmarks/<script>`` (writing its JSON to ``out``) and return the JSON."""
    import json

    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), "--out", str(out), *args],
        check=True,
        cwd=root,
        timeout=timeout,
    )
    return json.loads(out.read_text())
