"""How a room runs under pycrdt-websocket's ``YRoom``: one task, and timers instead of tasks.

Kept apart from ``room.py`` so the room reads as ingest and fan-out. ``YRoom.start`` opens the room's
task group and calls ``_start`` in it; upstream's runs five tasks per room (a stop watcher, a document
observer, a provider and pycrdt's awareness ticker, which wakes every 3 s for a presence the server keeps
in ``RoomPresence`` instead). Here a room runs one, its ingest loop: thousands of idle rooms then cost
no wake-ups (bench/RESULTS.md, issue 15).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from anyio.abc import TaskGroup


class RoomLifecycle:
    """Mixed into ``SessionRoom`` ahead of ``YRoom``."""

    _task_group: TaskGroup | None
    _timer: asyncio.TimerHandle | None  # the presence's next coalesced broadcast
    started: Any
    ydoc_observed: Any
    _broadcast_updates: Callable[[], Coroutine[Any, Any, None]]

    def send_server_awareness(self, type: str, changes: Any) -> None:
        """The server has no presence of its own."""

    async def _start(self, task_status: Any) -> None:
        if not self.started.is_set():  # YRoom's start calls this again after a failure
            task_status.started()
            self.started.set()
        self.ydoc_observed.set()  # never observed: broadcasts happen after commit in ``_broadcast_updates``
        assert self._task_group is not None  # set by ``YRoom.start``
        self._task_group.start_soon(self._broadcast_updates)

    async def stop(self) -> None:
        """YRoom's stop, less the awareness ticker and observer ``_start`` never started."""
        if self._task_group is None:
            raise RuntimeError("YRoom not running")
        self._task_group.cancel_scope.cancel()
        self._task_group = None
        if self._timer is not None:  # a coalesced presence broadcast to nobody
            self._timer.cancel()

    def _spawn(self, func: Any) -> bool:
        """Run ``func`` in the room's task group; False if the room is not running."""
        if self._task_group is None:
            return False
        self._task_group.start_soon(func)
        return True

    def _later(self, delay: float, func: Callable[[], None]) -> bool:
        """Call ``func`` after ``delay`` s on the loop (a timer, not a task); False if the room is not running."""
        if self._task_group is not None:
            self._timer = asyncio.get_running_loop().call_later(delay, func)
        return self._task_group is not None
