"""The ``shelfrank`` command line: one module per command, this one dispatches.

Each command module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``;
:data:`COMMANDS` lists them in the order ``shelfrank --help`` shows. Shared pieces:
``_options`` (argument types, the model options), ``_readers`` (input files with their
rejected rows reported), ``_errors`` (exit codes, :class:`CommandError`).

The parsers are argparse's: the standard library, used here from the start, no new
dependency, and the flags, help texts and exit codes stay exactly what they were; a
library (click, typer) would not make the commands smaller.

Commands import their heavy dependencies (LightFM, scipy, matplotlib) when they run, so
``--help`` and bad usage answer at once.

Exit codes: 0 success, 1 the work failed (bad data, unreadable model, ...), 2 bad usage.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from shelfrank.core.errors import ShelfrankError
from shelfrank.server.cli import (
    bench,
    demo,
    evaluate,
    export_snapshot,
    import_movielens,
    ingest,
    migrate,
    recommend,
    report,
    serve,
    simulate,
    synth,
    train,
)
from shelfrank.server.cli._errors import EXIT_FAILURE, CommandError
from shelfrank.server.cli._options import Parser

# The modules of the server extra; without them a command says what to install.
SERVER_EXTRA_MODULES = ("lightfm", "scipy", "tqdm", "matplotlib", "pythonjsonlogger")


class Command(Protocol):
    @property
    def NAME(self) -> str: ...  # noqa: N802 (a module constant)

    @property
    def HELP(self) -> str: ...  # noqa: N802 (a module constant)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: tuple[Command, ...] = (
    train,
    recommend,
    evaluate,
    synth,
    import_movielens,
    serve,
    ingest,
    migrate,
    report,
    simulate,
    export_snapshot,
    bench,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="shelfrank", description="shelfrank recommender tools")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command_parser = subcommands.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(command_parser)
        command_parser.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    # The command's own arguments as given (``serve --workers`` passes them on).
    args.command_argv = raw[raw.index(args.command) + 1 :]
    try:
        code: int = args.func(args)
    except ModuleNotFoundError as exc:
        if exc.name in SERVER_EXTRA_MODULES:
            print(
                f"shelfrank: error: this command needs the server extra "
                f"(pip install 'shelfrank[server]'): missing {exc.name}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        raise
    except (CommandError, ShelfrankError, ValueError, OSError) as exc:
        print(f"shelfrank: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("shelfrank: interrupted", file=sys.stderr)
        return 130
    return code


__all__ = ["COMMANDS", "build_parser", "main"]
