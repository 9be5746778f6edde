"""A message over --max-message-size: the 4413 close arrives first, then the server reads and discards the
rest only up to --oversize-drain-bytes and --oversize-drain-timeout (a client cannot keep a refused
socket, or the server's bandwidth, for ever). Raw TCP, so a frame can claim any length."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

import anyio
import pytest

from .conftest import create_session

pytestmark = pytest.mark.anyio

LIMITS = ("--max-message-size", "65536", "--max-document-size", "32768")
CLAIMED = 1 << 30  # the frame header claims 1 GiB


def open_websocket(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def next_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, rest) of the first complete server frame (unmasked) in ``buffer``."""
    if len(buffer) < 2:
        return None
    length, at = buffer[1] & 0x7F, 2
    if length >= 126:
        size = 2 if length == 126 else 8
        if len(buffer) < 2 + size:
            return None
        length, at = int.from_bytes(buffer[2:2 + size], "big"), 2 + size
    if len(buffer) < at + length:
        return None
    return buffer[0] & 0x0F, buffer[at:at + length], buffer[at + length:]


async def refused_socket(srv: object) -> socket.socket:
    """A socket that sent the header of a 1 GiB binary frame and received the server's 4413 close."""
    session = await create_session(srv)
    sock = open_websocket(srv.port, f"/ws/sessions/{session['id']}?token={session['tokens']['candidate']}")  # type: ignore[attr-defined]
    sock.sendall(bytes((0x82, 0x80 | 127)) + struct.pack("!Q", CLAIMED) + b"\x00" * 4)  # FIN, binary, masked
    buffer = b""
    deadline = time.monotonic() + 10
    while True:  # the server's sync messages may come first: skip frames up to its close frame
        frame = next_frame(buffer)
        if frame is None:
            assert time.monotonic() < deadline, buffer[:32]
            buffer += sock.recv(65536)
            continue
        opcode, payload, buffer = frame
        if opcode == 0x8:
            break
    assert struct.unpack("!H", payload[:2])[0] == 4413 and b"message too large" in payload, payload
    return sock


def send_until_closed(sock: socket.socket, chunk: int, pause: float, limit: float = 20) -> tuple[int, float]:
    """Bytes sent and seconds elapsed until the server's end refuses more (reset / broken pipe)."""
    start, sent = time.monotonic(), 0
    sock.settimeout(limit)
    data = b"\x00" * chunk
    while time.monotonic() - start < limit:
        try:
            sent += sock.send(data)
        except OSError:
            return sent, time.monotonic() - start
        if pause:
            time.sleep(pause)
    raise AssertionError(f"still accepting after {sent} bytes and {limit} s")


async def test_the_rest_of_a_refused_message_is_discarded_only_up_to_the_drain_bytes(make_server):
    srv = make_server(*LIMITS, "--oversize-drain-bytes", str(1 << 20), "--oversize-drain-timeout", "30")
    sock = await refused_socket(srv)
    try:
        sent, _ = await anyio.to_thread.run_sync(send_until_closed, sock, 1 << 16, 0.0)
        # 1 MiB drained, plus what the two kernels' socket buffers hold: far below the 1 GiB claimed
        assert sent < 64 << 20, sent
    finally:
        sock.close()


async def test_a_refused_socket_is_closed_at_the_drain_deadline(make_server):
    srv = make_server(*LIMITS, "--oversize-drain-timeout", "1")
    sock = await refused_socket(srv)
    try:
        sent, elapsed = await anyio.to_thread.run_sync(send_until_closed, sock, 1024, 0.05)
        assert sent < 1 << 20 and elapsed < 5, (sent, elapsed)
    finally:
        sock.close()
