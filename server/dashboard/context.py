"""What the dashboard serves from: the process's service layer and who may call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shelfrank.server.dashboard.auth import Access
from shelfrank.server.service import RecommenderService

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True, kw_only=True)
class DashboardContext:
    service: RecommenderService
    access: Access
    replica: str  # this process's name in the load samples
    role: str  # all | server | trainer (ServerOptions.role)
    # The Host header values answered (server/dashboard/hosts.py; "*": any).
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    # Served over HTTPS (the server's TLS certificate): cookies are then Secure.
    tls: bool = False
    static_dir: Path = STATIC_DIR
