"""Sync behaviour seen by real pycrdt clients (pycrdt.Provider over httpx-ws)."""

from __future__ import annotations

import contextlib
import random
import signal
import string
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from crdt_server.sync import protocol as p

from .conftest import auth, create_session, expect_refusal, py_client, text_of, wait_for

pytestmark = pytest.mark.anyio


async def test_starter_code_and_meta_reach_a_client(server):
    session = await create_session(server, code="print('hi')\n", title="Warm-up", language="python")
    async with py_client(server, session) as doc:
        assert text_of(doc) == "print('hi')\n"
        from pycrdt import Map

        meta = doc.get("meta", type=Map).to_py()
        assert meta == {"language": "python", "title": "Warm-up", "status": "active"}


async def test_concurrent_edits_from_several_clients_converge(server):
    session = await create_session(server)
    async with py_client(server, session) as a, py_client(server, session) as b, py_client(server, session, "interviewer") as c:
        async def type_into(doc: Doc, tag: str) -> None:
            t = doc.get("code", type=Text)
            for i in range(40):
                t.insert(len(t) if i % 2 else 0, f"{tag}{i};")
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            for doc, tag in ((a, "a"), (b, "b"), (c, "c")):
                tg.start_soon(type_into, doc, tag)
        await wait_for(lambda: text_of(a) == text_of(b) == text_of(c) and len(text_of(a)) > 3 * 40 * 3)
        for tag in "abc":
            for i in range(40):
                assert f"{tag}{i};" in text_of(a)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{session['id']}/code", headers=auth(session["tokens"]["observer"]))
        assert r.json()["code"] == text_of(a)


edit = st.tuples(st.integers(0, 2), st.floats(0, 1), st.one_of(st.text(min_size=1, max_size=5), st.integers(1, 4)))


# No shrinking phase: each example talks to a real server, so shrinking would take minutes.
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(edit, min_size=1, max_size=30))
def test_random_interleavings_converge(server, edits):
    """Property: whatever the interleaving of inserts/deletes from three clients, all converge
    to the same text, and the server's stored text equals it."""

    async def scenario() -> None:
        session = await create_session(server)
        async with py_client(server, session) as a, py_client(server, session) as b, py_client(server, session, "interviewer") as c:
            docs = (a, b, c)
            for who, where, what in edits:
                t = docs[who].get("code", type=Text)
                s = str(t)
                ci = int(where * len(s))  # a character index; pycrdt wants UTF-8 byte offsets
                b0 = len(s[:ci].encode())
                if isinstance(what, str):
                    t.insert(b0, what)
                elif ci < len(s):
                    del t[b0 : b0 + len(s[ci : ci + what].encode())]
                if who == 0:
                    await anyio.sleep(0)
            await wait_for(lambda: text_of(a) == text_of(b) == text_of(c), timeout=10)
            final = text_of(a)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.get(f"/api/sessions/{session['id']}/code", headers=auth(session["tokens"]["observer"]))
            assert r.json()["code"] == final

    anyio.run(scenario)


async def test_observer_edits_never_reach_others_or_storage(server):
    session = await create_session(server, code="base")
    async with py_client(server, session, "candidate") as cand, py_client(server, session, "observer") as obs:
        obs.get("code", type=Text).insert(0, "OBSERVER")
        cand.get("code", type=Text).insert(4, "+cand")
        await wait_for(lambda: "+cand" in text_of(obs))
        await anyio.sleep(0.3)
        assert "OBSERVER" not in text_of(cand)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{session['id']}/code", headers=auth(session["tokens"]["interviewer"]))
        assert r.json()["code"] == "base+cand"
    async with py_client(server, session) as late:
        assert text_of(late) == "base+cand"


