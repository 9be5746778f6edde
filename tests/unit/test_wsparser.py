"""websockets' parser after the handshake: the request is let go, and frames parse as before.

Real ``websockets`` objects throughout: the server protocol the server runs, fed the bytes a client
sends (a handshake, then masked frames made by the library's own client-side framing)."""

from __future__ import annotations

import gc
import weakref

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from crdt_server.wsparser import shed_handshake

HANDSHAKE = (
    b"GET /ws/sessions/abc?token=t HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin: http://localhost\r\nUser-Agent: test\r\n\r\n"
)


def client_frame(data: bytes) -> bytes:
    return Frame(Opcode.BINARY, data).serialize(mask=True, extensions=[])


def handshake(conn: ServerProtocol, extra: bytes = b"", *, shed: bool = False) -> tuple[weakref.ref[Request], bool]:
    """Feed the request (and ``extra`` bytes behind it) and answer 101 as uvicorn does, calling
    ``shed_handshake`` where ``OversizeProtocol.handle_connect`` does if ``shed``: the request's weakref
    and whether the parser was swapped."""
    conn.receive_data(HANDSHAKE + extra)
    [request] = [e for e in conn.events_received() if isinstance(e, Request)]
    response = conn.accept(request)
    swapped = shed and shed_handshake(conn)
    conn.send_response(response)
    conn.data_to_send()
    return weakref.ref(request), swapped


def frames(conn: ServerProtocol, *chunks: bytes) -> list[bytes]:
    for chunk in chunks:
        conn.receive_data(chunk)
    return [bytes(e.data) for e in conn.events_received() if isinstance(e, Frame)]


def test_the_parsed_request_is_let_go_and_frames_still_parse() -> None:
    kept, shed = ServerProtocol(), ServerProtocol()
    kept_request, _ = handshake(kept)
    shed_request, swapped = handshake(shed, shed=True)
    assert swapped  # the request parsed, nothing else sent: the swap is exact
    gc.collect()
    assert kept_request() is not None  # without the swap the parser holds the request for the socket's life
    assert shed_request() is None
    one, two = client_frame(b"\x00\x01update"), client_frame(b"x" * 300)  # a 2-byte and a 4-byte header
    for c in (kept, shed):  # whole frames, then a frame split inside its header and its payload
        assert frames(c, one + two) == [b"\x00\x01update", b"x" * 300]
        assert frames(c, two[:1], two[1:3], two[3:100], two[100:]) == [b"x" * 300]
    assert not shed_handshake(shed)  # once is all


def test_no_swap_unless_the_parser_waits_at_a_frame_boundary_with_nothing_buffered() -> None:
    arriving = ServerProtocol()
    arriving.receive_data(HANDSHAKE[:40])  # the request is still arriving
    assert not shed_handshake(arriving)
    arriving.receive_data(HANDSHAKE[40:])
    assert shed_handshake(arriving)

    update = client_frame(b"\x00\x02pipelined")
    for extra in (update[:1], update[:4]):  # a client that sent a frame's start behind its request
        conn = ServerProtocol()
        assert not handshake(conn, extra, shed=True)[1]
        assert frames(conn, update[len(extra):]) == [b"\x00\x02pipelined"]  # parsed by the old parser

    bad = ServerProtocol()
    bad.receive_data(b"NOT HTTP\r\n\r\n")  # a failed handshake: the parser discards, nothing to swap
    assert not shed_handshake(bad)
