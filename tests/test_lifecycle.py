"""Room and process lifecycle: idle unload with a final flush, SIGTERM, secrets kept out of logs."""

from __future__ import annotations

import signal
import sqlite3
import time

import anyio
import httpx
import pytest
from pycrdt import Text

from .conftest import ServerProcess, auth, create_session, py_client, text_of, wait_for
from .jsclient import js_client, js_deps  # noqa: F401

pytestmark = pytest.mark.anyio


def snapshot_seqs(srv: ServerProcess, sid: str) -> list[int]:
    conn = sqlite3.connect(srv.data_dir / "crdt-server.db")
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM snapshots WHERE session_id = ? ORDER BY seq", (sid,))]
    finally:
        conn.close()


async def test_idle_room_is_flushed_and_unloaded_after_the_grace_period(tmp_path):
    srv = ServerProcess(tmp_path / "data", ["--room-grace", "0.5"])
    srv.start()
    try:
        s = await create_session(srv)
        async with py_client(srv, s) as doc:
            t = doc.get("code", type=Text)
            for ch in "hello":
                t.insert(len(t), ch)
            async with httpx.AsyncClient(base_url=srv.base_url) as http:
                with anyio.fail_after(5):
                    while (await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["candidate"]))).json()["code"] != "hello":
                        await anyio.sleep(0.02)
        assert snapshot_seqs(srv, s["id"]) == []  # still loaded, within the grace period
        await wait_for(lambda: snapshot_seqs(srv, s["id"]) != [], timeout=5)
        assert snapshot_seqs(srv, s["id"])[-1] >= 6  # creation + 5 edits, all covered by the final flush
        async with py_client(srv, s) as again:  # reloads from snapshot + tail
            assert text_of(again) == "hello"
    finally:
        srv.stop()


async def test_sigterm_with_clients_connected_flushes_and_exits_promptly(tmp_path, js_deps):
    srv = ServerProcess(tmp_path / "data", ["--shutdown-timeout", "3"])
    srv.start()
    s = await create_session(srv)
    async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="A") as a:
        await a.type_chars("kept after shutdown")
        await a.wait_text(equals="kept after shutdown")
        await anyio.sleep(0.2)
        started = time.monotonic()
        assert srv.stop(signal.SIGTERM, timeout=15) is not None
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"SIGTERM took {elapsed:.1f} s"
    assert "shut down cleanly" in srv.log()
    assert snapshot_seqs(srv, s["id"]) != []  # every room flushed on the way out
    srv.start()
    try:
        async with py_client(srv, s) as doc:
            assert text_of(doc) == "kept after shutdown"
    finally:
        srv.stop()


async def test_tokens_and_code_never_reach_the_logs(server, js_deps):
    secret_code = "CANDIDATE_SECRET_CODE_1234"
    s = await create_session(server, code=secret_code)
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="A") as a:
        await a.append("more")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
        await http.post(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["candidate"]), json={"code": secret_code + "2"})
        await http.get(f"/api/sessions/{s['id']}", headers=auth("not-a-valid-token"))
    log = server.log()
    assert "WebSocket" in log  # the handshake was logged ...
    for token in s["tokens"].values():
        assert token not in log  # ... without its token
    assert secret_code not in log


async def test_persistence_off_still_syncs_but_keeps_nothing(tmp_path):
    srv = ServerProcess(tmp_path / "data", ["--persistence", "off"])
    srv.start()
    try:
        s = await create_session(srv, code="seed")
        async with py_client(srv, s) as a, py_client(srv, s) as b:
            a.get("code", type=Text).insert(4, "+edit")
            await wait_for(lambda: text_of(b) == "seed+edit")
        srv.restart()
        async with py_client(srv, s) as c:
            assert text_of(c) == "seed"  # only the session's creation was stored
    finally:
        srv.stop()
