"""One ranking pipeline (issue 16): what explanations and availability cost, measured in
one run.

1. **Recommend p50 in process** on MovieLens-100k's ua model (or, with ``--smoke``, a
   small synthetic shop): the code of ``--baseline`` (a git worktree, "today") against
   this code with ``explain`` off and on. Each configuration runs in its own child
   process, in alternating rounds (machines are shared and noisy: the ratio of medians
   is the figure), each timing ``RecommenderService.recommend`` over a real SQLite store.
2. **Explanations**: for 1,000 recommended items (100 users x 10), the contributions
   plus ``rest`` equal the score within 1e-4, and every "because you" item is in the
   user's history.
3. **Availability** on the 100k-item catalogue (``benchmarks/catalogues.py``):
   - the cost of flipping 10,000 items in the serving state against rebuilding it;
   - a real server under load from two client processes (Recommend, SimilarItems,
     Rank) while 10,000 items are made unavailable: every call started after the flip
     was acknowledged returns none of them;
   - a device synced before the flip: none of them after its next sync; the delta after
     1% of the items flipped against a full snapshot.

    python benchmarks/ranking_pipeline.py [--ml100k ../shared/data/ml-100k] [--smoke]
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from catalogues import latency_model_for, shape_for, trained_model  # benchmarks/catalogues.py
from machine import machine_description, serve_process  # benchmarks/machine.py

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PACKAGES = ("core", "datasets", "server", "client", "edge", "proto")
PAIRED_BLOCK = 100  # calls per turn of the paired in-process measurement
PAIRED_TURN = 50  # calls per configuration per turn of the gRPC measurement


# -- 1. latency, in child processes -------------------------------------------------------------
def _use_code(root: str) -> None:
    """Import shelfrank from ``root`` (a folder holding ``shelfrank/`` links to another
    checkout) instead of this checkout's editable install."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, root)
    for name in [m for m in sys.modules if m == "shelfrank" or m.startswith("shelfrank.")]:
        del sys.modules[name]


def _readable_here(model_dir: str, scratch: Path) -> str:
    """``model_dir`` as the code imported now reads it. A model trained by newer code names
    training settings older code does not know (they shaped the training, not serving, and
    the older code refuses unknown ones): its copy's manifest leaves them out, the array
    files are links to the originals (their checksums are in the manifest, unchanged)."""
    from shelfrank.server.config import TrainConfig

    source = Path(model_dir)
    manifest = json.loads((source / "manifest.json").read_text())
    params = dict(manifest.get("params", {}))
    known = set(TrainConfig.__dataclass_fields__)
    if set(params) <= known:
        return model_dir
    copy = scratch / "model-for-older-code"
    copy.mkdir()
    for path in source.iterdir():
        if path.name != "manifest.json":
            (copy / path.name).symlink_to(path.resolve())
    manifest["params"] = {name: value for name, value in params.items() if name in known}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


