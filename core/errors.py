"""The one exception hierarchy of shelfrank.

Every error the public API raises derives from :class:`ShelfrankError`. Errors about
bad input also derive from :class:`ValueError` so generic callers can catch them.
This module must stay dependency-free: the client imports it.
"""

from __future__ import annotations

from pathlib import Path


class ShelfrankError(Exception):
    """Root of every error raised by shelfrank."""


class InvalidInputError(ShelfrankError, ValueError):
    """A value given to shelfrank is not acceptable; the message names the field."""


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
    """The event store cannot be used (unreadable, newer schema, ...)."""


class NotFittedError(ShelfrankError):
    """An operation needs a trained model and there is none."""
