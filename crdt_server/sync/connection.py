"""One WebSocket connection: who it is, and a bounded send queue drained by its own task.

Why: pycrdt-websocket sends with one task per message and lets a failed send raise into the
room (gaps 2 and 11 in ../shared/design/pycrdt-websocket-gaps.md). Here ``enqueue`` never
blocks and never raises; a client that does not read fills its queue and is closed with 1013
instead of making the server buffer without bound.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque

import anyio
from starlette.websockets import WebSocket

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 1013


class Connection:
    """Implements pycrdt's ``Channel`` shape (path/send/recv) on top of a Starlette WebSocket."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        session_id: str,
        role: str,
        max_messages: int,
        max_bytes: int,
    ) -> None:
        self.websocket = websocket
        self.session_id = session_id
        self.role = role
        self.id = secrets.token_hex(8)
        self.connected_at = time.time()
        self.name: str | None = None  # display name from presence, kept for the "left" event
        self.client_ids: set[int] = set()  # awareness clientIDs this connection introduced
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._wakeup = anyio.Event()
        self._close_request: tuple[int, str] | None = None
        self.closed = anyio.Event()

    @property
    def path(self) -> str:
        return self.session_id

    @property
    def read_only(self) -> bool:
        return self.role == "observer"

    def enqueue(self, message: bytes) -> None:
        """Queue one frame for this client; close it if it is too far behind. Never raises."""
        if self._close_request is not None or self.closed.is_set():
            return
        if len(self._queue) >= self._max_messages or self._queued_bytes + len(message) > self._max_bytes:
            log.warning("closing connection %s: send queue full (client not reading)", self.id)
            self.close(CLOSE_SLOW_CONSUMER, "send queue full: client too slow")
            return
        self._queue.append(message)
        self._queued_bytes += len(message)
        self._wakeup.set()

    async def send(self, message: bytes) -> None:  # pycrdt Channel API
        self.enqueue(message)

    def close(self, code: int, reason: str) -> None:
        """Ask the sender task to close the socket; queued frames are dropped."""
        if self._close_request is None:
            self._close_request = (code, reason)
            self._queue.clear()
            self._queued_bytes = 0
            self._wakeup.set()

    async def run_sender(self) -> None:
        """Drain the queue until closed. Returns when the socket is closed or broken."""
        ws = self.websocket
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                while self._queue and self._close_request is None:
                    message = self._queue.popleft()
                    self._queued_bytes -= len(message)
                    await ws.send_bytes(message)
                if self._close_request is not None:
                    code, reason = self._close_request
                    await ws.close(code=code, reason=reason)
                    return
        except Exception as exc:  # a dead peer must never affect anyone else
            log.debug("send to connection %s failed: %r", self.id, exc)
        finally:
            self.closed.set()
