"""The interviewer's lock and Run switch, and the operator's session list (issue: interview features).

A locked candidate's edit is reverted everywhere (its own editor too), is never shown to anyone and
leaves no text in storage; after unlock the same candidate edits at once, without reconnecting —
a dropped update would have left its later edits waiting on a missing clock. Ended → reopened works
the same way for every editor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from crdt_server.testing import ServerProcess

from .conftest import auth, create_session
from .jsclient import js_client

pytestmark = pytest.mark.anyio

API_KEY = "a" * 40


async def _patch(server: Any, s: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        return await http.patch(f"/api/sessions/{s['id']}", json=body, headers=auth(s["tokens"]["interviewer"]))


async def _code(server: Any, s: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
        return str(r.json()["code"])


async def _meta_is(js: Any, **expected: Any) -> bool:
    meta = await js.get_meta()
    return all(meta.get(k) == v for k, v in expected.items())


@pytest.mark.parametrize("freeze,thaw", [({"locked": True}, {"locked": False}),
                                         ({"status": "ended"}, {"status": "active"})], ids=["lock", "end"])
async def test_a_frozen_candidates_edit_is_reverted_and_the_next_one_after_thawing_arrives(server, freeze, thaw):
    s = await create_session(server, code="def f():\n")
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Cand") as cand, \
            js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada:
        r = await _patch(server, s, freeze)
        assert r.status_code == 200, r.text
        key, value = next(iter({"locked" if "locked" in freeze else "status": list(freeze.values())[0]}.items()))
        await cand.wait_until(lambda: _meta_is(cand, **{key: value}), timeout=5)
        await cand.append("EVIL")
        await cand.wait_text(equals="def f():\n", timeout=5)  # reverted in its own editor too
        await anyio.sleep(0.3)
        assert await ada.get_text() == "def f():\n" and await _code(server, s) == "def f():\n"
        if "locked" in freeze:  # the interviewer keeps editing while the candidate is locked
            await ada.append("    pass\n")
            await cand.wait_text(equals="def f():\n    pass\n", timeout=5)
        expected = await ada.get_text()
        r = await _patch(server, s, thaw)
        assert r.status_code == 200, r.text
        await cand.wait_until(lambda: _meta_is(cand, **{key: list(thaw.values())[0]}), timeout=5)
        await cand.append("# ok")  # same socket, no reconnect
        await ada.wait_text(equals=expected + "# ok", timeout=5)
        assert await _code(server, s) == expected + "# ok"
        assert not [c for c in (await cand.status())["closes"] if not c.get("local")]


async def test_the_log_never_holds_the_reverted_text(fresh_server):
    """After a restart (the document rebuilt from the log alone) nothing of a locked candidate's edit shows."""
    s = await create_session(fresh_server, code="x\n")
    async with js_client(fresh_server.ws_url, s["id"], s["tokens"]["candidate"], name="Cand") as cand:
        await _patch(fresh_server, s, {"locked": True})
        await cand.wait_until(lambda: _meta_is(cand, locked=True), timeout=5)
        await cand.append("SECRET-ATTEMPT")
        await cand.wait_text(equals="x\n", timeout=5)
    fresh_server.kill9()  # no final snapshot: the reload replays the log
    fresh_server.start()
    assert await _code(fresh_server, s) == "x\n"
    db = fresh_server.data_dir / "crdt-server.db"
    assert b"SECRET-ATTEMPT" not in db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes()
                                                        if db.with_name(db.name + "-wal").exists() else b"")


async def test_locked_rest_saves_and_disabled_runs_are_refused_for_the_candidate_only(server):
    s = await create_session(server, code="print(1)\n")
    await _patch(server, s, {"locked": True, "runEnabled": False})
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        view = (await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["observer"]))).json()
        assert (view["locked"], view["runEnabled"]) == (True, False)
        r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "x"}, headers=auth(s["tokens"]["candidate"]))
        assert r.status_code == 409 and r.json()["error"]["code"] == "session_locked"
        r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "y\n"}, headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200 and r.json()["code"] == "y\n"
        history = (await http.get(f"/api/sessions/{s['id']}/history", headers=auth(s["tokens"]["interviewer"]))).json()
        types = [e["type"] for e in history["events"]]
        assert "lock_changed" in types and "run_enabled_changed" in types
        for role in ("candidate", "observer"):
            r = await http.patch(f"/api/sessions/{s['id']}", json={"locked": False}, headers=auth(s["tokens"][role]))
            assert r.status_code == 403


@pytest.fixture(scope="module")
def run_server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("run") / "data", env={"CRDT_SERVER_EXECUTION": "on"})
    srv.start()
    yield srv
    srv.stop()


async def test_the_run_switch_refuses_the_candidates_runs_only(run_server):
    s = await create_session(run_server, code="print(6 * 7)\n")
    await _patch(run_server, s, {"runEnabled": False})
    async with httpx.AsyncClient(base_url=run_server.base_url, timeout=60) as http:
        url = f"/api/sessions/{s['id']}/execute"
        r = await http.post(url, json={}, headers=auth(s["tokens"]["candidate"]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "run_disabled"
        r = await http.post(url, json={}, headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200 and r.json()["stdout"] == "42\n"
        await _patch(run_server, s, {"runEnabled": True})
        r = await http.post(url, json={}, headers=auth(s["tokens"]["candidate"]))
        assert r.status_code in (200, 429), r.text  # allowed again (429 only if the rate limit bites)


@pytest.fixture
def keyed_server(tmp_path: Path):
    srv = ServerProcess(tmp_path / "data", env={"CRDT_SERVER_API_KEY": API_KEY})
    srv.start()
    yield srv
    srv.stop()


async def test_the_session_list_needs_the_api_key_and_pages(keyed_server, server):
    key = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=keyed_server.base_url) as http:
        ids = [(await http.post("/api/sessions", json={"title": f"t{i}"}, headers=key)).json()["id"] for i in range(5)]
        seen: list[str] = []
        after = 0
        while True:
            page = (await http.get(f"/api/sessions?limit=2&after={after}", headers=key)).json()
            seen += [x["id"] for x in page["sessions"]]
            assert all({"status", "title", "createdAt", "updatedAt", "participants"} <= x.keys() for x in page["sessions"])
            if page["nextAfter"] is None:
                break
            after = page["nextAfter"]
        assert seen == ids
        assert (await http.get("/api/sessions", headers={"Authorization": "Bearer wrong"})).status_code == 401
    async with httpx.AsyncClient(base_url=server.base_url) as http:  # a server without an API key
        r = await http.get("/api/sessions")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
