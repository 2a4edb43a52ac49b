"""Errors raised by the client: one class per gRPC status, all under ``ShelfrankError``.

Callers catch these instead of ``grpc.RpcError``; the client never lets a raw gRPC error
(or a protobuf type) escape. ``ServiceError.code`` is the status name as a plain str
(``"NOT_FOUND"``), so handling errors needs no grpc import. The single table
``_ERROR_CLASS_BY_STATUS`` decides which class a status becomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import grpc
import grpc.aio

from shelfrank.core.errors import ClosedError, InvalidInputError, ShelfrankError

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "ClientClosedError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServiceError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "WrongEventLoopError",
    "error_class_for",
    "from_rpc_error",
]


class ServiceError(ShelfrankError):
    """A call failed: the service answered with an error status or could not be reached.

    ``code`` is the gRPC status name (``"UNAVAILABLE"``), ``details`` the server's
    message (it names the field for bad input) and ``method`` the RPC (``"Recommend"``).
    """

    def __init__(self, details: str, method: str = "", code: str = "UNKNOWN") -> None:
        self.details = details
        self.method = method
        self.code = code
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code}: {details}" if details else f"{where}{code}")

    def __reduce__(self) -> tuple[type[ServiceError], tuple[str, str, str]]:
        # Keeps the attributes when the error crosses a process boundary (pickle).
        return (type(self), (self.details, self.method, self.code))


class CancelledError(ServiceError):
    """The call was cancelled (status CANCELLED). Not ``asyncio.CancelledError``."""


class UnknownError(ServiceError):
    """The server failed without saying how (status UNKNOWN)."""


class InvalidArgumentError(ServiceError, InvalidInputError):
    """The server refused the request's content; ``details`` names the field."""


class DeadlineExceededError(ServiceError):
    """No answer within the call's timeout (retries included)."""


class NotFoundError(ServiceError):
    """The named user or item does not exist (e.g. ``similar_items`` of an unknown item)."""


class AlreadyExistsError(ServiceError):
    pass


class PermissionDeniedError(ServiceError):
    """The token is valid but not allowed to make this call."""


class ResourceExhaustedError(ServiceError):
    """A size limit or quota was exceeded; the request is not retried automatically."""


class FailedPreconditionError(ServiceError):
    """The service is not set up or not in a state to answer (e.g. no model loaded yet,
    or ``report_shown``/``report`` on a server that records no impressions)."""


class AbortedError(ServiceError):
    pass


class OutOfRangeError(ServiceError):
    pass


class UnimplementedError(ServiceError):
    """The server does not know this RPC (it may be older than the client)."""


class InternalError(ServiceError):
    pass


class UnavailableError(ServiceError):
    """The service could not be reached, even after the automatic retries."""


class DataLossError(ServiceError):
    pass


class UnauthenticatedError(ServiceError):
    """The token is missing or was not accepted."""


class ClientClosedError(ClosedError):
    """A call was made on a client after ``close()`` (a programming error, no RPC)."""


class WrongEventLoopError(ShelfrankError, RuntimeError):
    """An ``AsyncClient`` was used on another event loop than its first one (a programming
    error, no RPC): its ``grpc.aio`` channel belongs to that first loop."""


_ERROR_CLASS_BY_STATUS: Final[Mapping[grpc.StatusCode, type[ServiceError]]] = MappingProxyType(
    {
        grpc.StatusCode.CANCELLED: CancelledError,
        grpc.StatusCode.UNKNOWN: UnknownError,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
        grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
        grpc.StatusCode.NOT_FOUND: NotFoundError,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
        grpc.StatusCode.ABORTED: AbortedError,
        grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
        grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
        grpc.StatusCode.INTERNAL: InternalError,
        grpc.StatusCode.UNAVAILABLE: UnavailableError,
        grpc.StatusCode.DATA_LOSS: DataLossError,
        grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    }
)


def error_class_for(code: grpc.StatusCode) -> type[ServiceError]:
    """The exception class for a status; ``ServiceError`` itself for OK or unmapped codes."""
    return _ERROR_CLASS_BY_STATUS.get(code, ServiceError)


def from_rpc_error(error: grpc.RpcError, *, method: str) -> ServiceError:
    """Translate a failed call (sync or ``grpc.aio``) into the matching ``ServiceError``."""
    code: object = None
    details: object = None
    # The base grpc.RpcError has no code()/details() at runtime; the errors raised for
    # failed calls (grpc.Call for sync, AioRpcError for aio) do.
    if isinstance(error, grpc.aio.AioRpcError | grpc.Call):
        code, details = error.code(), error.details()
    if not isinstance(code, grpc.StatusCode):
        return UnknownError(str(error) or type(error).__name__, method, "UNKNOWN")
    text = details if isinstance(details, str) else ""
    return error_class_for(code)(text, method, code.name)
