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
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from crdt_server.sync import protocol as p
from crdt_server.sync.protocol import write_var_uint as v
from crdt_server.sync.updates import encode_delete_set

from .conftest import create_session, py_client, text_of

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
