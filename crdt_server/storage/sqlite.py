"""SQLite store: WAL mode, one writer thread with group commit, readers on worker threads.

Why group commit: the sync layer awaits every append before it broadcasts (write-ahead), so
commits are on the latency path. A dedicated writer thread takes *everything* queued while
the previous transaction was in flight and commits it in one transaction, so the event loop
never blocks. Operations reach it through a thread-safe queue and their waiters are woken with
one ``call_soon_threadsafe`` per batch: no event-loop round trip between an append and its
commit. Each operation runs under its own SAVEPOINT so one failing operation does not roll
back its neighbours in the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio

from ..lifetimes import Lifetimes
from .base import SESSION_FIELDS, EventRecord, SessionChange, SessionGone, SessionRecord, StoreClosed, UpdateRecord
from .sqlite_lifetimes import next_generation, refresh_all, refresh_expiry

log = logging.getLogger(__name__)
T = TypeVar("T")

# Versioned schema: MIGRATIONS[i] upgrades user_version i -> i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        language TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_expiry ON sessions(expires_at);
    CREATE TABLE updates (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        conn_id TEXT NOT NULL,
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE snapshots (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        ts REAL NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_session ON events(session_id, id);
    """,
    # 2: lifetimes (crdt_server/lifetimes.py); an ended row without ended_at counts from updated_at
    "ALTER TABLE sessions ADD COLUMN keep_until REAL NOT NULL DEFAULT 0; ALTER TABLE sessions ADD COLUMN ended_at REAL;"
    " ALTER TABLE sessions ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;",
]

_SESSION_COLUMNS = "id, title, language, status, created_at, updated_at, expires_at, keep_until, ended_at, token_generation"


@dataclass
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: BaseException | None = None


def _wake(ops: list[_Op]) -> None:
    for op in ops:
        op.done.set()


