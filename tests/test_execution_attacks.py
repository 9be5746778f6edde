"""Every attack class of docs/design/sandbox.md, asserted contained, each followed by a normal run
that must still succeed quickly and a check that no process of a sandbox uid is left."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from crdt_server.execution import ExecutionService, RunResult

from .execution_fixtures import anyio_backend, assert_healthy, assert_no_leftovers, sandbox_uids, server_file, service

__all__ = ["anyio_backend", "service"]  # fixtures
pytestmark = pytest.mark.anyio

TIMEOUT = 2.0
BOUND = TIMEOUT + 3  # a contained run returns within its timeout plus generous slack


@pytest.fixture
async def svc(service: ExecutionService) -> AsyncIterator[ExecutionService]:
    """The module's service; after each attack: healthy again, nothing left behind."""
    yield service
    await assert_healthy(service)
    assert_no_leftovers(sandbox_uids())


async def timed(
    svc: ExecutionService, language: str, code: str, timeout: float = TIMEOUT, **kw: Any
) -> tuple[RunResult, float]:
    started = time.monotonic()
    result = await svc.run(language=language, code=code, timeout=timeout, **kw)
    return result, time.monotonic() - started


async def test_fork_bomb_python(svc: ExecutionService) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result, wall = await timed(svc, "python", code)
    assert result.timed_out and wall < BOUND, (result, wall)


async def test_fork_bomb_bash(svc: ExecutionService) -> None:
    result, wall = await timed(svc, "bash", ":(){ :|:& };:\nwait\n")
    assert wall < BOUND, (result, wall)


async def test_thread_bomb(svc: ExecutionService) -> None:
    code = ("import threading, time\nn = 0\ntry:\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\n"
            "except RuntimeError:\n    print('stopped at', n)\n")
    result, wall = await timed(svc, "python", code)
    assert "stopped at" in result.stdout, (result, wall)
    assert int(result.stdout.split()[-1]) < svc.settings.max_processes
    assert wall < BOUND


async def test_memory_bomb_one_process(svc: ExecutionService) -> None:
    code = "x = []\nwhile True:\n    x.append(b'x' * (16 << 20))\n"
    result, _ = await timed(svc, "python", code)
    assert result.exit_code != 0 and not result.timed_out, result
    assert result.oom_killed or "MemoryError" in result.stderr, result
    if svc.layers["cgroup"]:
        assert result.oom_killed and result.exit_code == 137, result


async def test_memory_bomb_node(svc: ExecutionService) -> None:
    code = "const a = [];\nfor (;;) a.push(new Array(1e6).fill(Math.random()));\n"
    result, wall = await timed(svc, "javascript", code, timeout=10)
    assert result.exit_code != 0 and not result.timed_out and wall < 10 + 3, result


async def test_memory_bomb_several_processes(svc: ExecutionService) -> None:
    """4 x 200 MB under a 256 MB budget: RLIMIT_AS alone lets all four live, the cgroup does not."""
    code = (
        "import os, sys, time\n"
        "kids = []\n"
        "for i in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = b'x' * (200 << 20)\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "time.sleep(1.5)\n"
        "alive = sum(os.waitpid(p, os.WNOHANG) == (0, 0) for p in kids)\n"
        "print('alive', alive, flush=True)\n"
    )
    result, wall = await timed(svc, "python", code, timeout=3)
    assert svc.layers["cgroup"], "no memory cgroup on this host: multi-process memory bombs are not contained"
    assert result.oom_killed, result
    if "alive" in result.stdout:  # the parent itself may be the OOM victim
        assert int(result.stdout.split()[1]) <= 1, result
    assert wall < 3 + 3


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_infinite_output_is_capped_and_killed(svc: ExecutionService, stream: str) -> None:
    code = f"import sys\nwhile True:\n    sys.{stream}.write('y' * 1000)\n"  # no newline at all
    result, wall = await timed(svc, "python", code, timeout=10)
    assert result.truncated and not result.timed_out, result
    assert len(getattr(result, stream).encode()) == svc.settings.output_limit
    assert wall < 5, "output cap must kill the run, not wait for the timeout"


async def test_infinite_output_node(svc: ExecutionService) -> None:
    result, wall = await timed(svc, "javascript", "for (;;) console.log('z'.repeat(100));\n", timeout=10)
    assert result.truncated and len(result.stdout) == svc.settings.output_limit and wall < 5, result


