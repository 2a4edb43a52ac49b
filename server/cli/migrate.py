"""``shelfrank migrate``: bring a store's schema to this version's, and check it.

Opening a store creates or migrates its schema (SQLite: under its write lock; PostgreSQL:
under an advisory lock, so processes opening it at once migrate it once); ``serve`` and
``ingest`` do it on start. This command does it on its own, before a rollout: stop every
process of the older version first (one still writing would not keep the new columns).
"""

from __future__ import annotations

import argparse

from shelfrank.server.cli._errors import EXIT_FAILURE, EXIT_OK

NAME = "migrate"
HELP = "create or migrate a store's schema, then check it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state", help="a server's state directory (the SQLite store in it)")
    where.add_argument(
        "--store", help="a PostgreSQL URL (default: $SHELFRANK_STORE when --state is not given)"
    )


def run(args: argparse.Namespace) -> int:
    import os

    from shelfrank.server.cli._errors import CommandError
    from shelfrank.server.stores import STORE_ENV, describe_location, open_store, schema_version

    location = args.state or args.store or os.environ.get(STORE_ENV)
    if not location:
        raise CommandError(f"migrate: give --state DIR or --store URL (or set ${STORE_ENV})")
    store = open_store(location)
    try:
        problems = store.integrity_check()
    finally:
        store.close()
    print(f"{describe_location(location)}: schema {schema_version(location)}, check: {problems}")
    return EXIT_OK if problems == "ok" else EXIT_FAILURE
