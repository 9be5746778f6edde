"""The room's ingest loop in-process, with an in-memory store: the write-ahead order and its failures.

No server and no socket: a recording connection stands in for a WebSocket (the end-to-end suites
cover the real ones), so each property is checked directly and in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Map, Text

from crdt_server.document import initial_document
from crdt_server.storage import SessionChange, SessionGone, UpdateRecord
from crdt_server.sync import Origin, RoomOptions, SessionRoom
from crdt_server.sync import protocol as p
from crdt_server.sync.connection import NotNow
from crdt_server.sync.updates import GC, decode

pytestmark = pytest.mark.anyio

OPTIONS = RoomOptions(grace=1.0, snapshot_every=1000, persist=True, presence_interval=0.0, max_pending=100)


class MemoryStore:
    """The part of the Store interface a room uses, in memory; ``gate`` holds commits back."""

    def __init__(self) -> None:
        self.rows: list[UpdateRecord] = []
        self.changes: list[SessionChange] = []
        self.gate = anyio.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    async def append_updates(
        self, updates: Sequence[UpdateRecord], changes: Sequence[SessionChange] = (), doc: str = "main"
    ) -> list[int]:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        start = len(self.rows) + 1
        self.rows.extend(updates)
        self.changes.extend(changes)
        return list(range(start, start + len(updates)))

    async def change_session(self, change: SessionChange) -> Any:
        self.changes.append(change)
        return None

    async def write_snapshot(self, session_id: str, seq: int, state: bytes, doc: str = "main") -> None:
        pass


class RecordingConnection:
    """What a room needs of a connection: who it is, and a send queue that records."""

    def __init__(self, role: str = "candidate") -> None:
        self.role = role
        self.id = f"conn-{role}-{id(self)}"
        self.name: str | None = None
        self.client_ids: set[int] = set()
        self.authored: set[int] = set()
        self.editor_events = 0
        self.sent: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None

    @property
    def read_only(self) -> bool:
        return self.role == "observer"

    @property
    def origin(self) -> Origin:
        return Origin(self.role, self.id, self.name or "")

    def enqueue(self, message: bytes, wire: bytes | None = None) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def _doc() -> Doc:
    doc: Doc = Doc()
    doc.apply_update(initial_document("t", "python", "start"))
    return doc


def _edit(base: Doc, text: str) -> bytes:
    """An editor's update appending ``text`` to a copy of ``base``."""
    client: Doc = Doc()
    client.apply_update(base.get_update())
    before = client.get_state()
    code = client.get("code", type=Text)
    code.insert(len(code), text)
    return client.get_update(before)


def _updates(conn: RecordingConnection) -> list[bytes]:
    return [p.parse_sync(f).payload for f in conn.sent if f[0] == p.MSG_SYNC and f[1] == p.SYNC_UPDATE]


async def _started(room: SessionRoom, tg: anyio.abc.TaskGroup) -> SessionRoom:
    await tg.start(room.start)
    return room


async def test_nobody_receives_an_update_before_it_is_committed() -> None:
    store = MemoryStore()
    store.gate = anyio.Event()  # commits wait until the test opens the gate
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        author, other = RecordingConnection(), RecordingConnection("observer")
        room.clients.update({author, other})  # type: ignore[arg-type]
        update = _edit(doc, "!")
        batch = room.queue_update(update, author)  # type: ignore[arg-type]
        await anyio.sleep(0.05)
        assert _updates(other) == [] and str(doc.get("code", type=Text)) == "start"  # not committed: unseen
        store.gate.set()
        with anyio.fail_after(2):
            await batch.done.wait()
        assert [r.data for r in store.rows] == [update]
        assert _updates(other) == [update]  # committed, then broadcast
        # the author is not sent its own update back, only its content IDs (sync/confirm.py)
        [confirmation] = _updates(author)
        assert confirmation != update and {s.ref for s in decode(confirmation).structs} == {GC}
        assert str(doc.get("code", type=Text)) == "start!"
        tg.cancel_scope.cancel()


async def test_a_sync_answer_waits_while_a_guarded_update_is_applied_but_not_committed() -> None:
    """The guarded path applies before it commits: a newcomer's sync step 1 meanwhile is answered only
    once the commit is in (``take_frame`` refuses it with ``NotNow``; ``handle_frame`` waits), so no
    answer ever holds an update the log lacks."""
    store = MemoryStore()
    store.gate = anyio.Event()
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        author, newcomer = RecordingConnection("interviewer"), RecordingConnection()
        client: Doc = Doc()
        client.apply_update(doc.get_update())
        before = client.get_state()
        client.get("meta", type=Map)["language"] = "javascript"  # the guarded path: watched as it is applied
        batch = room.queue_update(client.get_update(before), author)  # type: ignore[arg-type]
        try:
            with anyio.fail_after(2):
                while room._settled.is_set():  # applied, waiting for its commit
                    await anyio.sleep(0.01)
            with pytest.raises(NotNow):
                room.take_frame(newcomer, p.sync_frame(p.SYNC_STEP1, p.EMPTY_STATE_VECTOR))  # type: ignore[arg-type]
            tg.start_soon(room.handle_frame, newcomer, p.sync_frame(p.SYNC_STEP1, p.EMPTY_STATE_VECTOR))
            await anyio.sleep(0.05)
            assert newcomer.sent == []  # not answered while uncommitted
        finally:
            store.gate.set()  # (a failure above must not leave the shielded commit waiting for ever)
        with anyio.fail_after(2):
            await batch.done.wait()
            while not newcomer.sent:
                await anyio.sleep(0.01)
        answer: Doc = Doc()
        answer.apply_update(p.parse_sync(newcomer.sent[0]).payload)
        assert answer.get("meta", type=Map)["language"] == "javascript"
        tg.cancel_scope.cancel()


