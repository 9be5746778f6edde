"""PostgreSQL for the tests: a real server, a schema of its own per test (created by the store's own
migration, dropped afterwards), and the backend parametrisation of the store and server fixtures.

The database is ``CRDT_SERVER_TEST_DATABASE_URL`` (default: the local server, database ``test``).
A test that needs it and cannot reach it fails under ``CI=true`` and is skipped, with the reason
printed, otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import Any

import asyncpg
import pytest

from crdt_server.storage import PostgresStore, SQLiteStore
from crdt_server.testing import ServerProcess

BACKENDS = ("sqlite", "postgresql")  # a test module that imports this name runs on both
URL = os.environ.get("CRDT_SERVER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
_names = itertools.count()


@cache
def _unreachable() -> str | None:
    async def check() -> None:
        conn = await asyncpg.connect(URL, timeout=5)
        await conn.close()

    try:
        with ThreadPoolExecutor(1) as pool:  # its own loop: callable from sync or async code (the answer is cached)
            pool.submit(asyncio.run, check()).result()
    except Exception as exc:  # noqa: BLE001 - any failure: the reason is what the skip says
        return f"PostgreSQL at {URL} is unreachable ({exc!r})"
    return None


def require(why: str | None) -> None:
    """A service the test needs is unreachable (``why``): fail under CI=true, skip with the reason otherwise."""
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI needs it (.ci/run starts it)")
    pytest.skip(why)


def require_postgres() -> None:
    require(_unreachable())


def pg_sql(sql: str, *args: Any, schema: str = "public", url: str = URL) -> list[tuple[Any, ...]]:
    """Run one statement on the test database, from sync or async code (its own loop, in a thread)."""
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=10, server_settings={"search_path": schema})
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@contextmanager
def new_schema() -> Iterator[str]:
    """A schema name nobody uses (the store creates it); dropped with everything in it afterwards."""
    require_postgres()
    name = f"crdt_test_{os.getpid()}_{next(_names)}"
    try:
        yield name
    finally:
        pg_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextmanager
def database_for(backend: str) -> Iterator[tuple[str, str] | None]:
    """What ``ServerProcess(database=…)`` takes for ``backend``: None (its data directory's SQLite) or
    (URL, a fresh schema)."""
    if backend == "sqlite":
        yield None
        return
    with new_schema() as schema:
        yield URL, schema


def server_rows(server: ServerProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A statement on a server's own database, SQLite or PostgreSQL (write ``?`` placeholders)."""
    if server.database is None:
        with sqlite3.connect(server.data_dir / "crdt-server.db") as db:
            return db.execute(sql, args).fetchall()
    numbered = iter(range(1, sql.count("?") + 1))
    return pg_sql(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *args, url=server.database[0],
                  schema=server.database[1])


def server_secret(server: ServerProcess) -> str:
    """The secret a server signs with when none is configured: its data directory's, or its database's."""
    if server.database is None:
        return (server.data_dir / "secret.key").read_text().strip()
    return str(server_rows(server, "SELECT secret FROM server_secret")[0][0])


async def query(store: SQLiteStore | PostgresStore, sql: str) -> list[tuple[Any, ...]]:
    """A parameterless statement on the store's own database, outside the store (what is really stored)."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as db:
            return db.execute(sql).fetchall()
    conn = await asyncpg.connect(store.url, server_settings={"search_path": store.schema})
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
