"""The fallback without namespaces (forced with use_namespaces=False): rlimits + slot uid +
seccomp + Landlock + cgroups. It must say so in every result and still hold the main attacks."""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdt_server.execution import ExecutionService

from .execution_fixtures import (
    anyio_backend,
    assert_no_leftovers,
    require_bwrap,
    sandbox_settings,
    sandbox_uids,
    server_file,
)

__all__ = ["anyio_backend"]
pytestmark = pytest.mark.anyio

UID_BASE = 62800
UIDS = sandbox_uids(UID_BASE)


@pytest.fixture(scope="module")
async def degraded(anyio_backend: str) -> AsyncIterator[ExecutionService]:
    require_bwrap()
    async with ExecutionService(sandbox_settings(use_namespaces=False, require="degraded", uid_base=UID_BASE)) as svc:
        assert svc.mode == "degraded", svc.layers
        yield svc
    assert_no_leftovers(UIDS)


@pytest.fixture
async def svc(degraded: ExecutionService) -> AsyncIterator[ExecutionService]:
    yield degraded
    result = await degraded.run(language="python", code="print('ok')\n")
    assert result.stdout == "ok\n" and result.sandbox == "degraded", result
    assert_no_leftovers(UIDS)


async def test_degraded_is_loud(caplog: pytest.LogCaptureFixture, svc: ExecutionService) -> None:
    assert svc.layers["namespaces"] is False and "namespaces" in svc.layers["reasons"]
    with caplog.at_level(logging.WARNING, logger="crdt_server.execution"):
        result = await svc.run(language="python", code="import os\nprint(os.getuid())\n")
    assert result.sandbox == "degraded" and int(result.stdout) in UIDS
    assert any("SANDBOX DEGRADED" in r.getMessage() for r in caplog.records)


async def test_degraded_languages(svc: ExecutionService) -> None:
    names = [lang.name for lang in svc.languages()]
    assert "python" in names and "javascript" in names, svc.skipped_languages
    result = await svc.run(language="javascript", code="console.log(6 * 7)\n")
    assert result.stdout == "42\n", result
    if "c" in names:
        result = await svc.run(language="c", code='#include <stdio.h>\nint main(void) { puts("c"); return 4; }\n')
        assert (result.stdout, result.exit_code) == ("c\n", 4), result


async def test_degraded_secrets_files_and_writes(svc: ExecutionService, tmp_path: Path) -> None:
    repo_file = server_file()  # exists on the host: only the sandbox can make it unreadable
    os.environ["CRDT_SERVER_SECRET"] = "degraded-secret"
    secret_file = tmp_path / "secret.key"
    secret_file.write_text("degraded-secret")
    os.chmod(tmp_path, 0o777)
    os.chmod(secret_file, 0o644)
    try:
        code = (
            "import os\n"
            "print(dict(os.environ))\n"
            f"for path in [{str(secret_file)!r}, {repo_file!r}, '/etc/hostname']:\n"
            "    try:\n"
            "        print(path, open(path).read()[:20])\n"
            "    except OSError as e:\n"
            "        print(path, 'denied', e.errno)\n"
            f"for path in [{str(tmp_path / 'pwned')!r}, '/var/tmp/pwned', '/dev/shm/pwned', '/usr/pwned']:\n"
            "    try:\n"
            "        open(path, 'w').write('x')\n"
            "        print(path, 'WRITTEN')\n"
            "    except OSError as e:\n"
            "        print(path, 'denied', e.errno)\n"
        )
        result = await svc.run(language="python", code=code)
    finally:
        del os.environ["CRDT_SERVER_SECRET"]
    assert "degraded-secret" not in result.stdout and "WRITTEN" not in result.stdout, result
    assert result.stdout.count("denied") == 7, result
    assert f"{repo_file} denied {errno.EACCES}" in result.stdout, result  # refused, not absent
    assert not (tmp_path / "pwned").exists()


async def test_degraded_network(svc: ExecutionService) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            "for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n"
            "    try:\n"
            "        s = socket.socket(socket.AF_INET, kind)\n"
            f"        s.connect(('127.0.0.1', {port}))\n"
            "        print('CONNECTED')\n"
            "    except OSError as e:\n"
            "        print('blocked', e.errno)\n"
        )
        result = await svc.run(language="python", code=code)
        assert result.stdout.count("blocked") == 2, result
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_degraded_fork_bomb_and_timeout(svc: ExecutionService) -> None:
    started = time.monotonic()
    result = await svc.run(language="python", code="import os\nwhile True:\n    try:\n        os.fork()\n"
                                                   "    except OSError:\n        pass\n")
    assert result.timed_out and time.monotonic() - started < 2 + 3, result


async def test_degraded_daemon_is_killed(svc: ExecutionService) -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(1000)\n    os._exit(0)\nprint('parent done')\n")
    started = time.monotonic()
    result = await svc.run(language="python", code=code)
    assert result.stdout == "parent done\n" and time.monotonic() - started < 2 + 3, result
    assert_no_leftovers(UIDS)


async def test_degraded_memory_bomb_several_processes(svc: ExecutionService) -> None:
    code = ("import os, time\nkids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        block = b'x' * (200 << 20)\n        time.sleep(30)\n        os._exit(0)\n    kids.append(pid)\n"
            "time.sleep(1.5)\nprint('alive', sum(os.waitpid(p, os.WNOHANG) == (0, 0) for p in kids), flush=True)\n")
    result = await svc.run(language="python", code=code, timeout=3)
    if "alive" in result.stdout:
        assert int(result.stdout.split()[1]) <= 1, result
    assert result.oom_killed or "MemoryError" in result.stderr, result


async def test_degraded_disk_fill_is_stopped(svc: ExecutionService) -> None:
    """No tmpfs without namespaces: the scratch dir is on the host disk, so its size is watched."""
    code = (
        "import os\n"
        "for i in range(64):\n"
        "    try:\n"
        "        with open(f'fill{i}', 'wb') as f:\n"
        "            for _ in range(16):\n"
        "                f.write(b'\\0' * (1 << 20))\n"
        "    except OSError:\n"
        "        pass\n"
        "print('wrote everything')\n"
    )
    result = await svc.run(language="python", code=code, timeout=10)
    assert "wrote everything" not in result.stdout and result.exit_code == 137, result
