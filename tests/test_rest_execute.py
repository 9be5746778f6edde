"""Run over HTTP: /api/languages, /api/execute and session runs that land in the live document."""

from __future__ import annotations

import hashlib
import time

import anyio
import httpx
import pytest
from pycrdt import Text

from .conftest import ServerProcess, auth, create_session, py_client, text_of, wait_for
from .execution_fixtures import require_bwrap
from .jsclient import js_client, js_deps  # noqa: F401

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def exec_server(tmp_path_factory):
    require_bwrap()  # fails (never skips) where the sandbox cannot run
    srv = ServerProcess(
        tmp_path_factory.mktemp("exec") / "data",
        ["--exec-workers", "2", "--exec-queue-size", "30", "--run-rate", "100", "--run-burst", "100"],
        env={"CRDT_SERVER_EXECUTION": "on"},
    )
    srv.start()
    yield srv
    srv.stop()


async def post(srv: ServerProcess, path: str, json: dict | None = None, token: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        return await http.post(path, json=json, headers=auth(token) if token else {})


async def test_health_and_languages_report_the_sandbox(exec_server):
    async with httpx.AsyncClient(base_url=exec_server.base_url) as http:
        assert (await http.get("/health")).json()["sandbox"] == "full"
        body = (await http.get("/api/languages")).json()
    runnable = {lang["name"] for lang in body["languages"] if lang["runnable"]}
    assert {"python", "javascript"} <= runnable
    assert body["sandbox"] == "full"
    assert all(lang["version"] for lang in body["languages"] if lang["runnable"])
    # The registry, not the toolchains: a language no host here runs is listed, not runnable.
    ruby = next(lang for lang in body["languages"] if lang["name"] == "ruby")
    assert ruby["runnable"] is False and ruby["version"] is None


async def test_execute_returns_output_exit_code_and_stdin(exec_server):
    r = await post(exec_server, "/api/execute", {"language": "python", "stdin": "21",
                                                 "code": "import sys\nn = int(input())\nprint(n * 2)\nsys.stderr.write('e')\nsys.exit(3)"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["stdout"], body["stderr"], body["exitCode"], body["timedOut"]) == ("42\n", "e", 3, False)
    assert body["sandbox"] == "full" and body["language"] == "python"
    r = await post(exec_server, "/api/execute", {"language": "javascript", "code": "while (true) {}", "timeout": 1})
    assert r.json()["timedOut"] is True


async def test_execute_rejects_unknown_languages_and_bad_bodies(exec_server):
    r = await post(exec_server, "/api/execute", {"language": "cobol", "code": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_language"
    r = await post(exec_server, "/api/execute", {"language": "python"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field"
    r = await post(exec_server, "/api/execute", {"language": "python", "code": "1", "timeout": -1})
    assert r.status_code == 422


async def test_timeout_above_the_maximum_is_refused_not_clamped(exec_server):
    r = await post(exec_server, "/api/execute", {"language": "python", "code": "print(1)", "timeout": 10.5})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field", r.text
    assert "--run-timeout-max" in r.json()["error"]["message"]
    s = await create_session(exec_server, code="print(1)\n")
    r = await post(exec_server, f"/api/sessions/{s['id']}/execute", {"timeout": 11}, s["tokens"]["candidate"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field", r.text
    r = await post(exec_server, "/api/execute", {"language": "python", "code": "print(1)", "timeout": 10})
    assert r.status_code == 200 and r.json()["stdout"] == "1\n", r.text


HOSTILE_OUTPUT = (
    "import sys\n"
    "sys.stdout.write('\\x1b[31mred\\x1b[0m \\x1b]0;pwned\\x07nul:\\x00 bidi:\\u202eevil\\n')\n"
    "sys.stderr.write('\\x1b[2J\\x1b[Hcleared\\n')\n"
)


async def test_run_output_reaches_editors_without_escapes_nul_or_bidi(exec_server, js_deps):
    """What every editor shows (the document's runs) is filtered; the API answer is the exact output."""
    s = await create_session(exec_server, code=HOSTILE_OUTPUT)
    async with js_client(exec_server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as editor:
        r = await post(exec_server, f"/api/sessions/{s['id']}/execute", {}, s["tokens"]["candidate"])
        assert r.status_code == 200, r.text
        assert "\x1b[31m" in r.json()["stdout"] and "\x00" in r.json()["stdout"]  # JSON carries it losslessly
        with anyio.fail_after(10):
            while not (runs := await editor.get_runs()):
                await anyio.sleep(0.05)
    run = runs[-1]
    assert run["stdout"] == "red nul:\\x00 bidi:\\u202eevil\n", run
    assert run["stderr"] == "cleared\n", run
    for text in (run["stdout"], run["stderr"]):
        assert not any(ch in text for ch in "\x1b\x00\u202e\x9b"), text


async def test_session_run_lands_in_runs_for_every_editor_and_in_history(exec_server, js_deps):
    s = await create_session(exec_server, code="print('from the pad')\n")
    async with js_client(exec_server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as editor:
        await editor.set_text("print(6 * 7)\n")
        await editor.wait_text(equals="print(6 * 7)\n")
        async with py_client(exec_server, s) as py:
            await wait_for(lambda: text_of(py) == "print(6 * 7)\n")
        r = await post(exec_server, f"/api/sessions/{s['id']}/execute", {}, s["tokens"]["candidate"])
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["stdout"] == "42\n" and result["runId"]
        with anyio.fail_after(10):
            while not (runs := await editor.get_runs()):
                await anyio.sleep(0.05)
        assert runs[-1]["id"] == result["runId"] and runs[-1]["stdout"] == "42\n" and runs[-1]["by"] == "candidate"
        assert runs[-1]["exitCode"] == 0 and runs[-1]["language"] == "python"
    async with httpx.AsyncClient(base_url=exec_server.base_url) as http:
        events = (await http.get(f"/api/sessions/{s['id']}/history", headers=auth(s["tokens"]["interviewer"]))).json()["events"]
    kinds = [e["type"] for e in events]
    assert kinds.index("run_started") < kinds.index("run_finished")
    started = next(e for e in events if e["type"] == "run_started")
    assert started["data"]["sha256"] == hashlib.sha256(b"print(6 * 7)\n").hexdigest()


async def test_session_runs_keep_the_newest_twenty(exec_server):
    s = await create_session(exec_server, code="print(1)")
    token = s["tokens"]["interviewer"]
    ids = []
    for _ in range(22):
        ids.append((await post(exec_server, f"/api/sessions/{s['id']}/execute", {}, token)).json()["runId"])
    async with py_client(exec_server, s, "observer") as doc:
        from pycrdt import Array

        runs = doc.get("runs", type=Array).to_py()
    assert [r["id"] for r in runs] == ids[-20:]


async def test_session_run_roles_and_ended_sessions(exec_server):
    s = await create_session(exec_server, code="print(1)")
    r = await post(exec_server, f"/api/sessions/{s['id']}/execute", {}, s["tokens"]["observer"])
    assert r.status_code == 403
    r = await post(exec_server, f"/api/sessions/{s['id']}/execute", {})
    assert r.status_code == 401
    async with httpx.AsyncClient(base_url=exec_server.base_url) as http:
        await http.patch(f"/api/sessions/{s['id']}", json={"status": "ended"}, headers=auth(s["tokens"]["interviewer"]))
    r = await post(exec_server, f"/api/sessions/{s['id']}/execute", {}, s["tokens"]["interviewer"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "session_ended"


async def test_one_run_per_session_at_a_time(exec_server):
    s = await create_session(exec_server, code="import time\ntime.sleep(1)\n")
    statuses: list[int] = []

    async def run() -> None:
        statuses.append((await post(exec_server, f"/api/sessions/{s['id']}/execute", {}, s["tokens"]["candidate"])).status_code)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.2)
        tg.start_soon(run)
    assert sorted(statuses) == [200, 429]


async def test_queue_full_and_rate_limit_answers(tmp_path):
    srv = ServerProcess(tmp_path / "data", ["--exec-workers", "1", "--exec-queue-size", "1",
                                            "--run-rate", "0.01", "--run-burst", "2"],
                        env={"CRDT_SERVER_EXECUTION": "on"})
    srv.start()
    try:
        slow = {"language": "python", "code": "import time\ntime.sleep(1.5)"}
        responses: list[httpx.Response] = []

        async def run() -> None:
            responses.append(await post(srv, "/api/execute", slow))

        async with anyio.create_task_group() as tg:
            for _ in range(4):  # 1 running + 1 queued; the others find the queue full
                tg.start_soon(run)
        full = [r for r in responses if r.status_code == 429]
        assert len(full) >= 1 and all(r.json()["error"]["code"] in ("queue_full", "rate_limited") for r in full)
        assert any(r.status_code == 200 for r in responses)

        s = await create_session(srv, code="print(1)")
        codes = [(await post(srv, f"/api/sessions/{s['id']}/execute", {}, s["tokens"]["candidate"])) for _ in range(3)]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert codes[2].json()["error"]["code"] == "rate_limited" and int(codes[2].headers["Retry-After"]) >= 1
    finally:
        srv.stop()


async def test_twenty_simultaneous_runs_do_not_stall_document_sync(exec_server):
    """While 20 CPU-heavy runs are queued or running, edits still propagate promptly."""
    s = await create_session(exec_server)
    burn = {"language": "python", "code": "x = 0\nfor i in range(30_000_000):\n    x += i\n", "timeout": 10}
    worst = 0.0
    async with py_client(exec_server, s) as writer, py_client(exec_server, s) as watcher:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(post, exec_server, "/api/execute", burn)
            await anyio.sleep(0.5)
            t = writer.get("code", type=Text)
            for i in range(20):
                sent = time.monotonic()
                t.insert(len(t), "x")
                await wait_for(lambda n=i + 1: len(text_of(watcher)) == n, timeout=5)
                worst = max(worst, time.monotonic() - sent)
                await anyio.sleep(0.1)
            tg.cancel_scope.cancel()  # the edits are the subject: the queued runs need not finish
    # generous liveness bound (figures for p99 live in bench/): a stalled loop would take seconds
    assert worst < 2.0, f"an edit took {worst:.2f} s to propagate during the runs"
