"""Admission at the TCP level: a cap on open connections per address and a request-header deadline.

Why here and not in the ASGI app: a slowloris client never completes its request headers, so the
app never sees it; uvicorn's httptools protocol has a keep-alive timeout but no header timeout, and
no per-address limit. These are subclasses of uvicorn's own protocol classes (passed to
``uvicorn.Config(http=..., ws=...)``): the HTTP one counts the connection when it is made and arms a
deadline until the request headers are complete (armed again for each request on a keep-alive
connection); a WebSocket upgrade hands the transport to the WebSocket protocol, whose
``connection_lost`` then releases the count. A connection over the cap gets a plain 503 and is closed
before anything is parsed: a browser or y-websocket sees a failed handshake and retries with back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .oversize import OversizeProtocol

log = logging.getLogger(__name__)


def _refusal() -> bytes:
    body = json.dumps({"error": {"code": "too_many_connections",
                                 "message": "too many open connections from this address"}}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode() + body


REFUSAL = _refusal()


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unix"  # a Unix socket: one shared key


class ConnectionCounter:
    """Open TCP connections per peer address (HTTP and upgraded WebSocket alike); 0 = no cap."""

    def __init__(self, max_per_address: int) -> None:
        self.max_per_address = max_per_address
        self._open: dict[str, int] = {}
        self._held: dict[asyncio.BaseTransport, str] = {}
        self._warned: set[str] = set()

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count ``transport``; False (and not counted) if its address is at the cap."""
        address = _address(transport)
        count = self._open.get(address, 0)
        if self.max_per_address and count >= self.max_per_address:
            if address not in self._warned:  # once per address while it stays at the cap
                self._warned.add(address)
                log.warning("connection refused: %d connections open from one address (--max-connections-per-ip)", count)
            return False
        self._open[address] = count + 1
        self._held[transport] = address
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        """Idempotent: both protocol classes call it for an upgraded connection's one transport."""
        address = self._held.pop(transport, None)
        if address is None:
            return
        count = self._open[address] - 1
        if count:
            self._open[address] = count
        else:
            del self._open[address]
            self._warned.discard(address)


def protocol_classes(counter: ConnectionCounter, header_timeout: float, drain_bytes: int,
                     drain_timeout: float) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The HTTP and WebSocket protocol classes for ``uvicorn.Config`` (``header_timeout`` 0 = none;
    ``drain_*``: how an oversized message is refused, ``oversize.py``)."""

    class AdmittedHttpProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not counter.admit(transport):
                transport.write(REFUSAL)
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            counter.release(self.transport)
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()  # the next request on a keep-alive connection

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def _arm_header_timer(self) -> None:
            if header_timeout > 0 and self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    class AdmittedWebSocketProtocol(OversizeProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            counter.release(self.transport)
            super().connection_lost(exc)

    AdmittedWebSocketProtocol.drain_bytes = drain_bytes
    AdmittedWebSocketProtocol.drain_timeout = drain_timeout
    return AdmittedHttpProtocol, AdmittedWebSocketProtocol


def uvicorn_protocols(max_per_address: int, header_timeout: float, drain_bytes: int,
                      drain_timeout: float) -> dict[str, Any]:
    """``http=`` and ``ws=`` keyword arguments for ``uvicorn.Config``."""
    http, ws = protocol_classes(ConnectionCounter(max_per_address), header_timeout, drain_bytes, drain_timeout)
    return {"http": http, "ws": ws}
