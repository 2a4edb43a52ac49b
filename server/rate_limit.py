"""Token-bucket rate limits on ingested events, per key (a user, a connection).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; taking more than
it holds is refused and takes nothing. Each bucket is kept as one number, the time at
which it is full again (the generic cell rate algorithm's form of a token bucket): a Track
batch updates hundreds of users' buckets, so no tuple per bucket and no refill
arithmetic beyond one max and one add. A bucket that is full again is the same as no
bucket, so idle keys are dropped and memory follows the active keys only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from shelfrank.core.errors import InvalidInputError

# 1/rate is inexact in floating point, so a bucket emptied in many steps can end a hair
# past its window: up to a microsecond's refill is let through (0.00005 events at 50/s).
SLACK_SECONDS = 1e-6


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
            raise InvalidInputError(f"rate and burst must be positive, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self._seconds_per_token = 1.0 / rate
        self._window = burst / rate  # how far ahead of now a bucket may be emptied
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._full_at: dict[str, float] = {}  # key -> when its bucket is full again

    def take_all(self, amounts: Mapping[str, float]) -> str | None:
        """Take ``amounts[key]`` from every key's bucket, or nothing at all; returns the
        first key that has too few tokens (None when all were taken)."""
        per_token, window, full_at = self._seconds_per_token, self._window, self._full_at
        with self._lock:
            now = self._clock()
            limit = now + window + SLACK_SECONDS
            taken: dict[str, float] = {}
            for key, amount in amounts.items():
                start = full_at.get(key, now)
                end = (start if start > now else now) + amount * per_token
                if end > limit:
                    return key
                taken[key] = end
            full_at.update(taken)
            if len(full_at) > self._max_keys:
                self._forget_full(now)
            return None

    def give_back(self, amounts: Mapping[str, float]) -> None:
        """Return what :meth:`take_all` took, for work refused further on (never above
        the burst)."""
        with self._lock:
            now = self._clock()
            for key, amount in amounts.items():
                if key in self._full_at:
                    self._full_at[key] = max(
                        now, self._full_at[key] - amount * self._seconds_per_token
                    )

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that are full again; if too many keys are still busy, drop
        those nearest to full (forgetting a bucket fills it: the least lenient choice)."""
        full_at = self._full_at
        for key in [k for k, end in full_at.items() if end <= now]:
            del full_at[key]
        if len(full_at) > self._max_keys:
            for key in sorted(full_at, key=full_at.__getitem__)[: len(full_at) - self._max_keys]:
                del full_at[key]

    def __len__(self) -> int:
        return len(self._full_at)
