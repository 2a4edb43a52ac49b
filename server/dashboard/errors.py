"""The one table from error codes to HTTP statuses, and errors as JSON.

Exceptions map to a gRPC code and message through the servicer's own rule
(``grpc_servicer.status_of``), so an error means the same over HTTP as over gRPC: same
code, same message naming the field. The table holds every gRPC code but OK, and one code
of HTTP's own (no gRPC call can be made with a wrong method): ``METHOD_NOT_ALLOWED``.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from shelfrank.server.dashboard.responses import SafeJSONResponse
from shelfrank.server.grpc_servicer import status_of

Code = grpc.StatusCode
# HTTP only: the path exists, not with this method (the response's Allow header says
# which methods it has).
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"

# Code name -> HTTP status. Where several codes share a status, the first stands for it
# when an HTTP status has to be named by a code (code_for_status).
HTTP_STATUS: dict[str, int] = {
    Code.INVALID_ARGUMENT.name: 400,
    Code.FAILED_PRECONDITION.name: 400,
    Code.OUT_OF_RANGE.name: 400,
    Code.UNAUTHENTICATED.name: 401,
    Code.PERMISSION_DENIED.name: 403,
    Code.NOT_FOUND.name: 404,
    METHOD_NOT_ALLOWED: 405,
    Code.ALREADY_EXISTS.name: 409,
    Code.ABORTED.name: 409,
    Code.RESOURCE_EXHAUSTED.name: 429,
    Code.CANCELLED.name: 499,
    Code.INTERNAL.name: 500,
    Code.UNKNOWN.name: 500,
    Code.DATA_LOSS.name: 500,  # not raised today; here so that every code has its status
    Code.UNIMPLEMENTED.name: 501,
    Code.UNAVAILABLE.name: 503,
    Code.DEADLINE_EXCEEDED.name: 504,
}


def http_status(code: Code | str) -> int:
    return HTTP_STATUS[code if isinstance(code, str) else code.name]


def code_for_status(status: int) -> str:
    """The code an HTTP status raised by the framework stands for (404: no such path,
    405: not with this method); UNKNOWN for a status the table does not hold."""
    return next((code for code, known in HTTP_STATUS.items() if known == status), Code.UNKNOWN.name)


def error_response(
    code: Code | str, message: str, headers: Mapping[str, str] | None = None
) -> SafeJSONResponse:
    """``{"error": {"code": "NOT_FOUND", "message": ...}}`` with the code's HTTP status."""
    name = code if isinstance(code, str) else code.name
    response = SafeJSONResponse(
        {"error": {"code": name, "message": message}},
        status_code=HTTP_STATUS[name],
        headers=dict(headers) if headers else None,
    )
    if name == Code.UNAUTHENTICATED.name:
        response.headers["WWW-Authenticate"] = 'Bearer realm="shelfrank"'
    return response


def exception_response(exc: Exception, what: str) -> SafeJSONResponse:
    """The JSON error of an exception raised while doing ``what`` (as over gRPC: storage
    trouble and bugs say nothing of their details, and are logged)."""
    return error_response(*status_of(exc, what))
