"""Per-uid token buckets: each uid may request `rate` tokens a second, in bursts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A token bucket per key (the caller's uid), refilled continuously."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 65536,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: int) -> bool:
        """Take one token from `key`'s bucket; return False if it is empty."""
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                # Full buckets carry no state, so forgetting them is harmless.
                self._forget_full(now)
            self._buckets[key] = (tokens, now)
        return allowed

    def retry_after(self, key: int) -> float:
        """Return the seconds until `key` has a token again."""
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self.burst), self.clock()))
        missing = 1.0 - min(
            float(self.burst), tokens + (self.clock() - updated) * self.rate
        )
        return max(0.0, missing / self.rate)

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            key: (tokens, updated)
            for key, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self.rate < self.burst
        }
