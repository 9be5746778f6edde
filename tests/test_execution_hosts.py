"""Servers sharing a host: their sandbox uid ranges never collide (a starting server must not kill
another's runs), and in degraded mode a run reads no secret of the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from crdt_server.execution import ExecutionService, SandboxUnavailable
from crdt_server.execution.procs import processes_of

from .conftest import ROOT, ServerProcess
from .execution_fixtures import anyio_backend, require_bwrap, sandbox_settings, sandbox_uids  # noqa: F401

pytestmark = pytest.mark.anyio

SLEEPER = "import time\ntime.sleep({seconds})\nprint('done')\n"


def exec_server(data_dir: Path, *args: str, uid_base: int | None, **env: str) -> ServerProcess:
    extra = {"CRDT_SERVER_EXECUTION": "on", **env}
    srv = ServerProcess(data_dir, ["--exec-workers", "2", "--run-rate", "100", "--run-burst", "100", *args], env=extra)
    if uid_base is None:  # the real default: the ServerProcess helper otherwise picks a unique base
        srv.env["CRDT_SERVER_SANDBOX_UID_BASE"] = "60000"
    else:
        srv.env["CRDT_SERVER_SANDBOX_UID_BASE"] = str(uid_base)
    return srv


def claimed_base(srv: ServerProcess) -> int:
    found = re.search(r"sandbox uids (\d+)-(\d+) claimed", srv.log())
    assert found, srv.log()
    return int(found.group(1))


async def run(srv: ServerProcess, code: str, timeout: float = 10) -> dict:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=120) as http:
        r = await http.post("/api/execute", json={"language": "python", "code": code, "timeout": timeout})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_two_servers_on_one_host_keep_their_runs(tmp_path: Path) -> None:
    """The second server (same default uid base) starts while the first runs a program: it claims
    the next free uid range, both run programs, and the first one's run finishes undisturbed. A third
    server whose explicitly chosen base overlaps the first's is refused and kills nothing."""
    require_bwrap()
    first = exec_server(tmp_path / "a", "--run-timeout-max", "120", uid_base=None)
    second = exec_server(tmp_path / "b", uid_base=None)
    first.start()
    try:
        base = claimed_base(first)
        result: dict = {}

        async def long_run() -> None:
            result.update(await run(first, SLEEPER.format(seconds=20), timeout=120))

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_run)
            await anyio.sleep(1.5)  # the sleeper is running in slot 0 of the first server
            await anyio.to_thread.run_sync(second.start)
            assert claimed_base(second) != base and "taken by another server" in second.log()
            ok = await run(second, "print('second')")
            assert (ok["stdout"], ok["exitCode"]) == ("second\n", 0), ok
            await anyio.sleep(0.5)
            assert not result or result["exitCode"] == 0, f"the first server's run was killed: {result}"
            third = exec_server(tmp_path / "c", uid_base=base + 1)
            with pytest.raises(RuntimeError, match="in use by another crdt-server"):
                await anyio.to_thread.run_sync(third.start)
            assert not result or result["exitCode"] == 0, f"the first server's run was killed: {result}"
        assert (result["stdout"], result["exitCode"], result.get("killedBySignal")) == ("done\n", 0, None), result
    finally:
        second.stop()
        first.stop()


def test_secrets_on_the_command_line_are_refused(tmp_path: Path) -> None:
    """Every local process reads /proc/<pid>/cmdline (uv run keeps its argv too): a secret there is public."""
    for flag, env in (("--secret", "CRDT_SERVER_SECRET"), ("--api-key", "CRDT_SERVER_API_KEY")):
        out = subprocess.run([sys.executable, "-m", "crdt_server", "--data-dir", str(tmp_path), flag, "hunter2-x"],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and env in lines[0] and "hunter2" not in lines[0], out.stderr


FIND_SECRETS = """
import glob, sys
markers = sys.stdin.read().split()
seen = {m: [] for m in markers}
control = False
for path in glob.glob('/proc/[0-9]*/cmdline') + glob.glob('/proc/[0-9]*/environ') + sys.argv[1:] + [DATA + '/secret.key']:
    try:
        data = open(path, 'rb').read()
    except OSError:
        continue
    control = control or b'pytest' in data or b'crdt_server' in data
    for m in markers:
        if m.encode() in data:
            seen[m].append(path)
print('control' if control else 'no-control', sum(map(len, seen.values())), seen)
"""


async def test_a_degraded_run_reads_no_secret(tmp_path: Path) -> None:
    """--sandbox-mode degraded (no namespaces: the run sees every host process): neither the API key
    (env of the server) nor the signing secret (data dir) is readable from any /proc entry or file."""
    require_bwrap()
    data = tmp_path / "data"
    api_key = "apikey-" + "k" * 24
    srv = exec_server(data, "--sandbox-mode", "degraded", "--sandbox-require", "degraded", uid_base=None,
                      CRDT_SERVER_API_KEY=api_key)
    srv.start()
    try:
        secret = (data / "secret.key").read_text().strip()
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as http:
            assert (await http.get("/health")).json()["sandbox"] == "degraded"
            code = FIND_SECRETS.replace("DATA", repr(str(data)))
            r = await http.post("/api/execute", headers={"Authorization": f"Bearer {api_key}"},
                                json={"language": "python", "code": code, "stdin": f"{api_key} {secret}"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["sandbox"] == "degraded" and out["exitCode"] == 0, out
        # control: the run did see other processes' command lines (degraded mode), just no secret
        assert out["stdout"].startswith("control 0 "), out
    finally:
        srv.stop()


async def test_a_run_killed_from_outside_says_so() -> None:
    """SIGKILL from outside the sandbox (an operator, another server before uid claims): not a
    silent 137, but killedBySignal and a note in stderr."""
    require_bwrap()
    async with ExecutionService(sandbox_settings(probe_languages=False)) as svc:

        async def killer() -> None:
            with anyio.fail_after(10):
                while not (victims := [p for p in processes_of(set(sandbox_uids())) if p.state != "Z"]):
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)
            for p in victims:
                os.kill(p.pid, signal.SIGKILL)

        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            result = await svc.run(language="python", code=SLEEPER.format(seconds=8), timeout=10)
        assert result.exit_code == 137 and not result.timed_out and result.killed_by_signal == 9, result
        assert "killed by SIGKILL" in result.stderr and result.as_json()["killedBySignal"] == 9
        ok = await svc.run(language="python", code="print(1)")
        assert ok.killed_by_signal is None and ok.stderr == ""


async def test_require_full_needs_cgroups_and_mode_degraded_is_chosen() -> None:
    require_bwrap()
    with pytest.raises(SandboxUnavailable, match="cgroup"):
        async with ExecutionService(sandbox_settings(probe_languages=False, use_cgroups=False)):
            pass
    async with ExecutionService(sandbox_settings(probe_languages=False, mode="degraded", require="degraded")) as svc:
        assert svc.mode == "degraded" and "sandbox mode degraded" in svc.layers["reasons"]["namespaces"]
        assert (await svc.run(language="python", code="print(1)")).sandbox == "degraded"
