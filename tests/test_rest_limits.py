"""Expiry, API key, rate limits, CORS and the WebSocket Origin check, each on a server of its own."""

from __future__ import annotations

import sqlite3
import time

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws

from .conftest import ServerProcess, auth, create_session
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = pytest.mark.anyio


def error_of(r: httpx.Response, status: int) -> dict[str, str]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


def session_rows(srv: ServerProcess, sid: str) -> dict[str, int]:
    with sqlite3.connect(srv.data_dir / "crdt-server.db") as db:
        return {t: db.execute(f"SELECT count(*) FROM {t} WHERE {'id' if t == 'sessions' else 'session_id'} = ?",
                              (sid,)).fetchone()[0] for t in ("sessions", "updates", "snapshots", "events")}


async def ws_close_code(url: str, headers: dict[str, str] | None = None) -> int | None:
    """Connect; the close code the server sends before any document data, or None if it syncs."""
    try:
        async with aconnect_ws(url, headers=dict(headers or {})) as ws:
            with anyio.fail_after(5):
                await ws.receive_bytes()
            return None
    except WebSocketDisconnect as exc:
        return int(exc.code)
    except BaseExceptionGroup as group:  # httpx-ws raises from its task group
        match, _ = group.split(WebSocketDisconnect)
        if match is None:
            raise
        while isinstance(match, BaseExceptionGroup):
            match = match.exceptions[0]
        return int(match.code)  # type: ignore[union-attr]


# -- expiry -----------------------------------------------------------------------------------------


async def test_idle_session_expires_and_is_deleted(make_server):
    srv = make_server("--session-ttl", "1")
    s = await create_session(srv, code="x")
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        assert (await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["observer"]))).status_code == 200
        await anyio.sleep(1.2)
        for path in ("", "/code", "/participants", "/history"):
            r = await http.get(f"/api/sessions/{s['id']}{path}", headers=auth(s["tokens"]["interviewer"]))
            assert error_of(r, 404)["code"] == "session_not_found"
        r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "y"}, headers=auth(s["tokens"]["candidate"]))
        assert error_of(r, 404)["code"] == "session_not_found"
    assert await ws_close_code(f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}") == 4404
    with anyio.fail_after(5):  # the sweeper (every second at this TTL) removes the data
        while session_rows(srv, s["id"])["sessions"]:
            await anyio.sleep(0.1)
    assert session_rows(srv, s["id"]) == {"sessions": 0, "updates": 0, "snapshots": 0, "events": 0}


async def test_activity_postpones_expiry(make_server):
    srv = make_server("--session-ttl", "2")
    s = await create_session(srv)
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        url = f"/api/sessions/{s['id']}"
        for i in range(8):  # 4 s of REST writes, 0.5 s apart, with a 2 s TTL
            r = await http.post(url + "/code", json={"code": f"v{i}"}, headers=auth(s["tokens"]["candidate"]))
            assert r.status_code == 200, r.text
            await anyio.sleep(0.5)
        r = await http.get(url, headers=auth(s["tokens"]["observer"]))
        assert r.status_code == 200 and r.json()["expiresAt"] > time.time()


@pytest.mark.usefixtures("js_deps")
async def test_expired_session_closes_its_sockets(make_server):
    srv = make_server("--session-ttl", "1")
    s = await create_session(srv)
    async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Idle") as js:
        event = await js.wait_close(timeout=5)
        assert event["code"] == 4410 and event["permanent"]  # session expired: final for y-websocket
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["candidate"]))
        assert error_of(r, 404)["code"] == "session_not_found"


# -- API key ----------------------------------------------------------------------------------------


async def test_api_key_required_for_creation_when_set(make_server):
    srv = make_server(CRDT_SERVER_API_KEY="k3y-for-tests")
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        for headers in ({}, auth("wrong"), {"Authorization": "Basic k3y-for-tests"}, auth("k3y-for-test")):
            r = await http.post("/api/sessions", json={}, headers=headers)
            assert error_of(r, 401)["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        r = await http.post("/api/sessions", json={"title": "ok"}, headers=auth("k3y-for-tests"))
        assert r.status_code == 201
        s = r.json()
        # session endpoints take session tokens, never the API key
        r = await http.get(f"/api/sessions/{s['id']}", headers=auth("k3y-for-tests"))
        assert error_of(r, 401)["code"] == "invalid_token"
        assert (await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["observer"]))).status_code == 200
        assert (await http.get("/health")).status_code == 200  # open


async def test_no_api_key_by_default(server):
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.post("/api/sessions", headers=auth("anything"))).status_code == 201


# -- rate limits ------------------------------------------------------------------------------------


