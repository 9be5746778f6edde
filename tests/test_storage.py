"""The stores on their own: schema versions, group commit, snapshot + tail, isolation.

Tests taking ``make_store`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from pycrdt import Doc, Text

from crdt_server.document import initial_document, read_text
from crdt_server.lifetimes import Lifetimes
from crdt_server.storage import EventRecord, SessionRecord, SQLiteStore, UpdateRecord
from crdt_server.storage.base import NOTES_DOC, SMALL_LOAD_BYTES, SMALL_LOAD_ROWS, StorageQuotaExceeded
from crdt_server.storage.connections import connect
from crdt_server.storage.sqlite import MIGRATIONS, SessionGone
from crdt_server.storage.sqlite_writer import Writer
from crdt_server.sync import load_document

from .pg import BACKENDS, query  # noqa: F401  (BACKENDS: conftest runs the make_store tests on both stores)

pytestmark = pytest.mark.anyio


def session(sid: str = "s" * 22) -> SessionRecord:
    now = time.time()
    return SessionRecord(sid, "t", "python", "active", now, now, now + 3600)


async def make(store: Any, sid: str = "s" * 22, code: str = "") -> str:
    await store.create_session(session(sid), initial_document("t", "python", code), EventRecord(sid, "created", {}))
    return sid


async def test_schema_is_versioned_and_migrations_run_once(tmp_path):
    path = tmp_path / "db.sqlite"
    async with SQLiteStore(path) as store:
        await make(store)
    async with SQLiteStore(path) as store:  # reopening keeps the data and does not migrate again
        assert await store.get_session("s" * 22) is not None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_appends_are_group_committed_in_sequence(make_store):
    async with make_store() as store:
        sid = await make(store)
        seqs: list[int] = []

        async def append(i: int) -> None:
            seqs.extend(await store.append_updates([UpdateRecord(sid, bytes([i % 256]), "candidate", f"c{i}")]))

        before = store.commits
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(append, i)
        assert sorted(seqs) == list(range(2, 502))  # seq 1 is the creation update
        assert store.commits - before < 50  # many appends share one transaction


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_small_appends_commit_on_the_event_loop_unless_a_commit_fsyncs(tmp_path, durability):
    """A keystroke's append commits in the event loop's thread (no hop to the writer thread and back)
    when a commit never waits for the disk; with ``full`` (fsync per commit) it stays in the thread."""
    async with SQLiteStore(tmp_path / "db.sqlite", durability=durability) as store:
        sid = await make(store)
        loop_thread = threading.get_ident()
        ran_in = await store._write(lambda c: threading.get_ident(), inline=True)
        assert (ran_in == loop_thread) == (durability == "normal")
        before = store.commits
        await anyio.sleep(0)  # a new turn of the loop
        async with anyio.create_task_group() as tg:  # one turn: the first commits at once, the rest together
            for i in range(20):
                tg.start_soon(store.append_updates, [UpdateRecord(sid, bytes([i]), "candidate", f"c{i}")])
        if durability == "normal":
            assert store.commits - before == 2
        snapshot, tail, _ = await store.load(sid)
        assert len(tail) == 21  # the creation update and the 20 appends, all committed


async def test_history_events_of_one_turn_share_one_commit_in_order(tmp_path):
    """A connect storm writes a join event per socket: those written in one turn of the event loop are
    committed together (none alone at once, as a keystroke's append is), in the order they were written."""
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        sid = await make(store)
        await anyio.sleep(0)
        before = store.commits
        written: list[str] = []

        async def join(i: int) -> None:
            written.append(f"c{i}")
            await store.append_events([EventRecord(sid, "participant_joined", {"connectionId": f"c{i}"})])

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(join, i)
        assert store.commits - before == 1
        events = await store.read_events(sid, 0, 100)
        assert [e.data["connectionId"] for e in events if e.type == "participant_joined"] == written


async def test_an_append_waiting_for_another_process_lock_never_blocks_the_event_loop(tmp_path):
    """The write lock held elsewhere (a backup, a shell): the append waits in the writer thread, and the
    event loop keeps running meanwhile; the append is stored once the lock is released."""
    path = tmp_path / "db.sqlite"
    async with SQLiteStore(path) as store:
        sid = await make(store)
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.append_updates, [UpdateRecord(sid, b"x", "candidate", "c")])
                started = time.monotonic()
                await anyio.sleep(0.2)
                assert time.monotonic() - started < 1.0  # the loop was not stuck in a 30 s busy wait
                lock.execute("ROLLBACK")
        finally:
            lock.close()
        assert len((await store.load(sid))[1]) == 2


