"""REST on one process changes the live session wherever its editors are connected (docs/design/cluster.md,
"Changes beside the document")."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

from crdt_server.sync.protocol import CloseCode

from .cluster import deployment
from .conftest import auth, create_session, py_client
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    with deployment(tmp_path) as d:
        yield d, d.server(), d.server()


async def test_patch_save_lock_reissue_on_b_reach_sockets_on_a(pair):
    _, a, b = pair
    s = await create_session(a, code="x = 1\n")
    sid, tokens = s["id"], s["tokens"]
    async with httpx.AsyncClient(base_url=b.base_url, headers=auth(tokens["interviewer"]), timeout=10) as rest, \
            js_client(a.ws_url, sid, tokens["candidate"], name="Cand") as cand, \
            js_client(a.ws_url, sid, tokens["interviewer"], name="Ivy") as ivy:
        r = await rest.patch(f"/api/sessions/{sid}", json={"language": "javascript", "title": "Two processes"})
        assert r.status_code == 200, r.text
        await cand.wait_until(lambda: _meta_is(cand, language="javascript", title="Two processes"), timeout=10)

        r = await rest.post(f"/api/sessions/{sid}/code", json={"code": "let y = 2\n"})
        assert r.status_code == 200, r.text
        await cand.wait_text(equals="let y = 2\n", timeout=10)

        # the lock is enforced by the room on A, which learnt it from B
        assert (await rest.patch(f"/api/sessions/{sid}", json={"locked": True})).status_code == 200
        # edits sent before the lock reached A are kept; once it has, each is reverted by A
        with anyio.fail_after(15):
            while True:
                before = await cand.get_text()
                await cand.insert(0, "// cand\n")
                await anyio.sleep(0.5)
                if await cand.get_text() == before:  # reverted by A: the lock arrived
                    break
        assert before.endswith("let y = 2\n"), before
        await ivy.insert(0, "// ivy\n")
        await cand.wait_text(equals="// ivy\n" + before, timeout=10)

        since = cand.mark()
        r = await rest.post(f"/api/sessions/{sid}/tokens")
        assert r.status_code == 200, r.text
        await cand.wait_close(CloseCode.UNAUTHORIZED, timeout=10, since=since)
        await ivy.wait_close(CloseCode.UNAUTHORIZED, timeout=10, since=since)


async def _meta_is(client: Any, **expected: str) -> bool:
    meta = await client.get_meta()
    return all(meta.get(k) == v for k, v in expected.items())


async def test_end_and_delete_on_b_close_or_freeze_a(pair):
    _, a, b = pair
    s = await create_session(a, code="x = 1\n")
    sid, tokens = s["id"], s["tokens"]
    async with httpx.AsyncClient(base_url=b.base_url, headers=auth(tokens["interviewer"]), timeout=10) as rest, \
            js_client(a.ws_url, sid, tokens["candidate"], name="Cand") as cand:
        assert (await rest.patch(f"/api/sessions/{sid}", json={"status": "ended"})).status_code == 200
        await cand.wait_until(lambda: _meta_is(cand, status="ended"), timeout=10)
        await cand.insert(0, "late ")  # A knows the session ended: the edit is undone, not stored
        await cand.wait_text(equals="x = 1\n", timeout=10)
        since = cand.mark()
        assert (await rest.delete(f"/api/sessions/{sid}")).status_code == 204
        event = await cand.wait_close(CloseCode.SESSION_NOT_FOUND, timeout=10, since=since)
        assert event["code"] == CloseCode.SESSION_NOT_FOUND


@pytest.fixture
def sweeping_pair(tmp_path: Path) -> Any:
    """B alone sweeps often (a short --session-ttl); A would not sweep for a minute."""
    with deployment(tmp_path) as d:
        yield d, d.server(), d.server("--session-ttl", "3")


async def test_a_session_expired_by_b_closes_its_sockets_on_a_with_4410(sweeping_pair):
    _, a, b = sweeping_pair
    s = await create_session(b)  # expires 3 s after its last activity (B's --session-ttl)
    async with js_client(a.ws_url, s["id"], s["tokens"]["candidate"], name="Cand") as cand:
        event = await cand.wait_close(timeout=15)
        assert event["code"] == CloseCode.SESSION_EXPIRED  # B's message, not A's own check (4404)


async def test_private_notes_written_on_a_and_b_converge(pair):
    _, a, b = pair
    s = await create_session(a)
    token = s["tokens"]["interviewer"]
    docs: list[Doc] = []
    async with AsyncExitStack() as stack:
        for srv in (a, b):
            ws = await stack.enter_async_context(aconnect_ws(f"{srv.ws_url}/{s['id']}/notes?token={token}"))
            doc: Doc = Doc()
            provider = await stack.enter_async_context(Provider(doc, HttpxWebsocket(ws, s["id"])))
            with anyio.fail_after(10):
                await provider.synced.wait()
            docs.append(doc)
        docs[0].get("notes", type=Text).insert(0, "from A. ")
        docs[1].get("notes", type=Text).insert(0, "from B. ")
        with anyio.fail_after(10):
            while len({str(d.get("notes", type=Text)) for d in docs}) != 1 or not str(docs[0].get("notes", type=Text)):
                await anyio.sleep(0.05)
        notes = str(docs[0].get("notes", type=Text))
        assert "from A. " in notes and "from B. " in notes
        async with httpx.AsyncClient(headers=auth(token)) as http:
            r = await http.get(f"{b.base_url}/api/sessions/{s['id']}/notes")
            assert r.status_code == 200 and r.json()["notes"] == notes
        async with py_client(b, s) as shared:  # the shared document never shows them
            assert "from A" not in str(shared.get("code", type=Text))


async def test_a_lock_on_b_while_a_loads_the_room_is_enforced_on_a(pair):
    """The ROW message of a PATCH on B can arrive while A is between reading the session row and
    registering the room: A must not keep the row it read before the lock."""
    import asyncpg

    from .pg import URL

    d, a, b = pair
    s = await create_session(b, code="x = 1\n")
    sid, tokens = s["id"], s["tokens"]
    async with httpx.AsyncClient(headers=auth(tokens["interviewer"]), timeout=20) as rest, \
            js_client(b.ws_url, sid, tokens["interviewer"], name="Ivy"):  # B's room is loaded
        blocker = await asyncpg.connect(URL, server_settings={"search_path": d.schema})
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
            async with anyio.create_task_group() as tg:
                # A loads the room (the participants list holds it): it reads the row, then waits on the log
                tg.start_soon(rest.get, f"{a.base_url}/api/sessions/{sid}/participants")
                with anyio.fail_after(10):
                    while not (await blocker.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                        await anyio.sleep(0.02)
                r = await rest.patch(f"{b.base_url}/api/sessions/{sid}", json={"locked": True})
                assert r.status_code == 200, r.text
                await anyio.sleep(1)  # B's message reaches A while A is still loading
                await tx.rollback()
        finally:
            await blocker.close()
        async with js_client(a.ws_url, sid, tokens["candidate"], name="Cand") as cand:
            await cand.insert(0, "// cand\n")
            await cand.wait_text(equals="x = 1\n", timeout=10)  # the lock holds on A: undone
        r = await rest.get(f"{a.base_url}/api/sessions/{sid}/code")
        assert r.json()["code"] == "x = 1\n"


@pytest.mark.parametrize("action", ["reissue", "delete"])
async def test_a_notes_socket_alone_on_a_is_closed_by_a_reissue_or_delete_on_b(pair, action):
    """The interviewer's notes are the only room of the session loaded on A: B's re-issue (or delete)
    still reaches A's notes socket (the change is the session's, whichever of its rooms is loaded)."""
    _, a, b = pair
    s = await create_session(b)
    sid, token = s["id"], s["tokens"]["interviewer"]
    async with js_client(a.ws_url, f"{sid}/notes", token, textName="notes", name="Ivy") as notes:
        assert await notes.get_text() == ""
        async with httpx.AsyncClient(base_url=b.base_url, headers=auth(token), timeout=10) as rest:
            r = await (rest.post(f"/api/sessions/{sid}/tokens") if action == "reissue" else rest.delete(f"/api/sessions/{sid}"))
            assert r.status_code in (200, 204), r.text
        event = await notes.wait_close(timeout=10)
        assert event["code"] == (CloseCode.UNAUTHORIZED if action == "reissue" else CloseCode.SESSION_NOT_FOUND)
