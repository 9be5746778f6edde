"""Fixtures for the interview page tests: one bundle build per test session, Chromium, the driver.

Servers started for these tests point ``--web-dir`` at the session's bundle with building off,
so no server runs npm. Chromium missing skips the browser tests with a printed reason, except
under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT

DRIVER_DIR = ROOT / "tests" / "web"
ARTIFACTS = ROOT / "test-artifacts"


def chromium_path() -> str:
    """Debian's Chromium; skipped (printed) without it outside CI, a failure in CI."""
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if found:
        return str(found)
    reason = "Chromium is not installed (apt-get install chromium): the interview page browser tests need it"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true)")
    print(f"\nSKIPPED: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def web_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``crdt-server build-web`` once per test session; servers get it via CRDT_SERVER_WEB_DIR."""
    out = tmp_path_factory.getbasetemp() / "web-bundle"
    result = subprocess.run([sys.executable, "-m", "crdt_server", "build-web", "--web-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def web_env(bundle: Path, **extra: str) -> dict[str, str]:
    return {"CRDT_SERVER_WEB_DIR": str(bundle), "CRDT_SERVER_WEB_BUILD": "off", **extra}


@pytest.fixture(scope="session")
def driver() -> Path:
    """``npm ci`` for the driver (playwright-core, no browser download) when its lock file changed."""
    lock = DRIVER_DIR / "package-lock.json"
    marker = DRIVER_DIR / "node_modules" / ".package-lock.json"
    with open(lock, "rb") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
            npm = shutil.which("npm")
            assert npm, "npm is needed for the interview page tests"
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=DRIVER_DIR, capture_output=True,
                                    text=True, timeout=600, env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
            assert result.returncode == 0, result.stdout + result.stderr
    return DRIVER_DIR / "drive.mjs"


def drive(script: Path, scenario: str, **params: Any) -> dict[str, Any]:
    """Run one driver scenario; its observations (it waits and records, the test asserts)."""
    node = shutil.which("node")
    assert node, "node is needed for the interview page tests"
    proc = subprocess.run([node, str(script), scenario, json.dumps(params)], capture_output=True, text=True,
                          timeout=240, cwd=DRIVER_DIR)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in report, report["error"]
    return report
