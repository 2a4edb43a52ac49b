"""``shelfrank serve --workers N``: N server processes on one port, supervised.

One Python process serves about one core (the GIL); N processes serve N. Each worker is
an ordinary ``shelfrank serve`` process bound to the same port with SO_REUSEPORT (gRPC
sets it on Linux), so the kernel spreads connections over them; they share the store like
replicas do (stateless serving, one elected trainer). The parent:

- prepares once what must happen once (imports ``--model``, or ``--demo``'s first model)
  and reserves the port (a bound, not listening, SO_REUSEPORT socket) when it is 0;
- starts the workers and prints ``shelfrank serving on HOST:PORT`` once all are up;
- restarts a worker that dies (kill -9, a crash) and logs it;
- on SIGTERM/SIGINT, passes the signal on and waits for every worker's graceful stop.

Worker ``i`` serves Prometheus metrics on ``--metrics-port`` + ``i``.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from shelfrank.core.errors import InvalidInputError, ShelfrankError
from shelfrank.server.app import BindError

log = logging.getLogger("shelfrank.workers")


class WorkerError(ShelfrankError):
    """A worker process could not be started."""


READY_PREFIX = "shelfrank serving on"
POLL_SECONDS = 0.2
# A worker dying sooner than this after its start is not restarted at once (a crash loop
# would spin); the parent waits this long between restarts of the same worker.
RESTART_BACKOFF_SECONDS = 1.0


def without_options(argv: Sequence[str], options: dict[str, bool]) -> list[str]:
    """``argv`` without the named options (``{"--port": True}``: the option takes a value),
    in both ``--name value`` and ``--name=value`` forms."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in options:
            skip = options[name] and "=" not in arg
            continue
        kept.append(arg)
    return kept


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to ``host:port`` with SO_REUSEPORT (port 0: a free one), not
    listening: it keeps the port ours while the workers bind it too."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserved.bind((host.strip("[]"), port))
    except OSError as exc:
        reserved.close()
        raise BindError(f"cannot bind {host}:{port}: {exc}") from None
    return reserved, int(reserved.getsockname()[1])


class Worker:
    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.argv = argv
        self.process: subprocess.Popen[str] | None = None
        self.started_at = 0.0
        self.restarts = 0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shelfrank.server", *self.argv],
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        process = self.process
        if process is None or process.stdout is None:
            raise InvalidInputError(f"worker {self.index}: not started")
        line = process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            process.kill()
            process.wait()
            raise WorkerError(f"worker {self.index} did not start (exit {process.returncode})")
        # Drain what else it prints, so a full pipe never blocks it.
        threading.Thread(target=process.stdout.read, daemon=True).start()

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)


def supervise(
    argv: Sequence[str], *, host: str, port: int, workers: int, metrics_port: int | None
) -> int:
    """Run ``workers`` copies of ``shelfrank serve`` (``argv``: its arguments without
    --workers, --port, --metrics-port, --model and --demo, already prepared) until
    SIGTERM or SIGINT; the exit code."""
    if workers < 2:
        raise InvalidInputError(f"workers: must be at least 2 to supervise, got {workers}")
    reserved, port = reserve_port(host, port)
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool = []
    for index in range(workers):
        worker_argv = ["serve", *argv, "--port", str(port)]
        if metrics_port is not None:
            worker_argv += ["--metrics-port", str(metrics_port + index)]
        pool.append(Worker(index, worker_argv))
    try:
        for worker in pool:
            worker.start()
        for worker in pool:
            worker.wait_ready()
        print(f"{READY_PREFIX} {host}:{port}", flush=True)
        log.info("%d workers serving on %s:%d", workers, host, port)
        while not stopping.wait(POLL_SECONDS):
            for worker in pool:
                process = worker.process
                if process is None or process.poll() is None:
                    continue
                if time.monotonic() - worker.started_at < RESTART_BACKOFF_SECONDS:
                    continue
                worker.restarts += 1
                log.warning(
                    "worker %d (pid %d) exited with %s: restarting it (restart %d)",
                    worker.index,
                    process.pid,
                    process.returncode,
                    worker.restarts,
                )
                worker.start()
                worker.wait_ready()
    finally:
        for worker in pool:
            worker.signal(signal.SIGTERM)
        for worker in pool:
            if worker.process is not None:
                try:
                    worker.process.wait(60)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()
        reserved.close()
    return 0
