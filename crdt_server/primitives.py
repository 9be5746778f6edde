"""asyncio's ``Event`` and ``Queue`` without a deque per instance, for objects that exist by the thousand.

Why: ``asyncio.Event()`` allocates a deque for its waiters (about 600 bytes) when it is made and
``asyncio.Queue()`` three. uvicorn gives every WebSocket an event and a queue, a room had seven events,
and a batch (one per keystroke) one: with 5,000 open sockets over 1,000 rooms that was several KB of
the server's memory per socket (bench/RESULTS.md, issue 15, "idle"), and two deque allocations per
keystroke. These keep asyncio's semantics for the methods the server and uvicorn call, and allocate
a waiter list only while somebody waits, an item deque only while items are queued.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class Event:
    """``asyncio.Event``: ``set``, ``clear``, ``is_set``, ``wait``."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._waiters or ():
                if not fut.done():
                    fut.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        fut = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(fut)
        try:
            await fut
            return True
        finally:
            waiters.remove(fut)
            if not waiters:
                self._waiters = None


class Queue(Generic[T]):
    """An unbounded ``asyncio.Queue``: ``put_nowait``, ``get``, ``get_nowait``, ``empty``, ``qsize``."""

    __slots__ = ("_items", "_getters")

    def __init__(self) -> None:
        self._items: deque[T] | None = None
        self._getters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._wakeup_next()

    def get_nowait(self) -> T:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> T:
        while not self._items:
            fut = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            getters = self._getters
            getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()  # as asyncio's: an item it was woken for goes to the next getter
                if fut in getters:
                    getters.remove(fut)
                if self._items and not fut.cancelled():
                    self._wakeup_next()
                raise
            finally:
                if not getters and self._getters is getters:
                    self._getters = None
        return self.get_nowait()

    def _wakeup_next(self) -> None:
        getters = self._getters
        while getters:
            fut = getters.pop(0)
            if not fut.done():
                fut.set_result(None)
                break
