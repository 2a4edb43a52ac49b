"""Model hot-swap under load (issue 5): zero failed calls, p99 during a swap vs steady.

A server in a child process serves the trained catalogue (default 100k items) while 32
client threads call Recommend without pause. Every few seconds the server loads another
model version from disk and publishes it (``load_state`` + ``RecommenderService.swap``:
exactly what the retrainer does once training is done), alternating two versions. Calls
are classified by wall-clock time: "during a swap" if they overlap a swap window (from the
start of the load to the publish), "steady" if they end before the first swap starts.

    python benchmarks/hot_swap.py [--size 100000] [--swaps 4] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from catalogues import shape_for, trained_model
from machine import machine_description
from serving import CHANNEL_OPTIONS, K, child_server, prepare_state

from shelfrank.core.model_format import load_serving_model, save_model_directory
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc


def serve_and_swap(
    state_dir: str, model_dirs: list[str], swaps: Any, windows: Any, ports: Any, stop: Any
) -> None:
    """Serve ``model_dirs[0]``; on each request from ``swaps`` load and publish the next."""
    from shelfrank.server.app import ServerOptions, settle_serving_process, start
    from shelfrank.server.config import TrainConfig
    from shelfrank.server.registry import load_state

    options = ServerOptions(
        state_dir=Path(state_dir),
        port=0,
        model_dir=Path(model_dirs[0]),
        train_config=TrainConfig(num_threads=1),
    )
    running = start(options)
    settle_serving_process(options)  # as `shelfrank serve` does
    ports.put(running.port)
    index = 0
    while True:
        request = swaps.get()
        if request is None:
            break
        index = (index + 1) % len(model_dirs)
        begin = time.time()
        running.service.swap(load_state(model_dirs[index]))
        windows.put((begin, time.time(), running.service.state.model_version))
    stop.wait()
    running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--swaps", type=int, default=4)
    parser.add_argument("--steady", type=float, default=4.0, help="seconds before the first swap")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between swaps")
    parser.add_argument("--out", default="benchmarks/results/hot_swap.json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.concurrency, args.swaps, args.steady, args.gap = 4000, 4, 2, 1.0, 1.0
    shop, model_dir, _ = trained_model(shape_for(args.size))
    model, metadata = load_serving_model(model_dir)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="shelfrank-swap-") as tmp:
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        prepare_state(state_dir, shop)
        # A second version of the same size to swap to (its values do not change the cost).
        other = Path(tmp) / "other"
        save_model_directory(
            other,
            dataclasses.replace(model, model_version=model.model_version + "-b"),
            metadata=metadata,
        )
        users = list(model.user_ids.ids)[:500]
        swaps, windows = ctx.Queue(), ctx.Queue()
        dirs = [str(model_dir), str(other)]
        with child_server(serve_and_swap, str(state_dir), dirs, swaps, windows) as (target, _):
            try:
                calls, swap_windows = drive(target, users, args, swaps, windows)
            finally:
                swaps.put(None)  # the child leaves its swap loop, then waits to be stopped
    result = summarise(calls, swap_windows)
    plot(calls, swap_windows, Path(args.out).with_suffix(".png"))
    result.update(
        {
            "machine": machine_description(),
            "settings": {
                "items": args.size,
                "concurrency": args.concurrency,
                "swaps": args.swaps,
                "swap": "load_state(version directory) + RecommenderService.swap, in the "
                "serving process, as the retrainer does after training",
            },
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


Call = tuple[float, float, bool]  # start, end (unix seconds), ok


def drive(
    target: str, users: list[str], args: argparse.Namespace, swaps: Any, windows: Any
) -> tuple[list[Call], list[tuple[float, float, str]]]:
    channels = [
        grpc.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(args.concurrency)
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=10)
    records: list[list[Call]] = [[] for _ in channels]
    done = threading.Event()

    def client(index: int) -> None:
        stub = pb_grpc.RecommenderStub(channels[index])
        requests = [pb.RecommendRequest(user_id=u, k=K) for u in users]
        i = index * 7919
        while not done.is_set():
            begin = time.time()
            try:
                stub.Recommend(requests[i % len(requests)], timeout=30)
                ok = True
            except grpc.RpcError:
                ok = False
            records[index].append((begin, time.time(), ok))
            i += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(channels))]
    for thread in threads:
        thread.start()
    time.sleep(args.steady)
    swap_windows = []
    for _ in range(args.swaps):
        swaps.put("swap")
        swap_windows.append(windows.get(timeout=600))
        time.sleep(args.gap)
    done.set()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    return [call for part in records for call in part], swap_windows


def summarise(calls: list[Call], windows: list[tuple[float, float, str]]) -> dict[str, Any]:
    first = windows[0][0]
    steady = [end - begin for begin, end, ok in calls if end < first and ok]
    during = [
        end - begin
        for begin, end, ok in calls
        if ok and any(begin <= w_end and end >= w_begin for w_begin, w_end, _ in windows)
    ]
    failed = sum(1 for _, _, ok in calls if not ok)
    steady_p99 = float(np.percentile(steady, 99)) * 1000
    during_p99 = float(np.percentile(during, 99)) * 1000
    return {
        "calls": len(calls),
        "failed_calls": failed,
        "swap_seconds": [round(end - begin, 3) for begin, end, _ in windows],
        "versions": [version for _, _, version in windows],
        "steady": {"calls": len(steady), "p99_ms": round(steady_p99, 2)},
        "during_swaps": {"calls": len(during), "p99_ms": round(during_p99, 2)},
        "p99_ratio": round(during_p99 / steady_p99, 3),
        "targets": {"failed_calls": "== 0", "p99_ratio": "<= 3"},
    }


def plot(calls: list[Call], windows: list[tuple[float, float, str]], path: Path) -> None:
    """p50 and p99 latency per 250 ms of wall clock, swap windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = min(begin for begin, _, _ in calls)
    ends = np.array([end - origin for _, end, ok in calls if ok])
    latency = np.array([(end - begin) * 1000 for begin, end, ok in calls if ok])
    buckets = np.floor(ends / 0.25).astype(int)
    xs, p50, p99 = [], [], []
    for bucket in np.unique(buckets):
        values = latency[buckets == bucket]
        xs.append((bucket + 0.5) * 0.25)
        p50.append(np.percentile(values, 50))
        p99.append(np.percentile(values, 99))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(xs, p50, label="p50", color="tab:blue")
    ax.plot(xs, p99, label="p99", color="tab:red")
    for i, (begin, end, _) in enumerate(windows):
        ax.axvspan(begin - origin, end - origin, color="tab:orange", alpha=0.3,
                   label="model swap" if i == 0 else None)  # fmt: skip
    ax.set_xlabel("seconds")
    ax.set_ylabel("Recommend latency (ms)")
    ax.set_title("Recommend under load while models are swapped")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
