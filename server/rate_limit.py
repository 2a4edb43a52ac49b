"""Token-bucket rate limits on ingested events, per key (a user, a connection).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; taking more than
it holds is refused and takes nothing. Buckets of idle keys are dropped once full again
(a full bucket is the same as no bucket), so memory follows the active keys only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take_all(self, amounts: Mapping[str, float]) -> str | None:
        """Take ``amounts[key]`` from every key's bucket, or nothing at all; returns the
        first key that has too few tokens (None when all were taken)."""
        burst, rate, buckets = self.burst, self.rate, self._buckets
        with self._lock:
            now = self._clock()
            taken: dict[str, tuple[float, float]] = {}
            for key, amount in amounts.items():
                state = buckets.get(key)
                level = burst if state is None else min(burst, state[0] + (now - state[1]) * rate)
                if amount > level:
                    return key
                taken[key] = (level - amount, now)
            buckets.update(taken)
            if len(buckets) > self._max_keys:
                self._forget_full(now)
            return None

    def give_back(self, amounts: Mapping[str, float]) -> None:
        """Return what :meth:`take_all` took, for work refused further on (never above
        the burst)."""
        with self._lock:
            now = self._clock()
            for key, amount in amounts.items():
                if key in self._buckets:
                    self._buckets[key] = (min(self.burst, self._level(key, now) + amount), now)

    def _forget_full(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > self._max_keys:  # all busy: forget the oldest (lenient)
            for key in sorted(self._buckets, key=lambda k: self._buckets[k][1])[
                : len(self._buckets) - self._max_keys
            ]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
