"""The interviewer's private notes: a second Yjs document per session (issue 13, item 6).

Real server subprocess, real yjs + y-websocket clients on ``/ws/sessions/{id}/notes`` (Y.Text
``notes``), REST ``GET /api/sessions/{id}/notes``.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Text

from .conftest import auth, create_session, expect_refusal, py_client, text_of, wait_for
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .pg import BACKENDS, server_rows  # noqa: F401  (conftest runs this module's server tests on SQLite and PostgreSQL)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]


def notes_client(server: Any, s: dict[str, Any], role: str = "interviewer", **kw: Any) -> Any:
    return js_client(server.ws_url, f"{s['id']}/notes", s["tokens"][role], textName="notes", **kw)


async def get_notes(server: Any, s: dict[str, Any], role: str = "interviewer") -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        return await http.get(f"/api/sessions/{s['id']}/notes", headers=auth(s["tokens"][role]))


async def test_interviewer_notes_are_live_and_readable_over_rest(server):
    s = await create_session(server, code="print(1)\n")
    async with notes_client(server, s, name="Ada") as a, notes_client(server, s, name="Ada, second tab") as b:
        assert await a.get_text() == ""  # a new session's notes are empty, not the starter code
        await a.insert(0, "strong on recursion — ask about Ünïcode\n")
        await b.wait_text(equals="strong on recursion — ask about Ünïcode\n", timeout=5)
        await b.append("hire\n")
        await a.wait_text(equals="strong on recursion — ask about Ünïcode\nhire\n", timeout=5)
    r = await get_notes(server, s)
    assert r.status_code == 200
    assert r.json() == {"notes": "strong on recursion — ask about Ünïcode\nhire\n"}


@pytest.mark.parametrize("role", ["candidate", "observer"])
async def test_other_roles_are_refused_with_4403_and_no_data(server, role):
    s = await create_session(server, code="starter")
    async with notes_client(server, s) as writer:
        await writer.insert(0, "confidential opinion")
        async with notes_client(server, s, role, wait_synced=False) as c:
            event = await c.wait_close(4403, timeout=5)
            assert event["permanent"]
            await anyio.sleep(0.5)
            status = await c.status()
            assert not status["synced"]
            assert len([x for x in status["closes"] if not x.get("local")]) == 1  # no reconnect loop
            assert await c.get_text() == ""
        # a bare socket: not one frame (no SyncStep1, no presence) before the close
        code, _, received = await expect_refusal(f"{server.ws_url}/{s['id']}/notes?token={s['tokens'][role]}")
        assert code == 4403
        assert received == []
    r = await get_notes(server, s, role)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert "confidential" not in r.text


async def test_notes_never_reach_the_shared_document_or_its_history(server):
    s = await create_session(server, code="def f():\n")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        history = (await http.get(f"/api/sessions/{s['id']}/history", headers=auth(s["tokens"]["interviewer"]))).json()
        before = (await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["candidate"]))).json()
    async with notes_client(server, s) as notes:  # alone: the candidate's socket would move updatedAt itself
        await notes.insert(0, "NOTE: ")
        await notes.wait_text(equals="NOTE: ")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        seen = (await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["candidate"]))).json()
    assert (seen["updatedAt"], seen["expiresAt"]) == (before["updatedAt"], before["expiresAt"])
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"]) as cand, notes_client(server, s) as notes:
        await notes.append("weak on tests")
        await notes.wait_text(equals="NOTE: weak on tests")
        await anyio.sleep(0.5)
        assert await cand.get_text() == "def f():\n"
        assert "NOTE" not in str(await cand.get_meta())
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        code = (await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["interviewer"]))).json()
        assert code["code"] == "def f():\n"
        with anyio.fail_after(5):  # the candidate's socket joined and left; the notes socket left no trace
            while True:
                after = (await http.get(f"/api/sessions/{s['id']}/history",
                                        headers=auth(s["tokens"]["interviewer"]))).json()
                new = [e for e in after["events"] if e["seq"] > history["events"][-1]["seq"]]
                if any(e["type"] == "participant_left" for e in new):
                    break
                await anyio.sleep(0.05)
    assert [(e["type"], e["data"]["role"]) for e in new] == [
        ("participant_joined", "candidate"), ("participant_left", "candidate")]
    assert "NOTE" not in str(after)
    async with py_client(server, s, "interviewer") as doc:
        assert text_of(doc) == "def f():\n"
        assert str(doc.get("notes", type=Text)) == ""  # not in the main document under its own name either
    # the main document's log holds none of it; the notes have their own
    assert all(b"NOTE" not in row[0] for row in server_rows(server, "SELECT data FROM updates WHERE session_id = ?", s["id"]))
    assert server_rows(server, "SELECT count(*) FROM notes_updates WHERE session_id = ?", s["id"])[0][0] >= 1


async def test_notes_survive_kill_9_and_a_restart(fresh_server):
    srv = fresh_server
    s = await create_session(srv)
    async with notes_client(srv, s) as a, notes_client(srv, s) as b:
        await a.insert(0, "first impression")
        await b.wait_text(equals="first impression", timeout=5)  # broadcast, so committed
        srv.kill9()
    srv.start()
    assert (await get_notes(srv, s)).json() == {"notes": "first impression"}
    async with notes_client(srv, s) as a:
        assert await a.get_text() == "first impression"
        await a.append(", then more")
        await a.wait_text(equals="first impression, then more")
    srv.stop()  # a clean stop snapshots the notes room: the next start reads snapshot + tail
    assert server_rows(srv, "SELECT count(*) FROM notes_snapshots WHERE session_id = ?", s["id"])[0][0] == 1
    srv.start()
    assert (await get_notes(srv, s)).json() == {"notes": "first impression, then more"}
    async with notes_client(srv, s) as a:
        assert await a.get_text() == "first impression, then more"


async def test_deleting_the_session_deletes_its_notes(server):
    s = await create_session(server)
    async with notes_client(server, s) as a:
        await a.insert(0, "to be deleted")
        # stored: the client's own text shows at once, the row once committed (its connect stores none)
        await wait_for(lambda: server_rows(server, "SELECT count(*) FROM notes_updates WHERE session_id = ?",
                                           s["id"])[0][0] >= 1)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.delete(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["interviewer"]))
            assert r.status_code == 204
        event = await a.wait_close(4404, timeout=5)
        assert event["permanent"]
    for table in ("notes_updates", "notes_snapshots"):
        assert server_rows(server, f"SELECT count(*) FROM {table} WHERE session_id = ?", s["id"])[0][0] == 0
    assert (await get_notes(server, s)).status_code == 404


async def test_meta_written_into_the_notes_document_changes_nothing_of_the_session(server):
    """The notes document has no server-owned parts: a ``meta.language`` written there is not the
    session's language (as it would be in the shared document)."""
    s = await create_session(server, language="python")
    async with notes_client(server, s) as a:
        await a.call("setMeta", key="language", value="javascript")
        await a.insert(0, "after the meta write")
        await a.wait_text(equals="after the meta write")
        async with notes_client(server, s) as b:  # the write was stored and served like any other
            await b.wait_text(equals="after the meta write", timeout=5)
            assert (await b.get_meta()).get("language") == "javascript"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["interviewer"]))
    assert r.json()["language"] == "python"


async def test_notes_stay_writable_after_the_session_ends(server):
    s = await create_session(server, code="x")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.patch(f"/api/sessions/{s['id']}", json={"status": "ended"}, headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200
    async with notes_client(server, s) as a, notes_client(server, s) as b:
        await a.insert(0, "verdict: hire")
        await b.wait_text(equals="verdict: hire", timeout=5)
    assert (await get_notes(server, s)).json() == {"notes": "verdict: hire"}


async def test_reissuing_the_tokens_closes_notes_sockets_too(server):
    s = await create_session(server)
    async with notes_client(server, s) as a:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.post(f"/api/sessions/{s['id']}/tokens", headers=auth(s["tokens"]["interviewer"]))
            assert r.status_code == 200
        event = await a.wait_close(4401, timeout=5)
        assert event["permanent"]
