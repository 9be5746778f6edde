"""The server confirms every client's updates, as the next y-websocket needs to show "synced".

y-websocket 4 (Yjs 14; yjs/y-websocket HEAD, not on npm yet) keeps each local update's content IDs
(``Y.createContentIdsFromUpdate``) until a sync step 2 or update from the server covers them, and
shows its sync status green only when none is left. ``tests/js14/client.mjs`` keeps exactly that
bookkeeping with @y/y 14, so these tests assert the confirmation at the protocol level: every update
is confirmed, without the update being sent back (a few bytes, not a second copy of a paste).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from .conftest import auth, create_session
from .jsclient import JSClient, JSClientError, js_client

pytestmark = pytest.mark.anyio

CLIENT14 = Path(__file__).resolve().parent / "js14" / "client.mjs"


@asynccontextmanager
async def yjs14(server: Any, session: dict[str, Any], role: str = "candidate", room: str = "") -> AsyncIterator[JSClient]:
    """A connected Yjs 14 client that tracks its unconfirmed updates (``tests/js14/client.mjs``)."""
    async with JSClient(script=CLIENT14, label=f"yjs14:{role}") as client:
        await client.call("connect", url=_url(server, session, role, room))
        yield client


def _url(server: Any, session: dict[str, Any], role: str = "candidate", room: str = "") -> str:
    return f"{server.ws_url}/{session['id']}{room}?token={session['tokens'][role]}"


async def test_every_update_of_the_next_client_is_confirmed_without_being_sent_back(server):
    s = await create_session(server, title="Interview", code="x = 1\n")
    async with yjs14(server, s) as author, \
            js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as other:
        for i, ch in enumerate("abc"):  # keystrokes
            await author.call("insert", index=i, text=ch)
        await author.call("waitConfirmed")
        await author.call("resetReceived")
        paste = "y" * 100_000
        await author.call("insert", index=0, text=paste)
        state = await author.call("waitConfirmed")
        # confirmed by content IDs, not by an echo of the 100 kB
        assert state["received"]["bytes"] < 1_000, state["received"]
        await author.call("delete", index=0, length=100_000)
        await author.call("setMeta", key="title", value="hacked")  # reverted by the server, still confirmed
        state = await author.call("waitConfirmed")
        assert state["title"] == "Interview"
        assert state["text"] == "abcx = 1\n"
        await other.wait_text(equals="abcx = 1\n")
        assert (await other.get_meta())["title"] == "Interview"


async def test_an_update_whose_confirmation_was_lost_is_confirmed_on_the_next_connection(server):
    """The server stored the update but the socket died before its confirmation arrived: the
    client's next sync step 2 does not carry it again (the server has it), so the answer to its
    sync step 1 must confirm it."""
    s = await create_session(server, code="x\n")
    async with yjs14(server, s) as author:
        await author.call("insertAndDrop", index=0, text="kept ")
        await author.call("connect", url=_url(server, s))
        state = await author.call("waitConfirmed")
        assert state["text"] == "kept x\n"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
        assert r.json()["code"] == "kept x\n"


async def test_offline_edits_are_confirmed_after_the_reconnect(server):
    s = await create_session(server, code="x\n")
    async with yjs14(server, s) as author:
        await author.call("disconnect")
        await author.call("insert", index=0, text="offline ")
        await author.call("delete", index=8, length=1)
        await author.call("connect", url=_url(server, s))
        state = await author.call("waitConfirmed")
        assert state["text"] == "offline \n"


async def test_the_notes_document_confirms_too(server):
    s = await create_session(server)
    async with yjs14(server, s, "interviewer", "/notes") as author:
        await author.call("insert", index=0, text="strong candidate")
        await author.call("waitConfirmed")


async def test_an_observers_dropped_edit_is_never_confirmed(server):
    """Observers' updates are dropped: their client must not believe them saved."""
    s = await create_session(server, code="x\n")
    async with yjs14(server, s, "observer") as observer:
        await observer.call("insert", index=0, text="nope ")
        with pytest.raises(JSClientError, match="timed out"):
            await observer.call("waitConfirmed", timeout=1500)


async def test_a_reconnecting_up_to_date_writer_gets_no_copy_of_its_delete_set(server):
    """Its sync step 2 repeats its whole delete set and adds nothing: the answer to its sync step 1
    (the server's whole delete set, and the IDs both hold) already confirms all of it."""
    s = await create_session(server, code="x\n")
    async with yjs14(server, s) as writer:
        await writer.call("insert", index=0, text="hello world ")
        await writer.call("delete", index=0, length=6)
        await writer.call("waitConfirmed")
        for _ in range(3):
            await writer.call("disconnect")
            await writer.call("resetReceived")
            await writer.call("connect", url=_url(server, s))
            await anyio.sleep(0.3)
            state = await writer.call("waitConfirmed")
            assert state["received"]["updates"] == 2, state["received"]  # step 2, and the known IDs
