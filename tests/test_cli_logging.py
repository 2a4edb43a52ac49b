"""The server's log: every line one JSON object, whatever the message or exception holds."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shelfrank.server.cli import main
from shelfrank.server.cli.logging_setup import configure_json_logging

AWKWARD = 'a "quoted" word,\na second line, a tab\tand unicode: café ✓ 🛒 \\ end'


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger; handlers added during the test are taken off again."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _fail() -> None:
    raise RuntimeError('bad "thing"\nacross lines')


def test_messages_and_tracebacks_are_one_json_object_a_line(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_json_logging(stream)
    log = logging.getLogger("shelfrank.test")
    log.info("%s", AWKWARD, extra={"user_id": "u1"})
    log.debug("below the level: not written")
    try:
        _fail()
    except RuntimeError:
        log.exception("retrain failed: %s", "keeping the model")

    first, second = _records(stream.getvalue())
    assert first["message"] == AWKWARD
    assert first["level"] == "INFO"
    assert first["logger"] == "shelfrank.test"
    assert first["user_id"] == "u1"
    assert first["time"][:2] == "20"  # asctime: 2026-12-02 11:28:16,815
    assert "exc_info" not in first
    assert second["level"] == "ERROR"
    assert second["message"] == "retrain failed: keeping the model"
    assert second["exc_info"].startswith("Traceback (most recent call last):\n")
    assert second["exc_info"].endswith('RuntimeError: bad "thing"\nacross lines')
    assert "_fail()" in second["exc_info"]


def test_non_ascii_is_escaped_so_any_stream_encoding_keeps_valid_json(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_json_logging(stream)
    logging.getLogger("shelfrank.test").warning("café ✓")
    assert stream.getvalue().isascii()
    assert _records(stream.getvalue())[0]["message"] == "café ✓"


def test_serve_logs_json_lines_to_stderr(
    root_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from shelfrank.server import app

    def run(options: app.ServerOptions) -> None:
        app.log.info("serving on %s:%d", options.host, options.port)
        try:
            _fail()
        except RuntimeError:
            app.log.exception(AWKWARD)

    monkeypatch.setattr(app, "run", run)
    assert main(["serve", "--state", str(tmp_path), "--port", "0"]) == 0
    records = _records(capsys.readouterr().err)
    assert [(r["logger"], r["level"]) for r in records] == [
        ("shelfrank.server", "INFO"),
        ("shelfrank.server", "ERROR"),
    ]
    assert records[0]["message"] == "serving on 127.0.0.1:0"
    assert records[1]["message"] == AWKWARD
    assert "RuntimeError" in records[1]["exc_info"]
