"""Close the loop (issue 17): what recording impressions costs, how evenly and stably
users are assigned, and the simulator's hybrid-vs-popularity run, measured in one run.

1. **Recommend p50 with impressions recorded against not**: in process (each setting in
   its own child process, alternating rounds; ``RecommenderService.recommend`` over a
   real SQLite store) and through gRPC (two ``shelfrank serve`` processes, one with
   ``--no-record-impressions``, one caller, alternating rounds). The ratio of medians is
   the figure (machines are shared and noisy).
2. **Bytes per impression of 10 items** in the SQLite store (the file's growth over
   20,000 impressions, after a checkpoint) and, with ``--store postgresql://...``, in
   PostgreSQL (``pg_total_relation_size`` of the impression tables).
3. **Assignment**: 100,000 user ids split 50/30/20; the shares, the largest deviation in
   percentage points and Pearson's chi-square with its p-value; the same assignment
   recomputed in a second process (a restart or another replica: a digest must match).
4. **The simulator** (``shelfrank simulate``, server/simulate.py): 2,000 shoppers, hybrid
   against popularity at 50/50, 4 rounds (3 retrains driven by the simulated feedback):
   the hybrid's CTR per round and the report's comparisons.

    python benchmarks/feedback_loop.py [--ml100k ../shared/data/ml-100k] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from catalogues import latency_model_for  # benchmarks/catalogues.py
from machine import machine_description  # benchmarks/machine.py
from server_pair import recommend_p50_by_setting  # benchmarks/server_pair.py

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SPLIT = (50, 30, 20)


# -- 1. latency ----------------------------------------------------------------------------------
def latency_child(model_dir: str, record: bool, calls: int, seed: int) -> None:
    """Prints the p50 (ms) of in-process Recommend calls, as JSON."""
    from shelfrank.core.model_format import load_serving_model
    from shelfrank.server.feedback.loop import FeedbackLoop
    from shelfrank.server.registry import manifest_config
    from shelfrank.server.requests import RecommendQuery
    from shelfrank.server.service import RecommenderService
    from shelfrank.server.serving_state import ServingState
    from shelfrank.server.store import SQLiteStore

    model, manifest = load_serving_model(model_dir)
    config = manifest_config(model_dir, manifest)
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLiteStore(Path(scratch) / "store.sqlite3")
        state = ServingState.build(model, config, trained_at_ms=0, watermark_seq=0)
        feedback = FeedbackLoop(store, record=record)
        service = RecommenderService(store, state, feedback=feedback)
        users = list(model.user_ids.ids)
        rng = random.Random(seed)
        queries = [RecommendQuery(user_id=rng.choice(users), k=10) for _ in range(calls)]
        for query in queries[: calls // 5]:
            service.recommend(query)
        took = []
        for query in queries:
            tick = time.perf_counter()
            service.recommend(query)
            took.append(time.perf_counter() - tick)
        feedback.close()
        stored = sum(1 for _ in store.impressions_between(0, 2**62))
        store.close()
    print(json.dumps({"p50_ms": 1000 * float(np.percentile(took, 50)), "stored": stored}))


def measure_latency(model_dir: Path, rounds: int, calls: int) -> dict[str, Any]:
    p50: dict[str, list[float]] = {"off": [], "on": []}
    stored: dict[str, list[int]] = {"off": [], "on": []}
    for round_index in range(rounds):
        names = ["off", "on"] if round_index % 2 == 0 else ["on", "off"]
        for name in names:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--latency-child",
                    json.dumps([str(model_dir), name == "on", calls, round_index]),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            answer = json.loads(out.stdout.strip().splitlines()[-1])
            p50[name].append(answer["p50_ms"])
            stored[name].append(answer["stored"])
    median = {name: statistics.median(values) for name, values in p50.items()}
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "p50_ms_by_round": p50,
        "impressions_stored_by_round": stored,
        "p50_ms": median,
        "on_vs_off": median["on"] / median["off"],
    }


def measure_grpc_latency(model_dir: Path, rounds: int, calls: int) -> dict[str, Any]:
    measured = recommend_p50_by_setting(
        model_dir, {"off": ("--no-record-impressions",), "on": ()}, rounds, calls
    )
    median = measured["p50_ms"]
    return {**measured, "on_vs_off": median["on"] / median["off"]}


# -- 2. storage ----------------------------------------------------------------------------------
def _impressions(count: int, seed: int) -> list[Any]:
    import uuid

    from shelfrank.server.storage import Impression, ImpressionKind

    rng = random.Random(seed)
    return [
        Impression(
            recommendation_id=uuid.UUID(int=rng.getrandbits(128)).hex,
            kind=ImpressionKind.SERVED,
            user_id=f"u{rng.randrange(100_000):06d}",
            time_ms=1_760_000_000_000 + n * 50,
            surface="recommend",
            experiment="home",
            variant=rng.choice(("control", "treatment")),
            model_version="20261203T004723Z-8c274d0a3a",
            item_ids=tuple(f"i{rng.randrange(100_000):07d}" for _ in range(10)),
        )
        for n in range(count)
    ]


def sqlite_bytes(count: int) -> dict[str, Any]:
    from shelfrank.server.store import SQLiteStore

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "store.sqlite3"
        store = SQLiteStore(path)
        store.close()
        before = path.stat().st_size
        store = SQLiteStore(path)
        batch = _impressions(count, 1)
        for start in range(0, count, 1_000):
            store.record_impressions(batch[start : start + 1_000])
        store.close()  # checkpoints the WAL into the file
        after = path.stat().st_size
    return {
        "impressions": count,
        "items_each": 10,
        "bytes_per_impression": (after - before) / count,
    }


def postgres_bytes(url: str, count: int) -> dict[str, Any]:
    import psycopg

    from shelfrank.server.stores import open_store

    store = open_store(url)
    try:
        with psycopg.connect(url) as connection:
            size = connection.execute(
                "SELECT pg_total_relation_size('impressions') "
                "+ pg_total_relation_size('impression_contexts')"
            ).fetchone()
            before = int(size[0]) if size else 0
        batch = _impressions(count, 2)
        for start in range(0, count, 1_000):
            store.record_impressions(batch[start : start + 1_000])
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE impressions")
            size = connection.execute(
                "SELECT pg_total_relation_size('impressions') "
                "+ pg_total_relation_size('impression_contexts')"
            ).fetchone()
            after = int(size[0]) if size else 0
    finally:
        store.close()
    return {
        "impressions": count,
        "items_each": 10,
        "bytes_per_impression": (after - before) / count,
    }


# -- 3. assignment -------------------------------------------------------------------------------
def _experiment() -> Any:
    from shelfrank.core.experiments import Experiment, Variant

    return Experiment(
        name="home",
        salt="home",
        surface="recommend",
        start_ms=None,
        end_ms=None,
        variants=tuple(
            Variant(name=name, share=share, setting="hybrid")
            for name, share in zip(("a", "b", "c"), SPLIT, strict=True)
        ),
        control="a",
    )


def assignment_digest(users: int) -> str:
    from shelfrank.core.experiments import assign

    experiment = _experiment()
    names = "".join(assign(experiment, f"user-{n}").name for n in range(users))
    return hashlib.sha256(names.encode()).hexdigest()


def measure_assignment(users: int) -> dict[str, Any]:
    from scipy.stats import chisquare

    from shelfrank.core.experiments import assign

    experiment = _experiment()
    names = [assign(experiment, f"user-{n}").name for n in range(users)]
    observed = [names.count(v.name) for v in experiment.variants]
    expected = [users * share / 100 for share in SPLIT]
    statistic, p_value = chisquare(observed, expected)
    shares = [100 * o / users for o in observed]
    here = hashlib.sha256("".join(names).encode()).hexdigest()
    other = subprocess.run(
        [sys.executable, __file__, "--digest-child", str(users)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "users": users,
        "split_percent": list(SPLIT),
        "shares_percent": shares,
        "largest_deviation_points": max(abs(s - e) for s, e in zip(shares, SPLIT, strict=True)),
        "chi_square": float(statistic),
        "chi_square_p_value": float(p_value),
        "same_in_another_process": here == other,
    }


# -- 4. simulation -------------------------------------------------------------------------------
def simulate(shoppers: int, items: int, history: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "simulation.json"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shelfrank.server",
                "simulate",
                "--state",
                str(Path(scratch) / "state"),
                "--shoppers",
                str(shoppers),
                "--items",
                str(items),
                "--history-events",
                str(history),
                "--rounds",
                str(rounds),
                "--retrain-interval",
                "2",
                "--json",
                str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - started
        document = json.loads(out.read_text())
    (experiment,) = document["report"]["experiments"]
    return {
        "seconds": took,
        "rounds": document["rounds"],
        "variants": [
            {key: v[key] for key in ("name", "impressions", "clicks", "ctr", "ctr_ci")}
            for v in experiment["variants"]
        ],
        "comparisons": experiment["comparisons"],
    }


# -- report --------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    latency, remote, sqlite = result["latency"], result["grpc_latency"], result["sqlite"]
    assignment, sim = result["assignment"], result["simulation"]
    lines = [
        f"Machine: {result['machine']}.",
        "",
        f"- Recommend p50 in process ({result['latency_model']}): recording off"
        f" {latency['p50_ms']['off']:.3f} ms, on {latency['p50_ms']['on']:.3f} ms ="
        f" {latency['on_vs_off']:.3f}x (median of {latency['rounds']} alternating rounds).",
        f"- Recommend p50 through gRPC (one caller): off {remote['p50_ms']['off']:.3f} ms, on"
        f" {remote['p50_ms']['on']:.3f} ms = {remote['on_vs_off']:.3f}x.",
        f"- Storage per impression of 10 items: SQLite {sqlite['bytes_per_impression']:.0f} bytes"
        + (
            f", PostgreSQL {result['postgres']['bytes_per_impression']:.0f} bytes"
            if result.get("postgres")
            else ""
        )
        + f" ({sqlite['impressions']:,} impressions).",
        f"- Assignment of {assignment['users']:,} ids split {assignment['split_percent']}:"
        f" {[round(s, 2) for s in assignment['shares_percent']]} percent, largest deviation"
        f" {assignment['largest_deviation_points']:.2f} points, chi-square"
        f" {assignment['chi_square']:.2f} (p {assignment['chi_square_p_value']:.3f}); same in"
        f" another process: {assignment['same_in_another_process']}.",
        f"- Simulation ({sim['seconds']:.0f} s): CTR per round "
        + "; ".join(
            f"round {r['round']} ({r['model_version']}): "
            + ", ".join(f"{n} {v['ctr']:.4f}" for n, v in r["variants"].items())
            for r in sim["rounds"]
        )
        + ".",
    ]
    for c in sim["comparisons"]:
        lines.append(
            f"  - {c['metric']}: {c['variant']} - {c['control']} = {c['difference']:+.4f},"
            f" 95% CI [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], always valid"
            f" [{c['always_valid_ci'][0]:+.4f}, {c['always_valid_ci'][1]:+.4f}],"
            f" p {c['p_value']:.3g}: {c['verdict']}."
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--latency-child":
        latency_child(*json.loads(sys.argv[2]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--digest-child":
        print(assignment_digest(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--store", help="also measure PostgreSQL storage (postgresql:// URL)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to prove it runs")
    parser.add_argument("--out", default=str(RESULTS / "feedback_loop.json"))
    args = parser.parse_args()
    latency_model, latency_name = latency_model_for(Path(args.ml100k), smoke=args.smoke)
    rounds, calls = (1, 100) if args.smoke else (args.rounds, args.calls)
    result: dict[str, Any] = {
        "machine": machine_description(),
        "latency_model": latency_name,
        "sqlite": sqlite_bytes(2_000 if args.smoke else 20_000),
        "postgres": postgres_bytes(args.store, 20_000) if args.store else None,
        "assignment": measure_assignment(10_000 if args.smoke else 100_000),
        "latency": measure_latency(latency_model, rounds, calls),
        "grpc_latency": measure_grpc_latency(latency_model, rounds, calls // 2),
        "simulation": (
            simulate(100, 200, 1_000, 2) if args.smoke else simulate(2_000, 1_000, 2_000, 4)
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    problems = []
    if not result["assignment"]["same_in_another_process"]:
        problems.append("the assignment differs in another process")
    served = calls + calls // 5  # the warm-up calls are recorded too
    if any(n != served for n in result["latency"]["impressions_stored_by_round"]["on"]):
        problems.append("not every recorded response was stored")
    if any(result["latency"]["impressions_stored_by_round"]["off"]):
        problems.append("impressions were stored with recording off")
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
