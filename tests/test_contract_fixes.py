"""Small contract fixes: a wrong WebSocket path is final for the client (never a retry loop), and the
holder of the server's API key is not rate-limited per address."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from crdt_server.testing import ServerProcess

from .conftest import create_session
from .jsclient import js_client

pytestmark = pytest.mark.anyio

API_KEY = "k" * 40


async def test_a_wrong_websocket_path_is_closed_for_good(server):
    s = await create_session(server)
    # the session id twice: the JS client's room name then holds a slash
    async with js_client(server.ws_url, f"{s['id']}/{s['id']}", s["tokens"]["candidate"], wait_synced=False) as c:
        event = await c.wait_close(4404, timeout=5)
        assert event["permanent"]
        await anyio.sleep(0.5)
        status = await c.status()
        assert len([x for x in status["closes"] if not x.get("local")]) == 1  # no reconnect loop
    async with httpx.AsyncClient(base_url=server.base_url) as http:  # the same path over HTTP: a JSON 404
        r = await http.get(f"/ws/sessions/{s['id']}/{s['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.fixture
def keyed_server(tmp_path: Path):
    srv = ServerProcess(tmp_path / "data", env={
        "CRDT_SERVER_API_KEY": API_KEY, "CRDT_SERVER_CREATE_RATE": "0.1", "CRDT_SERVER_CREATE_BURST": "2",
    })
    srv.start()
    yield srv
    srv.stop()


async def test_the_api_key_holder_is_not_rate_limited(keyed_server):
    async with httpx.AsyncClient(base_url=keyed_server.base_url) as http:
        answers = [(await http.post("/api/sessions", json={}, headers={"Authorization": f"Bearer {API_KEY}"})).status_code
                   for _ in range(6)]
        assert answers == [201] * 6  # well past the burst of 2
        refused = await http.post("/api/sessions", json={}, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
