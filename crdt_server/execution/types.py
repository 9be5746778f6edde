"""Plain types shared by the sandbox layers (layout, sandbox, fork server client).

They live here, below every module that uses them, so that no two execution modules import
each other. Nothing here does I/O except ``Tools.find`` (a PATH lookup).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .cgroups import SlotCgroup
from .languages import Mount

# Environment of the helper processes the server starts (fork servers, bwrap): never the
# server's own environment, which may hold the signing secret or the API key.
LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Tools:
    """Host binaries used inside/around the sandbox (absolute paths, None when missing)."""

    bwrap: str | None
    bash: str | None

    @classmethod
    def find(cls) -> Tools:
        return cls(shutil.which("bwrap", path=LAUNCH_ENV["PATH"]), shutil.which("bash", path=LAUNCH_ENV["PATH"]))


@dataclass(frozen=True)
class Slot:
    """One worker: runs one program at a time, as its own uid, in its own cgroups."""

    index: int
    uid: int
    cgroup: SlotCgroup | None
    host_dir: Path  # direct mode: holds box/ (sources, read-only) and tmp/ (scratch)


@dataclass(frozen=True)
class Program:
    """One sandboxed job, paths already resolved for the slot (see Sandbox.paths)."""

    files: Mapping[str, bytes]
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    etc: tuple[str, ...] = ()
    stdin: bytes = b""
    timeout: float = 5.0
    compile_timeout: float = 15.0
    address_space_ok: bool = True


@dataclass(frozen=True)
class Outcome:
    """What the sandbox observed, as raw bytes; RunResult.from_outcome is the public form."""

    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool
    truncated: bool
    duration: float
    compile_error: bool = False
    compile_output: bytes = b""
    oom_killed: bool = False
    signal: int = 0  # the program died of this signal, not sent by the sandbox's limits
