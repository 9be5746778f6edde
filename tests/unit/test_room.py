"""The room's write-ahead ingest loop with an in-memory store (crdt_server/sync/room.py), in process.

Bugs caught: an update broadcast (or applied) before its commit — a crash would then lose an edit
another participant has already seen; a failed commit that leaves sockets open on a document that
silently diverged from storage; updates queued behind a room that stops, whose senders wait forever.
Connections are real ``Connection`` objects over a fake Starlette WebSocket.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Text

from crdt_server.document import initial_document, read_text
from crdt_server.storage import SessionRecord, UpdateRecord
from crdt_server.storage.sqlite import SessionGone
from crdt_server.sync import Connection, RoomOptions, SessionServer
from crdt_server.sync import protocol as p

SID = "s" * 22
INITIAL = initial_document("t", "python", "hi")  # seq 1 of the session (random clientID: build it once)
pytestmark = pytest.mark.anyio


class MemoryStore:
    """Just what the room and the registry use; ``gate`` holds commits, ``fail`` makes them raise."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.rows: list[UpdateRecord] = [UpdateRecord(SID, INITIAL, "server", "server", seq=1)]
        self.gate: anyio.Event | None = None
        self.fail: BaseException | None = None
        self.commit_started = anyio.Event()

    async def get_session(self, session_id: str) -> SessionRecord | None:
        now = time.time()
        return SessionRecord(SID, "t", "python", "active", now, now, now + 3600) if session_id == SID else None

    async def load(self, session_id: str) -> tuple[bytes | None, list[UpdateRecord], int]:
        return None, list(self.rows), 0

    async def append_updates(self, updates: list[UpdateRecord]) -> list[int]:
        self.commit_started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        seqs = []
        for u in updates:
            seq = len(self.rows) + 1
            self.rows.append(UpdateRecord(u.session_id, u.data, u.role, u.conn_id, u.name, seq=seq))
            seqs.append(seq)
            self.journal.append(f"commit {u.data.hex()}")
        return seqs

    async def write_snapshot(self, session_id: str, seq: int, state: bytes) -> None:
        pass


