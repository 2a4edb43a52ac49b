"""``shelfrank serve``: the gRPC recommendation server, logging JSON lines to stderr."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shelfrank.server.cli._errors import EXIT_OK, CommandError
from shelfrank.server.cli._options import (
    add_training_options,
    non_negative_int,
    positive_float,
    positive_int,
    train_config,
)

NAME = "serve"
HELP = "run the gRPC recommendation server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", required=True, help="directory for the event store and models")
    parser.add_argument("--model", help="model directory to serve (imported into --state)")
    parser.add_argument(
        "--store",
        help="PostgreSQL URL of the event store shared by every process (default: "
        "$SHELFRANK_STORE, else the SQLite store under --state)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=non_negative_int, default=50051)
    parser.add_argument("--token", help="bearer token required from clients (or SHELFRANK_TOKEN)")
    parser.add_argument("--no-reflection", action="store_true")
    parser.add_argument("--metrics-port", type=positive_int, help="Prometheus /metrics port")
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
    from shelfrank.server.ann import AnnConfig, SearchPolicy
    from shelfrank.server.app import ServerOptions
    from shelfrank.server.app import run as run_server
    from shelfrank.server.cli.logging_setup import configure_json_logging
    from shelfrank.server.stores import STORE_ENV

    configure_json_logging()
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    run_server(
        ServerOptions(
            state_dir=Path(args.state),
            store=args.store or os.environ.get(STORE_ENV) or None,
            host=args.host,
            port=args.port,
            model_dir=Path(args.model) if args.model else None,
            token=args.token,
            reflection=not args.no_reflection,
            metrics_port=args.metrics_port,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            grace_seconds=args.grace,
            blas_threads=args.blas_threads,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
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
    )
    return EXIT_OK
