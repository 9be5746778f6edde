"""Playback's reads of the stores (SQLite and PostgreSQL): one checkpoint kept per block of rows, never one past the moment."""

from __future__ import annotations

import struct
import time

import pytest
from pycrdt import Doc, Text

from crdt_server.document import initial_document, read_text
from crdt_server.playback import STREAM_MAX_ROWS, moment, stream
from crdt_server.storage import EventRecord, SessionRecord, UpdateRecord

from .pg import BACKENDS, query  # noqa: F401  (BACKENDS: conftest runs these tests on both stores)

pytestmark = pytest.mark.anyio


async def test_checkpoints_kept_per_block_load_unchanged_and_playback_uses_the_nearest(make_store):
    now = time.time()
    record = SessionRecord("s", "t", "python", "active", now, now, now + 3600)
    async with make_store(checkpoint_every=10) as store:
        await store.create_session(record, initial_document("t", "python", "S"), EventRecord("s", "created", {}))
        doc: Doc = Doc()
        doc.apply_update((await store.read_updates("s", 0, 1))[0].data)
        texts = {1: "S"}
        text = doc.get("code", type=Text)
        for seq in range(2, 36):
            before = doc.get_state()
            text += "é😀"[seq % 2]
            await store.append_updates([UpdateRecord("s", doc.get_update(before), "candidate", "c1", "Bob")])
            texts[seq] = str(text)
            if seq in (4, 8, 12, 16, 24, 33):
                await store.write_snapshot("s", seq, doc.get_update())
        kept = await query(store, "SELECT seq FROM snapshots ORDER BY seq")
        assert [k[0] for k in kept] == [8, 16, 24, 33]  # the last of each finished block, and the newest
        snapshot, tail, base = await store.load("s")
        assert base == 33 and [u.seq for u in tail] == [34, 35]  # the live load path reads the newest only
        snap, base, tail = await store.playback_rows("s", 20)
        assert snap is not None and base == 16 and [u.seq for u in tail] == [17, 18, 19, 20]
        for seq, expected in texts.items():  # every moment, also those just before a checkpoint
            m = await moment(store, record, seq=seq)
            assert (m.seq, m.code) == (seq, expected)
        assert read_text(doc) == texts[35]


async def test_the_stream_is_bounded_per_response_and_continues_where_it_stopped(make_store):
    now = time.time()
    record = SessionRecord("s", "t", "python", "active", now, now, now + 3600)
    async with make_store() as store:
        await store.create_session(record, initial_document("t", "python", ""), EventRecord("s", "created", {}))
        doc: Doc = Doc()
        doc.apply_update((await store.read_updates("s", 0, 1))[0].data)
        text = doc.get("code", type=Text)
        total = STREAM_MAX_ROWS + 50
        for _ in range(0, total - 1, 500):
            batch = []
            for _ in range(min(500, total - 1 - len(str(text)))):
                before = doc.get_state()
                text += "x"
                batch.append(UpdateRecord("s", doc.get_update(before), "candidate", "c1", "Bob"))
            await store.append_updates(batch)
        body, nxt = await stream(store, record, 1, None)
        assert count(body) == STREAM_MAX_ROWS and nxt == STREAM_MAX_ROWS + 1
        body, nxt = await stream(store, record, nxt, None)
        assert count(body) == 50 and nxt is None
        body, nxt = await stream(store, record, 1, STREAM_MAX_ROWS)  # exactly the bound: nothing more in range
        assert count(body) == STREAM_MAX_ROWS and nxt is None
        body, nxt = await stream(store, record, 5, STREAM_MAX_ROWS + 7)
        assert count(body) == STREAM_MAX_ROWS and nxt == STREAM_MAX_ROWS + 5


def count(body: bytes) -> int:
    n = pos = 0
    while pos < len(body):
        pos += 4 + struct.unpack_from(">I", body, pos)[0]
        n += 1
    assert pos == len(body)
    return n