async def test_disk_fill(svc: ExecutionService) -> None:
    code = (
        "import errno\n"
        "total, errors = 0, set()\n"
        "for i in range(12):\n"
        "    try:\n"
        "        with open(f'/tmp/fill{i}', 'wb') as f:\n"
        "            while True:\n"
        "                f.write(b'\\0' * (1 << 20)); f.flush(); total += 1\n"
        "    except OSError as e:\n"
        "        errors.add(errno.errorcode[e.errno])\n"
        "try:\n"
        "    with open('/dev/shm/fill', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'\\0' * (1 << 20)); f.flush(); total += 1\n"
        "except OSError as e:\n"
        "    errors.add(errno.errorcode[e.errno])\n"
        "print(total, sorted(errors))\n"
    )
    result, _ = await timed(svc, "python", code, timeout=10)
    total = int(result.stdout.split()[0])
    assert total <= svc.settings.tmp_size_mb + 16 + 2, result  # /tmp tmpfs + 16 MB /dev/shm
    assert "ENOSPC" in result.stdout and "EFBIG" in result.stdout, result  # size cap and RLIMIT_FSIZE
    # Nothing persists: the next run starts with an empty /tmp.
    again = await svc.run(language="python", code="import os\nprint(os.listdir('/tmp'))\n")
    assert again.stdout == "[]\n", again


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


async def test_network_to_a_local_port(svc: ExecutionService) -> None:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        targets = ["127.0.0.1", _host_ip()]
        code = (
            "import socket\n"
            f"for host in {targets!r}:\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=1)\n"
            "        print(host, 'CONNECTED')\n"
            "    except OSError as e:\n"
            "        print(host, 'blocked', type(e).__name__)\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 80), timeout=1); print('internet CONNECTED')\n"
            "except OSError as e:\n"
            "    print('internet blocked', type(e).__name__)\n"
        )
        result, _ = await timed(svc, "python", code, timeout=5)
        assert "CONNECTED" not in result.stdout, result
        assert result.stdout.count("blocked") == 3, result
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_server_secrets_environment_and_files(svc: ExecutionService, tmp_path: Path) -> None:
    secret = "s3cr3t-token-value-for-test"
    os.environ["CRDT_SERVER_SECRET"] = secret
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret.key").write_text(secret)
    for p in (tmp_path, data_dir, data_dir / "secret.key"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)  # world-readable on purpose
    try:
        code = (
            "import os, glob\n"
            "print(dict(os.environ))\n"
            f"for path in [{str(data_dir / 'secret.key')!r}, {server_file()!r}, '/root/.bashrc',\n"
            "             '/etc/shadow', '/home', '/work', '/root', '/run', '/var']:\n"
            "    print(path, os.path.exists(path))\n"
            "for path in glob.glob('/proc/[0-9]*/environ'):\n"
            "    try:\n"
            "        print(path, open(path, 'rb').read())\n"
            "    except OSError as e:\n"
            "        print(path, e)\n"
            "print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
            "print(open('/etc/passwd').read())\n"
        )
        result, _ = await timed(svc, "python", code)
        assert result.exit_code == 0, result
        assert secret not in result.stdout and "CRDT_SERVER" not in result.stdout, result
        for line in result.stdout.splitlines():
            if line.startswith(("/", "'/")) and line.split()[-1] in ("True", "False"):
                assert line.endswith("False"), line
        pids = eval(result.stdout.split("pids ", 1)[1].splitlines()[0])
        assert len(pids) <= 3, pids  # bwrap's init, python, maybe the listing itself: not the host
        assert str(os.getpid()) not in pids
        assert "root:x:0:0" in result.stdout and "cloudsdk" not in result.stdout  # fake /etc/passwd
    finally:
        del os.environ["CRDT_SERVER_SECRET"]


