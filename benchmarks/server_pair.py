"""Two (or more) real ``shelfrank serve`` processes on one model that differ by one
setting, and Recommend p50 through gRPC on each, measured in alternating rounds so that
the machine's load moves both alike. Used where a feature must not slow Recommend down
when idle (impression recording, the dashboard)."""

from __future__ import annotations

import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from machine import serve_process  # benchmarks/machine.py


def serve(model_dir: Path, state: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``shelfrank serve`` of ``model_dir`` over ``state`` on any free port."""
    return serve_process(["--state", str(state), "--model", str(model_dir), "--port", "0", *extra])


def recommend_p50_by_setting(
    model_dir: Path, settings: Mapping[str, Sequence[str]], rounds: int, calls: int
) -> dict[str, Any]:
    """Recommend p50 (ms, one caller, k=10, random known users) of a server per setting
    (name -> extra ``serve`` arguments): the rounds' p50s and their median per setting.
    The first fifth of each round's calls warms up and is not counted."""
    import grpc

    from shelfrank.core.model_format import load_serving_model
    from shelfrank.proto._generated import recommender_pb2 as pb
    from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc

    model, _ = load_serving_model(model_dir)
    users = list(model.user_ids.ids)
    names = list(settings)
    p50: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        servers = {
            name: serve(model_dir, Path(scratch) / f"state-{index}", *settings[name])
            for index, name in enumerate(names)
        }
        rng = random.Random(7)
        try:
            for round_index in range(rounds):
                order = names if round_index % 2 == 0 else names[::-1]
                for name in order:
                    took = []
                    with grpc.insecure_channel(servers[name][1]) as channel:
                        stub = pb_grpc.RecommenderStub(channel)
                        for call in range(calls + calls // 5):
                            request = pb.RecommendRequest(user_id=rng.choice(users), k=10)
                            tick = time.perf_counter()
                            stub.Recommend(request, timeout=30)
                            if call >= calls // 5:
                                took.append(time.perf_counter() - tick)
                    p50[name].append(1000 * float(np.percentile(took, 50)))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(60)
    return {
        "p50_ms_by_round": p50,
        "p50_ms": {name: statistics.median(values) for name, values in p50.items()},
    }
