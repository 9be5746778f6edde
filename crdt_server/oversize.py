"""A WebSocket message over --max-message-size: refused with a final close the client actually receives.

What uvicorn's websockets-sansio protocol does on its own: close 1009, then close the TCP connection at
once. y-websocket (every version) retries 1009 for ever, re-sending the same oversized sync step 2 on
each reconnect; and the client is usually still sending that message when the server closes, so the
server's kernel answers its remaining bytes with a RST and the client discards the close frame it had
not read yet: it sees 1006. Here instead (docs/design/oversize.md says why it is a wrapper, not a fork):

* the close code is 4413 with a reason (final for y-websocket 3.1+, as for an oversized document);
* the server half-closes (FIN after the close frame) and reads and discards what the client still
  sends, never buffering it, until the client closes, ``drain_bytes`` were discarded or
  ``drain_timeout`` passed; only then is the TCP connection closed, so the close frame arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode as WsCloseCode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from .primitives import Event, Queue
from .sync.protocol import CloseCode
from .wsparser import shed_handshake


class RefusingServerProtocol(ServerProtocol):
    """websockets' sans-I/O server, refusing an oversized message with 4413 instead of 1009."""

    def fail(self, code: WsCloseCode | int, reason: str = "") -> None:
        if code == WsCloseCode.MESSAGE_TOO_BIG:
            limit = self.max_message_size
            code = CloseCode.DOCUMENT_TOO_LARGE
            reason = f"message too large: over {limit} bytes (--max-message-size)" if limit else "message too large"
        super().fail(code, reason)


class OversizeProtocol(WebSocketsSansIOProtocol):
    """uvicorn's protocol with the refusal above; the server's subclass (``admission.protocol_classes``)
    sets ``drain_bytes`` (0 = close at once, as uvicorn does) and ``drain_timeout``."""

    drain_bytes = 0
    drain_timeout = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same object as a refusing one (a subclass that only overrides a method): not a second
        # parser built and the first thrown away, once per connection.
        self.conn.__class__ = RefusingServerProtocol
        # Without a deque per instance (crdt_server/primitives.py): about 2.6 KB less per open socket.
        self.queue = Queue()  # type: ignore[assignment]
        self.writable = Event()  # type: ignore[assignment]
        self.writable.set()
        self.draining = False
        self.drained = 0
        # Set while the socket's reader waits (``sync/connection.py``): a binary message is handed to
        # it here, in ``data_received``, when nothing is queued before it; False means "queue it".
        self.direct: Callable[[bytes], bool] | None = None

    def send_receive_event_to_app(self) -> None:
        direct = self.direct
        if direct is not None and self.curr_msg_data_type == "bytes" and not self.close_sent and self.queue.empty():
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            self.frames = []
            if direct(data):
                return
            self.frames = [data]
        super().send_receive_event_to_app()

    def defer(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the reader, and read no more until it took it (as uvicorn does for a
        message it queues): what the reader must do before the next frame."""
        self.queue.put_nowait(message)  # type: ignore[arg-type]
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        shed_handshake(self.conn)  # the parsed request is no longer held by the parser (wsparser.py)

    def data_received(self, data: bytes) -> None:
        if self.draining:  # the rest of the refused message: counted and dropped, never parsed or kept
            self.drained += len(data)
            if self.drained > self.drain_bytes:
                self.transport.close()
            return
        super().data_received(data)

    def handle_parser_exception(self) -> None:
        if not isinstance(self.conn.parser_exc, PayloadTooBig) or self.drain_bytes <= 0:
            super().handle_parser_exception()
            return
        close = self.conn.close_sent
        assert close is not None
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.stop_keepalive()
        self.transport.write(b"".join(self.conn.data_to_send()))  # the close frame (and EOF marker b"")
        self.close_sent = True
        self.draining = True
        if self.transport.can_write_eof():  # FIN after the close frame; the client's bytes still read
            self.transport.write_eof()
        if self.read_paused:  # the app stopped reading on a full queue: keep draining regardless
            self.read_paused = False
            self.transport.resume_reading()
        # As ``close_timer``, uvicorn neither closes the transport when the app returns nor on shutdown
        # before it fires (``run_asgi``, ``shutdown``); ``connection_lost`` cancels it.
        self.close_timer = self.loop.call_later(self.drain_timeout, self.transport.close)

