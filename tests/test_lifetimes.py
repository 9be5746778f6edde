"""Session lifetimes: a requested expiresAt, retention of ended sessions, token re-issue.

Each test runs a real server with short lifetimes (``--session-ttl 2`` instead of a day) so the
clock is observable in seconds: what holds past a 2 s TTL holds past a 24 h one, because the rule
is the same and tokens carry no moving expiry (their ``exp`` is checked below).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import jwt
import pytest

from .conftest import ServerProcess, auth, py_client, text_of
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .test_rest_limits import error_of, session_rows, ws_close_code

pytestmark = pytest.mark.anyio
DAY = 86400


async def create(srv: ServerProcess, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
        return await http.post("/api/sessions", json=body)


async def call(srv: ServerProcess, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
        return await http.request(method, path, json=body, headers=auth(token))


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


async def test_a_scheduled_session_keeps_working_tokens_past_the_inactivity_ttl(make_server):
    srv = make_server("--session-ttl", "2")
    wanted = time.time() + 3 * DAY
    r = await create(srv, title="Thursday", code="print(1)\n", expiresAt=wanted)
    assert r.status_code == 201, r.text
    s = r.json()
    unscheduled = (await create(srv, code="x")).json()
    assert s["expiresAt"] == pytest.approx(wanted)
    for token in s["tokens"].values():  # no 24 h (or any short) expiry inside the token itself
        assert claims(token)["exp"] > wanted + 300 * DAY
    await anyio.sleep(3.5)  # past the 2 s TTL, and past at least one sweep (every second here)
    r = await call(srv, "GET", f"/api/sessions/{unscheduled['id']}", unscheduled["tokens"]["interviewer"])
    assert error_of(r, 404)["code"] == "session_not_found"  # the TTL was in force
    for role in ("interviewer", "candidate", "observer"):
        r = await call(srv, "GET", f"/api/sessions/{s['id']}/code", s["tokens"][role])
        assert r.status_code == 200 and r.json()["code"] == "print(1)\n", r.text
    r = await call(srv, "GET", f"/api/sessions/{s['id']}", s["tokens"]["observer"])
    assert r.json()["expiresAt"] == pytest.approx(wanted)  # inactivity has not moved it
    async with py_client(srv, s, "candidate") as doc:
        assert text_of(doc) == "print(1)\n"
    assert session_rows(srv, s["id"])["sessions"] == 1


async def test_a_scheduled_session_expires_at_its_time_then_its_tokens_are_refused(make_server):
    srv = make_server("--session-ttl", "1")
    s = (await create(srv, code="x", expiresAt=time.time() + 2.5)).json()
    await anyio.sleep(1.5)  # past the TTL, before expiresAt
    assert (await call(srv, "GET", f"/api/sessions/{s['id']}", s["tokens"]["candidate"])).status_code == 200
    await anyio.sleep(1.5)
    r = await call(srv, "GET", f"/api/sessions/{s['id']}", s["tokens"]["interviewer"])
    assert error_of(r, 404)["code"] == "session_not_found"
    assert await ws_close_code(f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}") == 4404
    with anyio.fail_after(5):
        while session_rows(srv, s["id"])["sessions"]:
            await anyio.sleep(0.1)


async def test_expires_at_must_be_in_the_future_and_within_the_maximum_lifetime(make_server):
    srv = make_server("--session-max-lifetime", "3600", "--session-ttl", "60")
    now = time.time()
    for value, words in ((now - 10, "future"), (now + 7200, "--session-max-lifetime"), ("soon", "expiresAt"),
                         (True, "expiresAt")):
        r = await create(srv, expiresAt=value)
        error = error_of(r, 422)
        assert error["code"] == "invalid_field" and words in error["message"] and "expiresAt" in error["message"]
    r = await create(srv, expiresAt=now + 3500)
    assert r.status_code == 201 and r.json()["expiresAt"] == pytest.approx(now + 3500)
    r = await create(srv, expiresAt=now + 30)  # sooner than the TTL: the TTL still applies from creation
    assert r.status_code == 201 and r.json()["expiresAt"] == pytest.approx(time.time() + 60, abs=5)
    r = await create(srv)  # no expiresAt: the inactivity TTL alone, as before
    assert r.status_code == 201 and r.json()["expiresAt"] == pytest.approx(time.time() + 60, abs=5)


async def test_an_ended_session_is_kept_past_the_ttl_until_the_retention_ends(make_server):
    srv = make_server("--session-ttl", "1", "--ended-retention", "4")
    s = (await create(srv, code="answer = 42\n")).json()
    sid, interviewer = s["id"], s["tokens"]["interviewer"]
    r = await call(srv, "PATCH", f"/api/sessions/{sid}", interviewer, {"status": "ended"})
    ended = time.time()
    assert r.status_code == 200 and r.json()["expiresAt"] == pytest.approx(ended + 4, abs=0.5)
    await anyio.sleep(2)  # twice the TTL: an active session would be gone
    assert (await call(srv, "GET", f"/api/sessions/{sid}/code", s["tokens"]["candidate"])).json()["code"] == "answer = 42\n"
    history = (await call(srv, "GET", f"/api/sessions/{sid}/history", interviewer)).json()["events"]
    assert [e["type"] for e in history][-1] == "status_changed"
    r = await call(srv, "POST", f"/api/sessions/{sid}/code", s["tokens"]["candidate"], {"code": "no"})
    assert error_of(r, 409)["code"] == "session_ended"  # read-only, not deleted
    # the interviewer's token still reopens it; then the inactivity TTL applies again
    r = await call(srv, "PATCH", f"/api/sessions/{sid}", interviewer, {"status": "active"})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert r.json()["expiresAt"] == pytest.approx(time.time() + 1, abs=0.5)
    # another ended session, left alone: deleted when the retention ends, its tokens refused
    other = (await create(srv, code="y")).json()
    await call(srv, "PATCH", f"/api/sessions/{other['id']}", other["tokens"]["interviewer"], {"status": "ended"})
    await anyio.sleep(2)
    assert (await call(srv, "GET", f"/api/sessions/{other['id']}", other["tokens"]["observer"])).status_code == 200
    with anyio.fail_after(6):
        while session_rows(srv, other["id"])["sessions"]:
            await anyio.sleep(0.1)
    r = await call(srv, "GET", f"/api/sessions/{other['id']}", other["tokens"]["interviewer"])
    assert error_of(r, 404)["code"] == "session_not_found"
    assert await ws_close_code(f"{srv.ws_url}/{other['id']}?token={other['tokens']['interviewer']}") == 4404


async def test_retention_follows_the_current_setting_after_a_restart(tmp_path):
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        s = (await create(srv)).json()
        r = await call(srv, "PATCH", f"/api/sessions/{s['id']}", s["tokens"]["interviewer"], {"status": "ended"})
        assert r.json()["expiresAt"] == pytest.approx(time.time() + 30 * DAY, abs=10)  # the default retention
        srv.extra_args = ["--ended-retention", "1"]
        srv.restart()
        with anyio.fail_after(8):
            while session_rows(srv, s["id"])["sessions"]:
                await anyio.sleep(0.1)
    finally:
        srv.stop()


@pytest.mark.usefixtures("js_deps")
async def test_reissued_tokens_revoke_the_old_ones_and_close_their_sockets(make_server):
    srv = make_server()
    s = (await create(srv, code="shared\n")).json()
    sid, old = s["id"], s["tokens"]
    r = await call(srv, "POST", f"/api/sessions/{sid}/tokens", old["candidate"])
    assert error_of(r, 403)["code"] == "forbidden"  # the interviewer's call only
    async with js_client(srv.ws_url, sid, old["candidate"], name="Cand") as js:
        r = await call(srv, "POST", f"/api/sessions/{sid}/tokens", old["interviewer"])
        assert r.status_code == 200, r.text
        new = r.json()["tokens"]
        assert set(new) == {"interviewer", "candidate", "observer"} and not set(new.values()) & set(old.values())
        event = await js.wait_close(4401, timeout=5)
        assert event["permanent"]
        await anyio.sleep(1)
        status = await js.status()
        assert status["permanentlyClosed"] and not status["connected"]
        assert len([c for c in status["closes"] if not c.get("local")]) == 1  # it does not retry
    for role, token in old.items():
        r = await call(srv, "GET", f"/api/sessions/{sid}", token)
        error = error_of(r, 401)
        assert error["code"] == "invalid_token" and "re-issued" in error["message"], role
        assert await ws_close_code(f"{srv.ws_url}/{sid}?token={token}") == 4401
    for role in ("interviewer", "candidate", "observer"):
        assert (await call(srv, "GET", f"/api/sessions/{sid}/code", new[role])).json()["code"] == "shared\n"
    async with js_client(srv.ws_url, sid, new["candidate"], name="Cand again") as js:
        assert await js.get_text() == "shared\n"
    history = (await call(srv, "GET", f"/api/sessions/{sid}/history", new["interviewer"])).json()["events"]
    reissued = [e for e in history if e["type"] == "tokens_reissued"]
    assert len(reissued) == 1 and reissued[0]["data"] == {"by": "interviewer"}
    # a second re-issue revokes the second set; it works on an ended session too
    await call(srv, "PATCH", f"/api/sessions/{sid}", new["interviewer"], {"status": "ended"})
    third = (await call(srv, "POST", f"/api/sessions/{sid}/tokens", new["interviewer"])).json()["tokens"]
    assert error_of(await call(srv, "GET", f"/api/sessions/{sid}", new["observer"]), 401)["code"] == "invalid_token"
    assert (await call(srv, "GET", f"/api/sessions/{sid}", third["observer"])).json()["status"] == "ended"
