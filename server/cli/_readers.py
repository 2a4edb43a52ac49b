"""Input files read for a command, with their rejected rows reported on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shelfrank.server.cli._errors import CommandError

if TYPE_CHECKING:  # the readers are imported when a command runs
    from shelfrank.datasets.records import FeatureTable, Interactions, ReadReport

SHOWN_ROW_ERRORS = 10


def report_rows(report: ReadReport, quiet: bool) -> None:
    """The read summary and the first rejected rows (always shown when rows were rejected)."""
    if quiet and not report.rows_rejected:
        return
    print(report.summary(), file=sys.stderr)
    for error in report.errors[:SHOWN_ROW_ERRORS]:
        print(f"  {error}", file=sys.stderr)
    if report.rows_rejected > SHOWN_ROW_ERRORS:
        print(
            f"  ... and {report.rows_rejected - SHOWN_ROW_ERRORS} more rejected rows",
            file=sys.stderr,
        )


def read_interactions(paths: Sequence[str], strict: bool, quiet: bool) -> Interactions:
    """The files' events, concatenated in order."""
    from shelfrank.datasets import read_interactions as read
    from shelfrank.datasets.records import Interactions

    parts = []
    for path in paths:
        table, report = read(path, strict=strict)
        report_rows(report, quiet)
        parts.append(table)
    return Interactions.concat(parts)


def read_features(
    path: str | None, id_column: str, strict: bool, quiet: bool
) -> FeatureTable | None:
    if path is None:
        return None
    from shelfrank.datasets import read_features as read

    table, report = read(path, id_column, strict=strict)
    report_rows(report, quiet)
    return table


def read_id_list(path: str, what: str) -> list[str]:
    """Ids one a line, blank lines skipped, first occurrence kept."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CommandError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read {what} file: {exc}") from None
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))
