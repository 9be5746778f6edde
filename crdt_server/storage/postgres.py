"""PostgreSQL store: one writer per process with group commit, reads on a pool.

Same contract as the SQLite store (``storage/base.py``; docs/design/storage.md, "PostgreSQL"):
one writer task owns one connection and keeps one transaction in flight; everything queued
meanwhile goes into the next one (``pg_batch.run_batch``), committed with ``synchronous_commit=on``.
Reads run on a pool and never on a cache: another process's commits are visible to the next read.
Any database failure reaches the caller as ``StorageUnavailable`` (503, WebSocket 1011); the writer
and the pool reconnect on their own once the database answers again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import astuple
from typing import Any, TypeVar, cast

import anyio
import asyncpg

from ..config import Settings
from ..lifetimes import Lifetimes
from . import pg_batch as b
from .base import (
    MAIN_DOC,
    EventRecord,
    SessionChange,
    SessionGone,
    SessionRecord,
    StorageUnavailable,
    StoreClosed,
    UpdateRecord,
)
from .pg_instance import InstanceLock, kept_secret, lock_holders
from .pg_schema import DATABASE_ERRORS, Conn, connect, describe, migrate, server_settings, text
from .rows import DOCS
from .rows import SESSION_COLUMNS as _COLUMNS
from .rows import session_record as _session

log = logging.getLogger(__name__)
T = TypeVar("T")
# A connection the server cut or that broke (not a slow or failing statement): a read is retried once.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                                                       asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
                                                       ConnectionError)


class PostgresStore:
    """The store for a ``postgresql://`` --database-url (see the module docstring)."""

    def __init__(
        self, url: str, *, schema: str = "public", lifetimes: Lifetimes | None = None, session_quota: int = 0,
        checkpoint_every: int = Settings.playback_checkpoint_every, pool_size: int = 8, timeout: float = 10.0,
    ) -> None:
        self.url, self.schema, self.timeout, self.pool_size = url, schema, timeout, pool_size
        self.checkpoint_every = checkpoint_every  # 0: keep only the newest snapshot
        self.rules = b.Rules(lifetimes or Lifetimes(), session_quota)
        self.lifetimes = self.rules.lifetimes
        self.session_quota = session_quota
        # The newest failed write's cause, until a later commit succeeds: /health reports it.
        self.write_error: str | None = None
        self.instance: InstanceLock | None = None  # the serving process's (set by the app), for /health
        self._writer: Conn | None = None
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[b.Op | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions committed (for benchmarks and tests)
        self.observe_commit: Callable[[float], None] = lambda seconds: None  # metrics

    def __repr__(self) -> str:
        return f"PostgresStore({describe(self.url, self.schema)})"

    # lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, migrate (safe when processes start together), start the writer and the pool."""
        self._writer = await connect(self.url, self.schema, self.timeout)
        await migrate(self._writer, self.schema)
        async with self._writer.transaction():  # expires_at follows the current settings (e.g. a new retention)
            await b.refresh_expiry(self._writer, self.lifetimes)
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout, command_timeout=self.timeout + 5,
            server_settings=server_settings(self.schema, self.timeout, default_transaction_read_only="on"))
        self._task = asyncio.get_running_loop().create_task(self._writer_loop(), name="postgres-writer")

    async def close(self) -> None:
        """Commit what is queued, then refuse further writes."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(None)  # after everything already queued
            await asyncio.shield(self._task)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self.timeout)
            except DATABASE_ERRORS:
                self._pool.terminate()
        await self._drop_writer()

    async def ping(self) -> bool:
        """Readable, writable if the last write failed (a probe row), and no other process took our
        instance lock while the database was away."""
        try:
            if self.instance is not None and self.instance.problem is not None:
                return False
            if self.write_error is not None:
                await self._write(lambda c: c.execute(
                    "INSERT INTO health_probe VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET ts = excluded.ts", time.time()))
            return bool(await self._read(lambda c: c.fetchval("SELECT 1")) == 1)
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    async def instance_holders(self) -> set[int]:
        """The serving processes (backend pids of their instance locks), for the cluster's check that
        every one of them is on its bus."""
        return await self._read(lambda c: lock_holders(c, self.schema))

    async def kept_secret(self, fresh: str) -> str:
        """The signing secret every process on this schema shares: ``fresh`` if none was kept yet."""
        return await self._write(lambda c: kept_secret(c, fresh))

    # plumbing ----------------------------------------------------------------------------
    async def _enqueue(self, op: b.Op) -> Any:
        if self._closed or self._task is None:
            raise StoreClosed("store is closed")
        self._queue.put_nowait(op)
        # A queued operation is committed even if its caller goes away meanwhile.
        with anyio.CancelScope(shield=True):
            await op.done.wait()
        if op.error is not None:
            raise _unavailable(op.error) from op.error
        return op.result

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return cast(T, await self._enqueue(b.Op(run=fn)))

    async def _writer_loop(self) -> None:
        """Take everything queued, commit it in one transaction, wake the waiters; repeat."""
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            ops = [first]
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                ops.append(nxt)
            await self._commit(ops)
            for op in ops:
                op.done.set()

    async def _commit(self, ops: list[b.Op]) -> None:
        started = time.perf_counter()
        try:
            conn = await self._connection()
            tx = conn.transaction()
            await tx.start()
            try:
                await b.run_batch(conn, ops, self.rules)
            except BaseException:
                if not conn.is_closed():
                    with suppress(*DATABASE_ERRORS):  # never hide the real cause behind this one
                        await tx.rollback()
                raise
            await tx.commit()
            self.commits += 1
            self.observe_commit(time.perf_counter() - started)
            failed = [op.error for op in ops if isinstance(op.error, DATABASE_ERRORS)]
            self.write_error = repr(failed[-1]) if failed else None
        except Exception as exc:  # noqa: BLE001 - the whole transaction failed; logged with its cause
            log.error("storage commit of %d operations failed: %r", len(ops), exc)
            self.write_error = repr(exc)
            for op in ops:
                op.error = op.error or exc
            await self._drop_writer()  # broken, or mid-transaction: the next batch starts on a new one

    async def _connection(self) -> Conn:
        if self._writer is None or self._writer.is_closed():
            await self._drop_writer()
            self._writer = await connect(self.url, self.schema, self.timeout)
        return self._writer

    async def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn`` on a pooled connection; once more on a fresh one if the first had been cut
        (a read is safe to repeat; the pool replaces connections the server closed)."""
        if self._closed or self._pool is None:
            raise StoreClosed("store is closed")
        try:
            try:
                async with self._pool.acquire() as conn:
                    return await fn(conn)
            except CONNECTION_ERRORS:
                async with self._pool.acquire() as conn:
                    return await fn(conn)
        except DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _consistent(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn`` in one REPEATABLE READ transaction: every statement sees the same commits."""
        async def run(c: Conn) -> T:
            async with c.transaction(isolation="repeatable_read", readonly=True):
                return await fn(c)

        return await self._read(run)

    # sessions ----------------------------------------------------------------------------
    async def create_session(self, session: SessionRecord, initial_update: bytes, event: EventRecord) -> None:
        async def op(c: Conn) -> None:
            values = [text(v) for v in astuple(session)] + [len(initial_update)]  # _COLUMNS order, stored_bytes
            await c.execute(f"INSERT INTO sessions ({_COLUMNS}, stored_bytes, last_seq) "
                            f"VALUES ({', '.join(f'${i}' for i in range(1, len(values) + 1))}, 1)", *values)
            await c.execute("INSERT INTO updates VALUES ($1, 1, $2, 'server', 'server', '', $3)",
                            session.id, session.created_at, initial_update)
            await b.insert_events(c, [event])

        await self._write(op)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._read(lambda c: c.fetchrow(f"SELECT {_COLUMNS} FROM sessions WHERE id = $1", session_id))
        return _session(tuple(row)) if row else None

    async def list_sessions(self, after: int, limit: int) -> list[tuple[int, SessionRecord]]:
        rows = await self._read(lambda c: c.fetch(
            f"SELECT seqno, {_COLUMNS} FROM sessions WHERE seqno > $1 ORDER BY seqno LIMIT $2", after, limit))
        return [(row[0], _session(tuple(row)[1:])) for row in rows]

    async def change_session(self, change: SessionChange) -> SessionRecord | None:
        async def op(c: Conn) -> SessionRecord | None:
            if not await b.apply_change(c, change, self.lifetimes):
                return None
            row = await c.fetchrow(f"SELECT {_COLUMNS} FROM sessions WHERE id = $1", change.session_id)
            return _session(tuple(row)) if row else None

        return await self._write(op)

    async def delete_session(self, session_id: str) -> bool:
        async def op(c: Conn) -> bool:
            gone = await c.fetchval("DELETE FROM sessions WHERE id = $1 RETURNING 1", session_id)
            for table in ("updates", "snapshots", "events", *DOCS["notes"][:2]):
                await c.execute(f"DELETE FROM {table} WHERE session_id = $1", session_id)
            return gone is not None

        return await self._write(op)

    async def reissue_tokens(self, session_id: str, event: EventRecord) -> int | None:
        async def op(c: Conn) -> int | None:
            generation = await c.fetchval("UPDATE sessions SET token_generation = token_generation + 1 WHERE id = $1 "
                                          "RETURNING token_generation", session_id)
            if generation is not None:
                await b.insert_events(c, [event])
            return None if generation is None else int(generation)

        return await self._write(op)

    async def expired_sessions(self, now: float) -> list[str]:
        rows = await self._read(lambda c: c.fetch("SELECT id FROM sessions WHERE expires_at <= $1", now))
        return [r[0] for r in rows]

    # update log --------------------------------------------------------------------------
    async def append_updates(
        self, updates: Sequence[UpdateRecord], changes: Sequence[SessionChange] = (), doc: str = MAIN_DOC
    ) -> list[int]:
        """Commit the updates and their changes; returns their per-session sequence numbers (commit order)."""
        if not updates and not changes:
            return []
        DOCS[doc]  # noqa: B018 - an unknown document fails here, not inside the batch
        if not changes and len({u.session_id for u in updates}) == 1:  # a room's append: grouped
            return cast(list[int], await self._enqueue(b.Op(updates=updates, doc=doc)))
        return await self._write(lambda c: b.append_with_changes(c, updates, doc, changes, self.rules))

    async def load(self, session_id: str, doc: str = MAIN_DOC) -> tuple[bytes | None, list[UpdateRecord], int]:
        """One consistent read (REPEATABLE READ): the newest snapshot and every row after it, so the
        result reflects exactly the rows up to ``tail[-1].seq`` (or the snapshot's seq) and none later."""
        async def fn(c: Conn) -> tuple[bytes | None, list[UpdateRecord], int]:
            snap = await c.fetchrow(f"SELECT seq, data FROM {DOCS[doc][1]} WHERE session_id = $1 "
                                    "ORDER BY seq DESC LIMIT 1", session_id)
            base = int(snap[0]) if snap else 0
            return (snap[1] if snap else None), await _updates(c, session_id, base, None, doc), base

        return await self._consistent(fn)

    async def write_snapshot(self, session_id: str, seq: int, state: bytes, doc: str = MAIN_DOC) -> None:
        """Store the state at ``seq``; drop older snapshots of its block of ``checkpoint_every`` rows
        (loading reads the newest; the last of each earlier block is a playback checkpoint; the notes
        keep only their newest). Log rows are never touched.

        No distributed lock: a transaction-scoped advisory lock per (session, document) makes a
        second process writing one at the same moment skip its own (doing it twice is harmless).
        Refused (``ValueError``) if ``seq`` is past the log or not newer than the newest snapshot."""
        _, table, counter = DOCS[doc]
        k = (self.checkpoint_every or 2**62) if doc == MAIN_DOC else 2**62

        async def op(c: Conn) -> None:
            key = ":".join(("crdt-server", self.schema, "snapshot", doc, session_id))
            if not await c.fetchval("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", key):
                return
            last = await c.fetchval(f"SELECT {counter} FROM sessions WHERE id = $1", session_id)
            if last is None:
                raise SessionGone(session_id)
            newest = await c.fetchval(f"SELECT max(seq) FROM {table} WHERE session_id = $1", session_id)
            if seq > last or (newest is not None and seq <= newest):
                raise ValueError(f"snapshot at {seq} refused (log at {last}, newest snapshot {newest})")
            freed = await c.fetchval(
                f"WITH old AS (DELETE FROM {table} WHERE session_id = $1 AND seq / $2 = $3::bigint / $2 "
                "RETURNING length(data) AS n) SELECT coalesce(sum(n), 0) FROM old", session_id, k, seq)
            await c.execute(f"INSERT INTO {table} VALUES ($1, $2, $3, $4)", session_id, seq, time.time(), state)
            await c.execute("UPDATE sessions SET stored_bytes = stored_bytes + $2 WHERE id = $1",
                            session_id, len(state) - int(freed))

        await self._write(op)

    async def read_updates(self, session_id: str, after: int, limit: int, doc: str = MAIN_DOC) -> list[UpdateRecord]:
        """The rows after ``after`` in sequence order (at most ``limit``): what a reader that has seen
        ``seq <= after`` missed."""
        return await self._read(lambda c: _updates(c, session_id, after, limit, doc))

    async def last_seqs(self, session_ids: Sequence[str], doc: str = MAIN_DOC) -> dict[str, int]:
        """The newest sequence number of each session (one query; absent: the session is gone)."""
        rows = await self._read(lambda c: c.fetch(
            f"SELECT id, {DOCS[doc][2]} FROM sessions WHERE id = ANY($1::text[])", list(session_ids)))
        return {r[0]: int(r[1]) for r in rows}

    async def playback_rows(self, session_id: str, seq: int) -> tuple[bytes | None, int, list[UpdateRecord]]:
        async def fn(c: Conn) -> tuple[bytes | None, int, list[UpdateRecord]]:
            snap = await c.fetchrow("SELECT seq, data FROM snapshots WHERE session_id = $1 AND seq <= $2 "
                                    "ORDER BY seq DESC LIMIT 1", session_id, seq)
            base = int(snap[0]) if snap else 0
            return (snap[1] if snap else None), base, await _updates(c, session_id, base, max(0, seq - base))

        return await self._consistent(fn)

    async def seq_at(self, session_id: str, at: float) -> tuple[int, int]:
        row = await self._read(lambda c: c.fetchrow(
            "SELECT (SELECT max(seq) FROM updates WHERE session_id = $1 AND ts <= $2), "
            "(SELECT max(seq) FROM updates WHERE session_id = $1)", session_id, at))
        assert row is not None  # one row, always
        return int(row[0] or 0), int(row[1] or 0)

    # events ------------------------------------------------------------------------------
    async def append_events(self, events: Sequence[EventRecord]) -> None:
        if events:
            await self._enqueue(b.Op(events=events))

    async def read_events(self, session_id: str, after: int, limit: int) -> list[EventRecord]:
        rows = await self._read(lambda c: c.fetch(
            "SELECT id, ts, type, data FROM events WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            session_id, after, limit))
        return [EventRecord(session_id, t, json.loads(d), seq=i, ts=ts) for i, ts, t, d in rows]


async def _updates(c: Conn, session_id: str, after: int, limit: int | None, doc: str = MAIN_DOC) -> list[UpdateRecord]:
    rows = await c.fetch(f"SELECT seq, ts, conn_id, role, name, data FROM {DOCS[doc][0]} "
                         "WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", session_id, after, limit)
    return [UpdateRecord(session_id, d, r, ci, n, seq=s, ts=ts) for s, ts, ci, r, n, d in rows]


def _unavailable(exc: BaseException) -> BaseException:
    """A database failure as the service sees it (503, retry later); other errors pass unchanged."""
    if isinstance(exc, DATABASE_ERRORS):
        return StorageUnavailable(f"storage failed: {exc!r}")
    return exc
