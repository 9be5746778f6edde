"""One WebSocket connection: who it is, the frames it sends, and a bounded send queue.

Why: pycrdt-websocket sends with one task per message and lets a failed send raise into the room
(docs/design/pycrdt-websocket.md, "A failed send breaks the room" and "No send queue or
backpressure"). Here ``enqueue`` never blocks and never raises; a client that does not read fills
its queue and is closed with 1013 instead of making the server buffer without bound.

Fan-out fast path: a broadcast is framed once (``wire_frame``) and, for every recipient whose
queue is empty and whose socket is writable, written straight to its transport — one
``write`` per recipient instead of a task wake-up and four ASGI/WebSocket layers. Anything
else (backpressure, a send in flight, another server implementation) takes the queue, which a
sender task drains; that task exists only while the queue holds something, so an idle socket
costs no task (5,000 idle sockets were 5,000 parked sender tasks, task groups and events).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from starlette.websockets import WebSocket
from websockets.protocol import State

from ..config import Settings
from ..domain import Role
from ..primitives import Event
from . import protocol as p
from .protocol import CloseCode

log = logging.getLogger(__name__)

IGNORED_WINDOW = 10.0  # seconds of --ignored-bytes-rate a connection may send at once
IGNORED_FRAME_MIN = 1024  # bytes an ignored frame counts at least (a flood of empty frames costs too)
LATER = "crdt_server.later"  # a message key of ours: what ``frames`` awaits or raises before reading on

Wait = Callable[[], Awaitable[object]]
Taker = Callable[[bytes], "Wait | None"]  # a room's synchronous frame handler (``frames``)


class NotNow(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a ``Taker`` before it changed anything: the frame must wait for the reader (queued)."""


@dataclass(frozen=True)
class Origin:
    """Who authored an update, as the update log records it: the authenticated connection, never
    the Yjs clientID (which a client chooses)."""

    role: str
    conn_id: str
    name: str = ""


SERVER = Origin("server", "server")


def wire_frame(message: bytes) -> bytes:
    """One binary WebSocket frame as sent by a server (unmasked, no extension), ready to write.

    The header is built here (RFC 6455 5.2: FIN + binary opcode, then a 7-bit, 16-bit or 64-bit
    length): the same bytes as ``websockets``' ``Frame.serialize(mask=False)`` at a sixth of its cost,
    which counts once per broadcast and once per confirmation."""
    n = len(message)
    if n < 126:
        return bytes((0x82, n)) + message
    if n < 1 << 16:
        return bytes((0x82, 126)) + n.to_bytes(2, "big") + message
    return bytes((0x82, 127)) + n.to_bytes(8, "big") + message


def _direct_protocol(websocket: WebSocket) -> object | None:
    """uvicorn's websockets-sansio protocol behind this socket, if that is what serves it.

    With uvicorn's ``websockets-sansio`` the ASGI ``send`` is a bound method of the protocol,
    which owns the transport; Starlette wraps it in closures (exception handling), which are
    unwrapped here. Anything unexpected (another server, an extension such as permessage-deflate
    negotiated) disables the fast path.
    """
    send = getattr(websocket, "_send", None)
    for _ in range(6):
        proto: object | None = getattr(send, "__self__", None)
        if proto is not None and all(hasattr(proto, a) for a in ("transport", "conn", "writable", "close_sent")):
            if getattr(getattr(proto, "conn", None), "extensions", None):
                return None
            for done in ("request", "response"):  # the handshake's, read only until accept: ~2 KB a socket
                if hasattr(proto, done):
                    setattr(proto, done, None)
            return proto
        inner = [c.cell_contents for c in (getattr(send, "__closure__", None) or ()) if callable(_contents(c))]
        if len(inner) != 1:
            return None
        send = inner[0]
    return None


def _nothing() -> None:
    pass


def _contents(cell: object) -> object:
    try:
        return cell.cell_contents  # type: ignore[attr-defined]
    except ValueError:  # an empty cell
        return None


