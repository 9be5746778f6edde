"""``crdt-server backup DEST`` beside a live server: a second server on DEST serves the same sessions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from pycrdt import Text

from .conftest import ROOT, ServerProcess, auth, create_session, py_client, text_of


def run_backup(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
    return subprocess.run([sys.executable, "-m", "crdt_server", "backup", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


async def code_of(server: ServerProcess, session_id: str, token: str) -> str:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{session_id}/code", headers=auth(token))
        assert r.status_code == 200, r.text
        return str(r.json()["code"])


@pytest.mark.anyio
async def test_backup_of_a_live_server_restores_sessions_code_and_tokens(tmp_path: Path) -> None:
    live = ServerProcess(tmp_path / "data")
    live.start()
    restored = ServerProcess(tmp_path / "backup")
    try:
        first = await create_session(live, title="one", code="print(1)\n")
        second = await create_session(live, title="two", code="")
        async with py_client(live, second, "candidate") as doc:  # edits over the WebSocket
            code = doc.get("code", type=Text)
            for i in range(50):
                code += f"line {i}\n"
            expected = text_of(doc)
            token = second["tokens"]["interviewer"]
            with anyio.fail_after(10):  # the server has applied (and so committed) every edit
                while await code_of(live, second["id"], token) != expected:
                    await anyio.sleep(0.05)
            # the backup runs while the socket is connected and the server is writing
            result = run_backup(str(tmp_path / "backup"), "--data-dir", str(tmp_path / "data"))
            assert result.returncode == 0, result.stderr
            assert "2 sessions" in result.stdout
            code += "after the backup\n"
        secret = tmp_path / "backup" / "secret.key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.read_text() == (tmp_path / "data" / "secret.key").read_text()
        assert live.proc is not None and live.proc.poll() is None, "the live server kept running"

        restored.start()
        # the first server's tokens work on the restored one (same secret), with the same code
        assert await code_of(restored, first["id"], first["tokens"]["observer"]) == "print(1)\n"
        assert await code_of(restored, second["id"], second["tokens"]["candidate"]) == expected
        async with py_client(restored, second, "observer") as doc:
            assert text_of(doc) == expected
    finally:
        restored.stop()
        live.stop()


def test_backup_refuses_without_a_database_and_into_the_live_directory(tmp_path: Path) -> None:
    missing = run_backup(str(tmp_path / "dest"), "--data-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no database" in missing.stderr and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
