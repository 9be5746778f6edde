"""Frames that arrive together are handled in the order they were sent, whatever path each one takes.

The server handles a binary frame as it is read when the socket's reader is idle (``Connection.frames``),
and queues it otherwise: behind a frame that must wait (backpressure, here on every update with
``--room-pending-updates 1``), behind a refused one, behind anything queued already. A client that
sends many frames in one TCP segment sees all of those paths at once.
"""

from __future__ import annotations

import json

import anyio
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from crdt_server.sync import protocol as p

from .conftest import create_session, py_client, text_of, wait_for

pytestmark = pytest.mark.anyio

WORD = "pipelined-keystrokes-arrive-in-order"


def keystrokes(text: str) -> list[bytes]:
    """One update per character, typed at the end by one fresh client."""
    doc: Doc = Doc()
    code = doc.get("code", type=Text)
    out = []
    for ch in text:
        before = doc.get_state()
        code += ch
        out.append(doc.get_update(before))
    return out


def together(frames: list[bytes]) -> bytes:
    """The frames as a client sends them (masked), for one write."""
    return b"".join(Frame(Opcode.BINARY, f).serialize(mask=True, extensions=[]) for f in frames)


def presence(client_id: int, clock: int) -> bytes:
    state = json.dumps({"user": {"name": "Pipe"}, "cursor": clock}).encode()
    return p.awareness_frame([p.AwarenessEntry(client_id, clock, state)])


async def test_frames_sent_in_one_write_are_handled_in_order_under_backpressure(make_server):
    srv = make_server("--room-pending-updates", "1")
    s = await create_session(srv)
    url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    frames: list[bytes] = []
    for i, update in enumerate(keystrokes(WORD)):
        frames.append(p.sync_frame(p.SYNC_UPDATE, update))
        if i % 5 == 0:
            frames.append(presence(777, i + 1))
    frames.append(bytes((p.MSG_QUERY_AWARENESS,)))
    frames.append(p.sync_frame(p.SYNC_STEP1, p.EMPTY_STATE_VECTOR))  # answered once every update before it is in
    async with py_client(srv, s, role="interviewer") as reader, connect(url, compression=None) as ws:
        ws.transport.write(together(frames))
        answer = None
        with anyio.fail_after(10):
            while answer is None:
                message = await ws.recv()
                assert isinstance(message, bytes)
                if message[:2] == bytes((p.MSG_SYNC, p.SYNC_STEP2)):
                    answer = p.parse_sync(message).payload
        state: Doc = Doc()
        state.apply_update(answer)
        assert WORD in text_of(state)  # the sync step 1 came last: its answer holds every update sent before it
        await wait_for(lambda: WORD in text_of(reader))


async def test_frames_behind_a_refused_one_are_never_applied(make_server):
    srv = make_server()
    s = await create_session(srv)
    url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"
    typed = [p.sync_frame(p.SYNC_UPDATE, u) for u in keystrokes("abc")]  # one client: "c" follows "b"
    malformed = p.sync_frame(p.SYNC_UPDATE, b"\x01\x01\x05")  # a truncated Yjs update
    async with py_client(srv, s, role="interviewer") as reader, connect(url, compression=None) as ws:
        ws.transport.write(together(typed[:2] + [malformed] + typed[2:]))
        with anyio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == p.CloseCode.MALFORMED
        await wait_for(lambda: "ab" in text_of(reader))
        await anyio.sleep(0.5)  # what would have followed the refused frame
        assert "abc" not in text_of(reader)
