"""PostgreSQL beside the store: the instance lock, the shared signing secret, the start-up probe.

Why an instance lock: two processes on one database without a bus between them would each keep
their own copy of a session's document and never see each other's edits (and one's snapshot would
hide the other's rows). So a serving process holds a session-level advisory lock on its schema's
instance key for its whole life: exclusive without a bus, shared with one (processes with a bus may
run together, never beside one without). PostgreSQL drops the lock when the connection ends, so a
killed process leaves nothing stale. If the connection is cut (the database restarted), the lock is
taken again on reconnect; if another process got it meanwhile, that is reported loudly (log and
``/health``), since both now serve the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

import asyncpg

from ..config import url_password
from .pg_schema import Conn, SchemaTooNew, connect, describe, lock_key, migrate

log = logging.getLogger("crdt_server.storage.postgres")
WATCH_INTERVAL = 3.0  # seconds between checks that the lock's connection is alive


class InstanceConflict(RuntimeError):
    """Another process serves this database in a way this one cannot run beside."""


class DatabaseRefused(RuntimeError):
    """The database cannot be used (unreachable, refused, not migratable): one line for the operator."""


class InstanceLock:
    def __init__(self, url: str, schema: str, timeout: float, shared: bool) -> None:
        self.url, self.schema, self.timeout, self.shared = url, schema, timeout, shared
        self.problem: str | None = None  # set while another process holds the lock we lost
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def conflict(self) -> str:
        who = "a crdt-server without a bus" if self.shared else "another crdt-server"
        return (f"{who} already serves {describe(self.url, self.schema)}: several processes on one database need "
                "the bus between them; stop it, or give this one another --database-schema or database")

    async def _take(self) -> bool:
        self._conn = await connect(self.url, self.schema, self.timeout)
        return await try_lock(self._conn, self.schema, self.shared)

    async def acquire(self) -> None:
        if not await self._take():
            await self.release()
            raise InstanceConflict(self.conflict())
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="postgres-instance-lock")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                if self._conn is not None and not self._conn.is_closed():
                    await self._conn.fetchval("SELECT 1")
                    continue
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("instance lock connection lost (%r); taking the lock again", exc)
            try:
                if self._conn is not None:
                    self._conn.terminate()
                held = await self._take()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                continue  # the database is still away: /health says so through the store
            if held and self.problem is not None:
                log.warning("instance lock held again; this process alone serves the database")
            if not held:
                log.error("crdt-server: %s (it was taken while this process's connection was down)", self.conflict())
            self.problem = None if held else self.conflict()

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with suppress(Exception):
                await asyncio.wait_for(self._conn.close(), self.timeout)
            self._conn = None


async def try_lock(c: Conn, schema: str, shared: bool) -> bool:
    """Take the schema's instance lock (session-level: held until the connection ends) if free."""
    fn = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
    return bool(await c.fetchval(f"SELECT {fn}(hashtextextended($1, 0))", lock_key(schema, "instances")))


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


async def probe(url: str, schema: str, timeout: float, shared: bool = False) -> None:
    """Before serving: the database answers, the schema is migrated, no process holds the instance
    lock in a way this one cannot run beside (``DatabaseRefused``, ``InstanceConflict``)."""
    where = describe(url, schema)
    try:
        conn = await connect(url, schema, timeout)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError) as exc:
        raise DatabaseRefused(f"cannot connect to {where}: {reason(exc, url)}") from None
    try:
        try:
            await migrate(conn, schema)
        except (asyncpg.PostgresError, SchemaTooNew, TimeoutError) as exc:
            raise DatabaseRefused(f"cannot create or migrate {where}: {reason(exc, url)}") from None
        if not await try_lock(conn, schema, shared):
            raise InstanceConflict(InstanceLock(url, schema, timeout, shared).conflict())
    finally:
        await conn.close()  # releases the probe's lock: the serving process takes its own