async def test_a_failed_commit_is_neither_applied_nor_broadcast_and_closes_the_room() -> None:
    store = MemoryStore()
    store.fail = OSError("disk full")
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        author, other = RecordingConnection(), RecordingConnection()
        room.clients.update({author, other})  # type: ignore[arg-type]
        batch = room.queue_update(_edit(doc, "lost?"), author)  # type: ignore[arg-type]
        with anyio.fail_after(2):
            await batch.done.wait()
        assert isinstance(batch.error, OSError)
        assert str(doc.get("code", type=Text)) == "start" and _updates(other) == []
        # both are closed with a code y-websocket retries: the author re-sends its edit on reconnect
        assert author.closed_with is not None and author.closed_with[0] == p.CloseCode.INTERNAL_ERROR
        assert other.closed_with is not None and other.closed_with[0] == p.CloseCode.INTERNAL_ERROR
        tg.cancel_scope.cancel()


async def test_a_deleted_session_refuses_further_updates() -> None:
    store = MemoryStore()
    store.fail = SessionGone("s")
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        author = RecordingConnection()
        room.clients.add(author)  # type: ignore[arg-type]
        batch = room.queue_update(_edit(doc, "x"), author)  # type: ignore[arg-type]
        with anyio.fail_after(2):
            await batch.done.wait()
        assert isinstance(batch.error, SessionGone) and room.gone
        assert author.closed_with is not None and author.closed_with[0] == p.CloseCode.SESSION_NOT_FOUND
        with pytest.raises(SessionGone):
            room.queue_update(_edit(doc, "y"), author)  # type: ignore[arg-type]
        tg.cancel_scope.cancel()


async def test_updates_queued_behind_a_stopping_room_fail_instead_of_waiting_forever() -> None:
    store = MemoryStore()
    store.gate = anyio.Event()
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        first = room.queue_update(_edit(doc, "a"))
        await anyio.sleep(0.02)  # the first batch is in flight (held at the gate)
        second = room.queue_update(_edit(doc, "b"))
        tg.start_soon(room.stop)
        await anyio.sleep(0.02)
        store.gate.set()
        with anyio.fail_after(2):
            await first.done.wait()
            await second.done.wait()
        assert first.error is None  # what was in flight was committed and applied
        assert isinstance(second.error, SessionGone)  # what was queued behind was refused, not lost silently
        assert len(store.rows) == 1


async def test_a_server_update_commits_with_its_row_change() -> None:
    store = MemoryStore()
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        change = SessionChange("s", {"title": "new"})
        with anyio.fail_after(2):
            await room.submit(_edit(doc, "!"), change)
        assert store.changes == [change] and len(store.rows) == 1 and store.rows[0].role == "server"
        tg.cancel_scope.cancel()


async def test_malformed_updates_never_reach_the_log() -> None:
    store = MemoryStore()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", _doc(), store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        with pytest.raises(p.ProtocolError):
            room.queue_update(b"\xff\xff\xff")
        assert store.rows == []
        tg.cancel_scope.cancel()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_delete_of_text_queued_just_before_it_is_kept() -> None:
    """Ada's insert and Bob's delete of it in one batch: Ada's IDs are known from when her update was
    queued, so Bob's delete is not mistaken for one aimed at another client's unseen IDs."""
    store = MemoryStore()
    store.gate = anyio.Event()
    doc = _doc()
    async with anyio.create_task_group() as tg:
        room = await _started(SessionRoom("s", doc, store, OPTIONS, last_seq=1, snapshot_seq=0), tg)  # type: ignore[arg-type]
        ada, bob = RecordingConnection(), RecordingConnection("interviewer")
        room.clients.update({ada, bob})  # type: ignore[arg-type]
        ada_doc: Doc[Any] = Doc(client_id=111)
        ada_doc.apply_update(doc.get_update())
        before = ada_doc.get_state()
        ada_doc.get("code", type=Text).insert(0, "😀")
        insert = ada_doc.get_update(before)
        bob_doc: Doc[Any] = Doc(client_id=222)
        bob_doc.apply_update(doc.get_update())
        bob_doc.apply_update(insert)
        before = bob_doc.get_state()
        del bob_doc.get("code", type=Text)[0:4]  # the emoji: 4 UTF-8 bytes
        delete = bob_doc.get_update(before)
        room.queue_update(insert, ada)  # type: ignore[arg-type]
        batch = room.queue_update(delete, bob)  # type: ignore[arg-type]
        store.gate.set()
        with anyio.fail_after(2):
            await batch.done.wait()
        assert str(doc.get("code", type=Text)) == "start" == str(bob_doc.get("code", type=Text))
        assert [r.data for r in store.rows] == [insert, delete]  # stored as sent
        tg.cancel_scope.cancel()
