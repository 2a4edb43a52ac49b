"""The one exception hierarchy of shelfrank.

Every error the public API raises derives from :class:`ShelfrankError`. Errors about
bad input also derive from :class:`ValueError` so generic callers can catch them (and an
unknown id from :class:`KeyError`, as a dict lookup would). Failures of the layers below
(numpy, sqlite3, the file system, json) are translated into these at the boundary that
knows what was being done, so the message says which field, file or id was at fault.
Python's own calling errors (a missing argument, an unknown keyword) are not translated.
This module must stay dependency-free: the client imports it.
"""

from __future__ import annotations

from pathlib import Path


class ShelfrankError(Exception):
    """Root of every error raised by shelfrank."""


class InvalidInputError(ShelfrankError, ValueError):
    """A value given to shelfrank is not acceptable; the message names the field."""


class UnknownIdError(InvalidInputError, KeyError):
    """An id (or row) that the mapping it was looked up in does not hold."""

    __str__ = Exception.__str__  # KeyError's would quote the whole message


class DataFormatError(InvalidInputError):
    """A data file (CSV/JSONL) is malformed at a given place."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class ModelFileError(ShelfrankError):
    """A model or snapshot file is missing, truncated, tampered with or malformed."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedFormatError(ModelFileError):
    """A model or snapshot was written by a newer, unknown format version."""


class StorageError(ShelfrankError):
    """Local storage cannot be used: the event store, a device's outbox or snapshot folder,
    a file being written (unreadable, unwritable, disk full, newer schema, closed, ...)."""


class NotFittedError(ShelfrankError):
    """An operation needs a trained model and there is none."""


class ClosedError(ShelfrankError, RuntimeError):
    """An object was used after its ``close()`` (a programming error)."""


class InvariantError(ShelfrankError, RuntimeError):
    """Something shelfrank guarantees itself did not hold: a bug in shelfrank, not in the
    caller's input (please report it with the message)."""
