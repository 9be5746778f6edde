"""An update costs the server about what its size says, not minutes of its event loop.

A candidate's client can send any bytes. A delete set of many ranges in descending order (Yjs and Yrs
write them ascending) used to cost a list insertion at the front per range in the server's ID sets,
and Yrs applies one in quadratic time too: 800 kB froze every session of the process for about a
minute. And the guard resolved where an update's structs live in passes over all of them, each
looking up IDs in a list: 20,000 scattered inserts (a long offline session) took 20 s, 60,000 minutes.
"""

from __future__ import annotations

import anyio
import pytest
from pycrdt import Doc, Map, Text
from websockets.asyncio.client import connect

from crdt_server.sync import protocol as p
from crdt_server.sync.protocol import write_var_uint as v
from crdt_server.sync.updates import decode, encode_delete_set

from .conftest import create_session, py_client, text_of, wait_for

pytestmark = pytest.mark.anyio

CLIENT = 777
RANGES = 200_000


def _crafted() -> bytes:
    """One character of ``code``, then its author's delete set of 200,000 ranges, descending."""
    string_in_root = bytes((4,)) + v(1) + v(4) + b"code"  # info: string content; its parent, the root "code"
    struct = v(1) + v(1) + v(CLIENT) + v(0) + string_in_root + v(1) + b"x"
    return struct + encode_delete_set([(CLIENT, 2 * k + 10, 1) for k in reversed(range(RANGES))])


async def test_a_delete_set_in_descending_order_does_not_freeze_the_server(server):
    s = await create_session(server, code="")
    update = _crafted()
    assert len(update) < 1024 * 1024
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}", max_size=None) as ws:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, update))
        await anyio.sleep(0.5)  # the server is busy with it now, if it is going to be
        async with py_client(server, s, "observer") as doc:  # synced within 10 s, or it fails
            assert text_of(doc) == "x"


async def test_an_update_of_many_scattered_inserts_does_not_freeze_the_server(server):
    s = await create_session(server, code="x")
    author: Doc = Doc(client_id=99)
    async with py_client(server, s, "observer") as doc:
        author.apply_update(doc.get_update())
    text = author.get("code", type=Text)
    state = author.get_state()
    for i in range(25_000):  # each insert its own struct
        text.insert((i * 7919) % (len(text) + 1), "ab")
    update = author.get_update(state)
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}", max_size=None) as ws:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, update))
        await anyio.sleep(0.5)
        async with py_client(server, s, "observer") as doc:  # synced within 10 s, or it fails
            assert text_of(doc) == str(text)


@pytest.mark.slow
async def test_an_update_that_never_integrates_does_not_slow_every_keystroke(server):
    """It waits in the CRDT for a client that never comes; the others keep typing. Each of their
    keystrokes used to resolve it again and re-encode it: 0.2 s per keystroke for 800 kB."""
    s = await create_session(server, code="x")
    n = 110_000  # the held part reaches the observer (pycrdt's client reads 1 MiB at most)
    body = b"".join(bytes((0x84,)) + v(4242) + v(i) + v(1) + b"y" for i in range(n))  # after IDs of client 4242
    waiting = v(1) + v(n) + v(CLIENT) + v(0) + body + b"\x00"
    typist: Doc = Doc(client_id=5)
    async with py_client(server, s, "observer") as doc:
        typist.apply_update(doc.get_update())
    text = typist.get("code", type=Text)
    keystrokes: list[bytes] = []
    typist.observe(lambda event: keystrokes.append(event.update))
    for _ in range(40):
        text.insert(0, "k")
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}", max_size=None) as ws, \
            py_client(server, s, "observer") as doc, \
            connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['interviewer']}") as writer:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, waiting))
        await ws.send(p.sync_frame(p.SYNC_UPDATE, keystrokes[0]))  # after it on the same socket
        await wait_for(lambda: text_of(doc) == "kx", timeout=30)  # it is in, and waits
        for keystroke in keystrokes[1:]:
            await writer.send(p.sync_frame(p.SYNC_UPDATE, keystroke))
        await wait_for(lambda: text_of(doc) == "k" * 40 + "x", timeout=5)


async def test_a_reverted_update_with_many_deletes_does_not_freeze_the_server(server):
    """A candidate's change to ``meta.title`` is undone, and the stored update's delete set cut down
    to what it touches: that cut compared each of the document's delete ranges with each of the
    update's, 40 s for 10,000 of each."""
    s = await create_session(server, code="")
    n = 10_000
    author: Doc = Doc(client_id=7)
    async with py_client(server, s, "observer") as doc:
        author.apply_update(doc.get_update())
    updates: list[bytes] = []
    author.observe(lambda event: updates.append(event.update))
    text = author.get("code", type=Text)
    text += "x" * (4 * n)
    inserts = updates[-1]
    for k in reversed(range(n)):  # the document holds n separate deleted ranges
        del text[4 * k]
    author.get("meta", type=Map)["title"] = "mine"
    title = decode(updates[-1])
    crafted = updates[-1][:title.delete_set_offset] + encode_delete_set([(7, 4 * k + 2, 1) for k in range(n)])
    async with connect(f"{server.ws_url}/{s['id']}?token={s['tokens']['candidate']}", max_size=None) as ws:
        await ws.send(p.sync_frame(p.SYNC_UPDATE, inserts))
        await ws.send(p.sync_frame(p.SYNC_UPDATE, b"\x00" + encode_delete_set([(7, 4 * k, 1) for k in range(n)])))
        await ws.send(p.sync_frame(p.SYNC_UPDATE, crafted))
        await anyio.sleep(1)
        async with py_client(server, s, "observer") as doc:  # synced within 10 s, or it fails
            assert doc.get("meta", type=Map).get("title") != "mine"
            assert len(text_of(doc)) == 4 * n - 2 * n
