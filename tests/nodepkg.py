"""Node packages the tests run (JS clients, the reference server), installed on demand from their lock files.

A test directory with a ``package.json`` and a committed ``package-lock.json`` is a ``NodePackage``;
``ensure()`` runs ``npm ci`` there when ``node_modules`` is missing, lacks a required package or is older
than the lock file, once per process and under an flock (pytest-xdist workers share the directory).
Node or npm missing, or ``npm ci`` failing, raises ``NodeSetupError``: tests error, they are never skipped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

__all__ = ["MIN_NODE_MAJOR", "NodePackage", "NodeSetupError", "node_executable"]

log = logging.getLogger("nodepkg")

MIN_NODE_MAJOR = 18


class NodeSetupError(RuntimeError):
    """Node/npm missing or the npm install failed. Never a reason to skip."""


def node_executable() -> str:
    """Path of `node` (>= 18); raises NodeSetupError if it is missing or too old."""
    node = shutil.which("node")
    if node is None:
        raise NodeSetupError(
            "`node` is not on PATH: the JavaScript interop tests need Node.js >= "
            f"{MIN_NODE_MAJOR} and npm (install them, e.g. `apt-get install nodejs npm`)"
        )
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        raise NodeSetupError(f"cannot run `{node} --version`: {exc}") from exc
    if major < MIN_NODE_MAJOR:
        raise NodeSetupError(f"Node.js {version} is too old; need >= {MIN_NODE_MAJOR}")
    return node


class NodePackage:
    """One directory with package.json + package-lock.json; ``required`` names what must be installed."""

    def __init__(self, directory: Path, required: tuple[str, ...], env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.required = required
        self.env = env or {}
        self.lock_file = directory / "package-lock.json"
        self.node_modules = directory / "node_modules"
        # npm (>= 7) writes this "hidden lockfile" on every install: its mtime says when it installed
        self.marker = self.node_modules / ".package-lock.json"
        self._lock = threading.Lock()
        self._installed = False

    def __repr__(self) -> str:
        return f"NodePackage({self.directory})"

    def is_current(self) -> bool:
        if not self.marker.exists() or self.marker.stat().st_mtime < self.lock_file.stat().st_mtime:
            return False
        return all((self.node_modules / name / "package.json").exists() for name in self.required)

    def ensure(self) -> Path:
        """Install when needed (see the module docstring); returns the package directory."""
        with self._lock:
            if self._installed:
                return self.directory
            node_executable()
            if not self.lock_file.exists():
                raise NodeSetupError(f"{self.lock_file} is missing")
            with open(self.lock_file, "rb") as lock_fd:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    if not self.is_current():
                        self._npm_ci()
                        if not self.is_current() and self.marker.exists():
                            os.utime(self.marker)  # e.g. a lock file mtime in the future
                        if not self.is_current():
                            raise NodeSetupError(
                                f"`npm ci` succeeded but {self.node_modules} still lacks one of "
                                f"{', '.join(self.required)}"
                            )
                finally:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
            self._installed = True
            return self.directory

    def _npm_ci(self) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise NodeSetupError(f"`npm` is not on PATH but {self.node_modules} needs installing (`npm ci`)")
        cmd = [npm, "ci", "--no-audit", "--no-fund"]
        log.info("installing Node test dependencies: %s (cwd %s)", " ".join(cmd), self.directory)
        try:
            proc = subprocess.run(cmd, cwd=self.directory, capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL, env={**os.environ, **self.env})
        except subprocess.TimeoutExpired as exc:
            raise NodeSetupError(f"`npm ci` in {self.directory} timed out after 600 s") from exc
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr)[-4000:]
            raise NodeSetupError(f"`npm ci` in {self.directory} failed with exit code {proc.returncode}:\n{output}")
