"""Issue 10 on the wire, each against both servers: what the reference does, ours must do (where the
reference is right). Raw frames come from a bare socket; what users see, from real clients."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import pytest
from pycrdt import Doc, Text

from crdt_server.sync import protocol as p
from crdt_server.sync.updates import decode

from ..conftest import auth, create_session
from .conftest import GENERATIONS, YJS_LINES, Generation, Room, answered, matrix, new_room, peer, peers, raw_socket
from .proxy import proxy_to

pytestmark = pytest.mark.anyio


def dependent_updates() -> tuple[bytes, bytes]:
    """Two updates of one client, the second typed after the first: it depends on it."""
    doc: Doc[Any] = Doc(client_id=7_000_001)
    text = doc.get("code", type=Text)
    text += "first "
    first = doc.get_update()
    state = doc.get_state()
    text += "second"
    return first, doc.get_update(state)


@pytest.mark.parametrize(("side", "gen"), matrix(YJS_LINES))
async def test_an_update_before_the_one_it_depends_on(room: Room, gen: Generation) -> None:
    """As after offline edits or a reconnect race: the second update arrives first, then a newcomer
    joins, then the first arrives. Everyone, the newcomer included, ends with both."""
    first, second = dependent_updates()
    async with peer(room, gen, "Ada") as a, raw_socket(room) as ws:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, second))
        await answered(ws)
        async with peer(room, gen, "Late", "candidate") as late:
            await ws.send(p.sync_frame(p.SYNC_UPDATE, first))
            await a.wait_text(equals="first second", timeout=5)
            await late.wait_text(equals="first second", timeout=2)  # the relay of the first reached it too
        assert await room.rest_code() in (None, "first second")


@pytest.mark.slow
async def test_a_pending_update_survives_a_restart(fresh_server: Any) -> None:
    """Ours only: the reference keeps its documents in memory, a restart loses them all."""
    first, second = dependent_updates()
    room = await new_room(fresh_server)
    async with raw_socket(room) as ws:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, second))
        await answered(ws)
    fresh_server.restart()
    async with raw_socket(room) as ws:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, first))
        await answered(ws)
    async with peer(room, GENERATIONS["y-websocket@3"], "Late") as late:
        assert await late.get_text() == "first second"  # the server had both before it came
    assert await room.rest_code() == "first second"


@pytest.mark.parametrize(("side", "gen"), matrix())
async def test_invalid_json_presence_crashes_nobody_and_keeps_everyones_cursor(room: Room, gen: Generation) -> None:
    """Item 3: y-protocols JSON.parse throws on the whole message, a Node client crashes, a browser
    drops everyone's cursors; the servers must not pass such a state on."""
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (a, b), raw_socket(room) as ws:
        await ws.send(p.awareness_frame([p.AwarenessEntry(7_000_002, 1, b'{"user": {"name": "Val"}}'),
                                         p.AwarenessEntry(7_000_003, 1, b'{"user": {"name": ')]))
        await ws.send(p.awareness_frame([p.AwarenessEntry(7_000_004, 1, b"NaN")]))
        await answered(ws)
        await a.set_awareness_field("cursor", {"anchor": 1, "head": 1})
        await b.wait_awareness(lambda st: st.others.get(_client_of(st, "Ada"), {}).get("cursor") == {"anchor": 1, "head": 1})
        async with peer(room, gen, "Cy", "candidate") as late:
            await late.wait_awareness(lambda st: {"Ada", "Bob", "Cy"} <= set(st.names), timeout=5)
            for client in (a, b, late):
                assert {"Ada", "Bob"} <= set((await client.awareness_states()).names)
                assert not client.find_events("uncaught"), client.stderr_tail


def _client_of(st: Any, name: str) -> int:
    return next((cid for cid, s in st.states.items() if s.get("user", {}).get("name") == name), -1)


@pytest.mark.parametrize(("side", "gen"), matrix())
async def test_a_client_asking_for_a_subprotocol_connects(room: Room, gen: Generation) -> None:
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate"), wait_synced=False,
                     protocols=["y-websocket"]) as (a, b):
        for client in (a, b):
            first = await client.wait_event(None, lambda e: e["event"] in ("synced", "connection-close"))
            assert first["event"] == "synced", first
        await a.insert(0, "hi")
        await b.wait_text(equals="hi")


TOLERATED = {
    "unknown message type": bytes((7, 1, 2)),
    "unknown sync message type": bytes((0, 9, 1, 0)),
    "text frame": "hello",
}


@pytest.mark.parametrize(("side", "gen"), matrix(("y-websocket@3",)))
@pytest.mark.parametrize("frame", list(TOLERATED.values()), ids=list(TOLERATED))
async def test_frames_the_reference_ignores_leave_the_connection_working(room: Room, frame: bytes | str) -> None:
    """A bare socket (the generation only picks the Yjs 13 reference): the reference logs a parse error
    for each of these and goes on; the frames after them are handled."""
    async with raw_socket(room) as ws:
        await ws.send(frame)
        await answered(ws)


@pytest.mark.parametrize(("side", "gen"), matrix(("y-websocket@3",)))
async def test_sync_step_1_with_a_zero_length_state_vector_leaves_the_connection_working(room: Room) -> None:
    """Neither reference answers it (0.1.1 and 0.1.5 log "Unexpected end of array": an empty state vector
    has not even its count), but both keep the connection open and working."""
    async with peer(room, GENERATIONS["y-websocket@3"], "Ada") as a:
        await a.insert(0, "abc")
        async with raw_socket(room, "candidate") as ws:
            await ws.send(p.sync_frame(p.SYNC_STEP1, b""))
            doc: Doc[Any] = Doc()
            doc.apply_update(p.parse_sync(await answered(ws)).payload)  # to it, or to the next step 1
            assert str(doc.get("code", type=Text)) == "abc"
            await answered(ws)


