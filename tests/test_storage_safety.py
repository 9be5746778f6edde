"""The data directory under an operator's bad day: two servers on one database, a damaged
database, a bad secret file, file modes, and a big session's load not stalling the others."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Doc, Text

from crdt_server.document import initial_document
from crdt_server.service import new_session_id
from crdt_server.storage import EventRecord, SessionRecord, SQLiteStore, UpdateRecord
from crdt_server.sync import RoomOptions, SessionServer, load_document
from crdt_server.tokens import TokenSigner

from .conftest import ServerProcess, auth, create_session, py_client, text_of, wait_for
from .pg import BACKENDS as BOTH  # not named BACKENDS: only the tests marked below run on both

pytestmark = pytest.mark.anyio


def test_a_second_server_on_the_same_data_dir_refuses_to_start(fresh_server: ServerProcess):
    second = ServerProcess(fresh_server.data_dir)
    with pytest.raises(RuntimeError) as refused:
        second.start()
    assert f"data directory {fresh_server.data_dir} is in use by another running crdt-server" in str(refused.value)
    assert httpx.get(fresh_server.base_url + "/health").status_code == 200  # the first one is undisturbed


def test_the_lock_dies_with_the_process(fresh_server: ServerProcess):
    fresh_server.kill9()
    fresh_server.start()  # no stale lock after a crash


async def test_a_corrupted_database_refuses_to_start(fresh_server: ServerProcess):
    await create_session(fresh_server, code="x" * 50_000)
    fresh_server.stop()
    db = fresh_server.data_dir / "crdt-server.db"
    with open(db, "r+b") as f:  # garbage over every page but the header page
        f.seek(4096)
        f.write(os.urandom(db.stat().st_size - 4096))
    with pytest.raises(RuntimeError) as refused:
        fresh_server.start()
    assert f"database {db} is" in str(refused.value) and "restore it from a backup" in str(refused.value)


def test_a_file_that_is_not_a_database_refuses_to_start(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "crdt-server.db").write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(RuntimeError) as refused:
        ServerProcess(data).start()
    assert "is unreadable" in str(refused.value)


def test_an_empty_secret_file_refuses_to_start(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text("")
    with pytest.raises(RuntimeError) as refused:
        ServerProcess(data).start()
    assert "secret.key holds no usable secret" in str(refused.value)


async def test_data_directory_and_files_are_private(fresh_server: ServerProcess):
    await create_session(fresh_server)
    data = fresh_server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("crdt-server.db", "crdt-server.db-wal", "crdt-server.db-shm", "secret.key", "crdt-server.db.lock"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


@pytest.mark.backends(*BOTH)
async def test_snapshots_never_skip_rows_another_writer_committed(make_store: Any):
    """Two processes' rooms on one database (what the lock prevents): neither may write a
    snapshot that lacks the other's rows, so a reload has every committed edit."""
    options = RoomOptions(grace=60, snapshot_every=1, persist=True, presence_interval=0, max_pending=100)
    now = time.time()
    async with make_store() as one, make_store() as two, SessionServer(one, options) as rooms_one, \
            SessionServer(two, options) as rooms_two:
        await one.create_session(SessionRecord("s", "", "python", "active", now, now, now + 3600),
                                 initial_document("", "python", ""), EventRecord("s", "created", {}))
        async with rooms_one.room("s") as a, rooms_two.room("s") as b:
            for room, text in ((a, "A"), (b, "B"), (a, "C")):
                client: Doc = Doc()
                client.apply_update(room.ydoc.get_update())
                before = client.get_state()
                client.get("code", type=Text).insert(0, text)
                await room.submit(client.get_update(before))
        await rooms_one.unload("s")
        await rooms_two.unload("s")
    async with make_store() as fresh:
        doc, *_ = await load_document(fresh, "s")
    assert sorted(str(doc.get("code", type=Text))) == ["A", "B", "C"]


async def _big_session(data: Path, n: int) -> tuple[str, str]:
    """A session with ``n`` one-character updates in its log and no snapshot, written before the server starts."""
    secret = "s" * 48
    data.mkdir(parents=True)
    (data / "secret.key").write_text(secret)
    doc: Doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    code = doc.get("code", type=Text)
    for i in range(n):
        code.insert(i, "ab\n"[i % 3])
    now = time.time()
    sid = new_session_id()
    async with SQLiteStore(data / "crdt-server.db") as store:
        await store.create_session(SessionRecord(sid, "", "python", "active", now, now, now + 3600),
                                   initial_document("", "python", ""), EventRecord(sid, "created", {}))
        for start in range(0, n, 2000):
            await store.append_updates([UpdateRecord(sid, u, "candidate", "c") for u in updates[start:start + 2000]])
    return sid, TokenSigner(secret, 3600).issue(sid, "interviewer")


async def test_reading_a_big_unloaded_session_does_not_stall_other_sessions(tmp_path: Path):
    n = 40_000
    sid, token = await _big_session(tmp_path / "data", n)
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        other = await create_session(srv)
        async with py_client(srv, other, "candidate") as writer, py_client(srv, other, "observer") as reader:
            latencies: list[float] = []
            done = anyio.Event()

            async def edit_until_done() -> None:
                i = 0
                while not done.is_set():
                    t0 = time.perf_counter()
                    writer.get("code", type=Text).insert(0, "x")
                    i += 1
                    await wait_for(lambda n=i: len(text_of(reader)) == n, timeout=30, interval=0.002)  # type: ignore[misc]
                    latencies.append(time.perf_counter() - t0)
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(edit_until_done)
                await anyio.sleep(0.3)
                async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as http:
                    t0 = time.perf_counter()
                    r = await http.get(f"/api/sessions/{sid}/code", headers=auth(token))
                    load_time = time.perf_counter() - t0
                await anyio.sleep(0.3)
                done.set()
        assert r.status_code == 200 and len(r.json()["code"]) == n
        assert load_time > 0.2, f"the load took {load_time:.2f} s: too small to show a stall"
        assert max(latencies) < max(0.5, load_time / 2), \
            f"another session's edits stalled {max(latencies):.2f} s during a {load_time:.2f} s load"
    finally:
        srv.stop()


@pytest.mark.backends(*BOTH)
async def test_the_store_refuses_snapshots_past_the_log_or_older_than_the_newest(make_store: Any):
    now = time.time()
    async with make_store() as store:
        await store.create_session(SessionRecord("s", "", "python", "active", now, now, now + 3600),
                                   initial_document("", "python", ""), EventRecord("s", "created", {}))
        doc: Doc = Doc()
        updates: list[bytes] = []
        doc.observe(lambda e: updates.append(e.update))
        doc.get("code", type=Text).insert(0, "ab")
        doc.get("code", type=Text).insert(2, "cd")
        await store.append_updates([UpdateRecord("s", u, "candidate", "c") for u in updates])  # seqs 2, 3
        with pytest.raises(ValueError):
            await store.write_snapshot("s", 4, doc.get_update())  # beyond the log
        await store.write_snapshot("s", 3, doc.get_update())
        with pytest.raises(ValueError):
            await store.write_snapshot("s", 2, b"stale")  # a stale writer may not replace a newer one
        snapshot, tail, base = await store.load("s")
        assert base == 3 and tail == [] and snapshot == doc.get_update()
