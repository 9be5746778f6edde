"""A full disk: clean 503 answers, /health degraded, no acknowledged edit lost, recovery when
space comes back. The data directory is a small tmpfs mounted for the test (needs root)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from pycrdt import Text

from .conftest import ServerProcess, auth, create_session, py_client, text_of, wait_for
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write until the file system says ENOSPC."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 512):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break


async def test_disk_full_gives_503_and_recovers_without_losing_edits(small_disk: Path, tmp_path: Path):
    srv = ServerProcess(small_disk / "data")
    srv.log_path = tmp_path / "server.log"  # the log must not need the full disk
    srv.start()
    try:
        s = await create_session(srv, code="")
        token = s["tokens"]["interviewer"]
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
            async with py_client(srv, s, "candidate") as writer, py_client(srv, s, "observer") as reader:
                writer.get("code", type=Text).insert(0, "typed before ")
                await wait_for(lambda: text_of(reader) == "typed before ")
            r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "saved before"}, headers=auth(token))
            assert r.status_code == 200
            acknowledged = "saved before"

            fill(small_disk / "filler")
            refused = None
            for i in range(10):  # each save needs new WAL space (the WAL may have some room left)
                r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": f"{i}" * 400_000},
                                    headers=auth(token))
                if r.status_code == 200:
                    acknowledged = f"{i}" * 400_000
                    continue
                refused = r
                break
            assert refused is not None, "the full disk never refused a write"
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"
            assert "Retry-After" in refused.headers
            r = await http.post("/api/sessions", json={"code": "z" * 400_000})
            assert r.status_code == 503, r.text
            health = await http.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            log = srv.log()
            assert "database or disk is full" in log
            assert "cannot rollback" not in log

            (small_disk / "filler").unlink()
            deadline = time.monotonic() + 15
            while (await http.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, "health did not recover once space came back"
                await anyio.sleep(0.1)
            r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(token))
            assert r.json()["code"] == acknowledged
            r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "saved after"}, headers=auth(token))
            assert r.status_code == 200, r.text
        with sqlite3.connect(small_disk / "data" / "crdt-server.db") as db:  # the refused create left no row
            assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
        srv.restart()
        async with py_client(srv, s, "observer") as after:
            assert text_of(after) == "saved after"
    finally:
        srv.stop()


async def test_an_editor_typing_through_a_full_disk_keeps_its_edits(small_disk: Path, tmp_path: Path):
    """Updates that cannot be stored are never broadcast; the session's sockets close with 1011, the
    real clients reconnect and, once space is back, the typist's edits are stored and reach the others."""
    srv = ServerProcess(small_disk / "data")
    srv.log_path = tmp_path / "server.log"
    srv.start()
    try:
        s = await create_session(srv, code="")
        big = "x" * 600_000  # needs new WAL space: refused while the disk is full
        async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Typist") as typist, \
                js_client(srv.ws_url, s["id"], s["tokens"]["observer"], name="Watcher") as watcher:
            await typist.insert(0, "before ")
            await watcher.wait_text(equals="before ")
            fill(small_disk / "filler")
            mark = typist.mark()
            await typist.insert(len("before "), big)
            await typist.wait_close(1011, timeout=15, since=mark)
            assert await watcher.get_text() == "before ", "an update that was not stored reached another client"
            await anyio.sleep(1)
            (small_disk / "filler").unlink()
            await watcher.wait_text(equals="before " + big, timeout=30)
        srv.restart()
        async with py_client(srv, s, "observer") as after:
            assert text_of(after) == "before " + big
    finally:
        srv.stop()


def test_a_first_start_on_a_full_disk_leaves_no_empty_secret(small_disk: Path, tmp_path: Path):
    data = small_disk / "data"
    data.mkdir()
    fill(small_disk / "filler")
    srv = ServerProcess(data)
    srv.log_path = tmp_path / "server.log"
    with pytest.raises(RuntimeError):
        srv.start()
    assert not (data / "secret.key").exists()  # never an empty one that later starts would accept
    (small_disk / "filler").unlink()
    srv.start()  # space is back: a normal first start
    try:
        assert len((data / "secret.key").read_text()) >= 32
    finally:
        srv.stop()
