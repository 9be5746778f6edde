"""The room notices an editor's ``meta.language`` switch without a map observer, and an update that
makes pycrdt's map event panic (found by tests/test_ws_fuzz.py) does not break the room."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from pycrdt import Doc, Map

from crdt_server.sync import SessionRoom

from .test_room_ingest import OPTIONS, MemoryStore, RecordingConnection, _started, _updates

pytestmark = pytest.mark.anyio

DATA = Path(__file__).resolve().parents[1] / "data" / "map_event_panic.json"


async def test_an_update_that_breaks_map_events_does_not_break_the_room() -> None:
    updates = [bytes.fromhex(u) for u in json.loads(DATA.read_text())["updates"]]
    store = MemoryStore()
    doc: Doc = Doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=0, snapshot_seq=0), tg)  # type: ignore[arg-type]
        author, other = RecordingConnection(), RecordingConnection()
        room.clients.update({author, other})  # type: ignore[arg-type]
        for update in updates:
            batch = room.queue_update(update, author)  # type: ignore[arg-type]
            with anyio.fail_after(2):
                await batch.done.wait()
        # every update reached the other editor (as the guard let it through: deletes aimed at
        # unseen IDs of other clients dropped, changes to server-owned meta compensated), and the
        # other editor converges on the room's document
        sent = _updates(other)
        assert len(sent) == len(updates) and len(store.rows) >= len(updates)
        mirror: Doc = Doc()
        for update in sent:
            mirror.apply_update(update)
        assert doc.get_state() == mirror.get_state()
        assert doc.get("meta", type=Map).to_py() == mirror.get("meta", type=Map).to_py()
        tg.cancel_scope.cancel()


async def test_an_editors_language_switch_reaches_the_session_row() -> None:
    store = MemoryStore()
    doc: Doc = Doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=0, snapshot_seq=0), tg)  # type: ignore[arg-type]
        author = RecordingConnection()
        room.clients.add(author)  # type: ignore[arg-type]
        client: Doc = Doc()
        meta = client.get("meta", type=Map)
        for value in ("go", "go", "rust"):  # the same value again is no change
            before = client.get_state()
            meta["language"] = value
            batch = room.queue_update(client.get_update(before), author)  # type: ignore[arg-type]
            with anyio.fail_after(2):
                await batch.done.wait()
        assert [c.fields for c in store.changes] == [{"language": "go"}, {"language": "rust"}]
        tg.cancel_scope.cancel()
