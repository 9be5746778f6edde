"""Wire compatibility with clients nobody on the project wrote, against the real server: the WebSocket
subprotocol handshake, frames the reference server ignores, and content the CRDT library cannot keep
exactly (refused with 4415 before it reaches the log)."""

from __future__ import annotations

import base64
import os
import socket

import anyio
import pytest

from .conftest import create_session
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = pytest.mark.anyio


# -- the subprotocol handshake (y-websocket's `protocols` option) ---------------------------------


def upgrade_answer(port: int, path: str, protocols: str | None) -> tuple[int, dict[str, str]]:
    """A raw WebSocket handshake: the status and headers (lower-cased names) of the server's answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    status, *fields = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status.split()[1]), headers


@pytest.mark.parametrize("offered,answered", [("y-websocket", "y-websocket"), ("first, second", "first"), (None, None)])
async def test_handshake_answers_the_first_offered_subprotocol(server, offered, answered):
    s = await create_session(server)
    for token in (s["tokens"]["candidate"], "forged"):  # an admitted socket and a refused one alike
        status, headers = await anyio.to_thread.run_sync(
            upgrade_answer, server.port, f"/ws/sessions/{s['id']}?token={token}", offered)
        assert status == 101
        assert headers.get("sec-websocket-protocol") == answered


@pytest.mark.usefixtures("js_deps")
async def test_js_client_asking_for_a_subprotocol_syncs_and_is_refused_for_good(server):
    s = await create_session(server, code="hello")
    protocols = ["y-websocket", "json"]
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], protocols=protocols) as a, \
            js_client(server.ws_url, s["id"], s["tokens"]["interviewer"]) as b:
        assert (await a.status())["protocol"] == "y-websocket"
        await a.append(" world")
        await b.wait_text(equals="hello world")
    # A refusal must reach it as a close code (final), not as a failed handshake it retries forever.
    async with js_client(server.ws_url, s["id"], "forged", protocols=protocols, wait_synced=False) as c:
        closed = await c.wait_event("closed", timeout=10)
        assert closed["code"] == 4401
        assert (await c.status())["errors"] == []
