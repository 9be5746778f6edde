"""PostgreSQL beside the store: the instance lock, the shared signing secret, the start-up probe.

Why an instance lock: two processes on one database without a bus between them would each keep
their own copy of a session's document and never see each other's edits (and one's snapshot would
hide the other's rows). So a serving process holds a session-level advisory lock on its schema's
instance key for its whole life, taken by ``crdt-server`` before the server starts: exclusive without a bus, shared with one (processes with a bus may
run together, never beside one without). PostgreSQL drops the lock when the connection ends, so a
killed process leaves nothing stale. If the connection is cut (the database restarted), the lock is
taken again on reconnect; if another process got it meanwhile, that is reported loudly (log and
``/health``), since both now serve the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import suppress

import asyncpg

from ..config_checks import url_password
from .pg_schema import DATABASE_ERRORS, Conn, SchemaTooNew, connect, describe, lock_key, migrate

log = logging.getLogger("crdt_server.storage.postgres")
WATCH_INTERVAL = 3.0  # seconds between checks that the lock's connection is alive


class InstanceConflict(RuntimeError):
    """Another process serves this database in a way this one cannot run beside."""


class DatabaseRefused(RuntimeError):
    """The database cannot be used (unreachable, refused, not migratable): one line for the operator."""


class InstanceLock:
    """The lock, held on a connection owned by a thread with its own event loop: taken before the
    server starts (a refusal is one line and exit 2, and there is no gap between a check and the
    hold), and kept alive however busy the server's own loop is."""

    def __init__(self, url: str, schema: str, timeout: float, shared: bool) -> None:
        self.url, self.schema, self.timeout, self.shared = url, schema, timeout, shared
        self.problem: str | None = None  # set while another process holds the lock we lost
        self.pid: int | None = None  # the lock connection's backend pid: how the other processes see this one
        self._ready = threading.Event()
        self._error: Exception | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._conn: asyncpg.Connection | None = None

    def conflict(self) -> str:
        who = "a crdt-server without a bus" if self.shared else "another crdt-server"
        return (f"{who} already serves {describe(self.url, self.schema)}: several processes on one database need "
                "the bus between them; stop it, or give this one another --database-schema or database")

    def hold(self) -> None:
        """Take the lock and keep it until ``release`` (``InstanceConflict`` or ``DatabaseRefused`` if not)."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name="postgres-instance-lock",
                                        daemon=True)  # the kernel closes the connection when the process ends
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def release(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with suppress(RuntimeError):  # the loop has ended already
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(self.timeout + 5)

    async def _take(self) -> bool:
        if self._conn is not None:
            self._conn.terminate()
        self._conn = await connect(self.url, self.schema, self.timeout)
        held = await try_lock(self._conn, self.schema, self.shared)
        self.pid = int(await self._conn.fetchval("SELECT pg_backend_pid()"))
        return held

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            held = await self._take()
        except DATABASE_ERRORS as exc:
            self._error = DatabaseRefused(f"cannot connect to {describe(self.url, self.schema)}: {reason(exc, self.url)}")
        else:
            self._error = None if held else InstanceConflict(self.conflict())
        self._ready.set()
        if self._error is None:
            while not await self._stopped():
                await self._watch()
        if self._conn is not None:
            with suppress(*DATABASE_ERRORS):
                await asyncio.wait_for(self._conn.close(), self.timeout)

    async def _stopped(self) -> bool:
        assert self._stop is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), WATCH_INTERVAL)
        return self._stop.is_set()

    async def _watch(self) -> None:
        """The connection alive, else reconnect and take the lock again; report if another process has it."""
        try:
            if self._conn is not None and not self._conn.is_closed():
                await self._conn.fetchval("SELECT 1")
                return
        except DATABASE_ERRORS as exc:
            log.warning("instance lock connection lost (%r); taking the lock again", exc)
        try:
            held = await self._take()
        except DATABASE_ERRORS:
            return  # the database is still away: /health says so through the store
        if held and self.problem is not None:
            log.warning("instance lock held again; this process alone serves the database")
        if not held:
            log.error("crdt-server: %s (it was taken while this process's connection was down)", self.conflict())
        self.problem = None if held else self.conflict()


async def try_lock(c: Conn, schema: str, shared: bool) -> bool:
    """Take the schema's instance lock (session-level: held until the connection ends) if free."""
    fn = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
    return bool(await c.fetchval(f"SELECT {fn}(hashtextextended($1, 0))", lock_key(schema, "instances")))


async def lock_holders(c: Conn, schema: str) -> set[int]:
    """The backend pids holding the schema's instance lock: one per serving process."""
    rows = await c.fetch(
        "SELECT l.pid FROM pg_locks l, (SELECT hashtextextended($1, 0) AS k) key WHERE l.locktype = 'advisory' "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND l.objsubid = 1 "
        "AND l.classid = ((key.k >> 32) & 4294967295)::oid AND l.objid = (key.k & 4294967295)::oid AND l.granted",
        lock_key(schema, "instances"))
    return {int(r[0]) for r in rows}


async def kept_secret(c: Conn, fresh: str) -> str:
    """The secret in the database, written by the first process that asks (race-safe: one row)."""
    await c.execute("INSERT INTO server_secret VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING", fresh, time.time())
    return str(await c.fetchval("SELECT secret FROM server_secret WHERE id = 1"))


def reason(exc: BaseException, url: str) -> str:
    """What went wrong, in words, never with the password."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        said = "no answer in time (--database-timeout)"
    else:
        said = str(exc) or type(exc).__name__
    password = url_password(url)
    return said.replace(password, "***") if password else said


PREPARE_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, ValueError, SchemaTooNew)  # ValueError: a bad URL


async def prepare(url: str, schema: str, timeout: float) -> None:
    """Before serving: the database answers and the schema is migrated (``DatabaseRefused`` if not)."""
    where = describe(url, schema)
    try:
        conn = await connect(url, schema, timeout)
    except PREPARE_ERRORS as exc:
        raise DatabaseRefused(f"cannot connect to {where}: {reason(exc, url)}") from None
    try:
        await migrate(conn, schema)
    except PREPARE_ERRORS as exc:
        raise DatabaseRefused(f"cannot create or migrate {where}: {reason(exc, url)}") from None
    finally:
        await conn.close()