async def test_one_failing_operation_does_not_roll_back_its_batch(make_store):
    async with make_store() as store:
        sid = await make(store)
        results = {}

        async def good() -> None:
            results["good"] = await store.append_updates([UpdateRecord(sid, b"x", "candidate", "c")])

        async def bad() -> None:
            with pytest.raises(SessionGone):
                await store.append_updates([UpdateRecord("missing" * 4, b"x", "candidate", "c")])
            results["bad"] = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(good)
            tg.start_soon(bad)
        assert results == {"good": [2], "bad": True}
        assert [u.seq for u in await store.read_updates(sid, 0, 10)] == [1, 2]


async def test_load_is_latest_snapshot_plus_tail(make_store):
    async with make_store() as store:
        sid = await make(store, code="a")
        doc: Doc = Doc()
        doc.apply_update((await store.read_updates(sid, 0, 1))[0].data)
        text = doc.get("code", type=Text)

        async def edit(s: str) -> None:
            before = doc.get_state()
            text.insert(len(text), s)
            await store.append_updates([UpdateRecord(sid, doc.get_update(before), "candidate", "c")])

        for ch in "bcd":
            await edit(ch)
        await store.write_snapshot(sid, 4, doc.get_update())
        for ch in "ef":
            await edit(ch)
        snapshot, tail, base = await store.load(sid)
        assert snapshot is not None and base == 4 and [u.seq for u in tail] == [5, 6]
        loaded, last, snap_seq, *_ = await load_document(store, sid)
        assert (read_text(loaded), last, snap_seq) == ("abcdef", 6, 4)
        # the full log is kept for history and playback
        assert len(await store.read_updates(sid, 0, 100)) == 6


@pytest.mark.parametrize("rows, chunk", [(3, 10), (SMALL_LOAD_ROWS + 5, 10), (3, SMALL_LOAD_BYTES)],
                         ids=["small", "many-rows", "many-bytes"])
async def test_a_document_loads_the_same_on_the_event_loop_or_in_a_thread(make_store, rows, chunk):
    """Small documents load on the event loop, others in worker threads: the same text and seq either way."""
    async with make_store() as store:
        sid = await make(store, code="a")
        doc: Doc[Any] = Doc()
        doc.apply_update((await store.read_updates(sid, 0, 1))[0].data)
        text = doc.get("code", type=Text)
        for i in range(rows):
            before = doc.get_state()
            text.insert(len(text), str(i % 10) * chunk)
            await store.append_updates([UpdateRecord(sid, doc.get_update(before), "candidate", "c")])
        loaded, last, *_, small = await load_document(store, sid)
        assert small == (rows <= SMALL_LOAD_ROWS and chunk < SMALL_LOAD_BYTES)
        assert (read_text(loaded), last) == (read_text(doc), rows + 1)


async def test_delete_removes_everything_and_later_appends_fail(make_store):
    async with make_store() as store:
        sid = await make(store)
        await store.append_events([EventRecord(sid, "x", {})])
        assert await store.delete_session(sid)
        assert await store.get_session(sid) is None
        assert await store.read_updates(sid, 0, 10) == []
        assert await store.read_events(sid, 0, 10) == []
        with pytest.raises(SessionGone):
            await store.append_updates([UpdateRecord(sid, b"x", "candidate", "c")])


async def test_close_commits_what_is_queued(make_store):
    async with make_store() as store:
        appended: list[list[int]] = []
        sid = await make(store)

        async def append() -> None:
            appended.append(await store.append_updates([UpdateRecord(sid, b"x", "candidate", "c")]))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(append)
            await wait_all_tasks_blocked()  # all queued: close must commit them
            await store.close()
    async with make_store() as store:
        assert (await store.get_session(sid)) is not None
        assert len(appended) == 20 and len(await store.read_updates(sid, 0, 100)) == 21


async def test_reads_reuse_a_bounded_pool_of_connections(tmp_path):
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        sid = await make(store)
        for _ in range(3):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(store.get_session, sid)
        assert len(store._readers) <= 8  # not one more per burst (or per worker thread)