@pytest.mark.parametrize(
    "case,code",
    [("missing", 4401), ("garbage", 4401), ("foreign", 4403), ("unknown_session", 4403), ("expired", 4401)],
)
async def test_refused_tokens_get_a_44xx_close_and_no_data(server, case, code):
    import jwt

    session = await create_session(server, code="secret interview code")
    other = await create_session(server)
    sid, token = session["id"], session["tokens"]["candidate"]
    if case == "missing":
        url = f"{server.ws_url}/{sid}"
    elif case == "garbage":
        url = f"{server.ws_url}/{sid}?token=not-a-token"
    elif case == "foreign":
        url = f"{server.ws_url}/{sid}?token={other['tokens']['interviewer']}"
    elif case == "unknown_session":
        url = f"{server.ws_url}/AAAAAAAAAAAAAAAAAAAAAA?token={token}"
    else:
        secret = (server.data_dir / "secret.key").read_text().strip()
        # of the current generation, so only its --token-ttl cap (exp) refuses it
        expired = jwt.encode({"sid": sid, "role": "candidate", "gen": 0, "exp": 1}, secret, algorithm="HS256")
        url = f"{server.ws_url}/{sid}?token={expired}"
    close_code, reason, received = await expect_refusal(url)
    assert close_code == code
    assert reason
    assert received == []


async def test_concurrent_first_joins_all_sync(server):
    session = await create_session(server, code="hello")
    results: list[str] = []

    async def join() -> None:
        async with py_client(server, session) as doc:
            results.append(text_of(doc))

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(join)
    assert results == ["hello"] * 8


async def test_oversized_message_closes_only_that_connection_with_a_final_4413(server):
    """Over --max-message-size: 4413 with a reason (y-websocket 3.1+ does not retry it), not uvicorn's 1009."""
    session = await create_session(server)
    url = f"{server.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
    async with py_client(server, session) as healthy:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        ws = await connect(url, max_size=None)
        try:
            big = p.sync_frame(p.SYNC_UPDATE, b"\x00" * (5 * 1024 * 1024))
            with pytest.raises(ConnectionClosed) as info:
                with anyio.fail_after(10):
                    await ws.send(big)
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4413, info.value
            assert "message too large" in info.value.rcvd.reason
        finally:
            # websockets' own close can race the transport the server already finished (AttributeError
            # inside asyncio's abort): the client's cleanup, not what this test checks
            with contextlib.suppress(Exception):
                await ws.close()
        healthy.get("code", type=Text).insert(0, "still fine")
        async with py_client(server, session) as other:
            await wait_for(lambda: text_of(other) == "still fine")


@pytest.mark.parametrize(
    "frame,code",
    [
        # (empty frames, unknown message types and text frames are ignored: tests/test_wire_compat.py)
        (bytes([0, 2, 50, 1, 2]), 1007),  # truncated update
        (p.sync_frame(p.SYNC_UPDATE, b"\xff\xff\xff\xff"), 1007),  # not a Yjs update
        (bytes([1, 5, 1, 1, 1, 200, 1]), 1007),  # truncated awareness
        (bytes([0]), 1007),  # a sync message without its sub-type
    ],
)
async def test_malformed_frames_close_that_connection(server, frame, code):
    session = await create_session(server, code="keep me")
    url = f"{server.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
    async with py_client(server, session) as healthy:
        async with aconnect_ws(url) as ws:
            await ws.receive_bytes()  # server's sync step 1
            await ws.send_bytes(frame)
            with pytest.raises(WebSocketDisconnect) as info:
                with anyio.fail_after(5):
                    while True:
                        await ws.receive_bytes()
            assert info.value.code == code
        healthy.get("code", type=Text).insert(0, ">")
        async with py_client(server, session) as other:
            await wait_for(lambda: text_of(other) == ">keep me")


