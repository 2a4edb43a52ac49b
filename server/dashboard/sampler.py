"""This replica's load, one sample every 10 s into the shared store (the overview's
charts): events accepted per second and exact Recommend p50/p99 over the interval.

The gRPC interceptor appends each Recommend's latency (seconds) to a bounded deque
(server/app.py, ``Metrics.recommend_latencies``) and does nothing else on the request's
path; this thread drains the deque every interval and computes the quantiles from the raw
values. Beyond the deque's bound within one interval the quantiles cover the latest calls;
the call count is exact (it comes from the metrics' counter). The sampler runs only with
the dashboard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from shelfrank.server.storage import EventStore, ReplicaSample

log = logging.getLogger("shelfrank.dashboard")

SAMPLE_SECONDS = 10.0

# (events accepted, Recommend calls) counted since the process started.
Totals = Callable[[], tuple[float, float]]


class ReplicaSampler:
    def __init__(
        self,
        store: EventStore,
        replica: str,
        *,
        latencies: deque[float],
        totals: Totals,
        interval_seconds: float = SAMPLE_SECONDS,
    ) -> None:
        self.store = store
        self.replica = replica
        self.latencies = latencies
        self.totals = totals
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one interval at a time (the thread, or a caller)
        self._since = time.monotonic()
        self._events, self._calls = totals()

    def start(self) -> None:
        self._since = time.monotonic()
        self._events, self._calls = self.totals()
        self._drain()  # calls before the start belong to no interval
        self._thread = threading.Thread(
            target=self._run, name="shelfrank-dashboard-sampler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.record()

    def record(self) -> ReplicaSample | None:
        """Take a sample of the interval since the last and store it (None: the store
        failed; the next interval is sampled all the same)."""
        sample = self.sample()
        try:
            self.store.record_replica_sample(sample)
        except Exception:
            log.warning("dashboard: the load sample could not be stored", exc_info=True)
            return None
        return sample

    def sample(self) -> ReplicaSample:
        """This interval's figures (and the next interval starts now)."""
        with self._lock:
            now = time.monotonic()
            events, calls = self.totals()
            elapsed = max(now - self._since, 1e-9)
            latencies = self._drain()
            values = {
                "events_per_s": (events - self._events) / elapsed,
                "recommend_calls": calls - self._calls,
            }
            if latencies.size:
                p50, p99 = np.quantile(latencies, [0.5, 0.99]) * 1000.0
                values["recommend_p50_ms"] = float(p50)
                values["recommend_p99_ms"] = float(p99)
            self._since, self._events, self._calls = now, events, calls
            return ReplicaSample(self.replica, int(time.time() * 1000), values)

    def _drain(self) -> np.ndarray:
        """The latencies appended since the last drain (popped: the deque is shared with
        the request threads, and popleft is atomic; a full deque only drops old ones)."""
        ring = self.latencies
        pop = ring.popleft
        return np.fromiter((pop() for _ in range(len(ring))), dtype=np.float64)
