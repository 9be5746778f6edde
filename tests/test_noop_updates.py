"""Updates that add nothing are neither stored nor relayed.

Every reconnect of an up-to-date writer sends a sync step 2 with nothing new (no structs beyond the
server's state, and the delete set of its whole document, all already deleted). It used to become a
row of the update log and a message to every other participant, every time.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect

from crdt_server.sync import protocol as p

from .conftest import auth, create_session
from .jsclient import js_client

pytestmark = pytest.mark.anyio


async def _rows(server: Any, s: dict[str, Any]) -> int:
    """The number of rows in the session's update log (playback at a moment after all of them)."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/playback", params={"at": "99999999999"},
                           headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200, r.text
        return int(r.json()["seq"])


class Watcher:
    """A bare socket that counts the document messages the server relays to it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.updates: list[bytes] = []

    async def run(self) -> None:
        async for frame in self.ws:
            assert isinstance(frame, bytes)
            if frame[0] == p.MSG_SYNC and frame[1] == p.SYNC_UPDATE:
                self.updates.append(p.parse_sync(frame).payload)


async def test_reconnecting_an_up_to_date_writer_stores_and_relays_nothing(server):
    s = await create_session(server, code="x\n")
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['observer']}") as ws, \
            anyio.create_task_group() as tg:
        watcher = Watcher(ws)
        tg.start_soon(watcher.run)
        async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="W") as writer:
            await writer.insert(0, "hello world ")
            await writer.delete(0, 6)  # its delete set is not empty: every step 2 carries it
            await anyio.sleep(0.3)
            rows, relayed = await _rows(server, s), len(watcher.updates)
            assert relayed == 2
            for _ in range(5):
                await writer.disconnect()
                await writer.reconnect()
                await writer.wait_synced()
            await anyio.sleep(0.5)
            assert await _rows(server, s) == rows
            assert len(watcher.updates) == relayed
            assert await writer.get_text() == "world x\n"
        tg.cancel_scope.cancel()


async def test_an_update_sent_again_is_stored_once_but_a_delete_of_live_text_is_not_dropped(server):
    s = await create_session(server, code="")
    author: Doc = Doc(client_id=99)
    updates: list[bytes] = []
    author.observe(lambda event: updates.append(event.update))
    text = author.get("code", type=Text)
    text.insert(0, "abc")
    del text[0:1]  # a delete-only update of live text
    insert, delete = updates
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['observer']}") as ws, \
            connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}") as sender, \
            anyio.create_task_group() as tg:
        watcher = Watcher(ws)
        tg.start_soon(watcher.run)
        await sender.recv()
        start = await _rows(server, s)
        for update in (insert, insert, delete, delete, insert):
            await sender.send(p.sync_frame(p.SYNC_UPDATE, update))
        await anyio.sleep(0.5)
        assert await _rows(server, s) == start + 2
        assert watcher.updates == [insert, delete]
        tg.cancel_scope.cancel()
