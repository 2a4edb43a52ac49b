"""The one table from gRPC status codes to HTTP statuses, and errors as JSON.

Exceptions map to a gRPC code through the servicer's own table (``STATUS_FOR``), so an
error means the same over HTTP as over gRPC: same code, same message naming the field.
"""

from __future__ import annotations

import logging

import grpc

from shelfrank.server.dashboard.responses import SafeJSONResponse
from shelfrank.server.grpc_servicer import STATUS_FOR

log = logging.getLogger("shelfrank.dashboard")

Code = grpc.StatusCode

HTTP_STATUS: dict[Code, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.CANCELLED: 499,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.INTERNAL: 500,
    Code.UNKNOWN: 500,
    Code.DATA_LOSS: 500,  # not raised today; here so that every code has its status
}


def code_of(exc: Exception, what: str) -> tuple[Code, str]:
    """The gRPC code and public message of an exception raised while doing ``what``.
    Storage trouble and bugs say nothing of their details (as over gRPC): the first is
    logged as a warning, the second with its traceback."""
    for kind, code in STATUS_FOR:
        if isinstance(exc, kind):
            if code is Code.UNAVAILABLE:
                log.warning("%s: storage unavailable: %s", what, exc)
                return code, "storage temporarily unavailable, retry"
            return code, str(exc)
    log.error("%s failed", what, exc_info=exc)
    return Code.INTERNAL, f"{what}: internal error (logged on the server)"


def error_response(code: Code, message: str) -> SafeJSONResponse:
    """``{"error": {"code": "NOT_FOUND", "message": ...}}`` with the code's HTTP status."""
    response = SafeJSONResponse(
        {"error": {"code": code.name, "message": message}}, status_code=HTTP_STATUS[code]
    )
    if code is Code.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="shelfrank"'
    return response


def exception_response(exc: Exception, what: str) -> SafeJSONResponse:
    return error_response(*code_of(exc, what))
