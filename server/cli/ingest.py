"""``shelfrank ingest``: history (and catalogue, profiles) into a server's event store."""

from __future__ import annotations

import argparse

from shelfrank.server.cli._errors import EXIT_OK
from shelfrank.server.cli._readers import read_features, read_interactions

NAME = "ingest"
HELP = "load history into a server's event store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state", help="a server's state directory (the SQLite store in it)")
    where.add_argument(
        "--store", help="a PostgreSQL URL (default: $SHELFRANK_STORE when --state is not given)"
    )
    parser.add_argument("--interactions", required=True)
    parser.add_argument("--items")
    parser.add_argument("--users")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import os

    from shelfrank.server.cli._errors import CommandError
    from shelfrank.server.ingest import ingest
    from shelfrank.server.stores import STORE_ENV, describe_location, open_store

    location = args.state or args.store or os.environ.get(STORE_ENV)
    if not location:
        raise CommandError(f"ingest: give --state DIR or --store URL (or set ${STORE_ENV})")

    interactions = read_interactions([args.interactions], args.strict, args.quiet)
    items = read_features(args.items, "item_id", args.strict, args.quiet)
    users = read_features(args.users, "user_id", args.strict, args.quiet)
    store = open_store(location)
    try:
        outcome = ingest(store, interactions, items=items, users=users)
    finally:
        store.close()
    where = describe_location(location)
    print(f"{outcome.stored} events stored, {outcome.duplicates} already there, in {where}")
    return EXIT_OK
