"""Playback's reads of the SQLite store: one checkpoint kept per block of rows, never one past the moment."""

from __future__ import annotations

import sqlite3
import time

import pytest
from pycrdt import Doc, Text

from crdt_server.document import initial_document, read_text
from crdt_server.playback import moment
from crdt_server.storage import EventRecord, SessionRecord, SQLiteStore, UpdateRecord

pytestmark = pytest.mark.anyio


async def test_checkpoints_kept_per_block_load_unchanged_and_playback_uses_the_nearest(tmp_path):
    now = time.time()
    record = SessionRecord("s", "t", "python", "active", now, now, now + 3600)
    async with SQLiteStore(tmp_path / "db.sqlite", checkpoint_every=10) as store:
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
        kept = sqlite3.connect(tmp_path / "db.sqlite").execute("SELECT seq FROM snapshots ORDER BY seq").fetchall()
        assert [k[0] for k in kept] == [8, 16, 24, 33]  # the last of each finished block, and the newest
        snapshot, tail, base = await store.load("s")
        assert base == 33 and [u.seq for u in tail] == [34, 35]  # the live load path reads the newest only
        snap, base, tail = await store.playback_rows("s", 20)
        assert snap is not None and base == 16 and [u.seq for u in tail] == [17, 18, 19, 20]
        for seq, expected in texts.items():  # every moment, also those just before a checkpoint
            m = await moment(store, record, seq=seq)
            assert (m.seq, m.code) == (seq, expected)
        assert read_text(doc) == texts[35]
