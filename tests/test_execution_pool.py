"""Admission control (queue, one run per session, token bucket), start-up requirements,
settings validation, and that the event loop keeps running during runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from crdt_server.config import Settings
from crdt_server.execution import (
    ExecutionService,
    ExecutionSettings,
    QueueFull,
    RateLimited,
    RunResult,
    SandboxError,
    SandboxUnavailable,
    SessionBusy,
)
from crdt_server.execution.cgroups import GROUP_PREFIX
from crdt_server.execution.pool import RunPool

from .execution_fixtures import anyio_backend, assert_no_leftovers, require_bwrap, sandbox_settings, sandbox_uids

__all__ = ["anyio_backend"]
pytestmark = pytest.mark.anyio

SLEEP = "import time\ntime.sleep({})\nprint('done')\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_bucket_retry_after() -> None:
    clock = FakeClock()
    pool = RunPool(workers=2, queue_size=4, rate=0.5, burst=2, clock=clock)
    for _ in range(2):
        async with pool.slot("pad"):
            pass
    with pytest.raises(RateLimited) as info:
        async with pool.slot("pad"):
            pass
    assert info.value.retry_after == pytest.approx(2.0)
    clock.now += 1.0
    with pytest.raises(RateLimited) as info:
        pool.admit("pad")
    assert info.value.retry_after == pytest.approx(1.0)
    clock.now += 1.0
    async with pool.slot("pad"):
        pass
    async with pool.slot("other-pad"):  # buckets are per session
        pass
    async with pool.slot(None):  # internal runs are not rate limited
        pass


async def test_pool_queue_and_busy_without_sandbox() -> None:
    pool = RunPool(workers=1, queue_size=1, rate=100, burst=100)
    release = anyio.Event()
    order: list[str] = []

    async def hold(key: str) -> None:
        async with pool.slot(key):
            order.append(key)
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, "a")
        await anyio.sleep(0.01)
        tg.start_soon(hold, "b")
        await anyio.sleep(0.01)
        assert (pool.running, pool.waiting) == (1, 1)
        with pytest.raises(SessionBusy):
            pool.admit("a")
        with pytest.raises(QueueFull):
            pool.admit("c")
        release.set()
    assert order == ["a", "b"] and (pool.running, pool.waiting) == (0, 0)
    async with pool.slot("a"):  # freed again
        pass


async def test_service_queue_full_session_busy_and_loop_not_blocked() -> None:
    require_bwrap()
    settings = sandbox_settings(workers=1, queue_size=1, uid_base=62200)
    async with ExecutionService(settings) as svc:
        results: dict[str, RunResult] = {}
        ticks = 0

        async def run(key: str) -> None:
            results[key] = await svc.run(language="python", code=SLEEP.format(1.0), session_key=key)

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.02)
                ticks += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(run, "pad-a")
            await anyio.sleep(0.2)  # pad-a is running
            tg.start_soon(run, "pad-b")
            await anyio.sleep(0.1)  # pad-b is queued
            with pytest.raises(SessionBusy):
                await svc.run(language="python", code="print(1)", session_key="pad-a")
            with pytest.raises(QueueFull):
                await svc.run(language="python", code="print(1)", session_key="pad-c")
            assert svc.queue_depth == 1
            while len(results) < 2:
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert all(r.stdout == "done\n" for r in results.values())
        assert ticks > 50, "the event loop was blocked while runs were in flight"
    assert_no_leftovers(sandbox_uids(62200, 1))


async def test_service_rate_limit() -> None:
    require_bwrap()
    settings = sandbox_settings(session_rate=0.1, session_burst=2, uid_base=62300)
    async with ExecutionService(settings) as svc:
        for _ in range(2):
            assert (await svc.run(language="python", code="print(1)", session_key="pad")).stdout == "1\n"
        with pytest.raises(RateLimited) as info:
            await svc.run(language="python", code="print(1)", session_key="pad")
        assert 0 < info.value.retry_after <= 10.0
        assert (await svc.run(language="python", code="print(2)", session_key="other")).stdout == "2\n"


async def test_cancelled_caller_kills_the_run() -> None:
    """A client that disconnects mid-run (cancellation) must not leave the program running."""
    require_bwrap()
    async with ExecutionService(sandbox_settings(uid_base=62400)) as svc:
        with anyio.move_on_after(0.5):
            await svc.run(language="python", code=SLEEP.format(30), timeout=10)
        assert_no_leftovers(sandbox_uids(62400))
        assert (await svc.run(language="python", code="print(3)")).stdout == "3\n"


def _memory_cgroup_parent() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path)
    return None


async def test_require_full_refuses_to_start_without_namespaces() -> None:
    require_bwrap()
    svc = ExecutionService(sandbox_settings(use_namespaces=False, require="full", uid_base=62500))
    with pytest.raises(SandboxUnavailable):
        await svc.start()
    assert svc.mode == "unavailable"
    parent = _memory_cgroup_parent()
    if parent is not None and parent.exists():  # nothing left behind by the failed start
        assert not list(parent.glob(f"{GROUP_PREFIX}{os.getpid()}-*"))


async def test_cgroups_and_state_removed_on_close() -> None:
    require_bwrap()
    svc = ExecutionService(sandbox_settings(uid_base=62600))
    await svc.start()
    layers = svc.layers
    assert layers["mode"] == "full" and layers["namespaces"] and layers["seccomp"] and layers["uidSwitch"]
    state_dir = svc._state_dir
    assert state_dir is not None and state_dir.exists()
    await svc.aclose()
    assert not state_dir.exists()
    parent = _memory_cgroup_parent()
    if layers["cgroup"] == "v1" and parent is not None:
        assert not list(parent.glob(f"{GROUP_PREFIX}{os.getpid()}-*"))
    with pytest.raises(SandboxUnavailable):
        await svc.run(language="python", code="print(1)")


def test_settings_validation() -> None:
    defaults = Settings()
    with pytest.raises(ValueError):
        ExecutionSettings.from_settings(defaults, require="sometimes")
    with pytest.raises(ValueError):
        ExecutionSettings.from_settings(defaults, uid_base=0)
    with pytest.raises(ValueError):
        ExecutionSettings.from_settings(defaults, default_timeout=20, max_timeout=10)
    assert ExecutionSettings.from_settings(defaults).workers >= 1


def test_settings_come_from_the_server_settings() -> None:
    server = Settings(exec_workers=3, exec_queue_size=7, run_timeout=4.0, run_timeout_max=8.0, compile_timeout=9.0,
                      run_output_limit=1000, run_memory_mb=128, run_max_processes=32, run_tmp_mb=16,
                      max_code_size=5000, run_rate=2.0, run_burst=3, sandbox_require="degraded",
                      sandbox_uid_base=61000)
    s = ExecutionSettings.from_settings(server)
    assert (s.workers, s.queue_size, s.default_timeout, s.max_timeout, s.compile_timeout) == (3, 7, 4.0, 8.0, 9.0)
    assert (s.output_limit, s.memory_limit_mb, s.max_processes, s.tmp_size_mb) == (1000, 128, 32, 16)
    assert (s.max_code_bytes, s.session_rate, s.session_burst, s.require, s.uid_base) == (
        5000, 2.0, 3, "degraded", 61000)
    assert ExecutionSettings.from_settings(Settings(exec_workers=0)).workers == len(os.sched_getaffinity(0))
    assert ExecutionSettings.from_settings(server, workers=1, nice=5).workers == 1


async def test_not_started_is_unavailable() -> None:
    svc = ExecutionService(sandbox_settings())
    assert svc.mode == "unavailable" and svc.languages() == []
    with pytest.raises(SandboxUnavailable):
        await svc.run(language="python", code="print(1)")


@pytest.mark.parametrize("anyio_backend", [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
async def test_runs_under_uvloop_too(anyio_backend: object) -> None:
    """The server runs anyio on uvloop: spawning with pass_fds and waiting on pidfds must work there."""
    require_bwrap()
    import asyncio

    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    async with ExecutionService(sandbox_settings(uid_base=62700)) as svc:
        has_c = "c" in [lang.name for lang in svc.languages()]
        code = '#include <stdio.h>\nint main(void) { puts("uv"); }\n' if has_c else "print('uv')\n"
        result = await svc.run(language="c" if has_c else "python", code=code)
        assert result.stdout == "uv\n", result
        started = time.monotonic()
        result = await svc.run(language="python", code="while True: pass\n", timeout=0.5)
        assert result.timed_out and time.monotonic() - started < 0.5 + 3
    assert_no_leftovers(sandbox_uids(62700))


async def test_no_uid_switch_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never run submitted code as the server's own uid: without CAP_SETUID there is no sandbox."""
    import crdt_server.execution.service as service_module

    monkeypatch.setattr(service_module, "can_switch_uid", lambda: (False, "simulated: not root"))
    svc = ExecutionService(sandbox_settings(require="any", uid_base=62900))
    await svc.start()
    try:
        assert svc.mode == "unavailable" and svc.languages() == []
        assert svc.layers["reasons"]["uidSwitch"] == "simulated: not root"
        with pytest.raises(SandboxUnavailable):
            await svc.run(language="python", code="print(1)")
    finally:
        await svc.aclose()
    with pytest.raises(SandboxUnavailable):
        await ExecutionService(sandbox_settings(require="degraded", uid_base=62900)).start()


async def test_fork_server_killed_mid_run_is_replaced() -> None:
    require_bwrap()
    import signal

    async with ExecutionService(sandbox_settings(workers=1, uid_base=63400)) as svc:
        assert svc._sandbox is not None
        forkserver = svc._sandbox._forkservers[0]
        async with anyio.create_task_group() as tg:

            async def kill_soon() -> None:
                await anyio.sleep(0.5)
                assert forkserver.pid is not None
                os.kill(forkserver.pid, signal.SIGKILL)

            tg.start_soon(kill_soon)
            started = time.monotonic()
            with pytest.raises(SandboxError, match="fork server"):
                await svc.run(language="python", code=SLEEP.format(30), timeout=10)
            assert time.monotonic() - started < 5
        assert_no_leftovers(sandbox_uids(63400, 1), wait=3)
        result = await svc.run(language="python", code="print('back')\n")
        assert result.stdout == "back\n", result
