"""PostgreSQL as the operator meets it: migrations two processes run at once, the shared secret, one
process per database, refusals at start (never with the password), and the database going away.

Real PostgreSQL over real connections: each test its own schema on the test database, or a private
PostgreSQL instance (started here with the installed binaries) for the test that stops it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from pycrdt import Text

from crdt_server.storage import PostgresStore
from crdt_server.storage.pg_schema import MIGRATIONS, SchemaTooNew
from crdt_server.tokens import TokenSigner

from .conftest import ROOT, ServerProcess, auth, create_session, free_port, py_client, text_of
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .pg import URL, new_schema, pg_sql, require_postgres

pytestmark = pytest.mark.anyio
PASSWORD = "hunter2-never-printed"


@pytest.fixture
def schema() -> Iterator[str]:
    with new_schema() as name:
        yield name


async def test_processes_starting_together_migrate_once(schema: str):
    stores = [PostgresStore(URL, schema=schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))  # each migrates under the advisory lock
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert pg_sql("SELECT version FROM schema_version ORDER BY version", schema=schema) == \
        [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    async with PostgresStore(URL, schema=schema):  # reopening migrates nothing
        pass
    assert len(pg_sql("SELECT * FROM schema_version", schema=schema)) == len(MIGRATIONS)
    pg_sql(f"INSERT INTO schema_version VALUES ({len(MIGRATIONS) + 1})", schema=schema)
    with pytest.raises(SchemaTooNew):  # a newer server's schema is never touched by an older one
        await PostgresStore(URL, schema=schema).open()


async def test_the_secret_is_generated_once_and_shared(schema: str):
    one, two = PostgresStore(URL, schema=schema), PostgresStore(URL, schema=schema)
    async with one, two:
        got = await asyncio.gather(one.kept_secret("a" * 48), two.kept_secret("b" * 48),
                                   one.kept_secret("c" * 48))
    assert len(set(got)) == 1 and got[0] in ("a" * 48, "b" * 48)


def test_tokens_signed_by_one_process_work_on_the_next(tmp_path: Path, schema: str):
    """No CRDT_SERVER_SECRET: the secret is the database's, not either data directory's."""
    first = ServerProcess(tmp_path / "a", database=(URL, schema))
    first.start()
    try:
        with httpx.Client(base_url=first.base_url) as http:
            session = http.post("/api/sessions", json={"code": "print(1)"}).json()
    finally:
        first.stop()
    assert not (tmp_path / "a" / "secret.key").exists()
    second = ServerProcess(tmp_path / "b", database=(URL, schema))
    second.start()
    try:
        with httpx.Client(base_url=second.base_url) as http:
            r = http.get(f"/api/sessions/{session['id']}/code", headers=auth(session["tokens"]["candidate"]))
            assert r.status_code == 200 and r.json()["code"] == "print(1)"
            forged = TokenSigner("f" * 48, 3600).issue(session["id"], "interviewer")
            assert http.get(f"/api/sessions/{session['id']}/code", headers=auth(forged)).status_code == 401
    finally:
        second.stop()


def test_a_second_process_on_one_database_is_refused(tmp_path: Path, schema: str):
    first = ServerProcess(tmp_path / "a", database=(URL, schema))
    first.start()
    try:
        second = run_cli(tmp_path / "b", ["--database-url", URL, "--database-schema", schema])
        assert second.returncode == 2, second.stderr
        [line] = second.stderr.strip().splitlines()
        assert "another crdt-server already serves" in line and f"schema {schema}" in line, line
        assert httpx.get(first.base_url + "/health").json()["database"] == "ok"  # the first is undisturbed
        first.kill9()  # the lock dies with the process: no stale lock
        third = ServerProcess(tmp_path / "c", database=(URL, schema))
        third.start()
        third.stop()
    finally:
        first.stop()


def run_cli(data: Path, args: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
    env.update(CRDT_SERVER_EXECUTION="off", CRDT_SERVER_WEB_BUILD="off", **extra_env)
    return subprocess.run([sys.executable, "-m", "crdt_server", "--data-dir", str(data), "--port", str(free_port()), *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("url", "why"), [
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/test", "cannot connect"),  # nothing listens
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/crdt_no_such_db", 'database "crdt_no_such_db" does not exist'),
    (f"mysql://root:{PASSWORD}@127.0.0.1/test", "must be sqlite:///path.db, postgresql://"),
    (f"postgresql://postgres:{PASSWORD}@127.0.0.1:99999/test", "not a valid URL"),
])
def test_an_unusable_database_is_one_line_without_the_password(tmp_path: Path, url: str, why: str):
    require_postgres()
    result = run_cli(tmp_path / "data", [], CRDT_SERVER_DATABASE_URL=url)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--database-url / CRDT_SERVER_DATABASE_URL" in line and why in line, line
    assert PASSWORD not in result.stderr + result.stdout


def test_a_password_on_the_command_line_is_refused(tmp_path: Path):
    """Like --secret: every local process can read argv (/proc/<pid>/cmdline)."""
    result = run_cli(tmp_path / "data", ["--database-url", f"postgresql://postgres:{PASSWORD}@127.0.0.1/test"])
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "password in --database-url is refused" in line and "CRDT_SERVER_DATABASE_URL" in line, line
    assert PASSWORD not in result.stderr + result.stdout


def test_backup_refuses_postgresql_and_names_pg_dump(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
    env["CRDT_SERVER_DATABASE_URL"] = f"postgresql://postgres:{PASSWORD}@127.0.0.1/test"
    result = subprocess.run([sys.executable, "-m", "crdt_server", "backup", str(tmp_path / "dest")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "pg_dump" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert not (tmp_path / "dest" / "crdt-server.db").exists()


async def test_a_nul_in_a_title_is_stored(tmp_path: Path, schema: str):
    """PostgreSQL text cannot hold NUL; a title (or a display name) with one must not fail the write."""
    srv = ServerProcess(tmp_path / "data", database=(URL, schema))
    srv.start()
    try:
        s = await create_session(srv, title="a\u0000b")  # 201
        async with httpx.AsyncClient(base_url=srv.base_url) as http:
            r = await http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["observer"]))
            assert r.json()["title"] == "a\ufffdb"
        async with py_client(srv, s, "candidate") as doc:
            doc.get("code", type=Text).insert(0, "typed")
            await anyio.sleep(0.5)
        async with py_client(srv, s, "observer") as doc:
            assert text_of(doc) == "typed"
    finally:
        srv.stop()


async def test_cut_connections_reconnect_and_a_blocking_lock_fails_writes_visibly(tmp_path: Path, schema: str, js_deps):
    """The server's connections terminated: the next requests work (the pool and the writer reconnect,
    the instance lock is taken again). A lock that blocks the writer: the author's socket closes with
    1011 after --database-timeout, nobody sees the edit meanwhile, and it lands once the lock is gone."""
    srv = ServerProcess(tmp_path / "data", database=(URL, schema), extra_args=["--database-timeout", "1"])
    srv.start()
    try:
        s = await create_session(srv, code="")
        token = s["tokens"]["interviewer"]
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
            pg_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                   f"crdt-server/{schema}")
            await anyio.sleep(0.3)
            r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "after cut"}, headers=auth(token))
            assert r.status_code == 200, r.text
            assert (await http.get(f"/api/sessions/{s['id']}/code", headers=auth(token))).json()["code"] == "after cut"
            with anyio.fail_after(15):  # the instance lock is held again (checked every few seconds)
                while not pg_sql("SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                                 "WHERE l.locktype = 'advisory' AND a.application_name = $1", f"crdt-server/{schema}"):
                    await anyio.sleep(0.2)
            assert (await http.get("/health")).status_code == 200

            async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Typist") as typist, \
                    js_client(srv.ws_url, s["id"], s["tokens"]["observer"], name="Watcher") as watcher:
                await watcher.wait_text(equals="after cut")
                blocker = await asyncpg.connect(URL)
                try:
                    tx = blocker.transaction()
                    await tx.start()
                    await blocker.execute(f'LOCK TABLE "{schema}".sessions IN ACCESS EXCLUSIVE MODE')
                    mark = typist.mark()
                    await typist.append(" typed")
                    await typist.wait_close(1011, timeout=15, since=mark)
                    assert await watcher.get_text() == "after cut"
                    r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "x"}, headers=auth(token))
                    assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
                finally:
                    await tx.rollback()
                    await blocker.close()
                await watcher.wait_text(equals="after cut typed", timeout=30)
            assert (await http.get("/health")).status_code == 200
        srv.restart()
        async with py_client(srv, s, "observer") as after:
            assert text_of(after) == "after cut typed"
    finally:
        srv.stop()


@dataclass
class PrivatePostgres:
    """A PostgreSQL instance of the test's own (``initdb`` + ``pg_ctl``), so the test may stop it."""

    bindir: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", *args],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self.ctl("-l", str(self.data.parent / "log"), "-o",
                 f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self.ctl("-m", "immediate", "stop")  # as a crash would: no goodbye to the clients


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    found = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("initdb is not installed (.ci/run installs PostgreSQL)")
        pytest.skip("initdb is not installed: no private PostgreSQL instance")
    bindir = Path(os.path.realpath(found)).parent
    root = Path(tempfile.mkdtemp(prefix="crdt-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PrivatePostgres(bindir, root / "data", free_port())
    try:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        except (subprocess.CalledProcessError, FileNotFoundError):
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
async def test_postgresql_down_for_a_moment(tmp_path: Path, private_postgres: PrivatePostgres, js_deps):
    """The database stops (like a crash) and comes back: writes fail visibly (the author's socket closes
    with 1011, REST answers 503, /health says degraded), nothing half-applied, and the author's client
    re-sends its edit once the database answers again."""
    srv = ServerProcess(tmp_path / "data", database=(private_postgres.url, "public"), extra_args=["--database-timeout", "2"])
    srv.start()
    try:
        s = await create_session(srv, code="")
        token = s["tokens"]["interviewer"]
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http, \
                js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Typist") as typist, \
                js_client(srv.ws_url, s["id"], s["tokens"]["observer"], name="Watcher") as watcher:
            await typist.append("before")
            await watcher.wait_text(equals="before")
            await anyio.to_thread.run_sync(private_postgres.stop)
            mark = typist.mark()
            await typist.append(" during")
            await typist.wait_close(1011, timeout=15, since=mark)
            assert await watcher.get_text() == "before", "an update that was not stored reached another client"
            r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "refused"}, headers=auth(token))
            assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable", r.text
            assert (await http.post("/api/sessions", json={})).status_code == 503
            health = await http.get("/health")
            assert health.status_code == 503 and health.json()["database"] == "error"
            await anyio.to_thread.run_sync(private_postgres.start)
            await watcher.wait_text(equals="before during", timeout=30)
            assert await typist.get_text() == "before during"
            with anyio.fail_after(15):
                while (await http.get("/health")).status_code != 200:
                    await anyio.sleep(0.2)
            r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(token))
            assert r.json()["code"] == "before during"
        assert "storage commit of" in srv.log()
        rows: list[Any] = await _fetch(private_postgres.url, "SELECT count(*) FROM sessions")
        assert rows == [(1,)]  # the refused create left nothing behind
        srv.restart()  # a cold load from the database has it too
        async with py_client(srv, s, "observer") as after:
            assert text_of(after) == "before during"
    finally:
        srv.stop()


async def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_a_read_cut_halfway_is_retried_on_a_new_connection(schema: str):
    """A read whose connection the server cuts while it runs (here: while it waits for a lock) is
    repeated once on a fresh connection, so a REST read does not fail for a restart it could survive."""
    async with PostgresStore(URL, schema=schema) as store:
        blocker = await asyncpg.connect(URL)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(f'LOCK TABLE "{schema}".events IN ACCESS EXCLUSIVE MODE')
            read = asyncio.ensure_future(store.read_events("s" * 22, 0, 10))
            with anyio.fail_after(10):
                while not await blocker.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = $1 AND wait_event_type = 'Lock'", f"crdt-server/{schema}"):
                    await anyio.sleep(0.05)
            await anyio.sleep(0.2)  # the retry now waits for the lock on its new connection
            await tx.rollback()
            assert await read == []
        finally:
            await blocker.close()
