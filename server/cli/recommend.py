"""``shelfrank recommend``: top-k per user from a model directory, as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shelfrank.server.cli._errors import EXIT_OK, CommandError
from shelfrank.server.cli._options import positive_int, share
from shelfrank.server.cli._readers import read_features, read_id_list, read_interactions

if TYPE_CHECKING:
    from shelfrank.server.offline import History

NAME = "recommend"
HELP = "batch recommendations from a model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--users", required=True, help="'all' or a file with one user id a line")
    parser.add_argument("--k", type=positive_int, required=True)
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument(
        "--mode",
        choices=("new", "repeat"),
        help="blend to rank with: repeat (buy again; the default without --exclude-seen) "
        "or new (the default with it)",
    )
    parser.add_argument("--candidates", help="file of item ids (one a line) to rank among")
    parser.add_argument("--history", help="interactions CSV of users to fold in")
    parser.add_argument("--user-features", help="users CSV for users unknown to the model")
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="TOKEN[,TOKEN...]",
        help="items must carry one of these tokens (repeatable: every filter must pass)",
    )
    parser.add_argument(
        "--exclude-feature", action="append", default=[], metavar="TOKEN", help="skip items with it"
    )
    parser.add_argument(
        "--unavailable", help="file of item ids (one a line) never to recommend (out of stock)"
    )
    parser.add_argument(
        "--store",
        help="read unavailable items from this store (a SQLite path or postgresql:// URL)",
    )
    parser.add_argument(
        "--diversity",
        type=share,
        default=0.0,
        help="0..1 (greedy intra-list diversification on item vectors)",
    )
    parser.add_argument(
        "--max-per-feature",
        action="append",
        default=[],
        metavar="COLUMN=:COUNT",
        help="at most COUNT items per value of COLUMN, e.g. brand=:2 (repeatable)",
    )
    parser.add_argument(
        "--exploration", type=share, default=0.0, help="0..1: share of slots for new items"
    )
    parser.add_argument(
        "--recommendation-id-prefix",
        default="",
        help="user u's list gets the id PREFIX+u (exploration is placed by it, as on the server)",
    )
    parser.add_argument("--explain", action="store_true", help="explain every item")
    parser.add_argument("--out", required=True, help="output .jsonl")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from shelfrank.core.errors import InvalidInputError
    from shelfrank.core.model_format import load_serving_model
    from shelfrank.core.ranking import Steering
    from shelfrank.server.evaluation.fold_in import histories_for
    from shelfrank.server.offline import OfflineRequest, recommend_users

    model, manifest = load_serving_model(args.model)
    histories: dict[str, History] = {}
    if args.history:
        from shelfrank.server.registry import manifest_config

        history = read_interactions([args.history], args.strict, args.quiet)
        config = manifest_config(args.model, manifest)
        histories = histories_for(history, config, model)
    tokens = {}
    user_table = read_features(args.user_features, "user_id", args.strict, args.quiet)
    if user_table is not None:
        tokens = user_table.as_dict()
    if args.users == "all":
        users = list(dict.fromkeys([*model.user_ids.ids, *histories]))
    else:
        users = read_id_list(args.users, "users")
    candidates = read_id_list(args.candidates, "candidates") if args.candidates else None
    if candidates is not None:
        unknown = [c for c in candidates if c not in model.item_ids]
        if unknown and not args.quiet:
            print(
                f"{len(unknown)} candidate item(s) unknown to the model are skipped, e.g. "
                f"{unknown[0]!r}",
                file=sys.stderr,
            )
    unavailable = set(read_id_list(args.unavailable, "unavailable")) if args.unavailable else set()
    if args.store:
        unavailable |= _unavailable_in_store(args.store)
    try:
        request = OfflineRequest(
            filters=tuple(tuple(t for t in f.split(",") if t) for f in args.filter),
            exclude_features=tuple(args.exclude_feature),
            unavailable_item_ids=frozenset(unavailable),
            steering=Steering(
                diversity=args.diversity,
                max_per_feature=tuple(_cap(text) for text in args.max_per_feature),
                exploration=args.exploration,
            ),
            recommendation_id_prefix=args.recommendation_id_prefix,
            explain=args.explain,
        )
    except InvalidInputError as exc:
        raise CommandError(str(exc)) from None
    count = 0
    out_path = Path(args.out)
    try:
        handle = out_path.open("w", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{out_path}: cannot write: {exc.strerror}") from None
    with handle:
        for rec in recommend_users(
            model,
            users,
            args.k,
            exclude_seen=args.exclude_seen,
            mode=args.mode or ("new" if args.exclude_seen else "repeat"),
            candidate_item_ids=candidates,
            histories=histories,
            user_tokens=tokens,
            request=request,
        ):
            handle.write(json.dumps(rec.to_json()) + "\n")
            count += 1
    print(f"{count} users written to {out_path}")
    return EXIT_OK


def _cap(text: str) -> tuple[str, int]:
    """``brand=:2`` -> (``brand=``, 2)."""
    column, sep, count = text.rpartition(":")
    try:
        return column, int(count) if sep else 0
    except ValueError:
        raise CommandError(f"--max-per-feature {text!r}: expected COLUMN=:COUNT") from None


def _unavailable_in_store(location: str) -> set[str]:
    from shelfrank.server.stores import open_store

    store = open_store(location)
    try:
        return {entry.item_id for entry in store.catalogue_changes()[1] if not entry.available}
    finally:
        store.close()