def spawn_raw_client(url: str, state: str | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, str(Path(__file__).parent / "raw_client.py"), url] + ([state] if state else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


async def test_client_dying_mid_broadcast_does_not_affect_others(server):
    session = await create_session(server)
    url = f"{server.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
    async with py_client(server, session) as writer, py_client(server, session) as watcher:
        t = writer.get("code", type=Text)
        for _ in range(5):
            doomed = spawn_raw_client(url)
            for i in range(50):
                t.insert(len(t), "x")
                if i == 25:
                    doomed.kill()  # SIGKILL while broadcasts to it are in flight
                await anyio.sleep(0)
            doomed.wait()
        await wait_for(lambda: text_of(watcher) == "x" * 250)


async def test_non_reading_client_is_closed_not_buffered(tmp_path):
    """A client that stops reading (SIGSTOP) fills its bounded queue and is closed with 1013;
    everyone else keeps syncing."""
    from .conftest import ServerProcess

    srv = ServerProcess(tmp_path / "data", ["--send-queue-messages", "1000", "--send-queue-bytes", "2000000",
                                            "--max-document-size", "1000000"])
    srv.start()
    try:
        session = await create_session(srv)
        url = f"{srv.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
        async with py_client(srv, session) as writer, py_client(srv, session) as watcher:
            lazy = spawn_raw_client(url)
            lazy.send_signal(signal.SIGSTOP)
            try:
                t = writer.get("code", type=Text)
                rnd = random.Random(7)
                watched = watcher.get("code", type=Text)
                for _ in range(800):  # 16 MB: more than the kernel's socket buffers hold
                    # incompressible, in case a WebSocket extension would shrink the frames; deleted
                    # again so the document stays under --max-document-size
                    t.insert(0, "".join(rnd.choices(string.ascii_letters, k=20_000)))
                    await anyio.sleep(0.001)
                    del t[0:20_000]
                    await anyio.sleep(0.001)
                t.insert(0, "done")
                await wait_for(lambda: str(watched) == "done", timeout=60)
                await wait_for(lambda: "send queue full" in srv.log(), timeout=10)
            finally:
                lazy.kill()
                lazy.wait()
    finally:
        srv.stop()


async def test_presence_bursts_are_coalesced_and_the_newest_state_wins(server):
    from websockets.asyncio.client import connect

    session = await create_session(server)
    url = f"{server.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
    async with connect(url) as a, connect(url) as b:
        await a.recv()
        await b.recv()
        for clock in range(1, 31):
            state = f'{{"user":{{"name":"Zoë","color":"#123"}},"cursor":{{"anchor":{clock},"head":{clock}}}}}'
            await a.send(p.awareness_frame([p.AwarenessEntry(77, clock, state.encode())]))
        frames = []
        with anyio.move_on_after(1.0):
            while True:
                frame = await b.recv()
                if frame[0] == p.MSG_AWARENESS:
                    frames.append(p.parse_awareness(frame))
        assert 1 <= len(frames) < 30  # coalesced, not relayed one by one
        last = frames[-1][-1]
        assert (last.client_id, last.clock) == (77, 30)
        assert "Zoë".encode() in last.state  # UTF-8 byte length prefix round-trips
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{session['id']}/participants", headers=auth(session["tokens"]["observer"]))
        assert r.json()["participants"] == []  # both left


async def test_presence_of_a_silently_dropped_connection_is_removed(tmp_path):
    """A peer that vanishes without FIN/RST (here: SIGSTOP, so it answers no pings) is detected
    by WebSocket pings and its presence removed for the others."""
    from websockets.asyncio.client import connect

    from .conftest import ServerProcess

    srv = ServerProcess(tmp_path / "data", ["--ws-ping-interval", "0.5", "--ws-ping-timeout", "3"])  # the watcher answers pings under load too
    srv.start()
    try:
        session = await create_session(srv)
        url = f"{srv.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
        async with connect(url) as watcher:
            await watcher.recv()
            ghost = spawn_raw_client(url, '{"user":{"name":"Ghost"}}')
            try:
                ghost.send_signal(signal.SIGSTOP)
                removed = False
                with anyio.fail_after(10):
                    while not removed:
                        frame = await watcher.recv()
                        if frame[0] == p.MSG_AWARENESS:
                            removed = any(e.client_id == 424242 and e.removed for e in p.parse_awareness(frame))
            finally:
                ghost.kill()
                ghost.wait()
    finally:
        srv.stop()


async def test_a_connection_cannot_change_or_remove_another_connections_presence(server):
    from websockets.asyncio.client import connect

    session = await create_session(server)
    url = f"{server.ws_url}/{session['id']}?token="
    async with connect(url + session["tokens"]["interviewer"]) as owner, \
            connect(url + session["tokens"]["candidate"]) as spoofer, \
            connect(url + session["tokens"]["observer"]) as watcher:
        for ws in (owner, spoofer, watcher):
            await ws.recv()
        await owner.send(p.awareness_frame([p.AwarenessEntry(5, 1, b'{"user":{"name":"Interviewer"}}')]))
        await anyio.sleep(0.3)
        # the candidate tries to rename the interviewer, then to make them vanish
        await spoofer.send(p.awareness_frame([p.AwarenessEntry(5, 9, b'{"user":{"name":"Mallory"}}')]))
        await spoofer.send(p.awareness_frame([p.AwarenessEntry(5, 10, b"null")]))
        seen: list[p.AwarenessEntry] = []
        with anyio.move_on_after(1.0):
            while True:
                frame = await watcher.recv()
                if frame[0] == p.MSG_AWARENESS:
                    seen.extend(p.parse_awareness(frame))
        assert [e.clock for e in seen if e.client_id == 5] == [1]
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.get(f"/api/sessions/{session['id']}/participants", headers=auth(session["tokens"]["observer"]))
        names = [x.get("name") for x in r.json()["participants"]]
        assert "Interviewer" in names and "Mallory" not in names


async def test_an_update_that_makes_yrs_panic_does_not_break_the_session(fresh_server):
    """A crafted update that decodes fine but makes Yrs panic on apply (pyo3 PanicException, a
    BaseException) is skipped: the room keeps serving, and the session still loads after a restart."""
    from pycrdt import Array, Map

    from .conftest import ServerProcess

    srv: ServerProcess = fresh_server
    cid = 0x14787C53D269CE  # the client id the crafted bytes below refer to
    session = await create_session(srv)
    url = f"{srv.ws_url}/{session['id']}?token={session['tokens']['candidate']}"
    doc: Doc = Doc(client_id=cid)
    async with aconnect_ws(url) as ws:
        from pycrdt import Provider
        from pycrdt.websocket.websocket import HttpxWebsocket

        async with Provider(doc, HttpxWebsocket(ws, session["id"])) as provider:
            with anyio.fail_after(10):
                await provider.synced.wait()
            t = doc.get("code", type=Text)
            t.insert(0, "hello world")
            doc.get("meta", type=Map)["x"] = 1
            doc.get("runs", type=Array).append(Map({"a": 1}))
            del t[0:3]
            async with py_client(srv, session) as watcher:
                await wait_for(lambda: text_of(watcher) == "lo world")
                # an entry of this client with no structs (Yrs panics in BlockSet::exclude), and a delete
                # of the live "l" (an update that adds nothing would be dropped before it is stored)
                bad = bytes.fromhex("0100ced3c99ec58f9e0a00" "01ced3c99ec58f9e0a010301")
                await ws.send_bytes(p.sync_frame(p.SYNC_UPDATE, bad))
                await anyio.sleep(0.3)
                t.insert(0, ">")
                await wait_for(lambda: text_of(watcher) == ">lo world")
    srv.kill9()  # no final snapshot: the reload replays the log, crafted update included
    srv.start()
    async with py_client(srv, session) as again:
        assert text_of(again) == ">lo world"
    assert "skipping unreadable update" in srv.log()
