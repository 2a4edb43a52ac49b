"""The SQLite store's writer lock (server/writer_lock.py): writers of one file take turns
across processes, a killed holder frees it, a forked child does not inherit it, and a
closed store says so."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from shelfrank.core.errors import StorageError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.store import SCHEMA_VERSION, SQLiteStore
from shelfrank.server.writer_lock import WriterLock

# A child process that takes the store's writer lock, says so, and holds it until its
# stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from shelfrank.server.store import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
with store._lock:
    print("holding", flush=True)
    sys.stdin.read()
"""


def holder(database: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def finish(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            stream.close()


def lock_file(database: Path) -> Path:
    return database.with_name(database.name + ".writer-lock")


def taken_by_someone(database: Path) -> bool:
    fd = os.open(lock_file(database), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def event(event_id: str) -> StoredEvent:
    return StoredEvent(event_id, "u1", "i1", EventType.VIEW, 1_700_000_000_000)


def test_an_append_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    database = tmp_path / "events.sqlite3"
    store = SQLiteStore(database)
    process = holder(database)
    try:
        assert taken_by_someone(database)
        finished = threading.Event()

        def append() -> None:
            store.append_events([event("e1")])
            finished.set()

        writer = threading.Thread(target=append)
        writer.start()
        # Still waiting while the other process holds the lock (it holds it until told).
        assert not finished.wait(0.5)
        assert process.stdin is not None
        process.stdin.close()
        writer.join(30)
        assert finished.is_set()
        assert store.last_seq() == 1
    finally:
        finish(process)
        store.close()


def test_a_holder_killed_by_sigkill_frees_the_lock(tmp_path: Path) -> None:
    database = tmp_path / "events.sqlite3"
    process = holder(database)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    finish(process)
    assert not taken_by_someone(database)  # the kernel dropped it with the process
    store = SQLiteStore(database)
    try:
        assert store.append_events([event("e1")]).accepted == (0,)
    finally:
        store.close()


def _child_takes(lock: WriterLock, go: Any, out: Any) -> None:
    go.wait(30)
    with lock:
        out.put(True)


def test_a_forked_child_takes_the_lock_as_its_own(tmp_path: Path) -> None:
    """flock belongs to the open file description: without reopening, a forked child
    would share its parent's lock and enter while the parent holds it."""
    lock = WriterLock(tmp_path / "x.writer-lock")
    fork = multiprocessing.get_context("fork")
    go, out = fork.Event(), fork.Queue()
    child = fork.Process(target=_child_takes, args=(lock, go, out))
    child.start()  # forked while the lock is free (a fork holding a lock copies it held)
    try:
        with lock:
            go.set()
            child.join(0.5)
            assert child.is_alive()  # waiting for the parent
            assert out.empty()
        child.join(30)
        assert child.exitcode == 0
        assert out.get(timeout=5)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        out.close()
        out.join_thread()
        lock.close()


def test_a_closed_store_refuses_writes_with_a_storage_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.sqlite3")
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StorageError, match="closed"):
        store.append_events([event("e1")])


def test_a_store_that_cannot_open_keeps_no_file_open(tmp_path: Path) -> None:
    """A newer schema is refused with the reason, and the refused open leaves neither its
    connection nor the lock file open."""
    database = tmp_path / "events.sqlite3"
    SQLiteStore(database).close()
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    connection.close()
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(StorageError, match=f"schema {SCHEMA_VERSION + 1} is newer"):
        SQLiteStore(database)
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert not taken_by_someone(database)
