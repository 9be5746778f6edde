"""SQLite store: WAL mode, one write connection with group commit, readers on worker threads.

Writes (``sqlite_writer.py``): group commit in a writer thread, or for small frequent writes inline
on the event loop when a commit never waits for the disk; each operation under its own SAVEPOINT
(or alone in its transaction).
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
from dataclasses import astuple
from pathlib import Path
from typing import TypeVar, cast

import anyio

from ..config import Settings
from ..lifetimes import Lifetimes
from . import rows as _rows
from .base import (
    MAIN_DOC,
    EventRecord,
    SessionChange,
    SessionGone,
    SessionRecord,
    StorageQuotaExceeded,
    StorageUnavailable,
    StoreClosed,
    UpdateRecord,
    small_load,
)
from .connections import checkpoint_loop
from .connections import connect as _connect
from .files import private_dir, private_file
from .rows import DOCS
from .rows import SESSION_COLUMNS as _SESSION_COLUMNS
from .rows import apply_change as _apply_change
from .rows import insert_events as _insert_events
from .rows import session_record as _session
from .rows import updates as _updates
from .schema import MIGRATIONS, StorageCorrupted, check_integrity, migrate
from .sqlite_lifetimes import EXPIRY_COLUMNS, next_generation, refresh_all, write_expiry
from .sqlite_writer import INLINE_BYTES, Writer

__all__ = ["MIGRATIONS", "SQLiteStore", "SessionGone", "StorageCorrupted"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class SQLiteStore:
    """The embedded default store (see the module docstring for the write path)."""

    def __init__(
        self, path: Path, *, durability: str = "normal", lifetimes: Lifetimes | None = None, session_quota: int = 0,
        checkpoint_every: int = Settings.playback_checkpoint_every,  # one snapshot kept per block (docs/playback.md)
    ) -> None:
        self.checkpoint_every = checkpoint_every  # 0: keep only the newest snapshot
        self.path = Path(path)
        self.session_quota = session_quota  # bytes of log + snapshots per session (0 = unlimited)
        self.durability = durability
        self.lifetimes = lifetimes or Lifetimes()
        # Reader connections are pooled, not per thread: anyio retires idle worker threads, and
        # per-thread connections would then leak. The pool never exceeds peak read concurrency.
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._loop_reader: sqlite3.Connection | None = None  # the event loop's own, for ``inline`` reads
        self._w = Writer(durability)
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._closed = False

    @property
    def write_error(self) -> str | None:
        """The newest failed write's cause, until a later commit succeeds: /health reports it."""
        return self._w.write_error

    @property
    def commits(self) -> int:
        """Transactions committed (for benchmarks and tests)."""
        return self._w.commits

    @property
    def observe_commit(self) -> Callable[[float], None]:
        """Metrics: called with each commit's seconds, in whichever thread committed."""
        return self._w.observe_commit

    @observe_commit.setter
    def observe_commit(self, fn: Callable[[float], None]) -> None:
        self._w.observe_commit = fn

    # lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        private_dir(self.path.parent)
        self._w.start(await anyio.to_thread.run_sync(self._open_writer), asyncio.get_running_loop())
        self._checkpointer = threading.Thread(target=self._checkpoint_thread, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _open_writer(self) -> sqlite3.Connection:
        for f in (self.path, *(p for p in (self.path.with_name(self.path.name + s) for s in ("-wal", "-shm")) if p.exists())):
            private_file(f)  # SQLite gives new -wal/-shm files the database file's mode
        try:
            conn = _connect(self.path, self.durability)
        except sqlite3.DatabaseError as exc:
            raise StorageCorrupted(f"database {self.path} is unreadable ({exc}); restore it from a backup") from None
        try:
            check_integrity(conn, self.path)
            # Checkpoints (which fsync) run in their own thread, never inside a commit that a
            # broadcast is waiting for; see _checkpoint_thread.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            migrate(conn)
            refresh_all(conn, self.lifetimes)  # expires_at follows the current settings (e.g. a new retention)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Commit what is queued, then refuse further writes."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            self._w.commit_inline()  # what this turn collected, before the thread's last batch
            await anyio.to_thread.run_sync(self._w.stop)
            if self._checkpointer is not None:
                self._stop_checkpoints.set()
                await anyio.to_thread.run_sync(self._checkpointer.join)
            await anyio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        if self._w.conn is not None:
            self._w.conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    async def ping(self) -> bool:
        """Readable, and writable if the last write failed (a probe row: space may have come back)."""
        try:
            if self.write_error is not None:
                await self._write(lambda c: c.execute("INSERT OR REPLACE INTO health_probe VALUES (1, ?)", (time.time(),)))
            return await self._read(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    # plumbing ----------------------------------------------------------------------------
    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False, grouped: bool = False) -> T:
        """``inline``: a small write the event loop may commit itself (``sqlite_writer.py``); ``grouped``:
        never alone at once, always with the other inline writes of its turn of the loop."""
        if self._closed or not self._w.running:
            raise StoreClosed("store is closed")
        op = self._w.commit_now(fn) if inline and not grouped else None
        if op is None:
            op = self._w.submit(fn, inline=inline)
            # A queued operation is committed even if its caller goes away meanwhile.
            with anyio.CancelScope(shield=True):
                await op.done.wait()
        if op.error is not None:
            raise _unavailable(op.error) from op.error
        return cast(T, op.result)

    def _checkpoint_thread(self) -> None:
        checkpoint_loop(self.path, self.durability, self._stop_checkpoints, lambda: self.commits)

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

    async def _read(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """``inline``: a read of one row by its key, which the event loop runs itself — about 6 µs of
        CPU there, against about 150 µs for the hop to a worker thread and back, twice per WebSocket
        connect (bench/RESULTS.md, "connect"). It never waits for a lock: if SQLite answers busy, the
        read goes to a worker thread like any other."""
        if self._closed:
            raise StoreClosed("store is closed")
        try:
            if inline:
                done, result = self._read_inline(fn)
                if done:
                    return result
            return await anyio.to_thread.run_sync(self._with_reader, fn)
        except (sqlite3.Error, OSError) as exc:
            raise _unavailable(exc) from exc

    def _read_inline(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[bool, T]:
        conn = self._loop_reader
        if conn is None:
            conn = _connect(self.path, self.durability)
            conn.execute("PRAGMA busy_timeout = 0")  # the loop never waits: busy means "use a thread"
            with self._readers_lock:
                self._readers.append(conn)  # closed with the others
            self._loop_reader = conn
        try:
            return True, fn(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return False, cast(T, None)
            raise
        finally:
            if conn.in_transaction:
                conn.rollback()

    # sessions ----------------------------------------------------------------------------
    async def create_session(self, session: SessionRecord, initial_update: bytes, event: EventRecord) -> None:
        def op(c: sqlite3.Connection) -> None:
            values = (*astuple(session), len(initial_update))  # the fields in _SESSION_COLUMNS order
            c.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}, stored_bytes, last_seq) "
                      f"VALUES ({', '.join('?' * len(values))}, 1)", values)
            c.execute(
                "INSERT INTO updates VALUES (?, 1, ?, 'server', 'server', '', ?)",
                (session.id, session.created_at, initial_update),
            )
            _insert_events(c, [event])

        await self._write(op)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._read(
            lambda c: c.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone(),
            inline=True,
        )
        return _session(row) if row else None

    async def list_sessions(self, after: int, limit: int) -> list[tuple[int, SessionRecord]]:
        rows = await self._read(lambda c: c.execute(
            f"SELECT rowid, {_SESSION_COLUMNS} FROM sessions WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, limit),
        ).fetchall())
        return [(row[0], _session(row[1:])) for row in rows]

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
            for table in ("updates", "snapshots", "events", *DOCS["notes"][:2]):
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
        self, updates: Sequence[UpdateRecord], changes: Sequence[SessionChange] = (), doc: str = MAIN_DOC
    ) -> list[int]:
        """Commit the updates and their changes; returns their per-session sequence numbers (commit order)."""
        if not updates and not changes:
            return []
        now = time.time()
        quota = self.session_quota
        log_table, _, counter = DOCS[doc]
        stamp = now if doc == MAIN_DOC else None  # notes edits leave updatedAt be: others would see them happen

        def op(c: sqlite3.Connection) -> list[int]:
            counts: dict[str, int] = {}
            sizes: dict[str, int] = {}
            for u in updates:
                counts[u.session_id] = counts.get(u.session_id, 0) + 1
                sizes[u.session_id] = sizes.get(u.session_id, 0) + len(u.data)
            next_seq: dict[str, int] = {}
            for sid, n in counts.items():
                row = c.execute(
                    f"UPDATE sessions SET {counter} = {counter} + ?, updated_at = COALESCE(?, updated_at), "
                    f"stored_bytes = stored_bytes + ? WHERE id = ? RETURNING {counter}, stored_bytes, {EXPIRY_COLUMNS}",
                    (n, stamp, sizes[sid], sid),
                ).fetchone()
                if row is None:
                    raise SessionGone(sid)
                if quota and row[1] > quota:  # its savepoint (alone: its transaction) rolls this back
                    raise StorageQuotaExceeded(f"session {sid} would store {row[1]} bytes, over {quota}")
                if stamp is not None:
                    write_expiry(c, self.lifetimes, (row[2:],))
                next_seq[sid] = row[0] - n + 1
            seqs = []
            rows = []
            for u in updates:
                seq = next_seq[u.session_id]
                next_seq[u.session_id] = seq + 1
                seqs.append(seq)
                rows.append((u.session_id, seq, now, u.conn_id, u.role, u.name, u.data))
            c.executemany(f"INSERT INTO {log_table} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            for change in changes:
                if not _apply_change(c, change, self.lifetimes):
                    raise SessionGone(change.session_id)
            return seqs

        return await self._write(op, inline=sum(len(u.data) for u in updates) <= INLINE_BYTES)

    async def load(self, session_id: str, doc: str = MAIN_DOC) -> tuple[bytes | None, list[UpdateRecord], int]:
        def fn(c: sqlite3.Connection, small_only: bool = False) -> tuple[bytes | None, list[UpdateRecord], int] | None:
            c.execute("BEGIN")  # one consistent read of snapshot + tail
            try:
                snap = c.execute(
                    f"SELECT seq, data FROM {DOCS[doc][1]} WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
                ).fetchone()
                base = snap[0] if snap else 0
                if small_only:  # sizes only (SQLite reads a blob's length from the row header)
                    rows, size = c.execute(f"SELECT count(*), coalesce(sum(length(data)), 0) FROM {DOCS[doc][0]} "
                                           "WHERE session_id = ? AND seq > ?", (session_id, base)).fetchone()
                    if not small_load(rows, size + (len(snap[1]) if snap else 0)):
                        return None
                tail = _updates(c, session_id, base, -1, doc)
            finally:
                c.execute("COMMIT")
            return (snap[1] if snap else None), tail, base

        # A small document is read on the event loop (most sessions: a snapshot and a short tail), a
        # big one in a worker thread; the same goes for its rebuild (``sync/loader.py``).
        loaded = await self._read(lambda c: fn(c, small_only=True), inline=True)
        if loaded is None:
            loaded = await self._read(fn)
        assert loaded is not None
        return loaded

    async def write_snapshot(self, session_id: str, seq: int, state: bytes, doc: str = MAIN_DOC) -> None:
        """Store the state at ``seq``; drop older snapshots of its block of ``checkpoint_every`` rows
        (loading reads the newest; the last of each earlier block is a playback checkpoint; the notes
        keep only their newest).

        Refused (``ValueError``) if ``seq`` is past the log or not newer than the newest snapshot:
        a state that does not hold every row up to its ``seq`` would hide those rows for good."""
        _, table, counter = DOCS[doc]

        def op(c: sqlite3.Connection) -> None:
            row = c.execute(f"SELECT {counter} FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise SessionGone(session_id)
            newest = c.execute(f"SELECT MAX(seq) FROM {table} WHERE session_id = ?", (session_id,)).fetchone()[0]
            if seq > row[0] or (newest is not None and seq <= newest):
                raise ValueError(f"snapshot at {seq} refused (log at {row[0]}, newest snapshot {newest})")
            k = (self.checkpoint_every or 2**62) if doc == MAIN_DOC else 2**62
            old = c.execute(f"DELETE FROM {table} WHERE session_id = ? AND seq / ? = ? / ? RETURNING length(data)",
                            (session_id, k, seq, k)).fetchall()
            c.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", (session_id, seq, time.time(), state))
            c.execute("UPDATE sessions SET stored_bytes = stored_bytes + ? WHERE id = ?",
                      (len(state) - sum(r[0] for r in old), session_id))

        await self._write(op)

    async def read_updates(self, session_id: str, after: int, limit: int, doc: str = MAIN_DOC) -> list[UpdateRecord]:
        return await self._read(lambda c: _updates(c, session_id, after, limit, doc))

    async def last_seqs(self, session_ids: Sequence[str], doc: str = MAIN_DOC) -> dict[str, int]:
        ids = list(session_ids)
        rows = await self._read(lambda c: c.execute(
            f"SELECT id, {DOCS[doc][2]} FROM sessions WHERE id IN ({', '.join('?' * len(ids))})", ids).fetchall())
        return {sid: int(seq) for sid, seq in rows}

    async def playback_rows(self, session_id: str, seq: int) -> tuple[bytes | None, int, list[UpdateRecord]]:
        return await self._read(lambda c: _rows.playback_rows(c, session_id, seq))
    async def seq_at(self, session_id: str, at: float) -> tuple[int, int]:
        return await self._read(lambda c: _rows.seq_at(c, session_id, at))

    # events ------------------------------------------------------------------------------
    async def append_events(self, events: Sequence[EventRecord]) -> None:
        await self._write(lambda c: _insert_events(c, events), inline=True, grouped=True)

    async def read_events(self, session_id: str, after: int, limit: int) -> list[EventRecord]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, ts, type, data FROM events WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
                (session_id, after, limit),
            ).fetchall()
        )
        return [EventRecord(session_id, t, json.loads(d), seq=i, ts=ts) for i, ts, t, d in rows]


def _unavailable(exc: BaseException) -> BaseException:
    """A database failure as the service sees it (503, retry later); other errors pass unchanged."""
    if isinstance(exc, (sqlite3.Error, OSError)):
        return StorageUnavailable(f"storage failed: {exc!r}")
    return exc
