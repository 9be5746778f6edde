"""Logs an operator can use: JSON lines that parse, one access line per request, no token anywhere."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt_server.logs import JsonFormatter, log_run, log_socket_closed, log_socket_opened

from .conftest import ServerProcess, auth, create_session, py_client, text_of, wait_for

SECRET = "operator-secret-" + "x" * 32


async def exercise(server: ServerProcess) -> dict[str, Any]:
    """Traffic that puts tokens in every place a log could pick them up."""
    session = await create_session(server, title="t", code="print(1)\n")
    async with py_client(server, session, "candidate") as doc:  # ?token= in the WebSocket URL
        await wait_for(lambda: text_of(doc) == "print(1)\n")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        token = session["tokens"]["interviewer"]
        assert (await http.get(f"/api/sessions/{session['id']}/code", headers=auth(token))).status_code == 200
        await http.get(f"/api/sessions/{session['id']}/code?token={token}")  # a token in a REST query string
        await http.get("/api/sessions/nope", headers=auth("eyJhbGciOi.not-a-valid.token"))
    return session


def tokens_of(session: dict[str, Any]) -> list[str]:
    return list(session["tokens"].values())


@pytest.mark.anyio
async def test_json_lines_parse_and_carry_no_token(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", ["--log-format", "json"], env={"CRDT_SERVER_SECRET": SECRET})
    server.start()
    try:
        session = await exercise(server)
    finally:
        server.stop()
    output = server.log()
    records = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert records and all(isinstance(r, dict) and {"ts", "level", "logger", "message"} <= r.keys() for r in records)
    for secret in [*tokens_of(session), SECRET]:
        assert secret not in output
    assert "Bearer eyJ" not in output
    assert any(r["logger"].startswith("uvicorn") for r in records), "uvicorn's own lines go through the formatter"
    handshakes = [r for r in records if "WebSocket" in r["message"]]
    assert any("?token=[redacted]" in r["message"] for r in handshakes), handshakes
    access = [r for r in records if r["logger"] == "crdt_server.access"]
    code_reads = [r for r in access if r["path"] == f"/api/sessions/{session['id']}/code"]
    assert len(code_reads) == 2, access
    ok = next(r for r in code_reads if r["status"] == 200)
    assert ok["method"] == "GET" and ok["session_id"] == session["id"] and ok["client"] == "127.0.0.1"
    assert isinstance(ok["duration_ms"], float | int) and ok["duration_ms"] >= 0
    assert all("?" not in r["path"] for r in access), "the query string (with its token) is never logged"
    assert any(r["path"] == "/api/sessions" and r["status"] == 201 for r in access)


@pytest.mark.anyio
async def test_text_format_is_readable_and_redacted(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        session = await exercise(server)
    finally:
        server.stop()
    output = server.log()
    assert f"crdt_server.access: GET /api/sessions/{session['id']}/code 200 " in output
    assert not output.lstrip().startswith("{")
    for token in tokens_of(session):
        assert token not in output
    secret = (tmp_path / "data" / "secret.key").read_text().strip()
    assert secret not in output


def test_structured_lines_for_sockets_runs_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        log_socket_opened("S1", "candidate", "c0ffee")
        log_socket_closed("S1", "candidate", "c0ffee", 12.3456, 1000)
        log_run(None, "python", "ok", 41.7)
        try:
            raise RuntimeError("boom ?token=eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJ4In0.c2lnbmF0dXJl")
        except RuntimeError:
            logging.getLogger("crdt_server.test").exception("failed")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    opened, closed, run, crash = lines[-4:]
    assert (opened["event"], opened["session_id"], opened["role"], opened["connection_id"]) == (
        "socket_opened", "S1", "candidate", "c0ffee")
    assert (closed["event"], closed["duration_s"], closed["close_code"]) == ("socket_closed", 12.346, 1000)
    assert (run["event"], run["session_id"], run["language"], run["outcome"], run["duration_ms"]) == (
        "run", None, "python", "ok", 41.7)
    assert "RuntimeError" in crash["exception"] and "Traceback" in crash["exception"]
    assert "eyJzaWQiOiJ4In0" not in json.dumps(crash)


def test_warnings_and_uncaught_exceptions_become_json_lines() -> None:
    import subprocess

    script = (
        "import warnings, threading\n"
        "from crdt_server import logs\n"
        "logs.configure('info', 'json')\n"
        "warnings.warn('old api')\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
        "raise SystemError('crash with Bearer abc.def.ghi')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    records = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert [r["logger"] for r in records] == ["py.warnings", "crdt_server.crash", "crdt_server.crash"]
    assert "old api" in records[0]["message"]
    assert "ZeroDivisionError" in records[1]["exception"]
    assert "SystemError" in records[2]["exception"] and "abc.def.ghi" not in records[2]["exception"]


@pytest.mark.anyio
@pytest.mark.parametrize(("trusted", "client"), [(None, "127.0.0.1"), ("127.0.0.1", "203.0.113.7")])
async def test_forwarded_for_is_believed_only_from_listed_proxies(tmp_path: Path, trusted: str | None,
                                                                   client: str) -> None:
    args = ["--log-format", "json"] + (["--forwarded-allow-ips", trusted] if trusted else [])
    server = ServerProcess(tmp_path / "data", args)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            await http.get("/forwarded-probe", headers={"X-Forwarded-For": "203.0.113.7"})
    finally:
        server.stop()
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    [line] = [r for r in records if r["logger"] == "crdt_server.access" and r["path"] == "/forwarded-probe"]
    assert (line["status"], line["client"]) == (404, client)


def test_child_output_is_relayed_line_by_line(capsys: pytest.CaptureFixture[str]) -> None:
    from crdt_server.logs import log_output

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("crdt_server.output")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_output("build", b"vite v5 building\n\n  dist/index.js 12 kB\n")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["message"], r["source"]) for r in lines] == [("vite v5 building", "build"), ("  dist/index.js 12 kB", "build")]
