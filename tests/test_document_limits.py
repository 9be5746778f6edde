"""The document size limit and the session storage quota on every write path (WebSocket, REST),
with the real JavaScript client: a refusal is final (4413, which y-websocket does not retry) and
explicit (HTTP 413), and nobody else in the session is affected."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from .conftest import ROOT, ServerProcess, auth, create_session, py_client, text_of, wait_for
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("limits") / "data", ["--max-document-size", str(LIMIT)])
    srv.start()
    yield srv
    srv.stop()


async def test_a_paste_past_the_limit_is_refused_for_good_and_others_carry_on(small):
    s = await create_session(small, code="start\n")
    async with js_client(small.ws_url, s["id"], s["tokens"]["candidate"], name="Paster") as paster, \
            js_client(small.ws_url, s["id"], s["tokens"]["interviewer"], name="Other") as other:
        await paster.insert(0, "x" * (LIMIT + 1000))
        event = await paster.wait_close(4413, timeout=10)
        assert event["permanent"] and "too large" in event["reason"]
        await other.insert(0, "still editing ")
        await anyio.sleep(3)  # y-websocket would have reconnected by now (backoff starts at 100 ms)
        status = await paster.status()
        assert len([x for x in status["closes"] if not x.get("local")]) == 1, "the refused client reconnected"
        assert not status["connected"]
        assert await other.get_text() == "still editing start\n"
    async with py_client(small, s, "observer") as newcomer:
        assert text_of(newcomer) == "still editing start\n"


async def test_an_offline_document_over_the_limit_uploads_once_and_stops(small):
    """A client that edited offline past the limit sends it all in its first sync step 2: one
    explicit refusal, not a reconnect loop re-uploading it."""
    s = await create_session(small, code="")
    async with js_client(small.ws_url, s["id"], s["tokens"]["candidate"], wait_synced=False, connect=False) as c:
        await c.insert(0, "offline " * (LIMIT // 4))
        await c.reconnect()
        await c.wait_close(4413, timeout=10)
        await anyio.sleep(3)
        status = await c.status()
        assert len([x for x in status["closes"] if not x.get("local")]) == 1
    async with httpx.AsyncClient(base_url=small.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["interviewer"]))
        assert r.json()["code"] == ""


async def test_rest_save_over_the_limit_is_413_and_changes_nothing(small):
    s = await create_session(small, code="keep me")
    token = s["tokens"]["interviewer"]
    async with httpx.AsyncClient(base_url=small.base_url) as http:
        r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "y" * (LIMIT + 1)}, headers=auth(token))
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "document_too_large"
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(token))
        assert r.json()["code"] == "keep me"
        r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "z" * (LIMIT // 2)}, headers=auth(token))
        assert r.status_code == 200, r.text


async def test_the_session_storage_quota_refuses_writes_with_413(tmp_path: Path):
    srv = ServerProcess(tmp_path / "data", ["--max-document-size", str(LIMIT), "--session-storage-quota", "200000"])
    srv.start()
    try:
        s = await create_session(srv, code="")
        token = s["tokens"]["interviewer"]
        async with httpx.AsyncClient(base_url=srv.base_url) as http, \
                js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Editor") as editor:
            codes = []
            for i in range(20):  # each save replaces the whole text: ~40 KB of log per save
                r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": str(i) * 20000}, headers=auth(token))
                codes.append(r.status_code)
                if r.status_code != 200:
                    assert r.status_code == 413, r.text
                    assert r.json()["error"]["code"] == "storage_quota_exceeded"
                    break
            assert codes[-1] == 413 and codes.count(200) >= 2, codes
            event = await editor.wait_close(4413, timeout=10)  # the session takes no more edits: final
            assert event["permanent"] and "quota" in event["reason"]
            # the refused write left nothing behind; the last accepted text is still there
            r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(token))
            assert r.json()["code"] == str(len(codes) - 2) * 20000
    finally:
        srv.stop()


@pytest.mark.parametrize("args,message", [
    (["--max-document-size", str(9 * 1024 * 1024)], "--max-document-size / CRDT_SERVER_MAX_DOCUMENT_SIZE: must be between"),
    (["--max-document-size", str(4 * 1024 * 1024)],
     "--max-message-size / CRDT_SERVER_MAX_MESSAGE_SIZE: must be at least --max-document-size + 64"),
    (["--max-document-size", "1000000", "--send-queue-bytes", "500000"],
     "--send-queue-bytes / CRDT_SERVER_SEND_QUEUE_BYTES: must be at least --max-document-size + 64"),
])
def test_inconsistent_limits_refuse_to_start(tmp_path: Path, args: list[str], message: str):
    proc = subprocess.run([sys.executable, "-m", "crdt_server", "--data-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert message in proc.stderr


async def test_a_document_at_the_limit_reaches_a_newcomer_with_the_smallest_queue_allowed(tmp_path: Path):
    """The limits agree: with the send queue and message size as small as the start-up check
    allows, a document just under the limit still syncs to a newcomer (no 1013 loop) and its
    client can upload its own copy again after a restart."""
    limit = 1024 * 1024
    fit = str(limit + 64)
    srv = ServerProcess(tmp_path / "data", ["--max-document-size", str(limit), "--send-queue-bytes", fit,
                                            "--max-message-size", fit])
    srv.start()
    try:
        s = await create_session(srv, code="")
        big = "".join(chr(97 + (i * 7919) % 26) for i in range(limit - 4096))
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
            r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": big},
                                headers=auth(s["tokens"]["interviewer"]))
            assert r.status_code == 200, r.text
        async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Newcomer", timeout=30) as c:
            assert await c.get_text() == big
            srv.restart()  # the client's copy goes back up in its first sync step 2
            await c.wait_synced(30)
            await c.insert(0, "ok ")
        async with py_client(srv, s, "observer") as after:
            await wait_for(lambda: text_of(after).startswith("ok "), timeout=10)
    finally:
        srv.stop()
