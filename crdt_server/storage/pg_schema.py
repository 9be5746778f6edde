"""The PostgreSQL schema as numbered migrations, connections, and the advisory-lock keys.

Every process migrates at start, inside one transaction under ``pg_advisory_xact_lock`` on the
schema's migration key: two processes starting at once run the migrations once, the second waits
and finds them done. PostgreSQL's DDL is transactional, so a failed migration leaves nothing
behind. ``MIGRATIONS[i]`` upgrades version i to i + 1 and is only ever appended to; the tables
are the SQLite ones (docs/design/storage.md, "PostgreSQL").
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..config_checks import redact_url

# A failure of the database or of the way to it (not of one statement's data): fails a whole batch.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# A connection of its own (the writer, the lock) or one lent by the pool (readers): both run the same statements.
Conn = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger("crdt_server.storage.postgres")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        seqno BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the list cursor (SQLite's rowid)
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        language TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        keep_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        ended_at DOUBLE PRECISION,
        token_generation INTEGER NOT NULL DEFAULT 0,
        locked BOOLEAN NOT NULL DEFAULT false,
        run_enabled BOOLEAN NOT NULL DEFAULT true,
        last_seq BIGINT NOT NULL DEFAULT 0,
        notes_seq BIGINT NOT NULL DEFAULT 0,
        stored_bytes BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_expiry ON sessions (expires_at);
    CREATE TABLE updates (
        session_id TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, conn_id TEXT NOT NULL,
        role TEXT NOT NULL, name TEXT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE notes_updates (
        session_id TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, conn_id TEXT NOT NULL,
        role TEXT NOT NULL, name TEXT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE snapshots (
        session_id TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, data BYTEA NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE notes_snapshots (
        session_id TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, data BYTEA NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
    );
    CREATE INDEX events_session ON events (session_id, id);
    CREATE TABLE health_probe (id INTEGER PRIMARY KEY, ts DOUBLE PRECISION NOT NULL);
    -- the token signing secret every process on this schema shares (generated once; crdt_server/tokens.py)
    CREATE TABLE server_secret (
        id INTEGER PRIMARY KEY CHECK (id = 1), secret TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL
    );
    """,
]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer crdt-server: this one refuses to touch it."""


def lock_key(schema: str, purpose: str, *parts: str) -> str:
    """The text an advisory lock is keyed on (hashed by ``hashtextextended`` in the statement):
    advisory locks are per database, so the schema is part of every key."""
    return ":".join(("crdt-server", schema, purpose, *parts))


def describe(url: str, schema: str) -> str:
    """The database as an operator reads it in a message: never with its password."""
    return f"{redact_url(url)} (schema {schema})"


async def connect(url: str, schema: str, timeout: float, **settings: str) -> asyncpg.Connection:
    """One connection whose unqualified names resolve in ``schema``; statements and lock waits are
    bounded by ``timeout`` on the server side, commits are synchronous."""
    return await asyncpg.connect(url, timeout=timeout, command_timeout=timeout + 5,
                                 server_settings=server_settings(schema, timeout, **settings))


def server_settings(schema: str, timeout: float, **extra: str) -> dict[str, str]:
    ms = str(max(1, int(timeout * 1000)))
    return {"search_path": schema, "statement_timeout": ms, "lock_timeout": ms,
            "idle_in_transaction_session_timeout": str(max(60_000, 6 * int(ms))),
            "synchronous_commit": "on", "application_name": f"crdt-server/{schema}"[:63], **extra}


async def migrate(conn: asyncpg.Connection, schema: str) -> int:
    """Create ``schema`` and bring it to the newest version; returns the version it was at."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock_key(schema, "migrate"))
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')  # only then: it needs CREATE on the database
        await conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".schema_version (version INTEGER NOT NULL)')
        version = int(await conn.fetchval(f'SELECT coalesce(max(version), 0) FROM "{schema}".schema_version'))
        if version > len(MIGRATIONS):
            raise SchemaTooNew(f"schema {schema} is at version {version}, newer than this crdt-server knows "
                               f"({len(MIGRATIONS)}); run the newer version")
        for target in range(version, len(MIGRATIONS)):
            await conn.execute(MIGRATIONS[target])
            await conn.execute(f'INSERT INTO "{schema}".schema_version VALUES ({target + 1})')
            log.info("storage schema %s migrated to version %d", schema, target + 1)
    return version


def text(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL (SQLite's can): a client's display name or a title with one
    would fail the whole batch, so it is stored as U+FFFD."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value
