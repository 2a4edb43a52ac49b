"""``shelfrank serve``: the gRPC recommendation server, logging JSON lines to stderr."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from shelfrank.core.ranking import Steering
from shelfrank.server.cli._errors import EXIT_OK, CommandError
from shelfrank.server.cli._options import (
    add_training_options,
    non_negative_int,
    positive_float,
    positive_int,
    share,
    train_config,
)

if TYPE_CHECKING:
    from shelfrank.server.app import ServerOptions

NAME = "serve"
HELP = "run the gRPC recommendation server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        help="directory for the embedded event store and local model copies (optional with"
        " --store: the copies then go to $XDG_CACHE_HOME/shelfrank or ~/.cache/shelfrank)",
    )
    parser.add_argument("--model", help="model directory to serve (imported into the store)")
    parser.add_argument(
        "--store",
        help="PostgreSQL URL of the event store shared by every process (default: "
        "$SHELFRANK_STORE, else the SQLite store under --state)",
    )
    parser.add_argument(
        "--role",
        choices=("all", "server", "trainer"),
        default="all",
        help="all: serve, and train when elected trainer (default); server: serve only;"
        " trainer: train when elected, answer health and metrics only",
    )
    parser.add_argument(
        "--trainer-lease",
        type=positive_float,
        default=15.0,
        metavar="SECONDS",
        help="how long the trainer's lease lasts without renewal: a dead trainer is"
        " replaced after at most this (default 15)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="server processes on the one port (SO_REUSEPORT), supervised: one per core"
        " (default 1); worker i serves metrics on --metrics-port + i",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=non_negative_int, default=50051)
    parser.add_argument("--token", help="bearer token required from clients (or SHELFRANK_TOKEN)")
    parser.add_argument(
        "--caller",
        action="append",
        default=[],
        metavar="NAME=TOKEN",
        help="a named client and its bearer token (repeatable); event rate limits count"
        " per caller name, not per connection (behind a balancer all come from it)",
    )
    parser.add_argument("--no-reflection", action="store_true")
    parser.add_argument("--metrics-port", type=positive_int, help="Prometheus /metrics port")
    parser.add_argument(
        "--http-port",
        type=non_negative_int,
        metavar="PORT",
        help="serve the web dashboard and its JSON API on this port (same --host; 0: any free"
        " port; behind the same token; HTTPS with --tls-cert/--tls-key; off by default)",
    )
    parser.add_argument(
        "--http-allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the dashboard is reached by (repeatable; '*.example.com' covers"
        " subdomains): other Host headers are refused (DNS rebinding). The bound address and"
        " localhost are always answered; with --host 0.0.0.0 and none given, any name is",
    )
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument(
        "--grace", type=positive_float, default=10.0, help="seconds in-flight calls get on SIGTERM"
    )
    parser.add_argument(
        "--blas-threads",
        type=positive_int,
        default=1,
        help="threads per numpy/BLAS product (1 serves concurrent requests best)",
    )
    parser.add_argument(
        "--exploration",
        type=share,
        default=0.0,
        help="share of Recommend's slots for new or little-shown items when a request does "
        "not say (0..1; core/ranking.py)",
    )
    parser.add_argument(
        "--exploration-max-age-days",
        type=float,
        default=0.0,
        help="items added to the catalogue this recently count as new for exploration",
    )
    parser.add_argument(
        "--experiments",
        metavar="FILE",
        help="A/B experiments (TOML, or JSON by suffix): variants, traffic split, start and "
        "end; refused at start if invalid, reloaded when the file changes (README "
        '"Feedback and experiments")',
    )
    parser.add_argument(
        "--no-record-impressions",
        action="store_true",
        help="do not store served responses as impressions (no attribution, no reports)",
    )
    parser.add_argument(
        "--attribution-window-hours",
        type=float,
        default=24.0,
        help="feedback without a recommendation id counts for the latest response that "
        "showed the item to the user at most this long before",
    )
    parser.add_argument(
        "--rpc-threads",
        type=positive_int,
        default=16,
        help="handler threads per process (fewer convoy less on the GIL; each EdgeSync "
        "stream holds one while it streams)",
    )
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=positive_int,
        default=256,
        help="calls admitted at once; more are refused with RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--search",
        choices=("auto", "exact", "ann"),
        default="auto",
        help="exact top-k, approximate candidates (faiss HNSW) or auto: approximate only for "
        "tables of 500k+ items that cannot be pruned",
    )
    parser.add_argument(
        "--ef-search", type=positive_int, default=256, help="HNSW search breadth (--search ann)"
    )
    parser.add_argument(
        "--compiled-search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the exact pruned search compiled, GIL released (numba); "
        "--no-compiled-search uses the numpy version (same results)",
    )
    parser.add_argument(
        "--retrain-interval", type=positive_float, help="retrain in the background every N seconds"
    )
    _add_first_model_options(parser)
    add_training_options(parser)


def _add_first_model_options(parser: argparse.ArgumentParser) -> None:
    # The defaults are ServerOptions' (tests/test_cli.py compares them).
    group = parser.add_argument_group("first model (with no --model and none in --state yet)")
    group.add_argument(
        "--demo",
        action="store_true",
        help="store a synthetic demo shop and train on it at once (without it the server "
        "starts empty and serves popularity over what is tracked)",
    )
    group.add_argument(
        "--first-model-events",
        type=positive_int,
        default=1_000,
        metavar="N",
        help="events the store must hold before the first model trains (default 1000)",
    )
    group.add_argument(
        "--first-model-users",
        type=positive_int,
        default=50,
        metavar="N",
        help="users those events must come from (default 50)",
    )


def run(args: argparse.Namespace) -> int:
    from shelfrank.core.experiments import load_experiments
    from shelfrank.server.ann import AnnConfig, SearchPolicy
    from shelfrank.server.app import ServerOptions
    from shelfrank.server.app import run as run_server
    from shelfrank.server.cli.logging_setup import configure_json_logging
    from shelfrank.server.stores import STORE_ENV

    configure_json_logging()
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    store = args.store or os.environ.get(STORE_ENV) or None
    if store is None and not args.state:
        raise CommandError("--state is needed unless --store (or $SHELFRANK_STORE) is given")
    if args.attribution_window_hours <= 0:
        raise CommandError("--attribution-window-hours: must be positive")
    experiments = Path(args.experiments) if args.experiments else None
    if experiments is not None:
        load_experiments(experiments)  # refused here, in one line, before any start
    options = ServerOptions(
        experiments=experiments,
        record_impressions=not args.no_record_impressions,
        attribution_window_ms=int(args.attribution_window_hours * 3_600_000),
        state_dir=Path(args.state) if args.state else None,
        store=store,
        role=args.role,
        trainer_lease_seconds=args.trainer_lease,
        host=args.host,
        port=args.port,
        model_dir=Path(args.model) if args.model else None,
        token=args.token,
        reflection=not args.no_reflection,
        metrics_port=args.metrics_port,
        http_port=args.http_port,
        http_allowed_hosts=tuple(args.http_allowed_host),
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        grace_seconds=args.grace,
        blas_threads=args.blas_threads,
        rpc_threads=args.rpc_threads,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        steering=Steering(
            exploration=args.exploration,
            exploration_max_age_ms=int(args.exploration_max_age_days * 86_400_000),
        ),
        search=SearchPolicy(
            mode=args.search,
            ann=AnnConfig(ef_search=args.ef_search),
            compiled=args.compiled_search,
        ),
        retrain_interval_seconds=args.retrain_interval,
        train_config=train_config(args),
        demo=args.demo,
        first_model_events=args.first_model_events,
        first_model_users=args.first_model_users,
    )
    if args.workers > 1:
        if args.http_port is not None:
            # The workers share one gRPC port; one dashboard port cannot be shared.
            raise CommandError(
                "--http-port: not with --workers; run the dashboard on a replica of its own"
            )
        return _supervised(args, options)
    run_server(options)
    return EXIT_OK


def _supervised(args: argparse.Namespace, options: ServerOptions) -> int:
    """``--workers N``: what must happen once (``--model`` imported, ``--demo``'s first
    model) happens here, then N workers serve (server/workers.py)."""
    from shelfrank.server.app import cache_dir, initial_state
    from shelfrank.server.registry import ModelRegistry
    from shelfrank.server.stores import open_store
    from shelfrank.server.workers import supervise, without_options

    if options.model_dir is not None or options.demo:
        location = options.store or options.state_dir
        if location is None:
            raise CommandError("--state is needed unless --store (or $SHELFRANK_STORE) is given")
        store = open_store(location)
        try:
            initial_state(options, store, ModelRegistry(store, cache_dir(options)))
        finally:
            store.close()
    passed_on = without_options(
        args.command_argv,
        {
            "--workers": True,
            "--port": True,
            "--metrics-port": True,
            "--model": True,
            "--demo": False,
        },
    )
    return supervise(
        passed_on,
        host=args.host,
        port=args.port,
        workers=args.workers,
        metrics_port=args.metrics_port,
    )