class FakeWebSocket:
    """The part of ``starlette.websockets.WebSocket`` a ``Connection`` and the room use."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal
        self.inbox_send, self.inbox = anyio.create_memory_object_stream[dict[str, Any]](100)
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.receive()

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        if data[:2] == bytes((p.MSG_SYNC, p.SYNC_UPDATE)):
            self.journal.append(f"sent to {self.name} {p.parse_sync(data).payload.hex()}")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def updates_received(self) -> list[bytes]:
        return [p.parse_sync(f).payload for f in self.sent if f[:2] == bytes((p.MSG_SYNC, p.SYNC_UPDATE))]


def edit(text: str) -> bytes:
    """An update inserting ``text`` at the end of the starter code."""
    doc: Doc[Any] = Doc()
    doc.apply_update(INITIAL)
    before = doc.get_state()
    doc.get("code", type=Text).insert(2, text)
    return doc.get_update(before)


@asynccontextmanager
async def running(store: MemoryStore) -> AsyncIterator[SessionServer]:
    server = SessionServer(store, RoomOptions(grace=60, presence_interval=0))  # type: ignore[arg-type]
    with anyio.fail_after(10):  # a failing test must fail, not hang
        async with server:
            try:
                yield server
            finally:
                if store.gate is not None:  # a held commit is shielded: release it or stopping waits forever
                    store.gate.set()


@asynccontextmanager
async def connected(server: SessionServer, ws: FakeWebSocket, role: str = "candidate") -> AsyncIterator[Connection]:
    conn = Connection(ws, session_id=SID, role=role, max_messages=100, max_bytes=1 << 20)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(conn.run_sender)
        tg.start_soon(server.serve, conn)
        with anyio.fail_after(5):
            while not ws.sent:  # sync step 1 arrived: the connection is in the room
                await anyio.sleep(0.001)
        try:
            yield conn
        finally:
            await ws.inbox_send.send({"type": "websocket.disconnect", "code": 1000})
            conn.close(1000, "")
    ws.inbox_send.close()
    ws.inbox.close()


async def until(predicate: Any) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.sleep(0.001)


async def test_commit_happens_before_broadcast_and_apply() -> None:
    journal: list[str] = []
    store = MemoryStore(journal)
    store.gate = anyio.Event()
    update = edit(" there")
    a, b = FakeWebSocket("a", journal), FakeWebSocket("b", journal)
    async with running(store) as server, connected(server, a), connected(server, b):
        room = server.rooms[SID]
        await a.inbox_send.send({"type": "websocket.receive", "bytes": p.sync_frame(p.SYNC_UPDATE, update)})
        with anyio.fail_after(5):
            await store.commit_started.wait()
        await anyio.sleep(0.05)  # the commit is held: nothing may leave or change meanwhile
        assert b.updates_received() == []
        assert read_text(room.ydoc) == "hi"
        store.gate.set()
        await until(lambda: b.updates_received() == [update])
        assert read_text(room.ydoc) == "hi there"
        assert journal == [f"commit {update.hex()}", f"sent to b {update.hex()}"]  # never echoed to a
        assert a.updates_received() == []
        assert store.rows[-1].conn_id != "server" and store.rows[-1].role == "candidate"


async def test_failed_commit_closes_the_sockets_and_applies_nothing() -> None:
    journal: list[str] = []
    store = MemoryStore(journal)
    store.fail = OSError("disk full")
    a, b = FakeWebSocket("a", journal), FakeWebSocket("b", journal)
    async with running(store) as server, connected(server, a), connected(server, b):
        room = server.rooms[SID]
        await a.inbox_send.send({"type": "websocket.receive", "bytes": p.sync_frame(p.SYNC_UPDATE, edit("!"))})
        await until(lambda: a.closed is not None and b.closed is not None)
        assert a.closed is not None and a.closed[0] == 1011
        assert b.closed is not None and b.closed[0] == 1011
        assert b.updates_received() == []
        assert read_text(room.ydoc) == "hi"
        with pytest.raises(OSError):  # a server-side write hears about it too
            await room.submit(edit("?"))


async def test_session_deleted_during_commit_closes_with_4404() -> None:
    journal: list[str] = []
    store = MemoryStore(journal)
    store.fail = SessionGone(SID)
    a = FakeWebSocket("a", journal)
    async with running(store) as server, connected(server, a):
        await a.inbox_send.send({"type": "websocket.receive", "bytes": p.sync_frame(p.SYNC_UPDATE, edit("!"))})
        await until(lambda: a.closed is not None)
        assert a.closed is not None and a.closed[0] == 4404


async def test_stopped_room_fails_queued_updates_instead_of_hanging() -> None:
    journal: list[str] = []
    store = MemoryStore(journal)
    store.gate = anyio.Event()
    first, second = edit("1"), edit("2")
    async with running(store) as server:
        async with server.room(SID) as room:
            outcome: dict[str, BaseException | None] = {}

            async def submit(name: str, update: bytes) -> None:
                try:
                    await room.submit(update)
                    outcome[name] = None
                except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
                    outcome[name] = exc

            async with anyio.create_task_group() as tg:
                tg.start_soon(submit, "first", first)
                with anyio.fail_after(5):
                    await store.commit_started.wait()  # "first" is being committed
                tg.start_soon(submit, "second", second)  # queued behind it
                await until(lambda: len(room._batch.items) == 1)  # private: the batch being filled
                await room.stop()
                store.gate.set()  # the commit in flight completes (shielded), the queued one never starts
            assert outcome["first"] is None
            assert isinstance(outcome["second"], SessionGone)
            assert [r.data for r in store.rows[1:]] == [first]


async def test_garbage_update_is_refused_before_storage() -> None:
    journal: list[str] = []
    store = MemoryStore(journal)
    a = FakeWebSocket("a", journal)
    async with running(store) as server, connected(server, a):
        await a.inbox_send.send({"type": "websocket.receive", "bytes": p.sync_frame(p.SYNC_UPDATE, b"\xff\xff\xff")})
        await until(lambda: a.closed is not None)
        assert a.closed is not None and a.closed[0] == 1007
        assert len(store.rows) == 1 and not store.commit_started.is_set()


async def test_observer_updates_are_dropped() -> None:
    journal: list[str] = []
    store = MemoryStore(journal)
    obs, b = FakeWebSocket("obs", journal), FakeWebSocket("b", journal)
    async with running(store) as server, connected(server, obs, role="observer"), connected(server, b):
        await obs.inbox_send.send({"type": "websocket.receive", "bytes": p.sync_frame(p.SYNC_UPDATE, edit("x"))})
        # a state vector from the observer is still answered: it stays in sync
        await obs.inbox_send.send({"type": "websocket.receive", "bytes": p.sync_frame(p.SYNC_STEP1, b"\x00")})
        await until(lambda: any(f[:2] == bytes((p.MSG_SYNC, p.SYNC_STEP2)) for f in obs.sent))
        assert len(store.rows) == 1 and b.updates_received() == []
        assert read_text(server.rooms[SID].ydoc) == "hi"
