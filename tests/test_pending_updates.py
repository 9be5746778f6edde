"""An update that arrives before one it depends on waits in the CRDT (offline edits, reconnect races).

Yjs serves such waiting structs and deletes to newcomers (``encodeStateAsUpdate`` includes them);
pycrdt's ``get_update()`` omits them, so newcomers never got them and snapshots (hence restarts) lost
them: the author kept "first second", everyone else "first " for good. The server now keeps what
waits (``crdt_server/sync/pending.py``): newcomers receive it, snapshots hold it, and once the
dependency arrives every reader has the same text.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from crdt_server.sync import protocol as p

from .conftest import auth, create_session
from .jsclient import js_client
from .unit.test_pending import out_of_order_edits

pytestmark = pytest.mark.anyio


async def _send(server: Any, s: dict[str, Any], *updates: bytes) -> None:
    """Send updates from a bare socket, as an author whose earlier update has not arrived yet."""
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}") as ws:
        await ws.recv()  # the server's sync step 1
        for update in updates:
            await ws.send(p.sync_frame(p.SYNC_UPDATE, update))
        await anyio.sleep(0.3)  # committed before the socket goes


async def _code(server: Any, s: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
        assert r.status_code == 200, r.text
        return str(r.json()["code"])


async def test_an_update_waiting_for_its_dependency_reaches_newcomers(server):
    s = await create_session(server, code="")
    u1, u2, u3 = out_of_order_edits()
    await _send(server, s, u2, u3)
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Late") as late:
        assert await late.get_text() == ""  # it waits everywhere
        await _send(server, s, u1)
        await late.wait_text(equals="rst second")
    assert await _code(server, s) == "rst second"


@pytest.mark.parametrize("stop", ["restart", "kill"])
async def test_an_update_waiting_for_its_dependency_survives_a_restart(fresh_server, stop):
    """``restart``: the unload snapshot keeps what waits. ``kill``: no snapshot; the log replay has
    it, and the snapshot the next clean stop writes keeps it too."""
    srv = fresh_server
    s = await create_session(srv, code="")
    u1, u2, u3 = out_of_order_edits()
    await _send(srv, s, u2, u3)
    if stop == "kill":
        srv.kill9()
        srv.start()
        async with js_client(srv.ws_url, s["id"], s["tokens"]["interviewer"]):  # loads the room
            pass
    srv.restart()  # SIGTERM: every room writes a snapshot and the next load starts from it
    await _send(srv, s, u1)
    assert await _code(srv, s) == "rst second"
    async with js_client(srv.ws_url, s["id"], s["tokens"]["interviewer"], name="Late") as late:
        await late.wait_text(equals="rst second")


async def test_an_author_holding_the_same_update_back_keeps_it(server):
    """A Yjs client that holds u2 back (it lacks u1 too) sends it with its sync step 2; the server
    holds it back as well. What it gets back must not replace its waiting content: once u1 arrives,
    it shows the same text as everyone."""
    s = await create_session(server, code="")
    u1, u2, _ = out_of_order_edits()
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Holder") as holder:
        await holder.apply_update(u2)  # waits in its document (and is not sent: nothing integrated)
        await holder.disconnect()
        await holder.reconnect()  # its sync step 2 carries what waits
        await holder.wait_synced()
        await anyio.sleep(0.5)  # whatever the server sends back has arrived
        await _send(server, s, u1)
        await holder.wait_text(equals="first second")
    assert await _code(server, s) == "first second"