@pytest.mark.parametrize(("side", "gen"), matrix())
async def test_a_reconnecting_up_to_date_writer_sends_nobody_anything(room: Room, gen: Generation) -> None:
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (a, b):
        await a.insert(0, "x")
        await b.wait_text(equals="x")
        since = (await b.call("syncLog"))["count"]
        mark = a.mark()
        assert await a.terminate()  # the provider reconnects by itself, up to date
        await a.wait_event("synced", lambda e: e["synced"], since=mark)
        await a.append("y")  # handled after the reconnect's messages: a relay of them reaches b first
        await b.wait_text(equals="xy")
        received = (await b.call("syncLog", since=since))["messages"]
        updates = [m for m in received if m["sub"] in (p.SYNC_STEP2, p.SYNC_UPDATE)]
        assert len(updates) == 1, received  # the "y", nothing else
        assert decode(base64.b64decode(updates[0]["update"])).structs


def _via(server_url: str, port: int) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


@pytest.mark.parametrize(("side", "gen"), matrix(reference="the reference gives a connection only the clientIDs it "
                                                           "added: the old socket's close removes the cursor "
                                                           "(y-protocols on the owner's client puts it back at once)"))
async def test_a_quick_reconnect_keeps_the_cursor(room: Room, gen: Generation) -> None:
    """Item 9: the network of Cand's client vanishes (the server does not notice), the user moves the
    cursor, the client reconnects; when the server finally notices the old socket died, Cand's cursor must
    stay, with its newest state, and no removal may reach the others (not even for a moment)."""
    port = urlsplit(room.server_url).port
    assert port is not None
    async with proxy_to(port) as proxy, peer(room, gen, "Ada") as ada, \
            peer(room, gen, "Cand", "candidate", server_url=_via(room.server_url, proxy.port)) as cand:
        cand_id = await cand.client_id()
        await ada.wait_awareness(lambda st: cand_id in st.others)
        old = proxy.links[-1]
        proxy.freeze(old)
        await cand.set_awareness_field("cursor", {"anchor": 5, "head": 5})  # sent into the void
        mark = cand.mark()
        proxy.drop(old)
        await cand.wait_event("synced", lambda e: e["synced"], since=mark)
        await ada.wait_awareness(lambda st: st.others.get(cand_id, {}).get("cursor") == {"anchor": 5, "head": 5})
        since = ada.mark()
        proxy.release(old)  # the server notices that the old socket died
        await anyio.sleep(0.5)  # a removal would have arrived by now (both servers send it at once)
        assert not [e for e in ada.find_events("awareness", since=since) if cand_id in e["removed"]]
        shown = await ada.awareness_states()
        assert shown.others.get(cand_id, {}).get("cursor") == {"anchor": 5, "head": 5}


@pytest.mark.parametrize(("side", "gen"), matrix(("next",)))
async def test_the_next_client_sees_its_own_updates_confirmed(room: Room, gen: Generation) -> None:
    """The next y-websocket's sync status is 'synced' once the server's sync step 2s and updates have
    covered the content IDs (@y/y 14 ``createContentIdsFromUpdate``) of every local update."""
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (a, b):
        await a.insert(0, "hello")
        await b.wait_text(equals="hello")
        await a.wait_until(lambda: _confirmed(a), timeout=2, what="own insert confirmed")
        await a.delete(0, 2)
        await b.wait_text(equals="llo")
        await a.wait_until(lambda: _confirmed(a), timeout=2, what="own delete confirmed")
        await a.disconnect()
        await a.append(" offline")
        await a.reconnect()
        await b.wait_text(equals="llo offline")
        await a.wait_until(lambda: _confirmed(a), timeout=2, what="offline edit confirmed")


async def _confirmed(client: Any) -> bool:
    state = await client.call("confirmation")
    assert state["supported"]
    return bool(state["confirmed"])


@pytest.mark.parametrize("gen", [GENERATIONS[g] for g in ("y-websocket@1", "y-websocket@2", "y-websocket@3", "next")],
                         ids=lambda g: g.name)
async def test_what_each_client_does_after_a_4404(ours_server: Any, gen: Generation) -> None:
    """Ours only (the reference refuses nothing). Only 3.x has ``shouldReconnect`` (4400-4499 final);
    1.x, 2.x and the next major's 4.0 prereleases retry every close code."""
    s = await create_session(ours_server)
    async with httpx.AsyncClient(base_url=ours_server.base_url) as http:
        r = await http.delete(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code in (200, 204), r.text
    room = Room("ours", ours_server.ws_url, s["id"], s["tokens"], ours_server.base_url)
    async with peer(room, gen, "Ada", wait_synced=False) as a:
        await a.wait_close(4404, timeout=5)
        await anyio.sleep(1.0)  # back-off starts at 100 ms: a retrying client has come back by now
        closes = [e for e in a.find_events("connection-close") if not e["local"]]
        assert {e["code"] for e in closes} == {4404}
        if gen.final_44xx:
            assert len(closes) == 1 and a.find_events("closed")
        else:
            assert len(closes) >= 2
