"""The broadcast fast path engages with the server's own uvicorn configuration.

Runs the app in-process (same ``uvicorn_config`` as ``crdt-server``) so the test can look at
the live connections: every socket must be able to take pre-framed broadcasts directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from pycrdt import Text
from websockets.frames import Frame, Opcode

from crdt_server.cli import uvicorn_config
from crdt_server.config import load_settings
from crdt_server.sync.connection import Connection, wire_frame

from .conftest import create_session, free_port, py_client, text_of, wait_for

pytestmark = pytest.mark.anyio


class InProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/sessions"


@asynccontextmanager
async def in_process(tmp_path: Path) -> AsyncIterator[tuple[InProcess, Any]]:
    """The app served in this process with ``crdt-server``'s own uvicorn configuration."""
    port = free_port()
    settings = load_settings(["--port", str(port), "--data-dir", str(tmp_path / "data"), "--execution", "off",
                              "--connect-rate", "0", "--create-rate", "0", "--log-level", "warning", "--web-build", "off"], {})
    config = uvicorn_config(settings)
    config.loop = "asyncio"  # the test's own event loop
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await wait_for(lambda: server.started, timeout=10)
        try:
            yield InProcess(port), config.app.state.ctx.service
        finally:
            server.should_exit = True


async def test_broadcasts_are_written_directly_and_arrive(tmp_path):
    async with in_process(tmp_path) as (srv, service):
        s = await create_session(srv)
        async with py_client(srv, s) as a, py_client(srv, s) as b:
            room = service.rooms.rooms[s["id"]]
            assert len(room.clients) == 2
            assert all(c._direct is not None for c in room.clients)
            a.get("code", type=Text).insert(0, "through the fast path")
            await wait_for(lambda: text_of(b) == "through the fast path")


async def test_the_direct_read_path_is_used(tmp_path, monkeypatch):
    """An idle socket's protocol hands frames to the room as they are read (``Connection.frames``):
    counted here; if a uvicorn release stopped calling the overridden method, frames would take the
    queue (still correct, slower) and this count would stay at zero."""
    taken: list[bytes] = []
    take_now = Connection._take_now

    def counting(self: Connection, take: Any, frame: bytes) -> bool:
        handled = take_now(self, take, frame)
        if handled:
            taken.append(frame)
        return handled

    monkeypatch.setattr(Connection, "_take_now", counting)
    async with in_process(tmp_path) as (srv, service):
        s = await create_session(srv)
        async with py_client(srv, s) as a, py_client(srv, s) as b:
            a.get("code", type=Text).insert(0, "read as it arrives")
            await wait_for(lambda: text_of(b) == "read as it arrives")
            assert any(f[:2] == bytes((0, 2)) for f in taken)  # the edit, handled as it was read


def test_wire_frame_is_an_unmasked_binary_frame():
    assert wire_frame(b"\x00\x02\x01x") == b"\x82\x04\x00\x02\x01x"
    big = wire_frame(b"y" * 300)
    assert big[:4] == b"\x82\x7e\x01\x2c" and big[4:] == b"y" * 300
    for size in (0, 125, 126, 65_535, 65_536, 200_000):  # the bytes websockets itself would send
        assert wire_frame(b"z" * size) == Frame(Opcode.BINARY, b"z" * size).serialize(mask=False)
