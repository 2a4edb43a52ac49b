"""A throwaway PostgreSQL for the tests of the PostgreSQL store.

``postgres_server`` (one per session) is ``$SHELFRANK_TEST_PG`` when set (a URL of a
database whose user may create and drop databases), else a cluster of its own: ``initdb``
into a temporary folder, ``pg_ctl start`` on a free loopback port, trust authentication
for 127.0.0.1 only, no fsync (a throwaway); stopped (``pg_ctl stop -m fast``) and removed
at the end of the session. PostgreSQL refuses to run as root, so as root the cluster runs
as the ``postgres`` system user (``runuser``). ``postgres_url`` is a fresh database per
test, dropped after it; ``postgres_database`` one per test module.

If PostgreSQL cannot be found or started, the fixtures fail with the reason: the tests
of the PostgreSQL store never skip silently (``make pytest`` installs PostgreSQL).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

ENV = "SHELFRANK_TEST_PG"
SYSTEM_USER = "postgres"  # who runs the cluster when the tests run as root


def _bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian's layout, else PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    pytest.fail(
        "PostgreSQL not found (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on PATH): "
        "install it (`apt-get install -y postgresql`; `make pytest` does) or set "
        f"{ENV} to the URL of a PostgreSQL database",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(command: list[str], as_user: str | None) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", as_user, "--"] if as_user else []
    return subprocess.run(
        prefix + command, capture_output=True, text=True, timeout=120, check=False
    )


def _fail(what: str, done: subprocess.CompletedProcess[str], log: Path | None = None) -> None:
    detail = (done.stdout + done.stderr).strip()
    if log is not None and log.is_file():
        detail += "\n" + log.read_text(errors="replace")[-2000:]
    pytest.fail(
        f"cannot start a throwaway PostgreSQL for the tests ({what} failed, exit "
        f"{done.returncode}): {detail}\n(set {ENV} to the URL of a PostgreSQL database "
        "to use an existing server)",
        pytrace=False,
    )


class _Cluster:
    """A cluster in a temporary folder, owned by whoever runs it."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: fsync as a production server does. Off by default: the tests check
        the store's semantics, not PostgreSQL's durability, and without fsync creating
        databases and schemas and committing cost next to nothing."""
        self.durable = durable
        self.bindir = _bindir()
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the postgres user
            if shutil.which("runuser") is None:
                pytest.fail("running as root and `runuser` is missing", pytrace=False)
            self.user = SYSTEM_USER
        self.root = Path(tempfile.mkdtemp(prefix="shelfrank-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.user is not None:
            try:
                shutil.chown(self.root, self.user, self.user)
            except (LookupError, PermissionError) as exc:
                shutil.rmtree(self.root, ignore_errors=True)
                pytest.fail(f"cannot hand {self.root} to user {self.user!r}: {exc}", pytrace=False)
        self.port = 0

    def start(self) -> str:
        done = _run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a test cluster: initdb need not wait for the disk
            ],
            self.user,
        )
        if done.returncode != 0:
            _fail("initdb", done)
        # Trust, and only for TCP connections from 127.0.0.1 (no socket, no other host).
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        for _attempt in range(3):  # a free port can be taken before the server binds it
            self.port = _free_port()
            done = self._pg_ctl_start()
            if done.returncode == 0:
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        _fail("pg_ctl start", done, self.log)
        raise AssertionError("unreachable")  # pytest.fail raised

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root} -c max_connections=100"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        return _run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            self.user,
        )

    def crash(self) -> None:
        """Stop the server at once (``immediate``: as if it died), keeping its data."""
        done = _run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            self.user,
        )
        if done.returncode != 0:
            _fail("pg_ctl stop", done, self.log)

    def restart(self) -> None:
        """Start the server again on the same port and data (after :meth:`crash`)."""
        done = self._pg_ctl_start()
        if done.returncode != 0:
            _fail("pg_ctl start", done, self.log)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                self.user,
            )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a database on a running PostgreSQL (its maintenance database)."""
    given = os.environ.get(ENV)
    if given:
        if not given.startswith(("postgresql://", "postgres://")):
            pytest.fail(f"{ENV}: expected a postgresql:// URL, got {given!r}", pytrace=False)
        yield given
        return
    cluster = _Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def crashable_postgres() -> Iterator[tuple[_Cluster, str]]:
    """A cluster of the test's own (it may crash and restart it) and its URL; always
    local, also when $SHELFRANK_TEST_PG names a shared server."""
    cluster = _Cluster()
    try:
        yield cluster, cluster.start()
    finally:
        cluster.stop()


@contextmanager
def _fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` (its URL), dropped on leaving."""
    name = f"shelfrank_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        pytest.fail(f"cannot connect to the test PostgreSQL: {exc}", pytrace=False)
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
            # FORCE: a connection the test leaked (a pool not closed) must not keep it alive.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on :func:`postgres_server` for one test, dropped after it."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh database for one test module (creating one takes a few tenths of a second;
    tests that each open their stores in a new schema of it need no more isolation)."""
    with _fresh_database(postgres_server) as url:
        yield url


def _with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead (query options kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))