def _connect(path: Path, durability: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(*row)


class SQLiteStore:
    """The embedded default store (see the module docstring for the write path)."""

    def __init__(self, path: Path, *, durability: str = "normal", lifetimes: Lifetimes | None = None) -> None:
        self.path = Path(path)
        self.durability = durability
        self.lifetimes = lifetimes or Lifetimes()
        self._writer: sqlite3.Connection | None = None
        # Reader connections are pooled, not per thread: anyio retires idle worker threads, and
        # per-thread connections would then leak. The pool never exceeds peak read concurrency.
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._closed = False
        self.commits = 0  # transactions committed (for benchmarks and tests)
        self.observe_commit: Callable[[float], None] = lambda seconds: None  # metrics; called in the writer thread

    # lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await anyio.to_thread.run_sync(self._open_writer)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._writer_thread, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoint_thread, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self.path, self.durability)
        # Checkpoints (which fsync) run in their own thread, never inside a commit that a
        # broadcast is waiting for; see _checkpoint_thread.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target + 1}")
            conn.execute("COMMIT")
            log.info("storage schema migrated to version %d", target + 1)
        refresh_all(conn, self.lifetimes)  # expires_at follows the current settings (e.g. a new retention)
        return conn

    async def close(self) -> None:
        """Commit what is queued, then refuse further writes."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._thread is not None:
                self._queue.put(None)  # after everything already queued
                await anyio.to_thread.run_sync(self._thread.join)
            if self._checkpointer is not None:
                self._stop_checkpoints.set()
                await anyio.to_thread.run_sync(self._checkpointer.join)
            await anyio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        if self._writer is not None:
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    async def ping(self) -> bool:
        try:
            return await self._read(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    # plumbing ----------------------------------------------------------------------------
    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._thread is None:
            raise StoreClosed("store is closed")
        op = _Op(fn)
        self._queue.put(op)
        # A queued operation is committed even if its caller goes away meanwhile.
        with anyio.CancelScope(shield=True):
            await op.done.wait()
        if op.error is not None:
            raise op.error
        return cast(T, op.result)

    def _writer_thread(self) -> None:
        """Take everything queued, commit it in one transaction, wake the waiters; repeat."""
        assert self._loop is not None
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            ops = [first]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                ops.append(nxt)
            try:
                self._run_batch(ops)
            except BaseException as exc:  # the whole transaction failed
                log.exception("storage commit failed")
                for op in ops:
                    op.error = op.error or exc
            try:
                self._loop.call_soon_threadsafe(_wake, ops)
            except RuntimeError:  # the event loop is gone (interpreter shutdown): nobody waits
                return

    def _checkpoint_thread(self, interval: float = 1.0) -> None:
        """Copy the WAL back into the database every ``interval`` s while there are new commits.

        PASSIVE never blocks the writer; the fsync it does costs this thread, not a commit.
        A final checkpoint runs at close.
        """
        conn = _connect(self.path, self.durability)
        try:
            done = self.commits
            while True:
                stopping = self._stop_checkpoints.wait(interval)
                if self.commits != done or stopping:
                    done = self.commits
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error as exc:
                        log.warning("WAL checkpoint failed: %r", exc)
                if stopping:
                    return
        finally:
            conn.close()

    def _run_batch(self, ops: list[_Op]) -> None:
        conn = self._writer
        assert conn is not None
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(conn)
                    conn.execute("RELEASE op")
                except Exception as exc:  # noqa: BLE001 - one failing operation must not fail its batch
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    op.error = exc
            conn.execute("COMMIT")
            self.commits += 1
            self.observe_commit(time.perf_counter() - started)
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._idle_readers.get_nowait()
        except queue.Empty:
            conn = _connect(self.path, self.durability)
            with self._readers_lock:
                self._readers.append(conn)
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:  # a read that failed halfway
                conn.rollback()
            self._idle_readers.put(conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed("store is closed")
        return await anyio.to_thread.run_sync(self._with_reader, fn)

    # sessions ----------------------------------------------------------------------------
    async def create_session(self, session: SessionRecord, initial_update: bytes, event: EventRecord) -> None:
        def op(c: sqlite3.Connection) -> None:
            values = astuple(session)  # the fields in _SESSION_COLUMNS order
            c.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}, last_seq) VALUES ({', '.join('?' * len(values))}, 1)", values)
            c.execute(
                "INSERT INTO updates VALUES (?, 1, ?, 'server', 'server', '', ?)",
                (session.id, session.created_at, initial_update),
            )
            _insert_events(c, [event])

        await self._write(op)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._read(
            lambda c: c.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        )
        return _session(row) if row else None

    async def change_session(self, change: SessionChange) -> SessionRecord | None:
        def op(c: sqlite3.Connection) -> SessionRecord | None:
            if not _apply_change(c, change, self.lifetimes):
                return None
            row = c.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (change.session_id,)).fetchone()
            return _session(row) if row else None

        return await self._write(op)

    async def delete_session(self, session_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            gone = c.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount
            for table in ("updates", "snapshots", "events"):
                c.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
            return gone > 0

        return await self._write(op)

    async def reissue_tokens(self, session_id: str, event: EventRecord) -> int | None:
        def op(c: sqlite3.Connection) -> int | None:
            _insert_events(c, [event])  # only while the session exists
            return next_generation(c, session_id)

        return await self._write(op)

    async def expired_sessions(self, now: float) -> list[str]:
        rows = await self._read(lambda c: c.execute("SELECT id FROM sessions WHERE expires_at <= ?", (now,)).fetchall())
        return [r[0] for r in rows]

    # update log --------------------------------------------------------------------------
    async def append_updates(
        self, updates: Sequence[UpdateRecord], changes: Sequence[SessionChange] = ()
    ) -> list[int]:
        """Commit the updates and their changes; returns their per-session sequence numbers (commit order)."""
        if not updates and not changes:
            return []
        now = time.time()

        def op(c: sqlite3.Connection) -> list[int]:
            counts: dict[str, int] = {}
            for u in updates:
                counts[u.session_id] = counts.get(u.session_id, 0) + 1
            next_seq: dict[str, int] = {}
            for sid, n in counts.items():
                row = c.execute(
                    "UPDATE sessions SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? RETURNING last_seq",
                    (n, now, sid),
                ).fetchone()
                if row is None:
                    raise SessionGone(sid)
                refresh_expiry(c, self.lifetimes, sid)
                next_seq[sid] = row[0] - n + 1
            seqs = []
            rows = []
            for u in updates:
                seq = next_seq[u.session_id]
                next_seq[u.session_id] = seq + 1
                seqs.append(seq)
                rows.append((u.session_id, seq, now, u.conn_id, u.role, u.name, u.data))
            c.executemany("INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            for change in changes:
                if not _apply_change(c, change, self.lifetimes):
                    raise SessionGone(change.session_id)
            return seqs

        return await self._write(op)

    async def load(self, session_id: str) -> tuple[bytes | None, list[UpdateRecord], int]:
        def fn(c: sqlite3.Connection) -> tuple[bytes | None, list[UpdateRecord], int]:
            c.execute("BEGIN")  # one consistent read of snapshot + tail
            try:
                snap = c.execute(
                    "SELECT seq, data FROM snapshots WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
                ).fetchone()
                base = snap[0] if snap else 0
                tail = _updates(c, session_id, base, -1)
            finally:
                c.execute("COMMIT")
            return (snap[1] if snap else None), tail, base

        return await self._read(fn)

    async def write_snapshot(self, session_id: str, seq: int, state: bytes) -> None:
        def op(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
                raise SessionGone(session_id)
            c.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)", (session_id, seq, time.time(), state))

        await self._write(op)

    async def read_updates(self, session_id: str, after: int, limit: int) -> list[UpdateRecord]:
        return await self._read(lambda c: _updates(c, session_id, after, limit))

    # events ------------------------------------------------------------------------------
    async def append_events(self, events: Sequence[EventRecord]) -> None:
        await self._write(lambda c: _insert_events(c, events))

    async def read_events(self, session_id: str, after: int, limit: int) -> list[EventRecord]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, ts, type, data FROM events WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
                (session_id, after, limit),
            ).fetchall()
        )
        return [EventRecord(session_id, t, json.loads(d), seq=i, ts=ts) for i, ts, t, d in rows]


def _updates(c: sqlite3.Connection, session_id: str, after: int, limit: int) -> list[UpdateRecord]:
    rows = c.execute(
        "SELECT seq, ts, conn_id, role, name, data FROM updates WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (session_id, after, limit),
    ).fetchall()
    return [UpdateRecord(session_id, d, r, ci, n, seq=s, ts=ts) for s, ts, ci, r, n, d in rows]


def _apply_change(c: sqlite3.Connection, change: SessionChange, lifetimes: Lifetimes) -> bool:
    """Row fields + events of one change inside the current transaction; False if the session is gone."""
    unknown = set(change.fields) - SESSION_FIELDS
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    if change.fields:
        assignments = ", ".join(f"{k} = ?" for k in change.fields)
        cur = c.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", (*change.fields.values(), change.session_id))
        if cur.rowcount == 0:
            return False
        refresh_expiry(c, lifetimes, change.session_id)
    elif c.execute("SELECT 1 FROM sessions WHERE id = ?", (change.session_id,)).fetchone() is None:
        return False
    _insert_events(c, change.events)
    return True


def _insert_events(c: sqlite3.Connection, events: Sequence[EventRecord]) -> None:
    # Only for sessions that still exist: a "left" event racing a DELETE leaves no orphan row.
    c.executemany(
        "INSERT INTO events (session_id, ts, type, data) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?)",
        [(e.session_id, e.ts or time.time(), e.type, json.dumps(e.data, separators=(",", ":")), e.session_id) for e in events],
    )
