"""One writer of a SQLite file at a time, across threads and processes, handed over at once.

SQLite serialises writers itself, but a writer that finds the file locked by another
process polls: its busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries. With two
``shelfrank serve`` workers ingesting into one state directory, those sleeps cost more
than the commits: Track p99 near a second and no more events/s than one process
(benchmarks/RESULTS.md, "Scale-out"). Taking an exclusive ``flock`` on a file next to
the database before each write transaction queues the writers in the kernel instead,
which wakes the next one as soon as the lock is released. SQLite's own locking stays
underneath, so a writer that does not take this lock (an older version, another tool)
is still safe, only slower.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

from shelfrank.core.errors import StorageError


class WriterLock:
    """A context manager: this process's threads one at a time (a ``threading.Lock``),
    then the processes one at a time (``flock`` on ``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd = -1
        self._pid = 0
        self._open()

    def _open(self) -> None:
        # flock belongs to the open file description: a forked child sharing the parent's
        # descriptor would share its lock too, so a child opens its own.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = os.getpid()

    def __enter__(self) -> WriterLock:
        self._threads.acquire()
        try:
            if self._fd < 0:
                raise StorageError(f"{self.path}: the store is closed")
            if self._pid != os.getpid():
                self._open()
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Release the file (later writes raise StorageError)."""
        with self._threads:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


__all__ = ["WriterLock"]
