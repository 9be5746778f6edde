"""The interview page's bundle: where it lives, whether it is current, and building it.

The page is our own code (the repository's ``web/``), but its bundle contains third-party
packages, so it is built (``npm ci`` + esbuild) and never committed. A build writes only into a
directory the server owns (``--web-dir``, default ``<data-dir>/web``), never into the source tree,
so a read-only install still starts. Each bundle is a directory ``bundle-<source hash>`` whose
``manifest.json`` is written last: a directory with a manifest is complete. The source hash covers
every file the build reads (sources, ``package.json``, the lock file), so an edit makes it stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..logs import log_output

log = logging.getLogger("crdt_server.web")

SOURCE_DIR = Path(__file__).resolve().parents[2] / "web"
SOURCE_FILES = ("package.json", "package-lock.json", "build.mjs")
MIN_NODE_MAJOR = 18
NO_NODE = ("Node >= 18 and npm are needed to build the interview page (`crdt-server build-web`); "
           "the server runs without it.")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class BuildError(Exception):
    """The page could not be built; the message says why in one sentence or two."""


@dataclass(frozen=True)
class Bundle:
    directory: Path
    manifest: dict[str, Any]

    @property
    def entries(self) -> dict[str, str]:
        return dict(self.manifest.get("entries", {}))

    @property
    def source_hash(self) -> str | None:
        value = self.manifest.get("sourceHash")
        return value if isinstance(value, str) else None

    def file(self, name: str) -> Path | None:
        """The path of a served file, only for names the build listed (no traversal, no extras)."""
        if not _SAFE_NAME.match(name) or name not in self.manifest.get("files", []):
            return None
        path = self.directory / name
        return path if path.is_file() else None


def _source_paths(source: Path) -> Iterator[Path]:
    for name in SOURCE_FILES:
        yield source / name
    yield from sorted(p for p in (source / "src").rglob("*") if p.is_file())


def source_hash(source: Path = SOURCE_DIR) -> str | None:
    """SHA-256 over the build's inputs, or None when there are no sources (an installed wheel)."""
    if not (source / "package.json").is_file() or not (source / "src").is_dir():
        return None
    digest = hashlib.sha256()
    for path in _source_paths(source):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(missing)")
        digest.update(b"\0")
    return digest.hexdigest()


def find_bundle(web_dir: Path, wanted: str | None) -> Bundle | None:
    """The bundle built from sources with hash ``wanted``; with ``wanted`` None, the newest one."""
    try:
        candidates = [d for d in web_dir.iterdir() if d.name.startswith("bundle-") and (d / "manifest.json").is_file()]
    except OSError:
        return None
    bundles = []
    for d in candidates:
        try:
            manifest = json.loads((d / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and "editor.js" in manifest.get("entries", {}):
            bundles.append(Bundle(d, manifest))
    if wanted is not None:
        return next((b for b in bundles if b.source_hash == wanted), None)
    return max(bundles, key=lambda b: (b.directory / "manifest.json").stat().st_mtime, default=None)


def node_tools() -> tuple[str, str]:
    """(node, npm) executables, or BuildError when either is missing or Node is too old."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BuildError(NO_NODE)
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise BuildError(NO_NODE) from None
    if major < MIN_NODE_MAJOR:
        raise BuildError(f"Node {version} is too old; " + NO_NODE)
    return node, npm


async def _run(cmd: list[str], cwd: Path) -> None:
    """Run a build step, its output line by line through the server's logger."""
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false"}
    tail: list[str] = []
    log.info("editor build: %s", " ".join(Path(cmd[0]).name if i == 0 else a for i, a in enumerate(cmd)))
    async with await anyio.open_process(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        buffer = b""
        async for chunk in proc.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").rstrip()
                if text:
                    log_output("editor-build", text)
                    tail = [*tail[-19:], text]
        await proc.wait()
    if proc.returncode != 0:
        raise BuildError(f"`{Path(cmd[0]).name} {cmd[1] if len(cmd) > 1 else ''}` failed with exit code "
                         f"{proc.returncode}: {' | '.join(tail[-5:])}")


class _DirLock:
    """An exclusive flock on ``<web-dir>/.build.lock``: one build per directory across processes."""

    def __init__(self, web_dir: Path) -> None:
        self.path = web_dir / ".build.lock"
        self.fd: int | None = None

    async def __aenter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                await anyio.sleep(0.2)

    async def __aexit__(self, *exc: object) -> None:
        assert self.fd is not None
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _copy_sources(source: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "src", ignore_errors=True)
    shutil.copytree(source / "src", work / "src")
    for name in SOURCE_FILES:
        shutil.copy2(source / name, work / name)


async def build(web_dir: Path, source: Path = SOURCE_DIR) -> Bundle:
    """Build the page from ``source`` into ``web_dir`` unless a current bundle is there already."""
    wanted = source_hash(source)
    if wanted is None:
        raise BuildError(f"No page sources at {source} (an installed package carries none); "
                         "point --web-dir at a built bundle.")
    node, npm = node_tools()
    try:
        web_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"{web_dir} is not writable ({exc.strerror}); set --web-dir to a writable directory.") \
            from None
    async with _DirLock(web_dir):
        existing = find_bundle(web_dir, wanted)
        if existing is not None:  # another process built it while this one waited
            return existing
        started = anyio.current_time()
        work = web_dir / "work"
        _copy_sources(source, work)
        lock_hash = hashlib.sha256((work / "package-lock.json").read_bytes()).hexdigest()
        marker = work / "node_modules" / ".crdt-server-lock-hash"
        if not marker.is_file() or marker.read_text() != lock_hash:
            await _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], work)
            marker.write_text(lock_hash)
        for stale in web_dir.glob(".staging-*"):  # left by a build that died (this one holds the lock)
            shutil.rmtree(stale, ignore_errors=True)
        staging = web_dir / f".staging-{wanted[:16]}-{os.getpid()}"
        await _run([node, "build.mjs", "--outdir", str(staging), "--source-hash", wanted], work)
        final = web_dir / f"bundle-{wanted[:16]}"
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        # Keep the previous bundle too: a server still running older sources may be serving it.
        older = sorted((d for d in web_dir.glob("bundle-*") if d != final), key=lambda d: d.stat().st_mtime)
        for old in older[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        bundle = find_bundle(web_dir, wanted)
        if bundle is None:
            raise BuildError(f"the build finished but {final} holds no complete bundle")
        log.info("editor page built in %.1f s into %s", anyio.current_time() - started, final)
        return bundle
