"""The server process's log: one JSON object a line on stderr (python-json-logger).

Fields: ``time``, ``level``, ``logger``, ``message``, whatever the call passes in
``extra=``, and ``exc_info`` (the whole traceback as one string) when there is an
exception. Non-ASCII characters are written as ``\\u`` escapes, so a line stays valid
JSON whatever the stream's encoding.
"""

from __future__ import annotations

import logging
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

# The LogRecord attributes written, in this order, and the names some are written under.
_FORMAT = "{asctime} {levelname} {name} {message}"
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


def json_formatter() -> logging.Formatter:
    return JsonFormatter(_FORMAT, style="{", rename_fields=_RENAMED)


def configure_json_logging(
    stream: TextIO | None = None, level: int = logging.INFO
) -> logging.Handler:
    """Send records of ``level`` and above to ``stream`` (default: stderr) as JSON lines,
    through a handler on the root logger; returns that handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
