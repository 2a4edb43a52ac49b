"""Request bodies and parameters in: bounded, and refused with the field named.

The shapes are checked here (a JSON type is the transport's business); the values are
checked by the service layer's own validation, as for gRPC.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.requests import TooLargeError

# As gRPC's receive limit (server/app.py): a what-if of a full Track batch fits.
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_FORM_BYTES = 8 * 1024  # the login form: a token, a CSRF token, a path
# Bodies up to this are parsed on the event loop (microseconds); larger ones, up to
# MAX_JSON_BYTES (a what-if of a full batch: tens of milliseconds), in the thread pool,
# so one large body does not hold up every other request meanwhile.
INLINE_JSON_BYTES = 64 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (TooLargeError) beyond ``limit`` bytes, declared or sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"body: at most {limit} bytes, got {declared}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLargeError(f"body: at most {limit} bytes")
    return bytes(body)


async def read_json_object(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_JSON_BYTES)
    if len(body) <= INLINE_JSON_BYTES:
        return _json_object(body)
    return await run_in_threadpool(_json_object, body)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInputError("body: not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidInputError("body: must be a JSON object")
    return document


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the first value of each field)."""
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidInputError("body: not UTF-8") from None
    return {name: values[0] for name, values in fields.items()}


def field(document: dict[str, Any], name: str, kind: type, default: Any, path: str = "") -> Any:
    """``document[name]`` if of type ``kind`` (a bool is no int), ``default`` if absent."""
    value = document.get(name, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInputError(f"{path}{name}: must be {_TYPE_NAMES[kind]}")
    return value


def string_list(document: dict[str, Any], name: str) -> list[str]:
    values = field(document, name, list, [])
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise InvalidInputError(f"{name}[{index}]: must be a string")
    return list(values)


def int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(f"{name}: must be an integer, got {text[:40]!r}") from None


_TYPE_NAMES: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    str: "a string",
    list: "a list",
    dict: "an object",
}