async def test_writing_outside_the_sandbox(svc: ExecutionService, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    host_target = tmp_path / "pwned"
    code = (
        "import os\n"
        f"for path in ['/usr/pwned', '/etc/pwned', '/pwned', '/box/pwned', '/box/main.py', '/proc/sys/kernel/hostname',\n"
        f"             '/var/tmp/pwned', {str(host_target)!r}, '/sys/pwned']:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('x')\n"
        "        print(path, 'WRITTEN')\n"
        "    except OSError as e:\n"
        "        print(path, 'denied', e.errno)\n"
        "os.makedirs('/tmp/ok', exist_ok=True)\n"
        "open('/tmp/ok/file', 'w').write('fine')\n"
        "print('tmp ok')\n"
    )
    result, _ = await timed(svc, "python", code)
    assert "WRITTEN" not in result.stdout and "tmp ok" in result.stdout, result
    assert not host_target.exists()
    assert not Path("/var/tmp/pwned").exists()


async def test_sleeping_forever(svc: ExecutionService) -> None:
    result, wall = await timed(svc, "python", "import time\ntime.sleep(10**6)\n")
    assert result.timed_out and result.exit_code == 137 and wall < BOUND, (result, wall)


async def test_sleeping_with_closed_output(svc: ExecutionService) -> None:
    result, wall = await timed(svc, "bash", "exec >&- 2>&- <&-\nsleep 1000\n")
    assert result.timed_out and wall < BOUND, (result, wall)


async def test_cpu_burning_threads_do_not_starve_the_server(svc: ExecutionService) -> None:
    if "c" in [lang.name for lang in svc.languages()]:
        language = "c"
        code = ("#include <pthread.h>\nstatic void *spin(void *a) { volatile unsigned long x = 0; for (;;) x++; }\n"
                "int main(void) { pthread_t t[16]; for (int i = 0; i < 16; i++) pthread_create(&t[i], 0, spin, 0);\n"
                "  spin(0); }\n")
    else:
        language = "python"
        code = "import threading\nfor _ in range(16):\n    threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\n"
    max_lag = 0.0

    async def ticker() -> None:
        nonlocal max_lag
        while True:
            before = time.monotonic()
            await anyio.sleep(0.05)
            max_lag = max(max_lag, time.monotonic() - before - 0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result, wall = await timed(svc, language, code)
        tg.cancel_scope.cancel()
    assert result.timed_out and wall < BOUND + 3, (result, wall)  # + compile time for C
    assert max_lag < 1.0, f"event loop stalled {max_lag:.2f}s during the run"


async def test_kill_everything(svc: ExecutionService) -> None:
    code = (f"kill -9 {os.getpid()} 2>/dev/null || echo 'no server pid'\n"
            "kill -9 -1\nkill -9 1\nkill -9 $PPID\necho survived\n")
    result, _ = await timed(svc, "bash", code)
    assert "no server pid" in result.stdout and "survived" in result.stdout, result
    code = ("import os, signal, subprocess\nchild = subprocess.Popen(['sleep', '100'])\n"
            "os.kill(-1, signal.SIGKILL)\nprint('alive', child.wait())\n")
    result, _ = await timed(svc, "python", code)
    assert result.stdout == "alive -9\n", result  # kill(-1) reached only the sandbox's own processes


async def test_daemonised_children_are_not_left_behind(svc: ExecutionService) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(1000)\n"  # keeps the inherited stdout open
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    result, wall = await timed(svc, "python", code)
    assert result.stdout == "parent done\n" and not result.timed_out and wall < BOUND, result
    assert_no_leftovers(sandbox_uids())


async def test_nohup_background_job(svc: ExecutionService) -> None:
    result, wall = await timed(svc, "bash", "nohup sleep 1000 >/dev/null 2>&1 &\ndisown\necho started\n")
    assert result.stdout == "started\n" and not result.timed_out and wall < BOUND, result
    assert_no_leftovers(sandbox_uids())


async def test_privileged_syscalls_are_denied(svc: ExecutionService) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(name, *args):\n"
        "    r = getattr(libc, name)(*args)\n"
        "    print(name, r, ctypes.get_errno())\n"
        "call('ptrace', 0, 0, 0, 0)\n"  # PTRACE_TRACEME
        "call('unshare', 0x10000000)\n"  # CLONE_NEWUSER
        "call('unshare', 0x00020000)\n"  # CLONE_NEWNS
        "call('mount', b'none', b'/tmp', b'tmpfs', 0, None)\n"
        "call('syscall', 250, 0, 0, 0, 0)\n"  # keyctl
        "call('syscall', 321, 0, 0, 0)\n"  # bpf
        "call('syscall', 425, 1, 0)\n"  # io_uring_setup
        "status = open('/proc/self/status').read()\n"
        "print([l for l in status.splitlines() if l.startswith(('Uid', 'CapEff', 'NoNewPrivs', 'Seccomp:'))])\n"
    )
    result, _ = await timed(svc, "python", code)
    lines = result.stdout.splitlines()
    for line in lines[:7]:
        _, ret, err = line.split()
        assert ret == "-1" and int(err) in (errno.EPERM, errno.EACCES, errno.ENOSYS), line
    assert "CapEff:\\t0000000000000000" in lines[7] and "NoNewPrivs:\\t1" in lines[7], lines[7]
    assert "Seccomp:\\t2" in lines[7]
    uid = int(lines[7].split("Uid:\\t")[1].split("\\t")[0])
    assert uid in sandbox_uids(), lines[7]


async def test_tiocsti_and_foreign_arch_are_blocked(svc: ExecutionService) -> None:
    if "c" not in [lang.name for lang in svc.languages()]:
        pytest.skip("gcc is not installed on this host")
    code = ('#include <stdio.h>\n#include <errno.h>\n#include <sys/ioctl.h>\n#include <unistd.h>\n'
            'int main(void) { char c = \'x\'; int r = ioctl(0, TIOCSTI, &c);\n'
            '  printf("tiocsti %d %d\\n", r, errno); return 0; }\n')
    result, _ = await timed(svc, "c", code)
    assert result.stdout.startswith("tiocsti -1"), result