async def test_lifetimes_migration_keeps_old_sessions_under_the_current_rule(tmp_path):
    """A database of the first schema: its sessions get a token generation (0, so tokens signed
    before still work) and an expires_at by the lifetimes rule, ended ones counted from their last change."""
    path = tmp_path / "db.sqlite"
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
        for sid, status in (("a" * 22, "active"), ("e" * 22, "ended")):
            db.execute("INSERT INTO sessions (id, title, language, status, created_at, updated_at, expires_at) "
                       "VALUES (?, '', 'python', ?, ?, ?, ?)", (sid, status, now - 100, now - 50, now + 86400))
    async with SQLiteStore(path, lifetimes=Lifetimes(session_ttl=10, ended_retention=1000)) as store:
        active, ended = await store.get_session("a" * 22), await store.get_session("e" * 22)
        assert active is not None and ended is not None
        assert active.expires_at == pytest.approx(now - 50 + 10) and active.token_generation == 0
        assert ended.expires_at == pytest.approx(now - 50 + 1000) and ended.ended_at is None
        assert await store.expired_sessions(time.time()) == ["a" * 22]
        assert await store.reissue_tokens("e" * 22, EventRecord("e" * 22, "tokens_reissued", {})) == 1
        assert await store.reissue_tokens("gone" * 6, EventRecord("gone" * 6, "tokens_reissued", {})) is None


async def test_the_notes_document_has_a_log_of_its_own(make_store):
    """Per-(session, document) sequences: notes rows never show in the main log, its ``last_seq``
    or its snapshots, and the main document's rows never in the notes'."""
    async with make_store() as store:
        sid = await make(store, code="main")
        notes: Doc = Doc()
        text = notes.get("notes", type=Text)
        for ch in "ab":
            before = notes.get_state()
            text.insert(len(text), ch)
            assert await store.append_updates(
                [UpdateRecord(sid, notes.get_update(before), "interviewer", "i")], doc="notes") == [len(str(text))]
        with pytest.raises(ValueError):  # past the notes log (2 rows), though the main log is shorter still
            await store.write_snapshot(sid, 3, notes.get_update(), doc="notes")
        await store.write_snapshot(sid, 2, notes.get_update(), doc="notes")
        assert [u.seq for u in await store.read_updates(sid, 0, 10)] == [1]  # the main log: the starter only
        loaded, last, snap_seq, *_ = await load_document(store, sid, "notes")
        assert (str(loaded.get("notes", type=Text)), last, snap_seq) == ("ab", 2, 2)
        main, main_last, *_ = await load_document(store, sid)
        assert (read_text(main), main_last, str(main.get("notes", type=Text))) == ("main", 1, "")
        assert [u.seq for u in await store.read_updates(sid, 0, 10, doc="notes")] == [1, 2]
        assert await store.last_seqs([sid, "gone"], doc="notes") == {sid: 2}
        assert await store.last_seqs([sid, "gone"]) == {sid: 1}
        assert await store.delete_session(sid)
        assert await query(store, "SELECT (SELECT count(*) FROM notes_updates) + (SELECT count(*) FROM notes_snapshots)") == [(0,)]


async def test_one_batch_keeps_each_append_to_its_own_fate(make_store):
    """Appends queued together (one transaction): the ones past the session's quota are refused one
    by one (earlier ones that fit still commit), a deleted session's are refused, others commit;
    a display name with a NUL byte is stored (PostgreSQL text cannot hold NUL: it becomes U+FFFD)."""
    async with make_store(session_quota=2000) as store:
        full, other = await make(store, "f" * 22), await make(store, "o" * 22)
        results: dict[str, Any] = {}

        async def append(key: str, sid: str, size: int, name: str = "") -> None:
            try:
                results[key] = await store.append_updates([UpdateRecord(sid, b"u" * size, "candidate", "c", name)])
            except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
                results[key] = type(exc).__name__

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(append, f"full{i}", full, 600)  # the starter + 3 x 600 fit, the 4th does not
            tg.start_soon(append, "gone", "g" * 22, 10)
            tg.start_soon(append, "other", other, 10, "Eve\x00")
        fates = [results[f"full{i}"] for i in range(4)]
        assert sorted(fates, key=repr) == sorted([[2], [3], [4], "StorageQuotaExceeded"], key=repr)
        assert results["gone"] == "SessionGone" and results["other"] == [2]
        assert [u.seq for u in await store.read_updates(full, 0, 10)] == [1, 2, 3, 4]
        [stored] = await store.read_updates(other, 1, 10)
        assert stored.name in ("Eve\x00", "Eve\ufffd")


async def test_an_append_refused_on_its_own_leaves_no_trace(make_store):
    """An append committed alone (no neighbours, so no savepoint of its own) that is refused is
    rolled back whole: the session's sequence and stored bytes stay, and the next append that fits
    gets the next number and still fits."""
    async with make_store(session_quota=2000) as store:
        sid = await make(store)

        def update(size: int) -> list[UpdateRecord]:
            return [UpdateRecord(sid, b"u" * size, "candidate", "c")]

        assert await store.append_updates(update(1500)) == [2]
        with pytest.raises(StorageQuotaExceeded):
            await store.append_updates(update(600))
        assert await store.append_updates(update(100)) == [3]
        assert [u.seq for u in await store.read_updates(sid, 0, 10)] == [1, 2, 3]


