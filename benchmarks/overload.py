"""Overload and soak (issue 6, item 6), against the real server in a child process.

1. Overload: with ``max_concurrent_rpcs`` calls admitted, drive Recommend from far more
   client threads than that. The server must shed the excess with RESOURCE_EXHAUSTED at
   once, and the calls it admits must keep the p99 they have at capacity (with as many
   clients as admitted calls; capacity and overload points alternate ``--rounds`` times and
   the median p99s are compared). Refused clients back off 5 ms before trying again (a
   client hammering without pause measures its own busy loop).
2. Soak: an open-loop mix of Recommend (80%) and Track (20%, a fixed pool of users) at 70%
   of the capacity for that mix (measured back to back first) for ``--soak`` seconds; the
   server's RSS and open file descriptors are sampled. Warm-up: every pool user is served
   once, then 30 s of the same load; from there RSS may not grow by 10% or more;
   descriptors stay flat.

    python benchmarks/overload.py [--soak 600] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from catalogues import shape_for, trained_model
from concurrency_model import serve_aio
from machine import children_of, cpu_seconds, machine_description
from serving import CHANNEL_OPTIONS, K, child_server, prepare_state, serve

from shelfrank.core.model_format import load_serving_model
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc

# Load processes for the closed-loop points (each with its own GIL).
LOAD_PROCESSES = 4

# Soak clients as a share of the calls the server admits: enough that calls slowed by load
# leave each on its schedule, fewer than admitted (below capacity nothing may be refused).
SOAK_CLIENT_SHARE = 0.75
# The load processes run below the server's priority. They share this 2-core machine with
# it, and under overload the refused clients' loops took the server's CPU: 1.04 -> 0.92
# cores, so admitted calls slowed for want of CPU, not because of the server's shedding.
# Callers run on other machines in production. Both points, capacity and overload, alike.
LOAD_NICENESS = 10


def closed_loop_part(
    target: str,
    users: list[str],
    clients: int,
    first: int,
    seconds: float,
    ready: Any,
    results: Any,
) -> None:
    """One load process: ``clients`` threads calling back to back for ``seconds`` from the
    moment every load process is connected (``ready``, a barrier shared with the parent);
    puts the latencies of admitted calls and the counts of shed ones by code on
    ``results``."""
    os.nice(LOAD_NICENESS)
    channels = [grpc.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(clients)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=60)
    ok: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    ready.wait(timeout=120)  # a slow-starting process cannot shorten the others' window
    end = time.time() + seconds

    def client(index: int) -> None:
        stub = pb_grpc.RecommenderStub(channels[index])
        i = (first + index) * 7919
        while time.time() < end:
            tick = time.perf_counter()
            try:
                stub.Recommend(pb.RecommendRequest(user_id=users[i % len(users)], k=K), timeout=30)
                with lock:
                    ok.append(time.perf_counter() - tick)
            except grpc.RpcError as error:
                with lock:
                    codes[error.code().name] = codes.get(error.code().name, 0) + 1
                time.sleep(0.005)  # a refused client backs off a little, as real ones do
            i += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    results.put((ok, codes))


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server process ``pid`` and its children (``--workers``) so far."""
    return cpu_seconds([pid, *children_of(pid)])


