"""Admission control for the worker slots: bounded queue, one run per session, a token bucket per session.

Measured on 2 cores: more concurrent runs than cores adds no throughput and stretches each
run's wall time (4x at 8 concurrent), turning honest programs into timeouts. So the pool
has exactly `workers` slots, a short FIFO queue in front, and rejects early (QueueFull,
SessionBusy, RateLimited) rather than letting load pile up (docs/design/sandbox.md, "Load").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from ..limits import TokenBuckets
from .errors import QueueFull, RateLimited, SessionBusy

MAX_BUCKETS = 10_000  # sessions tracked at once; full buckets are forgotten first


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
        self._clock = clock
        self._busy: set[str] = set()
        self._buckets = TokenBuckets(rate, burst, max_keys=MAX_BUCKETS)

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._workers - self._semaphore.value

    def admit(self, session_key: str | None) -> None:
        """Raise if this run may not be queued. Checks in order: busy, rate, queue. Takes nothing."""
        self._admit(session_key, self._clock())

    def _admit(self, session_key: str | None, now: float) -> None:
        if session_key is not None:
            if session_key in self._busy:
                raise SessionBusy(f"session {session_key!r} already has a run in flight")
            wait = self._buckets.wait(session_key, now)
            if wait > 0:
                raise RateLimited(retry_after=wait)
        if self._semaphore.value == 0 and self._waiting >= self._queue_size:
            raise QueueFull(f"all {self._workers} workers busy and {self._waiting} runs queued")

    @asynccontextmanager
    async def slot(self, session_key: str | None) -> AsyncIterator[int]:
        """Admit (or raise), wait FIFO for a free slot, yield its index."""
        now = self._clock()
        self._admit(session_key, now)
        if session_key is not None:  # admitted: only now is a token spent
            self._buckets.take(session_key, now)
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