@contextmanager
def _in_process_service(model_dir: str) -> Iterator[tuple[Any, list[str]]]:
    """The service over a throwaway store, the model loaded as `shelfrank serve` loads it
    (compiled kernels attached), and the model's users (shelfrank imported from wherever
    the caller chose: this checkout or ``_use_code``'s)."""
    from shelfrank.server.registry import load_state
    from shelfrank.server.service import RecommenderService
    from shelfrank.server.store import SQLiteStore

    state = load_state(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLiteStore(Path(scratch) / "store.sqlite3")
        try:
            yield RecommenderService(store, state), list(state.model.user_ids.ids)
        finally:
            store.close()


def latency_child(root: str, model_dir: str, explain: bool, calls: int, seed: int) -> None:
    """Prints the p50 and p90 (ms) of in-process Recommend calls, as JSON."""
    if root:
        _use_code(root)
        scratch = tempfile.mkdtemp()
        atexit.register(shutil.rmtree, scratch, True)
        model_dir = _readable_here(model_dir, Path(scratch))
    from shelfrank.server.requests import RecommendQuery

    with _in_process_service(model_dir) as (service, users):
        rng = random.Random(seed)
        kwargs: dict[str, Any] = {"explain": True} if explain else {}
        queries = [RecommendQuery(user_id=rng.choice(users), k=10, **kwargs) for _ in range(calls)]
        for query in queries[: calls // 5]:  # warm-up: caches, first fold-in pools
            service.recommend(query)
        took = []
        for query in queries:
            tick = time.perf_counter()
            service.recommend(query)
            took.append(time.perf_counter() - tick)
    print(
        json.dumps(
            {
                "p50_ms": 1000 * float(np.percentile(took, 50)),
                "p90_ms": 1000 * float(np.percentile(took, 90)),
            }
        )
    )


def paired_child(model_dir: str, calls: int, block: int, seed: int) -> None:
    """Prints the p50 (ms) of in-process Recommend calls with explain off and on, as JSON:
    one process, the same users, blocks of ``block`` calls taking turns (which goes first
    alternates), so both see the same machine (separate processes a few seconds apart
    saw it 1.4x faster or slower, more than the ratio being measured)."""
    from shelfrank.server.requests import RecommendQuery

    with _in_process_service(model_dir) as (service, users):
        rng = random.Random(seed)
        picked = [rng.choice(users) for _ in range(calls)]
        queries = {
            explain: [RecommendQuery(user_id=user, k=10, explain=explain) for user in picked]
            for explain in (False, True)
        }
        for explain in (False, True):  # warm-up: caches, first fold-in pools
            for query in queries[explain][: calls // 5]:
                service.recommend(query)
        took: dict[bool, list[float]] = {False: [], True: []}
        for start in range(0, calls, block):
            turn = (False, True) if (start // block) % 2 == 0 else (True, False)
            for explain in turn:
                for query in queries[explain][start : start + block]:
                    tick = time.perf_counter()
                    service.recommend(query)
                    took[explain].append(time.perf_counter() - tick)
    off, on = (1000 * float(np.percentile(took[explain], 50)) for explain in (False, True))
    print(json.dumps({"off_p50_ms": off, "on_p50_ms": on}))


def measure_paired(model_dir: Path, rounds: int, calls: int) -> dict[str, Any]:
    """Explain on against off, in process, each round one paired child (``paired_child``)."""
    runs = []
    for round_index in range(rounds):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--paired-child",
                json.dumps([str(model_dir), calls, PAIRED_BLOCK, round_index]),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratios = [run["on_p50_ms"] / run["off_p50_ms"] for run in runs]
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "block": PAIRED_BLOCK,
        "runs": runs,
        "explain_on_vs_off_by_round": ratios,
        "explain_on_vs_off": statistics.median(ratios),
    }


@contextmanager
def baseline_tree(revision: str) -> Iterator[Path]:
    """A folder whose ``shelfrank/`` links to a worktree of ``revision`` (removed after)."""
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        worktree = scratch / "baseline-worktree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), revision],
            check=True,
            capture_output=True,
        )
        try:
            root = scratch / "baseline-root" / "shelfrank"
            root.mkdir(parents=True)
            for package in PACKAGES:
                (root / package).symlink_to(worktree / package)
            (root / "__init__.py").write_text("")
            yield root.parent
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )


def _rotated(names: list[str], round_index: int) -> list[str]:
    """The configurations in the order of one round (each goes first in turn)."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def measure_latency(model_dir: Path, baseline: str, rounds: int, calls: int) -> dict[str, Any]:
    with baseline_tree(baseline) as old_root:
        configurations = {
            "today": (str(old_root), False),
            "explain_off": ("", False),
            "explain_on": ("", True),
        }
        p50: dict[str, list[float]] = {name: [] for name in configurations}
        for round_index in range(rounds):
            for name in _rotated(list(configurations), round_index):
                root, explain = configurations[name]
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--latency-child",
                        json.dumps([root, str(model_dir), explain, calls, round_index]),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                p50[name].append(json.loads(out.stdout.strip().splitlines()[-1])["p50_ms"])
    median = {name: statistics.median(values) for name, values in p50.items()}
    return {
        "baseline": baseline,
        "rounds": rounds,
        "calls_per_round": calls,
        "p50_ms_by_round": p50,
        "p50_ms": median,
        "explain_off_vs_today": median["explain_off"] / median["today"],
        "explain_on_vs_off": median["explain_on"] / median["explain_off"],
    }


def _serve(root: str, model_dir: Path, state: Path) -> tuple[subprocess.Popen[str], str]:
    """``shelfrank serve`` of the code at ``root`` ("": this checkout) in a child process."""
    child = json.dumps([root, str(model_dir), str(state)])
    return serve_process([], command=[sys.executable, __file__, "--serve-child", child])


def serve_child(root: str, model_dir: str, state: str) -> None:
    if root:
        _use_code(root)
        model_dir = _readable_here(model_dir, Path(state).parent)
    from shelfrank.server.cli import main as cli_main

    cli_main(["serve", "--state", state, "--model", model_dir, "--port", "0"])


def measure_grpc_latency(model_dir: Path, baseline: str, rounds: int, calls: int) -> dict[str, Any]:
    """Recommend p50 through real servers (today's code and this code) on loopback, one
    caller making one call at a time. Both servers stay up; in each round the three
    configurations take turns of PAIRED_TURN calls (the same users in each turn, which
    goes first rotating), so all three see the same moments of the machine; each round's
    ratios are taken within the round and the median over rounds is reported."""
    import grpc

    from shelfrank.proto._generated import recommender_pb2 as pb
    from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc

    users = _model_users(model_dir)
    names = ["today", "explain_off", "explain_on"]
    p50: dict[str, list[float]] = {name: [] for name in names}
    with baseline_tree(baseline) as old_root, tempfile.TemporaryDirectory() as scratch:
        old, old_address = _serve(str(old_root), model_dir, Path(scratch) / "old")
        new, new_address = _serve("", model_dir, Path(scratch) / "new")
        address = {"today": old_address, "explain_off": new_address, "explain_on": new_address}
        channels = {name: grpc.insecure_channel(address[name]) for name in names}
        stubs = {name: pb_grpc.RecommenderStub(channel) for name, channel in channels.items()}
        rng = random.Random(7)

        def call(name: str, user: str) -> float:
            request = pb.RecommendRequest(user_id=user, k=10, explain=name == "explain_on")
            tick = time.perf_counter()
            stubs[name].Recommend(request, timeout=30)
            return time.perf_counter() - tick

        try:
            for name in names:  # warm-up: caches, first fold-in pools
                for _ in range(calls // 5):
                    call(name, rng.choice(users))
            for round_index in range(rounds):
                took: dict[str, list[float]] = {name: [] for name in names}
                for turn in range(0, calls, PAIRED_TURN):
                    chosen = [rng.choice(users) for _ in range(min(PAIRED_TURN, calls - turn))]
                    for name in _rotated(names, round_index + turn // PAIRED_TURN):
                        took[name] += [call(name, user) for user in chosen]
                for name in names:
                    p50[name].append(1000 * float(np.percentile(took[name], 50)))
        finally:
            for channel in channels.values():
                channel.close()
            for process in (old, new):
                process.terminate()
                process.wait(60)
    median = {name: statistics.median(values) for name, values in p50.items()}
    return {
        "turn": PAIRED_TURN,
        "p50_ms_by_round": p50,
        "p50_ms": median,
        "explain_off_vs_today": statistics.median(
            off / today for off, today in zip(p50["explain_off"], p50["today"], strict=True)
        ),
        "explain_on_vs_off": statistics.median(
            on / off for on, off in zip(p50["explain_on"], p50["explain_off"], strict=True)
        ),
    }


def _model_users(model_dir: Path) -> list[str]:
    from shelfrank.core.model_format import load_serving_model

    model, _ = load_serving_model(model_dir)
    return list(model.user_ids.ids)


# -- 2. explanations are exact -------------------------------------------------------------------
def check_explanations(model_dir: Path, users: int) -> dict[str, Any]:
    from shelfrank.core.model_format import load_serving_model
    from shelfrank.server.registry import manifest_config
    from shelfrank.server.requests import RecommendQuery
    from shelfrank.server.service import RecommenderService
    from shelfrank.server.serving_state import ServingState
    from shelfrank.server.store import SQLiteStore

    model, manifest = load_serving_model(model_dir)
    config = manifest_config(model_dir, manifest)
    worst = 0.0
    items = because_total = because_outside = 0
    reasons: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLiteStore(Path(scratch) / "store.sqlite3")
        state = ServingState.build(model, config, trained_at_ms=0, watermark_seq=0)
        service = RecommenderService(store, state)
        for user in list(model.user_ids.ids)[:users]:
            history = {model.item_ids.id_of(int(r)) for r in model.seen_rows(user)}
            scored = service.recommend(RecommendQuery(user_id=user, k=10, explain=True))
            for (_, score), explained in zip(scored.items, scored.explanations, strict=True):
                total = sum(v for _, v in explained.contributions) + explained.rest
                worst = max(worst, abs(total - score))
                items += 1
                because_total += len(explained.because)
                because_outside += len(set(explained.because) - history)
                reasons[explained.reason] = reasons.get(explained.reason, 0) + 1
        store.close()
    return {
        "items": items,
        "largest_sum_error": worst,
        "because_items": because_total,
        "because_items_outside_history": because_outside,
        "reasons": reasons,
    }


# -- 3. availability -----------------------------------------------------------------------------
def flip_cost(model_dir: Path, flips: int, repeats: int) -> dict[str, Any]:
    """Applying ``flips`` availability changes to a serving state, against rebuilding the
    state from the model and the whole catalogue (what a model swap does)."""
    from shelfrank.core.model_format import load_serving_model
    from shelfrank.server.registry import manifest_config
    from shelfrank.server.serving_state import ServingState
    from shelfrank.server.storage import CatalogueEntry

    model, manifest = load_serving_model(model_dir)
    config = manifest_config(model_dir, manifest)
    vocabulary = model.item_token_embeddings.vocabulary
    # As the store hands them over: each item with its integer key (CatalogueEntry.key).
    catalogue = [
        CatalogueEntry(
            item,
            tuple(vocabulary.id_of(int(c)) for c in model.item_tokens.row(row)),
            True,
            1,
            1,
            row + 1,
        )
        for row, item in enumerate(model.item_ids.ids)
    ]
    rebuild, flip = [], []
    for _ in range(repeats):
        # Each timed step starts without garbage left by the step before (a collection
        # the rebuild's allocations make due would otherwise land in the flip).
        gc.collect()
        tick = time.perf_counter()
        state = ServingState.build(model, config, trained_at_ms=0, watermark_seq=0)
        state = state.with_catalogue(catalogue, revision=1)
        rebuild.append(time.perf_counter() - tick)
        chosen = catalogue[:: max(1, len(catalogue) // flips)][:flips]
        changes = [entry._replace(available=False) for entry in chosen]
        gc.collect()
        tick = time.perf_counter()
        flipped = state.with_catalogue(changes, revision=2)
        flip.append(time.perf_counter() - tick)
        if flipped.available is None or int((~flipped.available).sum()) != len(changes):
            raise RuntimeError("the flips did not land")
    return {
        "items": len(catalogue),
        "flips": flips,
        "rebuild_s": statistics.median(rebuild),
        "flip_s": statistics.median(flip),
        "flip_vs_rebuild": statistics.median(flip) / statistics.median(rebuild),
    }


def _load_client(
    target: str, users: list[str], items: list[str], seconds: float, ready: Any, out: Any
) -> None:
    """Recommend, SimilarItems and Rank in turn; records (start, end, method, item ids)."""
    from shelfrank.client import Client

    rng = random.Random(os.getpid())
    calls: list[tuple[float, float, str, list[str]]] = []
    with Client(target, timeout=30.0) as client:
        client.recommend(users[0], k=1)  # connected and warm
        ready.put(os.getpid())
        end = time.time() + seconds
        n = 0
        while time.time() < end:
            start = time.time()
            if n % 3 == 0:
                got = client.recommend(rng.choice(users), k=50).item_ids
                method = "recommend"
            elif n % 3 == 1:
                got = client.similar_items(rng.choice(items), k=50).item_ids
                method = "similar_items"
            else:
                got = tuple(
                    i.item_id
                    for i in client.rank(rng.choice(users), rng.sample(items, 200)).items
                    if i.score != float("-inf")
                )
                method = "rank"
            calls.append((start, time.time(), method, list(got)))
            n += 1
    out.put(calls)


def availability_under_load(
    model_dir: Path, shop: Any, flips: int, clients: int, seconds: float
) -> dict[str, Any]:
    from shelfrank.client import Client, Item
    from shelfrank.edge import EdgeRecommender

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shelfrank.server",
                "serve",
                "--state",
                str(scratch / "s"),
                "--model",
                str(model_dir),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("shelfrank serving on"):
                raise RuntimeError(f"server did not start: {line!r}")
            target = line.split()[-1]
            items = list(shop.items.ids)
            users = list(dict.fromkeys(shop.interactions.user_ids))[:2000]
            with Client(target, timeout=120.0) as client:
                for start in range(0, len(items), 10_000):
                    client.upsert_items(
                        Item(i, t)
                        for i, t in zip(
                            items[start : start + 10_000],
                            shop.items.tokens[start : start + 10_000],
                            strict=True,
                        )
                    )
                phone = EdgeRecommender(scratch / "phone", users[0], target, timeout=120.0)
                full = phone.sync()
                # Flip the items the load would see most: the head of every list.
                popular = list(dict.fromkeys(shop.interactions.item_ids))
                chosen = popular[:flips]
                spawn = mp.get_context("spawn")
                queue: Any = spawn.Queue()
                ready: Any = spawn.Queue()
                workers = [
                    spawn.Process(
                        target=_load_client, args=(target, users, items, seconds, ready, queue)
                    )
                    for _ in range(clients)
                ]
                for worker in workers:
                    worker.start()
                for _ in workers:
                    ready.get(timeout=300)
                time.sleep(seconds / 3)
                tick = time.time()
                result = client.set_availability(chosen, False)
                acknowledged = time.time()
                calls = [call for _ in workers for call in queue.get()]
                for worker in workers:
                    worker.join()
                flipped = set(chosen)
                after = [c for c in calls if c[0] > acknowledged]
                before = [c for c in calls if c[1] < tick]
                leaked = sum(1 for c in after if flipped & set(c[3]))
                shown_before = sum(1 for c in before if flipped & set(c[3]))
                synced = phone.sync()
                device_leaks = sum(
                    len(flipped & set(phone.recommend(k=100).item_ids)) for _ in range(3)
                )
                # A delta after 1% of the catalogue flipped, against a full snapshot.
                client.set_availability(chosen, True)
                phone.sync()
                one_percent = popular[: len(items) // 100]
                client.set_availability(one_percent, False)
                delta = phone.sync()
                phone.close()
        finally:
            server.terminate()
            server.wait(60)
    return {
        "flips": flips,
        "changed": result.changed,
        "flip_call_s": acknowledged - tick,
        "client_processes": clients,
        "calls_before_flip": len(before),
        "calls_before_flip_showing_flipped_items": shown_before,
        "calls_after_ack": len(after),
        "calls_after_ack_with_unavailable_items": leaked,
        "calls_by_method_after_ack": {
            m: sum(1 for c in after if c[2] == m) for m in ("recommend", "similar_items", "rank")
        },
        "device_delta_after_flip_bytes": synced.snapshot_bytes,
        "device_unavailable_items_after_sync": device_leaks,
        "full_snapshot_bytes": full.snapshot_bytes,
        "delta_after_1pct_flipped_bytes": delta.snapshot_bytes,
        "delta_share_of_full": delta.snapshot_bytes / full.snapshot_bytes,
        "delta_was_full": delta.full_snapshot,
    }


def markdown(result: dict[str, Any]) -> str:
    latency, remote, paired = result["latency"], result["grpc_latency"], result["paired_latency"]
    explained, cost, load = result["explanations"], result["flip_cost"], result["availability"]
    p50, rpc, rpc_rounds = latency["p50_ms"], remote["p50_ms"], remote["p50_ms_by_round"]["today"]
    flip_ms, rebuild_ms = 1000 * cost["flip_s"], 1000 * cost["rebuild_s"]
    delta, full = load["delta_after_1pct_flipped_bytes"], load["full_snapshot_bytes"]
    return "\n".join(
        [
            f"Machine: {result['machine']}.",
            "",
            f"- Recommend p50 in process ({result['latency_model']}): today {p50['today']:.3f}"
            f" ms, explain off {p50['explain_off']:.3f} ms"
            f" ({latency['explain_off_vs_today']:.3f}x),"
            f" explain on {p50['explain_on']:.3f} ms ({latency['explain_on_vs_off']:.2f}x of off);"
            f" median of {latency['rounds']} alternating rounds.",
            f"- The same, paired (explain off and on in turns of {paired['block']} calls in one"
            f" process): explain on {paired['explain_on_vs_off']:.2f}x of off, median of"
            f" {paired['rounds']} processes ("
            + ", ".join(f"{r:.2f}" for r in paired["explain_on_vs_off_by_round"])
            + ").",
            f"- Recommend p50 through gRPC (one caller; the three in turns of {remote['turn']}"
            f" calls, ratios within each round, median of {len(rpc_rounds)} rounds): today"
            f" {rpc['today']:.3f} ms, explain off {rpc['explain_off']:.3f} ms"
            f" ({remote['explain_off_vs_today']:.3f}x), explain on {rpc['explain_on']:.3f} ms"
            f" ({remote['explain_on_vs_off']:.2f}x of off).",
            f"- Explanations: {explained['items']} items, largest |contributions + rest - score|"
            f" {explained['largest_sum_error']:.2e}; {explained['because_items']} because-you"
            f" items, {explained['because_items_outside_history']} outside the user's history;"
            f" reasons {explained['reasons']}.",
            f"- Flip cost ({cost['items']:,} items): {cost['flips']:,} flips {flip_ms:.1f} ms"
            f" against a rebuild of {rebuild_ms:.0f} ms = {100 * cost['flip_vs_rebuild']:.2f}%.",
            f"- Under load ({load['client_processes']} client processes): {load['flips']:,} items"
            f" made unavailable in one call ({load['flip_call_s']:.2f} s);"
            f" {load['calls_before_flip_showing_flipped_items']} of {load['calls_before_flip']}"
            f" calls before showed some; {load['calls_after_ack_with_unavailable_items']} of"
            f" {load['calls_after_ack']} calls started after the acknowledgement did"
            f" ({load['calls_by_method_after_ack']}); the device after its next sync:"
            f" {load['device_unavailable_items_after_sync']}.",
            f"- Device delta after 1% of the items flipped: {delta:,} bytes against a full"
            f" snapshot of {full:,} = {100 * load['delta_share_of_full']:.3f}%.",
        ]
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--latency-child":
        root, model_dir, explain, calls, seed = json.loads(sys.argv[2])
        latency_child(root, model_dir, explain, calls, seed)
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--paired-child":
        paired_child(*json.loads(sys.argv[2]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-child":
        serve_child(*json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--baseline", default="9af77f5", help="git revision of 'today'")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to prove it runs")
    parser.add_argument("--out", default=str(RESULTS / "ranking_pipeline.json"))
    args = parser.parse_args()
    latency_model, latency_name = latency_model_for(Path(args.ml100k), smoke=args.smoke)
    rounds, calls = (1, 100) if args.smoke else (args.rounds, args.calls)
    size = 4_000 if args.smoke else 100_000
    flips = 400 if args.smoke else 10_000
    shop, catalogue_model, _ = trained_model(shape_for(size), quiet=args.smoke)
    result = {
        "machine": machine_description(),
        "latency_model": latency_name,
        "latency": measure_latency(latency_model, args.baseline, rounds, calls),
        "paired_latency": measure_paired(latency_model, rounds, calls),
        "grpc_latency": measure_grpc_latency(latency_model, args.baseline, rounds, calls // 2),
        "explanations": check_explanations(latency_model, 20 if args.smoke else 100),
        "flip_cost": flip_cost(catalogue_model, flips, 1 if args.smoke else 5),
        "availability": availability_under_load(
            catalogue_model, shop, flips, 2, 3.0 if args.smoke else 12.0
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    problems = []
    if result["explanations"]["largest_sum_error"] > 1e-4:
        problems.append("an explanation does not sum to its score")
    if result["explanations"]["because_items_outside_history"]:
        problems.append("a because-you item is outside the user's history")
    if result["availability"]["calls_after_ack_with_unavailable_items"]:
        problems.append("an unavailable item was returned after the flip")
    if result["availability"]["device_unavailable_items_after_sync"]:
        problems.append("the device returned an unavailable item after its sync")
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
