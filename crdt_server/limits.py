"""Token buckets keyed by client IP or session (session creation, WebSocket connection attempts,
runs), and the one rounding of a wait into a Retry-After header."""

from __future__ import annotations

import math
import time


def retry_after_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, rounded up, at least 1 (a client retrying sooner would be refused)."""
    if not math.isfinite(seconds):
        return "1"
    return str(max(1, math.ceil(seconds)))


class TokenBuckets:
    """``rate`` tokens per second refill a bucket of ``burst``; one bucket per key.

    Buckets that have refilled completely are forgotten, so memory is bounded by the number
    of clients active within ``burst / rate`` seconds (and hard-capped by ``max_keys``).
    A ``rate`` of 0 or less means unlimited.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token (0 if it has one now); takes nothing."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token; returns 0 if allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= self.max_keys:
            self._prune(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()

