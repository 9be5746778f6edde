"""Presence (awareness) from hostile or unlucky clients: bounded, validated, and owned.

Hostile clients send raw frames (``raw_client.py`` in a child process, or a bare socket here);
what a user sees is checked with real y-websocket clients (``jsclient.py``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdt_server.sync import protocol as p

from .conftest import ServerProcess, auth, create_session
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = pytest.mark.anyio
RAW_CLIENT = Path(__file__).parent / "raw_client.py"


@asynccontextmanager
async def raw(server: ServerProcess, session: dict[str, Any], role: str) -> AsyncIterator[ClientConnection]:
    """A bare socket past the server's sync step 1."""
    async with connect(f"{server.ws_url}/{session['id']}?token={session['tokens'][role]}", max_size=None) as ws:
        await ws.recv()
        yield ws


def state(name: str, size: int = 0, **extra: Any) -> bytes:
    body = {"user": {"name": name}, **extra}
    raw_state = json.dumps(body).encode()
    if size:
        body["pad"] = "x" * (size - len(raw_state) - 10)
        raw_state = json.dumps(body).encode()
    return raw_state


async def processed(ws: ClientConnection) -> None:
    """Everything sent on ``ws`` so far has been handled (frames are handled in order)."""
    await ws.send(p.sync_frame(p.SYNC_STEP1, b"\x00"))
    with anyio.fail_after(10):
        while (await ws.recv())[:2] != bytes((p.MSG_SYNC, p.SYNC_STEP2)):
            pass


async def snapshot_entries(server: ServerProcess, session: dict[str, Any], wait: float = 1.0) -> list[p.AwarenessEntry]:
    """What a newcomer is sent of the room's presence."""
    entries: list[p.AwarenessEntry] = []
    async with raw(server, session, "observer") as ws:
        with anyio.move_on_after(wait):
            while True:
                frame = await ws.recv()
                if frame[0] == p.MSG_AWARENESS:
                    entries.extend(e for e in p.parse_awareness(frame) if not e.removed)
    return entries