class Connection:
    """A Starlette WebSocket seen as a room member: ``frames()`` is its read half, ``enqueue`` its write half.

    An idle socket costs no task: messages are written straight to the transport, and a sender task
    exists only while something waits in the queue (backpressure, a close to send); see the module
    docstring."""

    __slots__ = (
        "websocket", "session_id", "role", "id", "connected_at", "name", "client_ids", "authored",
        "editor_events", "close_code", "on_slow_consumer", "stop_reading", "_queue", "_queued_bytes",
        "_max_messages", "_max_bytes", "_close_request", "_sender", "_closed", "_closed_event", "_direct",
        "_ignored_rate", "_ignored_tokens", "_ignored_at", "_ignored_logged",
    )

    def __init__(
        self,
        websocket: WebSocket,
        *,
        session_id: str,
        role: Role,
        max_messages: int,
        max_bytes: int,
        ignored_rate: int = Settings.ignored_bytes_rate,
    ) -> None:
        self.websocket = websocket
        self.session_id = session_id
        self.role = role
        self.id = secrets.token_hex(8)
        self.connected_at = time.time()
        self.name: str | None = None  # display name from presence, kept for the "left" event
        self.client_ids: set[int] = set()  # awareness clientIDs this connection introduced
        self.authored: set[int] = set()  # Yjs clientIDs of the structs this connection sent
        self.editor_events = 0  # history events its edits caused (bounded per connection)
        self._queue: deque[bytes] | None = None  # made when a message first has to wait
        self._queued_bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._close_request: tuple[int, str] | None = None
        self.close_code: int | None = None  # how it ended: the code we sent, or the client's
        self._sender: asyncio.Task[None] | None = None  # only while the queue is drained
        self._closed = False  # closed or broken: nothing more is sent
        self._closed_event: Event | None = None  # made by the first ``wait_closed``
        self._direct = _direct_protocol(websocket)
        self.on_slow_consumer: Callable[[], object] = _nothing  # the room counts these closes
        self.stop_reading: Callable[[], object] = _nothing  # set by the handler: ends the read half
        self._ignored_rate = ignored_rate  # bytes/s of ignored frames read on average (see ``frames``)
        self._ignored_tokens = ignored_rate * IGNORED_WINDOW
        self._ignored_at = time.monotonic()
        self._ignored_logged = False

    @property
    def path(self) -> str:
        """The room name, as pycrdt-websocket's channels have it."""
        return self.session_id

    @property
    def read_only(self) -> bool:
        return self.role == "observer"

    @property
    def origin(self) -> Origin:
        return Origin(self.role, self.id, self.name or "")

    @property
    def is_closed(self) -> bool:
        """The socket is closed (our close frame went out) or broken."""
        return self._closed

    async def frames(self, take: Taker | None = None) -> AsyncIterator[bytes]:
        """The binary frames the room handles, until the client disconnects.

        With ``take`` (the room's synchronous handler) and uvicorn's protocol behind the socket, a
        frame that arrives while this reader waits is handled at once, in the protocol's
        ``data_received``: no queue, no task switch, no pause and resume of the socket's reading per
        message. ``take`` returns what must be awaited before the next frame is read (backpressure,
        a presence rate), if anything; that, or an exception it raised, reaches this reader through
        the protocol's queue, so it is awaited or raised here, in order. Frames ``take`` may not
        handle now (``NotNow``) and every frame that arrives while this reader is busy are queued and
        yielded, as without ``take``.

        Frames the protocol ignores (text frames, ``protocol.ignored``) are dropped here, as the
        reference server drops them, but not for free: they are read at most at ``ignored_rate``
        bytes per second (bursts of 10 s, each frame counting at least 1 KiB); beyond, this socket is
        read more slowly, so ignoring cannot be used to make the server read without bound."""
        proto: Any = None  # uvicorn's protocol (oversize.py), when frames may be taken as read
        take_now = None
        if take is not None and hasattr(self._direct, "defer"):
            proto, take_now = self._direct, partial(self._take_now, take)
        try:
            while True:
                if proto is not None:
                    proto.direct = take_now
                message = await self.websocket.receive()
                if proto is not None:
                    proto.direct = None  # busy: what arrives meanwhile is queued behind
                later = message.get(LATER)
                if later is not None:
                    if isinstance(later, BaseException):
                        raise later
                    await later()
                    continue
                if message["type"] == "websocket.disconnect":
                    if self.close_code is None:
                        self.close_code = message.get("code")
                    return
                frame = message.get("bytes")
                if frame is None:  # a text frame (uvicorn closed it with 1007 if it was not UTF-8)
                    text = message.get("text") or ""
                    await self._ignore("a text frame", len(text) if text.isascii() else len(text.encode()))
                elif p.ignored(frame):
                    await self._ignore(f"a frame of type {frame[:2].hex() or 'none (empty)'}", len(frame))
                else:
                    yield frame
        finally:
            if proto is not None:
                proto.direct = None

    def _take_now(self, take: Taker, frame: bytes) -> bool:
        """A binary message, in the protocol's ``data_received`` while ``frames`` waits: handled now
        if ``take`` can (True), else False (the protocol queues it for ``frames``)."""
        if p.ignored(frame):  # ignored frames are charged for in ``frames``
            return False
        try:
            wait = take(frame)
        except NotNow:
            return False
        except BaseException as exc:  # raised to the reader, where the room handles it as before
            if not p.is_crdt_failure(exc):  # (a Yrs panic is a BaseException; never into data_received)
                raise
            self._defer(exc)
            return True
        if wait is not None:
            self._defer(wait)
        return True

    def _defer(self, later: Wait | BaseException) -> None:
        self._direct.defer({"type": "websocket.receive", LATER: later})  # type: ignore[attr-defined]

    async def _ignore(self, what: str, size: int) -> None:
        """Drop an ignored frame, charged against this connection's budget for them."""
        if not self._ignored_logged:  # once per connection: the client is not a y-websocket one
            self._ignored_logged = True
            log.info("connection %s sent %s (%d bytes); ignored", self.id, what, size)
        now = time.monotonic()
        rate = self._ignored_rate
        tokens = min(rate * IGNORED_WINDOW, self._ignored_tokens + (now - self._ignored_at) * rate)
        tokens -= max(size, IGNORED_FRAME_MIN)
        self._ignored_tokens, self._ignored_at = tokens, now
        if tokens < 0:  # in debt: the socket waits until the budget is back at zero
            await anyio.sleep(-tokens / rate)

    def enqueue(self, message: bytes, wire: bytes | None = None) -> None:
        """Send one message to this client: written at once when nothing is pending (``wire`` is
        its pre-built frame, else it is framed here), else queued; a client too far behind is
        closed. Never raises."""
        if self._close_request is not None or self._closed:
            return
        queue = self._queue
        if self._sender is None and self._direct is not None and not queue:
            if self._write_now(wire if wire is not None else wire_frame(message)):
                return
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._max_messages or self._queued_bytes + len(message) > self._max_bytes:
            log.warning("closing connection %s: send queue full (client not reading)", self.id)
            self.close(CloseCode.SLOW_CONSUMER, "send queue full: client too slow")
            self.on_slow_consumer()
            return
        queue.append(message)
        self._queued_bytes += len(message)
        self._start_sender()

    def _write_now(self, wire: bytes) -> bool:
        proto = self._direct
        if proto is None:
            return False
        try:
            if (proto.writable.is_set() and not proto.close_sent and proto.conn.state is State.OPEN  # type: ignore[attr-defined]
                    and not proto.transport.is_closing()):  # type: ignore[attr-defined]
                proto.transport.write(wire)  # type: ignore[attr-defined]
                return True
        except Exception as exc:  # noqa: BLE001 - a dying transport: let the queue path find out
            log.debug("direct write to %s failed: %r", self.id, exc)
        return False

    def close(self, code: int, reason: str) -> None:
        """Ask the sender task to close the socket; queued frames are dropped."""
        if self._close_request is None:
            self._close_request = (code, reason)
            self.close_code = code
            self._queue = None
            self._queued_bytes = 0
            self._start_sender()

    def _start_sender(self) -> None:
        if self._sender is None and not self._closed:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        """Drain the queue, then send the close if one was asked for; the task ends when the queue
        is empty (a later ``enqueue`` starts another). A closed or broken socket ends the read half too."""
        ws = self.websocket
        try:
            while self._queue and self._close_request is None:
                message = self._queue.popleft()
                if not self._queue:  # an idle socket keeps no deque
                    self._queue = None
                self._queued_bytes -= len(message)
                await ws.send_bytes(message)
            if self._close_request is not None:
                code, reason = self._close_request
                await ws.close(code=code, reason=reason)
                self._finish()
        except Exception as exc:  # noqa: BLE001 - a dead peer must never affect anyone else
            log.debug("send to connection %s failed: %r", self.id, exc)
            self._finish()
        finally:
            self._sender = None

    def _finish(self) -> None:
        self._closed = True
        self._queue = None
        self._queued_bytes = 0
        if self._closed_event is not None:
            self._closed_event.set()
        self.stop_reading()

    async def wait_closed(self) -> None:
        """Until the socket is closed or broken."""
        if self._closed:
            return
        if self._closed_event is None:
            self._closed_event = Event()
        await self._closed_event.wait()

    def abort(self) -> None:
        """The handler is done: stop a sender still waiting on a dead peer."""
        sender = self._sender
        if sender is not None:
            sender.cancel()
        if not self._closed:
            self._finish()
