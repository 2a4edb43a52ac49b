"""uvicorn in a daemon thread of the serving process: no signal handlers (the process's
own handle SIGTERM), no logging set-up of its own, stoppable.

The socket is bound by :func:`bind` before anything starts, so a port in use fails the
server's start at once like the gRPC port does, and port 0 is known at once. With the
server's TLS certificate and key it serves HTTPS (loaded before the thread starts, so a
bad certificate fails the start with its reason).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from shelfrank.core.errors import InvalidInputError, ShelfrankError

START_SECONDS = 10.0


class HttpBindError(ShelfrankError, OSError):
    """The dashboard's address cannot be bound (in use, not local, not permitted)."""


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise HttpBindError(f"cannot bind {host}:{port} for the dashboard: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HttpBindError(f"cannot bind {host}:{port} for the dashboard: {exc}") from None
    return sock


class HttpRunner:
    def __init__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        *,
        tls: tuple[Path, Path] | None = None,
        grace_seconds: float = 5.0,
    ) -> None:
        """``tls``: (certificate, key) PEM files: HTTPS; None: plain HTTP."""
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.tls = tls is not None
        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            log_config=None,  # the process's logging stays as it is
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(grace_seconds)),
            ssl_certfile=None if tls is None else str(tls[0]),
            ssl_keyfile=None if tls is None else str(tls[1]),
        )
        try:
            config.load()  # here, not in the thread: a certificate that fails says why
        except OSError as exc:  # ssl.SSLError included
            raise InvalidInputError(
                f"tls_cert, tls_key: the dashboard cannot serve HTTPS with them: {exc}"
            ) from None
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [sock]},
            name="shelfrank-dashboard-http",
            daemon=True,
        )

    def start(self) -> None:
        """Serve, returning once uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise HttpBindError(
                    f"the dashboard's HTTP server did not start on port {self.port}"
                )
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let answers in flight finish (within the grace), return."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sock.close()
