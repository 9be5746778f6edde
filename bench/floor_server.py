"""The floor of this stack: the least a Python server built on it does per message (not a server to use).

Why it exists: issue 15's targets are ratios against Node servers. Whether a ratio can be reached *on this
stack* (uvloop, websockets' sans-I/O frame parser, pycrdt, SQLite) is a measurement, not an opinion: this
relay does only what every message needs and keeps the one guarantee that costs per message — an update
is appended to SQLite (WAL, ``synchronous=NORMAL``, one commit per update, as our ``--durability normal``)
before anyone else is sent it. Run by the harness as the ``floor`` column (``--servers ours,reference,floor``).

What it leaves out, each of which our server does and pays for: uvicorn (httptools handshake, the ASGI
scope, a task and a queue per socket), Starlette, tokens and roles, the document guard and every other
validation, presence rules (awareness is relayed as sent, never parsed or kept), bounded send queues and
backpressure, metrics, history, checkpoints, the author's confirmation. Anything built on the stack pays at
least what this pays, so its figures are a lower bound for ours.

Per connection: one asyncio protocol object (``__slots__``) and websockets' ``ServerProtocol``; no task.
Per room: a pycrdt ``Doc`` and a set of connections. Frames to peers are built once and written to each
transport. ``GET /`` (no upgrade) answers 200 for the harness's health check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
from typing import Any

from pycrdt import Doc
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_var_uint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, i
        shift += 7


def ws_frame(payload: bytes) -> bytes:
    """An unmasked binary frame, built once per message for every recipient."""
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return bytes((0x82, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x82, 127)) + n.to_bytes(8, "big") + payload


class Room:
    __slots__ = ("name", "doc", "conns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.doc: Doc = Doc()
        self.conns: set[Conn] = set()


class Server:
    def __init__(self, path: str) -> None:
        self.rooms: dict[str, Room] = {}
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, room TEXT, data BLOB)")

    def append(self, room: str, update: bytes) -> None:
        """Write-ahead: committed before the update is applied or sent anywhere."""
        db = self.db
        db.execute("BEGIN")
        db.execute("INSERT INTO log (room, data) VALUES (?, ?)", (room, update))
        db.execute("COMMIT")


class Conn(asyncio.Protocol):
    __slots__ = ("server", "ws", "transport", "room", "open")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ws: ServerProtocol | None = None
        self.transport: Any = None
        self.room: Room | None = None
        self.open = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            if b"upgrade" not in data.lower():
                self.transport.write(OK)
                self.transport.close()
                return
            ws = self.ws = ServerProtocol(max_size=16 * 1024 * 1024)
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self.handshake(ws, event)
            elif isinstance(event, Frame) and event.opcode == Opcode.BINARY:
                self.message(event.data)
        out = ws.data_to_send()
        if out:
            self.transport.write(b"".join(out))
        if ws.close_expected():
            self.transport.close()

    def handshake(self, ws: ServerProtocol, request: Request) -> None:
        ws.send_response(ws.accept(request))
        name = request.path.lstrip("/").split("?", 1)[0]
        room = self.server.rooms.get(name)
        if room is None:
            room = self.server.rooms[name] = Room(name)
        room.conns.add(self)
        self.room = room
        self.open = True
        sv = room.doc.get_state()
        ws.send_binary(b"\x00\x00" + var_uint(len(sv)) + sv)  # sync step 1, as the reference sends

    def message(self, msg: bytes) -> None:
        room = self.room
        ws = self.ws
        assert room is not None and ws is not None
        if msg[0] == 0:  # sync
            kind = msg[1]
            n, i = read_var_uint(msg, 2)
            body = bytes(msg[i:i + n])
            if kind == 0:  # step 1: answer with what the client lacks
                diff = room.doc.get_update(body)
                ws.send_binary(b"\x00\x01" + var_uint(len(diff)) + diff)
                return
            if body == b"\x00\x00":  # an empty update (a client's step 2 with nothing new): not an edit
                return
            self.server.append(room.name, body)
            room.doc.apply_update(body)
            self.relay(b"\x00\x02" + var_uint(n) + body)
        elif msg[0] == 1:  # awareness: relayed as sent
            self.relay(bytes(msg))

    def relay(self, payload: bytes) -> None:
        assert self.room is not None
        frame = ws_frame(payload)
        for c in self.room.conns:
            if c is not self and c.open:
                c.transport.write(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        room = self.room
        if room is not None:
            room.conns.discard(self)
            if not room.conns:
                self.server.rooms.pop(room.name, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    import uvloop

    uvloop.install()
    server = Server(os.path.join(args.data_dir, "floor.db"))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Conn(server), args.host, args.port, backlog=4096)
        async with srv:
            await srv.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
