"""The dashboard's cost (issue 18): its overview page loaded in a real headless Chromium
at 100k items, and Recommend p50 of a server with the dashboard on but nobody looking,
against one without it, in the same run.

    python benchmarks/dashboard.py [--smoke] [--loads 20] [--out results/dashboard.json]

1. **Overview load**: a state holding a synthetic shop of 100,000 items (its catalogue,
   profiles and events ingested) and its trained model, served with ``--http-port``;
   Chromium (Debian's, driven by Playwright) loads ``/`` ``--loads`` times: the time from
   navigation to the page showing the model version, the counts and both charts. The
   JSON behind it (``GET /api/overview``) is timed alone too.
2. **Idle cost**: two servers on the same model, one with ``--http-port``, nobody calling
   it; Recommend p50 through gRPC in alternating rounds (``server_pair.py``).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from catalogues import latency_model_for, shape_for, trained_model  # benchmarks/catalogues.py
from machine import machine_description  # benchmarks/machine.py
from server_pair import recommend_p50_by_setting, serve  # benchmarks/server_pair.py

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CHROMIUM = "/usr/bin/chromium"
# The dashboard's sampler stores one load sample per 10 s (server/dashboard/sampler.py).
SAMPLE_WAIT_SECONDS = 11.0
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _state_with_shop(items: int, state: Path) -> tuple[Path, dict[str, int]]:
    """A state directory holding the shop's catalogue, profiles and events; the model."""
    from shelfrank.server.ingest import ingest
    from shelfrank.server.stores import open_store

    shop, model_dir, _ = trained_model(shape_for(items), quiet=False)
    store = open_store(state)
    try:
        ingest(store, shop.interactions, items=shop.items, users=shop.users)
        counts = store.counts()
    finally:
        store.close()
    return model_dir, {"items": counts.items, "users": counts.users, "events": counts.events}


def overview_load(items: int, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        model_dir, counts = _state_with_shop(items, state)
        port = free_port()
        process, _ = serve(model_dir, state, "--http-port", str(port), "--host", "127.0.0.1")
        base = f"http://127.0.0.1:{port}"
        try:
            time.sleep(SAMPLE_WAIT_SECONDS)  # a load sample in the store: charts to draw
            api = []
            for _ in range(loads):
                tick = time.perf_counter()
                with urllib.request.urlopen(f"{base}/api/overview", timeout=30) as response:
                    json.loads(response.read())
                api.append(1000 * (time.perf_counter() - tick))
            pages = []
            errors: list[str] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for load in range(loads + 2):
                        page = browser.new_page()
                        page.on(
                            "console",
                            lambda m: errors.append(m.text) if m.type == "error" else None,
                        )
                        tick = time.perf_counter()
                        page.goto(f"{base}/")
                        # Locator waits: the page's CSP forbids evaluating strings in it.
                        for shown in (
                            "#model-version:not(:empty)",
                            "#counts dd",
                            "#events-chart canvas",
                            "#latency-chart canvas",
                        ):
                            page.locator(shown).first.wait_for(state="attached")
                        took = 1000 * (time.perf_counter() - tick)
                        if load >= 2:  # the first two warm the browser's caches up
                            pages.append(took)
                        page.close()
                finally:
                    browser.close()
        finally:
            process.terminate()
            process.wait(60)
    return {
        "items": items,
        "store": counts,
        "loads": loads,
        "page_ms": pages,
        "page_p50_ms": statistics.median(pages),
        "api_ms": api,
        "api_p50_ms": statistics.median(api),
        "console_errors": errors,
    }


def idle_cost(model_dir: Path, rounds: int, calls: int) -> dict[str, Any]:
    port = free_port()
    measured = recommend_p50_by_setting(
        model_dir, {"without": (), "with": ("--http-port", str(port))}, rounds, calls
    )
    median = measured["p50_ms"]
    return {**measured, "with_vs_without": median["with"] / median["without"]}


def markdown(result: dict[str, Any]) -> str:
    load, cost = result["overview"], result["idle_cost"]
    store = load["store"]
    return "\n".join(
        [
            f"Machine: {result['machine']}.",
            "",
            f"- Overview page in headless Chromium ({store['items']:,} items,"
            f" {store['users']:,} users, {store['events']:,} events in SQLite): p50"
            f" **{load['page_p50_ms']:.0f} ms** from navigation to the model version, counts"
            f" and both charts shown ({load['loads']} loads; target <= 300 ms);"
            f" `GET /api/overview` alone p50 {load['api_p50_ms']:.1f} ms;"
            f" console errors: {len(load['console_errors'])}.",
            f"- Recommend p50 through gRPC ({result['latency_model']}), dashboard on and idle"
            f" {cost['p50_ms']['with']:.3f} ms against off {cost['p50_ms']['without']:.3f} ms"
            f" = **{cost['with_vs_without']:.3f}x** (target <= 1.05x;"
            f" median of {len(cost['p50_ms_by_round']['with'])} alternating rounds).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to prove it runs")
    parser.add_argument("--out", default=str(RESULTS / "dashboard.json"))
    args = parser.parse_args()
    latency_model, latency_name = latency_model_for(Path(args.ml100k), smoke=args.smoke)
    items, loads = (4_000, 3) if args.smoke else (args.items, args.loads)
    rounds, calls = (1, 100) if args.smoke else (args.rounds, args.calls)
    result = {
        "machine": machine_description(),
        "latency_model": latency_name,
        "overview": overview_load(items, loads),
        "idle_cost": idle_cost(latency_model, rounds, calls),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    if result["overview"]["console_errors"]:
        print("console errors:", result["overview"]["console_errors"], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
