"""Every gRPC status becomes its own shelfrank exception, never a raw grpc.RpcError."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest

import shelfrank.client as sdk
from shelfrank.client import Client, ServiceError
from shelfrank.client.errors import error_class_for, from_rpc_error
from shelfrank.core.errors import InvalidInputError, ShelfrankError
from tests.test_client_servicer import RecordingServicer, serving

EXPECTED_CLASS = {
    grpc.StatusCode.CANCELLED: sdk.CancelledError,
    grpc.StatusCode.UNKNOWN: sdk.UnknownError,
    grpc.StatusCode.INVALID_ARGUMENT: sdk.InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: sdk.DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: sdk.NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: sdk.AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: sdk.PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: sdk.ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: sdk.FailedPreconditionError,
    grpc.StatusCode.ABORTED: sdk.AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: sdk.OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: sdk.UnimplementedError,
    grpc.StatusCode.INTERNAL: sdk.InternalError,
    grpc.StatusCode.UNAVAILABLE: sdk.UnavailableError,
    grpc.StatusCode.DATA_LOSS: sdk.DataLossError,
    grpc.StatusCode.UNAUTHENTICATED: sdk.UnauthenticatedError,
}


def test_every_error_status_has_a_class() -> None:
    assert set(EXPECTED_CLASS) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert len(set(EXPECTED_CLASS.values())) == len(EXPECTED_CLASS)  # one class per code


@pytest.fixture(scope="module")
def failing() -> Iterator[tuple[RecordingServicer, Client]]:
    """One server and a no-retry client (UNAVAILABLE's retries are tested elsewhere)."""
    servicer = RecordingServicer()
    with serving(servicer) as target, Client(target, max_attempts=1) as client:
        yield servicer, client


@pytest.mark.parametrize("code", list(EXPECTED_CLASS), ids=lambda code: code.name)
def test_status_from_the_server_raises_its_class(
    failing: tuple[RecordingServicer, Client], code: grpc.StatusCode
) -> None:
    servicer, client = failing
    servicer.fail("SimilarItems", code, f"item_id: {code.name.lower()}")

    with pytest.raises(ServiceError) as caught:
        client.similar_items("item-1")

    error = caught.value
    assert type(error) is EXPECTED_CLASS[code]
    assert isinstance(error, ShelfrankError)
    assert not isinstance(error, grpc.RpcError)
    assert error.code == code.name
    assert error.details == f"item_id: {code.name.lower()}"
    assert error.method == "SimilarItems"
    assert str(error) == f"SimilarItems: {code.name}: item_id: {code.name.lower()}"


def test_invalid_argument_is_also_invalid_input_and_value_error() -> None:
    error = sdk.InvalidArgumentError("k: too big", "Recommend", "INVALID_ARGUMENT")
    assert isinstance(error, InvalidInputError)
    assert isinstance(error, ValueError)
    assert isinstance(error, ServiceError)


def test_closed_client_error_is_a_shelfrank_error() -> None:
    assert issubclass(sdk.ClientClosedError, ShelfrankError)
    assert not issubclass(sdk.ClientClosedError, ServiceError)


@pytest.mark.parametrize("error_class", sorted(set(EXPECTED_CLASS.values()), key=str))
def test_errors_survive_pickling(error_class: type[ServiceError]) -> None:
    error = error_class("why", "Track", "SOME_CODE")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_class
    assert (copy.details, copy.method, copy.code, str(copy)) == (
        "why",
        "Track",
        "SOME_CODE",
        str(error),
    )


def test_asyncio_errors_are_translated_too() -> None:
    error = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, None, None, details="no such item")
    converted = from_rpc_error(error, method="SimilarItems")
    assert type(converted) is sdk.NotFoundError
    assert converted.details == "no such item"


def test_an_rpc_error_without_a_status_is_unknown() -> None:
    converted = from_rpc_error(grpc.RpcError("odd"), method="Rank")
    assert type(converted) is sdk.UnknownError
    assert converted.code == "UNKNOWN"
    assert converted.method == "Rank"


def test_ok_is_not_in_the_table() -> None:
    assert error_class_for(grpc.StatusCode.OK) is ServiceError
