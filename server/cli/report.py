"""``shelfrank report``: attributed feedback per experiment and variant, from a store.

Reads the stored impressions and events (the same computation as the GetReport RPC, so
any process sharing the store gives the same figures): a table on the terminal, and on
request the JSON (``--json``) and a chart of the metrics per day (``--plot``).
"""

from __future__ import annotations

import argparse

from shelfrank.server.cli._errors import EXIT_OK

NAME = "report"
HELP = "attributed clicks, carts, purchases per experiment variant, with intervals"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state", help="a server's state directory (the SQLite store in it)")
    where.add_argument(
        "--store", help="a PostgreSQL URL (default: $SHELFRANK_STORE when --state is not given)"
    )
    parser.add_argument("--experiment", default="", help="only this experiment")
    parser.add_argument(
        "--experiments",
        metavar="FILE",
        help="the server's experiment file (order of the variants and controls; default: "
        "the variants found in the data, the one named 'control' as control)",
    )
    parser.add_argument(
        "--from-ms", type=int, default=0, help="responses served from this time (ms)"
    )
    parser.add_argument("--to-ms", type=int, default=0, help="until this time (0: now)")
    parser.add_argument(
        "--attribution-window-hours",
        type=float,
        default=24.0,
        help="as the server's --attribution-window-hours",
    )
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--plot", metavar="FILE", help="draw the metrics per day (PNG)")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from shelfrank.server.cli._errors import CommandError
    from shelfrank.server.feedback.loop import ExperimentFile, FeedbackLoop
    from shelfrank.server.stores import STORE_ENV, open_store

    location = args.state or args.store or os.environ.get(STORE_ENV)
    if not location:
        raise CommandError(f"report: give --state DIR or --store URL (or set ${STORE_ENV})")
    if args.attribution_window_hours <= 0:
        raise CommandError("--attribution-window-hours: must be positive")
    experiments = ExperimentFile(Path(args.experiments)) if args.experiments else None
    store = open_store(location)
    try:
        loop = FeedbackLoop(
            store,
            experiments=experiments,
            record=False,
            window_ms=int(args.attribution_window_hours * 3_600_000),
        )
        report = loop.report(args.experiment, args.from_ms, args.to_ms)
    finally:
        store.close()
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        print(f"report written to {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"plot written to {args.plot}")
    return EXIT_OK
