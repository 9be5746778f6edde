"""Wire compatibility with clients nobody on the project wrote, against the real server: the WebSocket
subprotocol handshake, frames the reference server ignores, and content the CRDT library cannot keep
exactly (stored as deleted, for its author too, on an open socket)."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlparse

import anyio
import httpx
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from crdt_server.sync import protocol as p

from .conftest import auth, create_session, py_client, text_of, wait_for
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .webpage import chromium_path, drive, driver  # noqa: F401  (driver is a fixture)

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


async def test_chromium_offering_subprotocols_connects_and_sees_refusals(server, driver):  # noqa: F811
    chromium = chromium_path()
    s = await create_session(server)
    urls = [f"{server.ws_url}/{s['id']}?token={token}" for token in (s["tokens"]["observer"], "forged")]
    report = await anyio.to_thread.run_sync(lambda: drive(
        driver, "subprotocol", chromium=chromium, page=f"{server.base_url}/health", urls=urls,
        protocols=["y-websocket", "json"]))
    admitted, refused = report["sockets"]
    assert admitted == {"opened": True, "error": False, "protocol": "y-websocket", "code": 1005}
    assert refused == {"opened": True, "error": False, "protocol": "y-websocket", "code": 4401}


# -- frames the reference server ignores ----------------------------------------------------------

IGNORED_FRAMES: list[bytes | str] = [
    "a text frame", "12",  # text frames (the reference's ws hands them over as strings, then fails on them)
    b"", bytes([2, 0, 1, 65]),  # an empty frame; auth (authentication is the URL token)
    bytes([9, 1, 2]), bytes([0x80, 0x01, 5]),  # unknown message types (9, and 128 as a two-byte varint)
    bytes([0, 7, 1, 0]),  # a sync message of an unknown sub-type
]


async def _recv_sync(ws: Any, kind: int, timeout: float = 5) -> bytes:
    """The payload of the next sync message of ``kind`` the server sends (other messages are skipped)."""
    with anyio.fail_after(timeout):
        while True:
            frame = await ws.recv()
            if frame[:1] == bytes([p.MSG_SYNC]):
                msg = p.parse_sync(frame)
                if msg.kind == kind:
                    return msg.payload


async def test_ignored_frames_keep_the_socket_and_a_zero_length_state_vector_is_answered(server):
    s = await create_session(server, code="kept")
    url = f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    async with connect(url) as ws, py_client(server, s, "interviewer") as other:
        await _recv_sync(ws, p.SYNC_STEP1)
        for frame in IGNORED_FRAMES:
            await ws.send(frame)
        # [0, 0, 0]: sync step 1 whose state vector has no bytes at all: answered with everything
        await ws.send(bytes([p.MSG_SYNC, p.SYNC_STEP1, 0]))
        state = await _recv_sync(ws, p.SYNC_STEP2)
        doc: Doc = Doc()
        doc.apply_update(state)
        assert text_of(doc) == "kept"
        # still a working connection: an edit from it reaches the others
        edit: list[bytes] = []
        doc.observe(lambda event: edit.append(event.update))
        doc.get("code", type=Text).insert(4, "!")
        await ws.send(p.sync_frame(p.SYNC_UPDATE, edit[0]))
        await wait_for(lambda: text_of(other) == "kept!")


async def test_ignored_frames_beyond_their_budget_slow_only_that_socket(make_server):
    srv = make_server("--ignored-bytes-rate", "1024")  # a budget of 10 KiB; each frame counts 1 KiB or more
    s = await create_session(srv, code="x")
    url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    async with connect(url) as ws, py_client(srv, s, "interviewer") as other:
        await _recv_sync(ws, p.SYNC_STEP1)
        start = time.monotonic()
        for _ in range(8):
            await ws.send("t" * 1000)  # a burst of 8 KiB: within the budget
        await ws.send(bytes([p.MSG_SYNC, p.SYNC_STEP1, 1, 0]))
        await _recv_sync(ws, p.SYNC_STEP2)
        assert time.monotonic() - start < 2
        for _ in range(7):
            await ws.send(b"")  # 7 KiB more: 5 KiB of debt at 1 KiB/s
        await ws.send(bytes([p.MSG_SYNC, p.SYNC_STEP1, 1, 0]))
        waited = time.monotonic()
        other.get("code", type=Text).insert(1, "y")  # the others are not held up meanwhile
        async with py_client(srv, s) as late:
            await wait_for(lambda: text_of(late) == "xy", timeout=2)
        await _recv_sync(ws, p.SYNC_STEP2, timeout=15)
        assert time.monotonic() - waited > 3  # read again only once the debt was paid


# -- content the server would not keep exactly: deleted for everyone, the socket stays open -------------

REFUSED = {
    "key order": ("mapSet", "o", {"b": 1, "a": 2}),
    "-0": ("mapSet", "z", {"$negzero": 1}),
    "BigInt": ("mapSet", "b", [{"$bigint": "5"}]),
    "subdocument meta": ("subdoc", "s", {"title": "kept?"}),
    "Y.XmlHook": ("xmlHook", "h"),
    "lone surrogate in a format": ("format", {"title": "\ud800"}),
    "float serde rounds": ("embed", {"x": 3.4028234663852886e38}),
}
EMPTY = {"m= | a=[] | t=[] | x=", "m= | a=[] | t=[{\"insert\":\"f\"}] | x="}  # a format's text stays


@pytest.mark.usefixtures("js_deps")
@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_content_not_kept_exactly_is_deleted_for_everyone_and_the_author_edits_on(server, case):
    s = await create_session(server, code="base")
    token = s["tokens"]["candidate"]
    async with js_client(server.ws_url, s["id"], token) as author, \
            js_client(server.ws_url, s["id"], s["tokens"]["interviewer"]) as other:
        await author.put_content(*REFUSED[case])
        denied = await author.wait_event("permission-denied", timeout=10)
        assert "cannot keep exactly" in denied["reason"]
        with anyio.fail_after(10):  # its copy drops the content (the delete set comes with its confirmation)
            while await author.read_content() not in EMPTY:
                await anyio.sleep(0.05)
        await author.append("+")  # the author's later edits arrive, on the same socket
        await other.wait_text(equals="base+")
        status = await author.status()
        assert status["connected"] and status["closes"] == [] and status["syncedCount"] == 1
        seen = await other.read_content()
        assert seen in EMPTY and seen == await author.read_content()
        async with js_client(server.ws_url, s["id"], token) as newcomer:
            await newcomer.wait_text(equals="base+")
            assert await newcomer.read_content() == seen
    assert "cannot keep exactly" in server.log()
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        history = (await http.get(f"/api/sessions/{s['id']}/history", headers=auth(s["tokens"]["interviewer"]))).json()
    events = [e for e in history["events"] if e["type"] == "content_deleted"]
    assert len(events) == 1 and events[0]["data"]["role"] == "candidate" and events[0]["data"]["items"] == 1


@pytest.mark.usefixtures("js_deps")
async def test_content_the_server_accepts_reaches_newcomers_exactly_also_after_a_restart(fresh_server):
    """A newcomer, served from the CRDT library's encoding, reads what a peer read from the author's own
    bytes (relayed as sent); so does one after a restart (snapshot, reload)."""
    s = await create_session(fresh_server, code="base")
    url, room, token = fresh_server.ws_url, s["id"], s["tokens"]["candidate"]
    async with js_client(url, room, token) as author, js_client(url, room, token) as peer:
        for op in [("mapSet", "o", {"only": {"key": [1.5, 0.1, 2**40, {"$bytes": [1, 2]}, None, "\ud800"]}}),
                   ("mapSet", "n", [0, -1, 2**53, 1e21, 123.456]), ("mapSet", "u", {"$undefined": 1}),
                   ("arrayPush", [None, {}, [], "s"]), ("subdoc", "s", None), ("xmlElement", "p", {"class": "c"}),
                   ("embed", {"image": "x.png"}), ("format", {"bold": True}), ("format", {"color": {"rgb": 0.5}})]:
            await author.put_content(*op)
        await author.append("!")
        await peer.wait_text(equals="base!")
        relayed = await peer.read_content()
        assert "doc(" in relayed and "x.png" in relayed and "rgb" in relayed  # it all arrived
        async with js_client(url, room, token) as newcomer:
            await newcomer.wait_text(equals="base!")
            assert await newcomer.read_content() == relayed
    fresh_server.restart()  # a snapshot at unload, and a reload from storage
    async with js_client(url, room, token) as after:
        assert await after.get_text() == "base!"
        assert await after.read_content() == relayed


async def test_a_client_gone_before_its_socket_is_accepted_is_no_server_error(server):
    """A client that sends the handshake and goes away at once (a browser tab closed, a reconnect
    given up while the server was busy) is an ordinary disconnect: nothing logged as an error, no
    traceback, and the server serves the next client as before."""
    s = await create_session(server)
    url = urlparse(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}")
    before = len(server.log())
    request = (f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n").encode()
    for _ in range(20):
        sock = socket.create_connection((url.hostname, url.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        sock.sendall(request)
        sock.close()
    async with connect(f"{url.scheme}://{url.netloc}{url.path}?{url.query}") as ws:  # still served
        assert (await ws.recv())[0] == 0
    await anyio.sleep(0.5)
    logged = server.log()[before:]
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-3000:]
