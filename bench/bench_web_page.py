"""The interview page in Chromium: build time, bundle size, page load to connected, keystroke latency.

    uv run python bench/bench_web_page.py

Builds the page once (timed: ``npm ci`` + esbuild, and esbuild alone), starts a server on it,
and drives Debian's Chromium (``tests/web/drive.mjs measure``): five loads in fresh contexts, then
three rounds of 20 keystrokes from one context to another, timed from the keydown in the typing
page to the next animation frame after the other page's editor changed (one machine, one clock).
"""

from __future__ import annotations

import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crdt_server.web import find_bundle  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402
from tests.webpage import DRIVER_DIR, web_env  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "crdt_server", "build-web", "--web-dir", str(tmp / "web")], cwd=ROOT,
                   check=True, capture_output=True)
    cold = time.monotonic() - started
    bundle = find_bundle(tmp / "web", None)
    assert bundle is not None
    shutil.rmtree(bundle.directory)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "crdt_server", "build-web", "--web-dir", str(tmp / "web")], cwd=ROOT,
                   check=True, capture_output=True)
    warm = time.monotonic() - started
    bundle = find_bundle(tmp / "web", None)
    assert bundle is not None
    m = bundle.manifest
    editor = bundle.directory / m["entries"]["editor.js"]
    print(f"build: first (npm ci + esbuild) {cold:.1f} s, again (esbuild only) {warm:.1f} s wall, "
          f"esbuild {m['buildMs']} ms")
    print(f"bundle: all JavaScript {m['javascriptBytes'] / 1024:.0f} KiB raw, {m['javascriptGzipBytes'] / 1024:.0f} KiB gzip "
          f"({len(m['files'])} files); editor entry {editor.stat().st_size / 1024:.0f} KiB, "
          f"{len(gzip.compress(editor.read_bytes(), 9)) / 1024:.0f} KiB gzip")

    srv = ServerProcess(tmp / "data", env=web_env(tmp / "web"))
    srv.start()
    try:
        created = httpx.post(srv.base_url + "/api/sessions", json={"code": ""}).json()
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        proc = subprocess.run(["node", str(DRIVER_DIR / "drive.mjs"), "measure",
                               json.dumps({"chromium": chromium, "links": created["links"]})],
                              cwd=DRIVER_DIR, capture_output=True, text=True, check=True)
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        srv.stop()
    if "error" in report:
        raise SystemExit(report["error"])
    loads = report["loads"]
    print("page load to connected (fresh context): " + ", ".join(f"{x['ms']} ms" for x in loads)
          + f"; first load transfers {loads[0]['transfer'] / 1024:.0f} KiB of /static/ ({loads[0]['files']} files, "
            f"{loads[0]['decoded'] / 1024:.0f} KiB decoded)")
    for r in report["latencyRounds"]:
        print(f"keystroke to remote screen (20): median {r['median']:.1f} ms, max {r['max']:.1f} ms")
    every = [x for r in report["latencyRounds"] for x in r["samples"]]
    print(f"all {len(every)}: median {statistics.median(every):.1f} ms, max {max(every):.1f} ms")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
