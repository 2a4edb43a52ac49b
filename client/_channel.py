"""Channel set-up shared by the sync and asyncio clients (private): options, retry
policy, credentials and per-call metadata, all derived once from the constructor.

The retry policy here is the only one in shelfrank's client side (see the package
docstring): nothing above the channel retries a call, the edge's ``sync()`` included."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import grpc

from shelfrank.client import _validation as check
from shelfrank.core.errors import InvalidInputError

ChannelOption = tuple[str, str | int]
"""A gRPC channel argument, e.g. ``("grpc.max_receive_message_length", 8 << 20)``."""

SERVICE_NAME: Final = "shelfrank.v1.Recommender"
EDGE_SERVICE_NAME: Final = "shelfrank.v1.EdgeSync"
MAX_ATTEMPTS_LIMIT: Final = 5
"""gRPC silently caps retryPolicy.maxAttempts at 5; refusing more avoids a false promise."""
INITIAL_BACKOFF_SECONDS: Final = 0.1
MAX_BACKOFF_SECONDS: Final = 2.0
BACKOFF_MULTIPLIER: Final = 2.0
RETRY_BUFFER_BYTES: Final = 16 * 1024 * 1024
"""gRPC only retries a call whose request fits its per-call retry buffer (256 KiB by
default); a full Track batch is a few MiB, so the buffer is raised above the batch cap."""


def service_config(max_attempts: int) -> str:
    """The service config JSON: retry UNAVAILABLE only, for every method of both services
    (Recommender and EdgeSync), at most ``max_attempts`` attempts per call in all.

    UNAVAILABLE usually means the server never saw the request (down, refusing, starting
    up), but a connection lost after it acted looks the same, so every method retried
    must be idempotent. They are: reads change nothing (GetSnapshot too: a stream is only
    retried before its first message arrives), upserts replace, DeleteUser of an erased
    user is a no-op (a repeat reports existed=False), and Track is safe to retry because
    every event carries a client-made event_id that the server de-duplicates on, so a
    resent batch stores nothing twice. Other codes are not retried: INVALID_ARGUMENT or
    RESOURCE_EXHAUSTED would fail again, DEADLINE_EXCEEDED has no time left.
    """
    method_config: dict[str, object] = {
        "name": [{"service": SERVICE_NAME}, {"service": EDGE_SERVICE_NAME}]
    }
    if max_attempts > 1:  # gRPC rejects a retryPolicy with maxAttempts < 2
        method_config["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": f"{INITIAL_BACKOFF_SECONDS}s",
            "maxBackoff": f"{MAX_BACKOFF_SECONDS}s",
            "backoffMultiplier": BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    # Round robin over every address the target names (a list of replicas, or a DNS name
    # resolving to several): each call, and each retry of one, goes to the next replica.
    return json.dumps(
        {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method_config]}
    )


def _target(target: object) -> str:
    """The gRPC target of ``host:port`` (a DNS name may name several replicas) or of a
    list of replicas' ``ip:port`` addresses (gRPC resolves no list of names)."""
    if isinstance(target, str):
        checked = check.utf8_text("target", target)
        if not checked:
            raise InvalidInputError("target: must not be empty (e.g. 'localhost:50051')")
        return checked
    if isinstance(target, bytes) or not isinstance(target, Iterable):
        raise InvalidInputError("target: expected 'host:port' or a list of 'ip:port'")
    families: set[str] = set()
    addresses: list[str] = []
    for index, entry in enumerate(target):
        text = check.utf8_text(f"target[{index}]", entry)
        host, _, port = text.rpartition(":")
        try:
            address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise InvalidInputError(
                f"target[{index}]: {text!r} is not 'ip:port' (in a list, give IP addresses;"
                " for names, one DNS name that resolves to every replica)"
            ) from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInputError(f"target[{index}]: {text!r} has no valid port")
        families.add(f"ipv{address.version}")
        addresses.append(text)
    if not addresses:
        raise InvalidInputError("target: the list of replicas is empty")
    if len(families) > 1:
        raise InvalidInputError("target: IPv4 and IPv6 addresses cannot be mixed in one list")
    return f"{families.pop()}:{','.join(addresses)}"


def _checked_token(token: object) -> str:
    text = check.utf8_text("token", token)
    # Metadata values must be printable ASCII; gRPC would otherwise fail every call.
    if not text or not all(" " <= char <= "~" for char in text):
        raise InvalidInputError("token: must be a non-empty string of printable ASCII")
    return text


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Everything needed to open a channel and make calls on it."""

    target: str
    options: tuple[ChannelOption, ...]
    credentials: grpc.ChannelCredentials | None
    """None means a plaintext channel."""
    metadata: tuple[tuple[str, str], ...]
    """Sent with every call (the bearer token when there is no TLS to carry it)."""
    default_timeout: float

    def timeout_for(self, timeout: float | None) -> float:
        """The deadline of one call: its own timeout, else the client's default."""
        if timeout is None:
            return self.default_timeout
        return check.positive_seconds("timeout", timeout)


def channel_settings(
    target: str | Sequence[str],
    *,
    token: str | None,
    timeout: float,
    tls: bool,
    root_certificates: bytes | None,
    max_attempts: int,
    options: Sequence[ChannelOption],
) -> ChannelSettings:
    """Validate the constructor's arguments and derive the channel's configuration."""
    checked_target = _target(target)
    default_timeout = check.positive_seconds("timeout", timeout)
    attempts = check.integer("max_attempts", max_attempts)
    if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        raise InvalidInputError(
            f"max_attempts: must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {attempts}"
        )
    check.boolean("tls", tls)
    if root_certificates is not None and not isinstance(root_certificates, bytes):
        raise InvalidInputError("root_certificates: expected PEM bytes")
    if root_certificates is not None and not tls:
        raise InvalidInputError("root_certificates: only used with tls=True")
    checked_token = None if token is None else _checked_token(token)

    # Ours first; a caller's option with the same key replaces ours.
    merged: dict[str, str | int] = {
        "grpc.enable_retries": 1,
        "grpc.service_config": service_config(attempts),
        "grpc.per_rpc_retry_buffer_size": RETRY_BUFFER_BYTES,
        "grpc.primary_user_agent": "shelfrank-python",
    }
    given: object = options  # checked at run time: callers are not all type-checked
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise InvalidInputError("options: expected a sequence of (name, value) tuples")
    for index, option in enumerate(given):
        if not (
            isinstance(option, tuple)
            and len(option) == 2
            and isinstance(option[0], str)
            and isinstance(option[1], str | int)
        ):
            raise InvalidInputError(f"options[{index}]: expected a (name, str or int value) tuple")
        merged[option[0]] = option[1]

    credentials: grpc.ChannelCredentials | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    if tls:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        if checked_token is not None:
            # Sends "authorization: Bearer <token>"; gRPC only allows call credentials
            # on a secure channel, which is why plaintext uses metadata below.
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(checked_token)
            )
    elif checked_token is not None:
        metadata = (("authorization", f"Bearer {checked_token}"),)
    return ChannelSettings(
        target=checked_target,
        options=tuple(merged.items()),
        credentials=credentials,
        metadata=metadata,
        default_timeout=default_timeout,
    )
