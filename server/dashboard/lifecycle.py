"""The dashboard of one serving process: its HTTP server and its load sampler, started
and stopped together (``shelfrank serve --http-port``; nothing of it runs without)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.http_app import create_app
from shelfrank.server.dashboard.runner import HttpRunner
from shelfrank.server.dashboard.sampler import ReplicaSampler


@dataclass(frozen=True)
class Dashboard:
    runner: HttpRunner
    sampler: ReplicaSampler

    @property
    def port(self) -> int:
        return self.runner.port

    @property
    def tls(self) -> bool:
        """Served over HTTPS."""
        return self.runner.tls

    def stop(self) -> None:
        self.runner.stop()
        self.sampler.stop()


def start_dashboard(
    context: DashboardContext,
    sock: socket.socket,
    sampler: ReplicaSampler,
    tls: tuple[Path, Path] | None = None,
) -> Dashboard:
    """Serve the dashboard on the bound ``sock`` (HTTPS with ``tls``: certificate and key)
    and start sampling."""
    runner = HttpRunner(create_app(context), sock, tls=tls)
    runner.start()
    try:
        sampler.start()
    except BaseException:
        runner.stop()
        raise
    return Dashboard(runner, sampler)