@contextmanager
def cli_server(
    state_dir: Path, model_dir: Path, limit: int, workers: int
) -> Iterator[tuple[str, int]]:
    """``shelfrank serve --workers N`` (each worker admitting ``limit`` calls); its address
    and the supervisor's pid (the workers are its children)."""
    command = [
        sys.executable,
        "-m",
        "shelfrank.server",
        "serve",
        "--state",
        str(state_dir),
        "--model",
        str(model_dir),
        "--port",
        "0",
        "--workers",
        str(workers),
        "--max-concurrent-rpcs",
        str(limit),
        "--role",
        "server",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("shelfrank serving on"):
            raise RuntimeError(f"server did not start: {line!r}")
        yield line.split()[-1], process.pid
    finally:
        process.terminate()
        process.wait(60)


def closed_loop(
    target: str, pid: int, users: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` calling back to back, spread over LOAD_PROCESSES processes: one Python
    process with ~100 client threads measures its own GIL queue, not the server."""
    processes = min(LOAD_PROCESSES, clients)
    shares = [clients // processes + (p < clients % processes) for p in range(processes)]
    firsts = [sum(shares[:p]) for p in range(processes)]
    ctx = mp.get_context("spawn")
    ready, results = ctx.Barrier(processes + 1), ctx.Queue()
    workers = [
        ctx.Process(
            target=closed_loop_part, args=(target, users, n, first, seconds, ready, results)
        )
        for n, first in zip(shares, firsts, strict=True)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=120)  # every load process connected: the window starts now
    cpu_before = server_cpu_seconds(pid)
    time.sleep(seconds)
    server_cores = (server_cpu_seconds(pid) - cpu_before) / seconds
    parts = [results.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    ok = [latency for latencies, _ in parts for latency in latencies]
    codes: dict[str, int] = {}
    for _, part_codes in parts:
        for code, count in part_codes.items():
            codes[code] = codes.get(code, 0) + count
    return {
        "clients": clients,
        "processes": processes,
        "admitted": len(ok),
        "admitted_per_s": round(len(ok) / seconds, 1),
        "refused": codes,
        "server_cpu_cores": round(server_cores, 2),
        "p50_ms": round(float(np.percentile(ok, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(ok, 99)) * 1000, 2),
    }


def proc_sample(pid: int) -> tuple[int, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def mixed_load(
    target: str,
    users: list[str],
    items: list[str],
    threads: int,
    stop: threading.Event,
    rate: float | None = None,
) -> tuple[list[int], dict[str, int]]:
    """Start ``threads`` threads sending the soak mix (80% Recommend, 20% Track of one VIEW)
    until ``stop``: back to back, or open loop at ``rate`` calls/s in all. Returns the live
    count of completed calls (one cell) and of errors by code."""
    errors: dict[str, int] = {}
    done = [0]
    lock = threading.Lock()
    gap = threads / rate if rate else 0.0

    def worker(index: int) -> None:
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            rng = np.random.default_rng(index)
            next_at, n = time.monotonic(), 0
            while not stop.is_set():
                if gap:
                    next_at += gap
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                user = users[int(rng.integers(len(users)))]
                try:
                    if rng.random() < 0.8:
                        stub.Recommend(pb.RecommendRequest(user_id=user, k=K), timeout=30)
                    else:
                        event = pb.Event(
                            event_id=f"mix-{time.time_ns()}-{index}-{n}",
                            user_id=user,
                            item_id=items[int(rng.integers(len(items)))],
                            type=pb.VIEW,
                        )
                        stub.Track(pb.TrackRequest(events=[event]), timeout=30)
                    with lock:
                        done[0] += 1
                except grpc.RpcError as error:
                    with lock:
                        errors[error.code().name] = errors.get(error.code().name, 0) + 1
                n += 1

    for i in range(threads):
        threading.Thread(target=worker, args=(i,), daemon=True).start()
    return done, errors


def mixed_capacity(
    target: str, users: list[str], items: list[str], clients: int, seconds: float
) -> float:
    """Calls/s of the soak mix from ``clients`` back-to-back clients."""
    stop = threading.Event()
    done, _ = mixed_load(target, users, items, clients, stop)
    time.sleep(1.0)
    start = done[0]
    time.sleep(seconds)
    rate = (done[0] - start) / seconds
    stop.set()
    time.sleep(0.5)  # let the threads see it (daemon threads, calls time out at worst)
    return rate


def soak(
    target: str,
    pid: int,
    users: list[str],
    items: list[str],
    clients: int,
    rate: float,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """The mix open loop at ``rate`` calls/s from ``clients`` threads; after ``warmup``
    seconds of it, samples RSS and fds every 5 s for ``seconds``."""
    stop = threading.Event()
    done, errors = mixed_load(target, users, items, clients, stop, rate)
    time.sleep(warmup)  # the same load before the baseline: caches and allocator settle
    began = time.monotonic()
    done_at_start = done[0]
    samples: list[tuple[float, int, int]] = [(0.0, *proc_sample(pid))]
    while time.monotonic() - began < seconds:
        time.sleep(min(5.0, seconds / 4))
        rss, fds = proc_sample(pid)
        samples.append((round(time.monotonic() - began, 1), rss, fds))
    achieved = (done[0] - done_at_start) / (time.monotonic() - began)
    stop.set()
    warm = samples[0]
    last = samples[-1]
    return {
        "seconds": seconds,
        "warmup_seconds": warmup,
        "clients": clients,
        "target_rate_per_s": round(rate, 1),
        "achieved_per_s": round(achieved, 1),
        "errors": dict(errors),
        "rss_mb_after_warmup": round(warm[1] / 2**20, 1),
        "rss_mb_end": round(last[1] / 2**20, 1),
        "rss_growth": round(last[1] / warm[1] - 1, 4),
        "fds_after_warmup": warm[2],
        "fds_end": last[2],
        "fds_max": max(s[2] for s in samples),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=32, help="max_concurrent_rpcs")
    parser.add_argument("--overload-clients", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=5.0, help="per overload point")
    parser.add_argument("--soak", type=float, default=600.0)
    parser.add_argument("--soak-warmup", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3, help="capacity/overload pairs")
    parser.add_argument(
        "--server",
        choices=("sync", "aio", "aio-shed", "aio-pending"),
        default="sync",
        help="experiments, overload points only (no soak): aio = grpc.aio with its "
        "max_concurrent_rpcs; aio-shed = grpc.aio with our in-flight counter refusing beyond "
        "--limit; aio-pending = grpc.aio with the C core's pending-call limits (--pending)",
    )
    parser.add_argument("--aio-to-thread", action="store_true", help="aio handlers in threads")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serve --workers N (sync server, overload points only, no soak): capacity is N"
        " times --limit clients, overload N times --overload-clients",
    )
    parser.add_argument(
        "--pending",
        default="8,32",
        help="aio-pending: grpc.server.max_pending_requests and its hard limit, SOFT,HARD",
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/overload.json")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.limit, args.overload_clients, args.seconds, args.soak = 4000, 4, 16, 1, 6
        args.soak_warmup, args.rounds = 1, 1
    shop, model_dir, _ = trained_model(shape_for(args.size))
    model, _ = load_serving_model(model_dir)
    users = list(model.user_ids.ids)[:2000]
    items = list(model.item_ids.ids)[:5000]
    with tempfile.TemporaryDirectory(prefix="shelfrank-overload-") as tmp:
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        prepare_state(state_dir, shop)
        limit: dict[str, Any] = {"max_concurrent_rpcs": args.limit}
        server_fn: Any = serve
        if args.server != "sync":  # Recommend and health only: the overload points, no soak
            server_fn = serve_aio
            limit["to_thread"] = args.aio_to_thread
        if args.server == "aio-shed":
            limit = {"shed_above": args.limit, "to_thread": args.aio_to_thread}
        if args.server == "aio-pending":
            soft, hard = (int(n) for n in args.pending.split(","))
            limit["server_options"] = [
                ("grpc.server.max_pending_requests", soft),
                ("grpc.server.max_pending_requests_hard_limit", hard),
            ]
        capacity_clients = args.limit * args.workers
        overload_clients = args.overload_clients * args.workers
        serving = (
            cli_server(state_dir, model_dir, args.limit, args.workers)
            if args.workers > 1
            else child_server(server_fn, str(state_dir), str(model_dir), limit)
        )
        with serving as (target, pid):
            closed_loop(target, pid, users, 4, 1.0)  # warm-up
            with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
                stub = pb_grpc.RecommenderStub(channel)
                for user in users:  # every user of the pool served once (records, caches)
                    stub.Recommend(pb.RecommendRequest(user_id=user, k=K), timeout=30)
            # Capacity and overload alternate: one noisy stretch does not decide the ratio.
            capacities, overloads = [], []
            for _ in range(args.rounds):
                capacities.append(closed_loop(target, pid, users, capacity_clients, args.seconds))
                overloads.append(closed_loop(target, pid, users, overload_clients, args.seconds))
            mix, soaked = 0.0, {}
            if args.server == "sync" and args.workers == 1:
                clients = max(1, int(args.limit * SOAK_CLIENT_SHARE))
                mix = mixed_capacity(target, users, items, clients, args.seconds)
                soaked = soak(
                    target, pid, users, items, clients, 0.7 * mix, args.soak, args.soak_warmup
                )
    capacity_p99 = float(np.median([point["p99_ms"] for point in capacities]))
    overload_p99 = float(np.median([point["p99_ms"] for point in overloads]))
    refused: dict[str, int] = {}
    for point in overloads:
        for code, count in point["refused"].items():
            refused[code] = refused.get(code, 0) + count
    result = {
        "machine": machine_description(),
        "settings": {
            "items": args.size,
            "max_concurrent_rpcs": args.limit,
            "rounds": args.rounds,
            "seconds_per_point": args.seconds,
            "load_processes": LOAD_PROCESSES,
            "load_niceness": LOAD_NICENESS,
            "server": args.server,
            "workers": args.workers,
            "aio_to_thread": args.aio_to_thread,
            "pending_limits": args.pending if args.server == "aio-pending" else None,
        },
        "at_capacity": capacities,
        "overloaded": overloads,
        "overloaded_refused": refused,
        "capacity_p99_ms_median": capacity_p99,
        "overloaded_p99_ms_median": overload_p99,
        "admitted_p99_ratio": round(overload_p99 / capacity_p99, 3),
        "mix_capacity_per_s": round(mix, 1),
        "soak": soaked,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "soak"}, indent=2))
    print(json.dumps({k: v for k, v in soaked.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
