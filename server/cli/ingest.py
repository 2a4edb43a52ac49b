"""``shelfrank ingest``: history (and catalogue, profiles) into a server's event store."""

from __future__ import annotations

import argparse

from shelfrank.server.cli._errors import EXIT_OK
from shelfrank.server.cli._readers import read_features, read_interactions

NAME = "ingest"
HELP = "load history into a server's event store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", required=True)
    parser.add_argument("--interactions", required=True)
    parser.add_argument("--items")
    parser.add_argument("--users")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from shelfrank.server.ingest import ingest
    from shelfrank.server.stores import open_store

    interactions = read_interactions([args.interactions], args.strict, args.quiet)
    items = read_features(args.items, "item_id", args.strict, args.quiet)
    users = read_features(args.users, "user_id", args.strict, args.quiet)
    store = open_store(args.state)
    try:
        outcome = ingest(store, interactions, items=items, users=users)
    finally:
        store.close()
    print(f"{outcome.stored} events stored, {outcome.duplicates} already there, in {args.state}")
    return EXIT_OK