async def participants(server: ServerProcess, session: dict[str, Any]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        r = await http.get(f"/api/sessions/{session['id']}/participants", headers=auth(session["tokens"]["observer"]))
        assert r.status_code == 200, r.text
        return r.json()["participants"]  # type: ignore[no-any-return]


async def edit_latencies(server: ServerProcess, session: dict[str, Any], seconds: float) -> list[float]:
    """Send edits one at a time for ``seconds``; each latency is send → received by another client."""
    latencies: list[float] = []
    doc: Doc = Doc()
    text = doc.get("code", type=Text)
    async with raw(server, session, "candidate") as writer, raw(server, session, "interviewer") as reader:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            before = doc.get_state()
            text.insert(len(text), "x")
            update = doc.get_update(before)
            start = time.perf_counter()
            await writer.send(p.sync_frame(p.SYNC_UPDATE, update))
            with anyio.move_on_after(5) as scope:
                while (await reader.recv())[:2] != bytes((p.MSG_SYNC, p.SYNC_UPDATE)):
                    pass
            latencies.append(5.0 if scope.cancelled_caught else time.perf_counter() - start)
            if scope.cancelled_caught:
                break
            await anyio.sleep(0.02)
    return latencies


async def test_an_observer_flood_is_bounded_and_other_sessions_keep_their_latency(server):
    """One observer socket registers 200,000 clientIDs (again after every close) while someone polls
    the participants list: it keeps at most its few clientIDs, is closed as a flood, and an
    unrelated session's edits stay fast (a liveness bound, not a benchmark)."""
    target, other = await create_session(server), await create_session(server)
    url = f"{server.ws_url}/{target['id']}?token={target['tokens']['observer']}"
    flooder = subprocess.Popen(
        [sys.executable, str(RAW_CLIENT), url, "--flood", "200000", "--per-frame", "10000", "--pause", "0.1",
         "--seconds", "8"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert flooder.stdout is not None
        with anyio.fail_after(60):
            assert (await anyio.to_thread.run_sync(flooder.stdout.readline)).strip() == "ready"
        polls: list[float] = []

        async def poll() -> None:
            url = f"/api/sessions/{target['id']}/participants"
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                while True:
                    start = time.perf_counter()
                    r = await http.get(url, headers=auth(target["tokens"]["observer"]))
                    assert r.status_code == 200
                    polls.append(time.perf_counter() - start)
                    await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            latencies = await edit_latencies(server, other, seconds=3)
            newcomer_sees = await snapshot_entries(server, target, wait=0.5)
            tg.cancel_scope.cancel()
        p50, worst = statistics.median(latencies), max(latencies)
        figures = (f"{len(latencies)} edits, p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms; "
                   f"{len(polls)} participants polls, max {max(polls, default=0) * 1000:.0f} ms")
        print(figures)
        assert len(newcomer_sees) <= 2 * 4  # at most the default 4 per flooding socket (one may be reconnecting)
        assert p50 < 0.020 and worst < 0.250, figures
        assert len(latencies) >= 20 and polls and max(polls) < 1.0, figures
        output, _ = await anyio.to_thread.run_sync(lambda: flooder.communicate(timeout=60))
        assert "closed 1008" in output and output.rstrip().endswith("done")
    finally:
        flooder.kill()
        flooder.wait()
    assert "presence entries dropped" in server.log()


async def test_a_client_over_a_presence_bound_keeps_working(server, js_deps):
    """Over the per-connection clientID bound, or with a state over the size bound, the entry is
    dropped and nothing else happens: the same socket's edits and its first states still work."""
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada, \
            raw(server, s, "candidate") as ws:
        entries = [p.AwarenessEntry(100 + i, 1, state(f"tab{i}")) for i in range(6)]
        entries.append(p.AwarenessEntry(99, 1, state("huge", size=20_000)))
        await ws.send(p.awareness_frame(entries))
        await processed(ws)
        shown = await ada.wait_awareness(lambda st: len(st.others) == 4, timeout=5)
        await anyio.sleep(0.3)  # nothing more arrives
        shown = await ada.awareness_states()
        assert sorted(st["user"]["name"] for st in shown.others.values()) == ["tab0", "tab1", "tab2", "tab3"]
        doc: Doc = Doc()
        doc.get("code", type=Text).insert(0, "still editing ")
        await ws.send(p.sync_frame(p.SYNC_UPDATE, doc.get_update()))
        await ada.wait_text(contains="still editing ", timeout=5)
        await ws.send(p.awareness_frame([p.AwarenessEntry(100, 2, state("tab0 moved"))]))  # its own, still fine
        await ada.wait_awareness(lambda st: "tab0 moved" in st.names, timeout=5)


async def test_a_newcomer_to_a_room_with_huge_presence_syncs_and_sees_it(server, js_deps):
    """A room filled to its presence bound by many sockets, plus one socket trying to add 20 MB
    more: a newcomer still syncs and receives the presence it can take (the room's bound)."""
    s = await create_session(server, code="hello")
    big = 16_000
    async with anyio.create_task_group() as tg:
        stop = anyio.Event()
        ready = 0

        async def filler(i: int) -> None:
            nonlocal ready
            async with raw(server, s, "candidate") as ws:
                await ws.send(p.awareness_frame([p.AwarenessEntry(10_000 + 4 * i + k, 1, state(f"u{i}.{k}", big))
                                                 for k in range(4)]))
                await processed(ws)
                ready += 1
                await stop.wait()

        for i in range(17):  # 17 × 4 × 16 KB: more than the room's default 512 KiB
            tg.start_soon(filler, i)
        with anyio.fail_after(30):
            while ready < 17:
                await anyio.sleep(0.05)
        sent = anyio.Event()

        async def hostile() -> None:  # 20 MB more, in messages under the limit, read back as it goes
            async with raw(server, s, "observer") as ws, anyio.create_task_group() as inner:

                async def drain() -> None:
                    with contextlib.suppress(ConnectionClosed):
                        while True:
                            await ws.recv()

                inner.start_soon(drain)
                for frame_no in range(7):
                    entries = [p.AwarenessEntry(500_000 + 200 * frame_no + j, 1, state("h", big)) for j in range(200)]
                    try:
                        await ws.send(p.awareness_frame(entries))
                    except ConnectionClosed:  # closed as a flood: that is the point
                        break
                sent.set()
                await stop.wait()
                inner.cancel_scope.cancel()

        tg.start_soon(hostile)
        with anyio.fail_after(30):
            await sent.wait()
        await anyio.sleep(1.0)  # handled by now
        async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Newcomer") as newcomer:
            await newcomer.wait_text(equals="hello", timeout=10)
            seen = await newcomer.wait_awareness(lambda st: len(st.others) >= 30, timeout=10)  # 512 KiB of 16 KB states
            assert all(name.startswith("u") for name in [st["user"]["name"] for st in seen.others.values()])
            assert not [e for e in newcomer.events if e["event"] in ("uncaught", "connection-close")]
        stop.set()


async def test_invalid_json_presence_never_reaches_a_js_client(server, js_deps):
    """Entries that ``JSON.parse`` would throw on are dropped one by one; the valid ones in the same
    message arrive, the sender's socket stays open, and the JS clients keep working."""
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada, \
            raw(server, s, "candidate") as ws:
        await ws.send(p.awareness_frame([
            p.AwarenessEntry(1, 1, b'{"user": {"name": "Truncated"'),
            p.AwarenessEntry(2, 1, b'{"user": {"name": "Nan"}, "cursor": NaN}'),
            p.AwarenessEntry(3, 1, b'{"user": {"name": "\xff"}}'),
            p.AwarenessEntry(4, 1, b'{"user": {"name": "Val"}}'),
        ]))
        await ws.send(p.awareness_frame([p.AwarenessEntry(5, 1, b"Infinity")]))
        await processed(ws)  # still open
        await ada.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Val"], timeout=5)
        async with js_client(server.ws_url, s["id"], s["tokens"]["observer"], name="Late") as late:
            await late.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Late", "Val"], timeout=5)
            await ada.insert(0, "typed")
            await late.wait_text(equals="typed", timeout=5)
            everyone = sorted([4, await ada.client_id(), await late.client_id()])
            for client in (ada, late):
                await client.wait_awareness(lambda st: sorted(st.all) == everyone, timeout=5)
                assert not [e for e in client.events if e["event"] == "uncaught"], client.stderr_tail


async def test_a_reconnect_of_the_same_role_keeps_the_cursor_and_another_role_cannot_take_it(tmp_path, js_deps):
    """The old socket is frozen (the server notices only at the ping timeout). A socket of another
    role cannot take the clientID over, even with a higher clock; one of the same role can, and the
    old socket's eventual close does not remove the cursor."""
    srv = ServerProcess(tmp_path / "data", ["--ws-ping-interval", "1", "--ws-ping-timeout", "2"])
    srv.start()
    s = await create_session(srv)
    url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    old = subprocess.Popen([sys.executable, str(RAW_CLIENT), url, '{"user": {"name": "Cand"}, "v": 1}'],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert old.stdout is not None and old.stdout.readline().strip() == "ready"
        async with js_client(srv.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada:
            await ada.wait_awareness(lambda st: st.others.get(424242, {}).get("v") == 1, timeout=5)
            old.send_signal(signal.SIGSTOP)
            async with raw(srv, s, "observer") as mallory, raw(srv, s, "candidate") as again:
                await mallory.send(p.awareness_frame([p.AwarenessEntry(424242, 7, state("Mallory"))]))
                await processed(mallory)
                await anyio.sleep(0.3)
                assert (await ada.awareness_states()).others[424242]["user"]["name"] == "Cand"
                await again.send(p.awareness_frame([p.AwarenessEntry(424242, 2, state("Cand", v=2))]))
                await ada.wait_awareness(lambda st: st.others.get(424242, {}).get("v") == 2, timeout=5)

                async def old_socket_gone() -> bool:
                    return [x["role"] for x in await participants(srv, s)].count("candidate") == 1

                with anyio.fail_after(15):
                    while not await old_socket_gone():
                        await anyio.sleep(0.1)
                await anyio.sleep(1.0)  # a removal would have arrived by now
                shown = await ada.awareness_states()
                assert shown.others.get(424242, {}).get("v") == 2 and "Mallory" not in shown.names
                names = {x["role"]: x["name"] for x in await participants(srv, s)}
                assert names["candidate"] == "Cand"
    finally:
        old.kill()
        old.wait()
        srv.stop()


def test_presence_limits_that_cannot_work_refuse_to_start(tmp_path):
    """A room bound a newcomer's send queue could not take, or a state bound over one message."""
    for args, message in (
        (["--presence-max-room-bytes", str(64 * 1024 * 1024)], "--presence-max-room-bytes / CRDT_SERVER_PRESENCE_MAX_ROOM_BYTES: must be"),
        (["--presence-max-state-bytes", str(1024 * 1024)], "--presence-max-state-bytes / CRDT_SERVER_PRESENCE_MAX_STATE_BYTES: must be"),
        (["--presence-max-clients", "0"], "--presence-max-clients / CRDT_SERVER_PRESENCE_MAX_CLIENTS: must be greater than 0"),
    ):
        srv = ServerProcess(tmp_path / "data", args)
        with pytest.raises(RuntimeError, match="server exited"):
            srv.start()
        assert message in srv.log()
