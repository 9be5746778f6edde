"""What an editor may change in the shared document (issue: safe to hand a link to a stranger).

The server owns ``runs`` and every ``meta`` key but ``language``: a candidate's forged run result or a
renamed title is applied and compensated at once, so every client converges on the server's values,
the candidate's later edits still integrate, and the attempt is in the history. A delete aimed at
another client's future text is dropped.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from crdt_server.sync import protocol as p
from crdt_server.sync.updates import decode, encode_delete_set

from .conftest import auth, create_session
from .jsclient import js_client

pytestmark = pytest.mark.anyio

FORGED_RUN = {"id": "fake", "by": "interviewer", "language": "python", "stdout": "ALL TESTS PASSED\n",
              "stderr": "", "exitCode": 0, "timedOut": False, "truncated": False, "durationMs": 1, "startedAt": 0}


async def _history(server: Any, s: dict[str, Any]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/history", headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200, r.text
        return list(r.json()["events"])


async def _session(server: Any, s: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["observer"]))
        return dict(r.json())


async def test_a_candidate_cannot_forge_runs_or_server_owned_meta(server):
    s = await create_session(server, title="Interview", code="x = 1\n")
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Mallory") as cand, \
            js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada:
        await cand.transact(["pushRun", FORGED_RUN], ["setMeta", "title", "renamed"],
                            ["setMeta", "status", "ended"], ["insert", 0, "# ok\n"])
        # the legitimate part of the same update survives; the forged parts are undone everywhere
        for js in (ada, cand):
            await js.wait_text(equals="# ok\nx = 1\n", timeout=10)
            await js.wait_until(lambda js=js: _meta_is(js, title="Interview", status="active"), timeout=10)
            assert await js.get_runs() == []
        view = await _session(server, s)
        assert (view["title"], view["status"]) == ("Interview", "active")
        # the candidate keeps editing normally afterwards: nothing of theirs is stuck pending
        await cand.append("print(x)\n")
        await ada.wait_text(equals="# ok\nx = 1\nprint(x)\n", timeout=10)
        reverted = [e for e in await _history(server, s) if e["type"] == "update_reverted"]
        assert len(reverted) == 1 and reverted[0]["data"]["role"] == "candidate"
        assert set(reverted[0]["data"]["touched"]) >= {"runs", "meta.title", "meta.status"}


async def test_deleting_a_server_owned_meta_key_is_undone(server):
    s = await create_session(server, code="print(1)\n")
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada, \
            js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Mallory") as cand:
        # a run the server wrote (through the REST service path, as a session run does)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.patch(f"/api/sessions/{s['id']}", json={"title": "T"}, headers=auth(s["tokens"]["interviewer"]))
            assert r.status_code == 200
        await cand.wait_until(lambda: _meta_is(cand, title="T"), timeout=10)
        await cand.transact(["deleteMeta", "title"])
        await ada.wait_until(lambda: _meta_is(ada, title="T"), timeout=10)
        await anyio.sleep(0.3)
        assert (await cand.get_meta())["title"] == "T"


async def test_an_editor_may_switch_the_language_and_it_is_recorded(server):
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Cand") as cand:
        await cand.set_meta("language", "javascript")
        for _ in range(100):
            if (await _session(server, s))["language"] == "javascript":
                break
            await anyio.sleep(0.05)
        changes = [e for e in await _history(server, s) if e["type"] == "language_changed"]
        assert changes and changes[-1]["data"] == {"from": "python", "to": "javascript", "by": "candidate"}
        await cand.set_meta("language", {"not": "a language"})  # invalid: reverted for everyone
        await cand.wait_until(lambda: _meta_is(cand, language="javascript"), timeout=10)


async def test_a_delete_aimed_at_another_clients_future_text_is_dropped(server):
    """Any client can aim a delete set at another client's next clocks (clientIDs are visible in
    presence and updates); pending in the CRDT it would delete the victim's text as they type."""
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Victim") as victim, \
            js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada:
        victim_id = await victim.client_id()
        url = f"{server.ws_url}/{s['id']}?token={s['tokens']['interviewer']}"
        async with connect(url) as attacker:
            await attacker.recv()
            doc: Doc[Any] = Doc(client_id=4242)
            doc.get("code", type=Text).insert(0, "")
            legit = doc.get_update()
            crafted = legit[: decode(legit).delete_set_offset] + encode_delete_set([(victim_id, 0, 1000)])
            await attacker.send(p.sync_frame(p.SYNC_UPDATE, crafted))
            await anyio.sleep(0.3)
            await victim.type_chars("hello world")
            await ada.wait_text(equals="hello world", timeout=10)
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
            assert r.json()["code"] == "hello world" == await victim.get_text()


async def _meta_is(js: Any, **expected: Any) -> bool:
    meta = await js.get_meta()
    return all(meta.get(k) == v for k, v in expected.items())
