"""Admission control for the worker slots: bounded queue, one run per session, token bucket.

Measured on 2 cores: more concurrent runs than cores adds no throughput and stretches each
run's wall time (4x at 8 concurrent), turning honest programs into timeouts. So the pool
has exactly `workers` slots, a short FIFO queue in front, and rejects early (QueueFull,
SessionBusy, RateLimited) rather than letting load pile up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from .errors import QueueFull, RateLimited, SessionBusy

MAX_BUCKETS = 10_000


@dataclass
class TokenBucket:
    tokens: float
    updated: float

    def refill(self, now: float, rate: float, burst: int) -> None:
        self.tokens = min(float(burst), self.tokens + (now - self.updated) * rate)
        self.updated = now


class RunPool:
    def __init__(
        self,
        workers: int,
        queue_size: int,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._workers = workers
        self._free = deque(range(workers))
        self._semaphore = anyio.Semaphore(workers)
        self._queue_size = queue_size
        self._waiting = 0
        self._rate, self._burst = rate, burst
        self._clock = clock
        self._busy: set[str] = set()
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._workers - self._semaphore.value

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket(float(self._burst), now)
        bucket.refill(now, self._rate, self._burst)
        return bucket

    def _prune(self, now: float) -> None:
        """Drop buckets that have refilled completely: they carry no information."""
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now, self._rate, self._burst)
            if bucket.tokens >= self._burst and key not in self._busy:
                del self._buckets[key]

    def admit(self, session_key: str | None) -> None:
        """Raise if this run may not be queued. Checks in order: busy, rate, queue."""
        now = self._clock()
        if session_key is not None:
            if session_key in self._busy:
                raise SessionBusy(f"session {session_key!r} already has a run in flight")
            bucket = self._bucket(session_key, now)
            if bucket.tokens < 1.0:
                raise RateLimited(retry_after=(1.0 - bucket.tokens) / self._rate)
        if self._semaphore.value == 0 and self._waiting >= self._queue_size:
            raise QueueFull(f"all {self._workers} workers busy and {self._waiting} runs queued")

    @asynccontextmanager
    async def slot(self, session_key: str | None) -> AsyncIterator[int]:
        """Admit (or raise), wait FIFO for a free slot, yield its index."""
        self.admit(session_key)
        if session_key is not None:
            self._buckets[session_key].tokens -= 1.0
            self._busy.add(session_key)
        try:
            self._waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self._waiting -= 1
            index = self._free.popleft()
            try:
                yield index
            finally:
                self._free.append(index)
                self._semaphore.release()
        finally:
            if session_key is not None:
                self._busy.discard(session_key)
