"""With a token set, every method of every shelfrank service refuses a missing or wrong
token with UNAUTHENTICATED (health stays open); found from the descriptors, so a new method
is covered without touching this file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shelfrank.server.app import RunningServer, ServerOptions, start
from tests.conftest import every_rpc

METHODS = every_rpc()


@pytest.fixture(scope="module")
def secured(toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    running: RunningServer = start(
        ServerOptions(
            state_dir=tmp_path_factory.mktemp("auth"), port=0, model_dir=toy_model_dir, token="tok"
        )
    )
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("module", "service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for _, s, m in METHODS]
)
@pytest.mark.parametrize(
    "metadata", [(), (("authorization", "Bearer wrong"),)], ids=["none", "wrong"]
)
def test_every_method_refuses_a_missing_or_wrong_token(
    secured: str, module: Any, service: Any, method: Any, metadata: tuple[tuple[str, str], ...]
) -> None:
    payload = getattr(module, method.input_type.name)().SerializeToString()
    path = f"/{service.full_name}/{method.name}"
    options: dict[str, Any] = {"metadata": metadata, "timeout": 10}
    with grpc.insecure_channel(secured) as channel:

        def call() -> object:
            if method.client_streaming and method.server_streaming:
                return list(channel.stream_stream(path)(iter([payload]), **options))
            if method.client_streaming:
                return channel.stream_unary(path)(iter([payload]), **options)
            if method.server_streaming:
                return list(channel.unary_stream(path)(payload, **options))
            return channel.unary_unary(path)(payload, **options)

        with pytest.raises(grpc.RpcError) as refused:
            call()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("given", "accepted"),
    [("Bearer tok", True), ("Bearer to", False), ("Bearer tok2", False), ("Bearer tOk", False)],
)
def test_the_token_is_compared_in_constant_time(
    secured: str, monkeypatch: pytest.MonkeyPatch, given: str, accepted: bool
) -> None:
    """Every check goes through hmac.compare_digest (whose time does not depend on where
    the strings differ), whatever the given token's length or prefix."""
    import shelfrank.server.callers as callers

    compared: list[tuple[bytes, bytes]] = []
    real = callers.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(callers.hmac, "compare_digest", spy)
    request = b""  # GetModelInfoRequest has no fields
    with grpc.insecure_channel(secured) as channel:
        call = channel.unary_unary("/shelfrank.v1.Recommender/GetModelInfo")
        if accepted:
            call(request, metadata=(("authorization", given),), timeout=10)
        else:
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=(("authorization", given),), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert compared == [(given.encode(), b"Bearer tok")]