@asynccontextmanager
async def running_writer(tmp_path: Path) -> AsyncIterator[Writer]:
    """The SQLite store's write connection and its thread, on a database of the test's own."""
    writer = Writer("normal")
    writer.start(connect(tmp_path / "db.sqlite", "normal"), asyncio.get_running_loop())
    try:
        yield writer
    finally:
        await anyio.to_thread.run_sync(writer.stop)


@pytest.mark.parametrize("inline", [False, True], ids=["writer-thread", "event-loop"])
async def test_an_operation_whose_writes_sqlite_rolled_back_is_a_failure_not_a_success(tmp_path, inline):
    """An operation alone in its transaction (no savepoint to release) that returns normally after
    SQLite rolled the transaction back under it (``INSERT OR ROLLBACK`` on a conflict, an error the
    operation caught) must fail, as it would in a batch; and the store reports the write error."""
    async with running_writer(tmp_path) as writer:
        writer.conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")  # type: ignore[union-attr]

        def hides_the_rollback(c: sqlite3.Connection) -> str:
            c.execute("INSERT INTO t VALUES (1)")
            try:
                c.execute("INSERT OR ROLLBACK INTO t VALUES (1)")
            except sqlite3.IntegrityError:
                pass
            return "ok"

        op = writer.submit(hides_the_rollback, inline=inline)
        await op.done.wait()
        assert isinstance(op.error, sqlite3.OperationalError) and writer.write_error is not None
        assert writer.conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # type: ignore[union-attr]
        assert not writer.conn.in_transaction  # type: ignore[union-attr]


async def test_the_write_error_stays_until_a_commit_succeeds(tmp_path):
    """/health reports the newest write failure until a later commit succeeds: an operation refused
    for another reason (a deleted session, a quota) commits nothing and proves nothing."""
    def refused(c: sqlite3.Connection) -> None:
        raise ValueError("refused")

    async with running_writer(tmp_path) as writer:
        for fn, error_after in ((lambda c: c.execute("INSERT INTO missing VALUES (1)"), True), (refused, True),
                                (lambda c: c.execute("CREATE TABLE t (k)"), False)):
            op = writer.submit(fn, inline=True)
            await op.done.wait()
            assert (writer.write_error is not None) == error_after


async def test_an_edit_postpones_the_sessions_expiry_and_a_notes_edit_does_not(make_store):
    """The inactivity TTL counts from the last edit of the code, committed with the edit itself;
    the interviewer's private notes are not activity the others could see."""
    async with make_store(lifetimes=Lifetimes(session_ttl=100)) as store:
        sid = await make(store)
        await store.append_updates([UpdateRecord(sid, b"u", "candidate", "c")])
        edited = await store.get_session(sid)
        assert edited.updated_at > 0 and edited.expires_at == pytest.approx(edited.updated_at + 100)
        await anyio.sleep(0.05)
        await store.append_updates([UpdateRecord(sid, b"n", "interviewer", "i")], doc=NOTES_DOC)
        assert (await store.get_session(sid)).expires_at == edited.expires_at
        await store.append_updates([UpdateRecord(sid, b"v", "candidate", "c")])
        later = await store.get_session(sid)
        assert later.expires_at > edited.expires_at and later.expires_at == pytest.approx(later.updated_at + 100)


async def test_a_read_the_event_loop_cannot_make_at_once_waits_for_the_lock_in_a_thread(tmp_path):
    """Point reads run on the event loop (a WebSocket connect makes two). One that finds SQLite busy
    must neither fail nor stall the loop: it waits for the lock in a worker thread. (In WAL mode a
    plain SELECT is rarely busy; a read that takes the write lock is, while another process holds it.)"""
    path = tmp_path / "db.sqlite"
    async with SQLiteStore(path) as store:
        sid = await make(store)
        assert (await store.get_session(sid)) is not None  # the loop's own reader exists now
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        def release() -> None:
            time.sleep(0.5)
            other.execute("ROLLBACK")
            other.close()

        def locked_read(c: sqlite3.Connection) -> str:
            c.execute("BEGIN IMMEDIATE")
            try:
                return str(c.execute("SELECT title FROM sessions WHERE id = ?", (sid,)).fetchone()[0])
            finally:
                c.execute("ROLLBACK")

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            threading.Thread(target=release).start()
            started = time.monotonic()
            title = await store._read(locked_read, inline=True)
            waited = time.monotonic() - started
            tg.cancel_scope.cancel()
        assert title == "t"
        assert waited >= 0.4  # it did wait for the lock...
        assert ticks >= 10  # ...and the event loop ran meanwhile