async def test_create_rate_limit(make_server):
    srv = make_server("--create-rate", "0.001", "--create-burst", "2", "--forwarded-allow-ips", "127.0.0.1")
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        assert (await http.post("/api/sessions")).status_code == 201
        assert (await http.post("/api/sessions")).status_code == 201
        r = await http.post("/api/sessions")
        assert error_of(r, 429)["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        r = await http.post("/api/sessions", content=b"{not json")  # limited before the body is read
        assert r.status_code == 429
        # per client address (the X-Forwarded-For of a proxy listed in --forwarded-allow-ips names the client)
        r = await http.post("/api/sessions", headers={"X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 201
        # other endpoints are not limited
        assert (await http.get("/health")).status_code == 200


async def handshake_refusal(url: str) -> httpx.Response:
    """The HTTP answer to a WebSocket handshake that is refused before the upgrade."""
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(url.replace("ws://", "http://", 1), headers=headers)
    assert r.status_code != 101, "the handshake was accepted"
    return r


async def test_ws_connect_rate_limit(make_server):
    srv = make_server("--connect-rate", "0.001", "--connect-burst", "2")
    s = await create_session(srv)
    url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    assert await ws_close_code(url) is None
    assert await ws_close_code(url) is None
    # over the limit: HTTP 429 on the handshake (a client retries that), never a final 44xx close
    r = await handshake_refusal(url)
    assert error_of(r, 429)["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    # attempts with a bad token count too (they are attempts)
    assert (await handshake_refusal(f"{srv.ws_url}/{s['id']}?token=bad")).status_code == 429


@pytest.mark.usefixtures("js_deps")
async def test_ws_connect_rate_limit_js_client_retries_until_admitted(make_server):
    srv = make_server("--connect-rate", "0.5", "--connect-burst", "1")
    s = await create_session(srv)
    async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="First") as first:
        await first.insert(0, "hello")
        async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], wait_synced=False) as second:
            await second.wait_close(1006, timeout=5)  # the refused handshake
            await second.wait_text(equals="hello", timeout=15)  # it kept retrying and got in
            assert not second.find_events("closed"), "the refusal was final"


# -- CORS and Origin --------------------------------------------------------------------------------


async def test_cors_allowed_and_refused_origins(make_server):
    srv = make_server("--cors-origins", "https://app.example, https://other.example/")
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.get("/health", headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = await http.post("/api/sessions", headers={"Origin": "https://other.example"})
        assert r.status_code == 201
        assert r.headers["access-control-allow-origin"] == "https://other.example"
        assert "location" in r.headers["access-control-expose-headers"].lower()
        r = await http.get("/health", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        # preflight
        pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "PATCH",
               "Access-Control-Request-Headers": "authorization, content-type"}
        r = await http.options("/api/sessions/abcdefghijklmnop", headers=pre)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "PATCH" in r.headers["access-control-allow-methods"]
        r = await http.options("/api/sessions/abcdefghijklmnop", headers={**pre, "Origin": "https://evil.example"})
        assert error_of(r, 403)["code"] == "cors_refused"
        assert "access-control-allow-origin" not in r.headers
        # errors carry the CORS headers too, so a browser app can read them
        r = await http.get("/api/sessions/abcdefghijklmnop", headers={"Origin": "https://app.example"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://app.example"


async def test_cors_default_is_same_origin_only(server):
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get("/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await http.options("/api/sessions", headers={"Origin": "https://app.example",
                                                         "Access-Control-Request-Method": "POST"})
        assert error_of(r, 403)["code"] == "cors_refused"


async def test_ws_origin_check(make_server):
    srv = make_server("--cors-origins", "https://app.example")
    s = await create_session(srv)
    url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    assert await ws_close_code(url, {"Origin": "https://evil.example"}) == 4403
    assert await ws_close_code(url, {"Origin": "null"}) == 4403
    assert await ws_close_code(url, {"Origin": "https://app.example"}) is None
    assert await ws_close_code(url, {"Origin": f"http://127.0.0.1:{srv.port}"}) is None  # same origin
    assert await ws_close_code(url) is None  # no Origin: not a browser


@pytest.mark.usefixtures("js_deps")
async def test_ws_origin_check_default_server(server):
    s = await create_session(server, code="secret")
    url = f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    assert await ws_close_code(url, {"Origin": "https://evil.example"}) == 4403
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], wait_synced=False,
                         params={"token": s["tokens"]["candidate"]}) as js:
        await js.wait_synced(5)  # the Node client sends no Origin
        assert await js.get_text() == "secret"


async def test_delete_removes_every_row(make_server):
    from .conftest import py_client

    srv = make_server()
    s = await create_session(srv, code="x")
    async with py_client(srv, s, "candidate"):
        async with httpx.AsyncClient(base_url=srv.base_url) as http:
            r = await http.delete(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["interviewer"]))
            assert r.status_code == 204
        await anyio.sleep(0.5)
    await anyio.sleep(0.5)
    assert session_rows(srv, s["id"]) == {"sessions": 0, "updates": 0, "snapshots": 0, "events": 0}


async def test_delete_without_sockets_removes_every_row(make_server):
    srv = make_server()
    s = await create_session(srv, code="x")
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        h = auth(s["tokens"]["interviewer"])
        await http.post(f"/api/sessions/{s['id']}/code", json={"code": "y"}, headers=h)  # loads the room
        await http.patch(f"/api/sessions/{s['id']}", json={"title": "t"}, headers=h)
        assert session_rows(srv, s["id"])["updates"] >= 2
        assert (await http.delete(f"/api/sessions/{s['id']}", headers=h)).status_code == 204
    await anyio.sleep(0.3)
    assert session_rows(srv, s["id"]) == {"sessions": 0, "updates": 0, "snapshots": 0, "events": 0}
