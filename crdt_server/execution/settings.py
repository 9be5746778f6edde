"""Execution limits, in one frozen dataclass built from the server's Settings.

Every limit that is a server flag (``crdt_server.config.Settings``) has its default there and
only there: ``ExecutionSettings.from_settings`` maps them (``exec_workers`` 0 means one worker
per usable core, because more concurrent runs than cores only stretch wall time into false
timeouts). The fields below without a flag keep their own defaults here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Self

from ..config import Settings

MODES = ("unavailable", "degraded", "full")
REQUIRE_CHOICES = ("any", "degraded", "full")
MODE_CHOICES = ("auto", "full", "degraded")  # which mechanisms the probe tries (auto: full, else degraded)


def cores() -> int:
    """CPUs this process may run on (respects taskset/cpuset, unlike os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0)) or 2
    except (AttributeError, OSError):
        return os.cpu_count() or 2


@dataclass(frozen=True)
class ExecutionSettings:
    # From Settings (see from_settings); no defaults here.
    workers: int  # concurrent runs = worker slots
    queue_size: int  # runs waiting for a slot before QueueFull
    default_timeout: float  # wall-clock seconds of a run when the request names none
    max_timeout: float  # largest wall-clock limit a request may ask for
    compile_timeout: float  # wall-clock seconds of a compile step
    output_limit: int  # bytes kept of stdout and of stderr; one more kills the run
    memory_limit_mb: int  # memory cgroup limit of a run (RLIMIT_AS per process without one)
    max_processes: int  # pids cgroup limit and RLIMIT_NPROC
    tmp_size_mb: int  # size of the private /tmp (direct mode: watched disk usage)
    max_code_bytes: int
    session_rate: float  # runs per second one session may start, on average ...
    session_burst: int  # ... after a burst of this many
    require: str  # minimum acceptable mode: "any" | "degraded" | "full"
    uid_base: int  # slot i runs as uid/gid uid_base + i
    mode: str = "auto"  # "auto" | "full" | "degraded": see MODE_CHOICES
    uid_search: bool = False  # the range is taken: claim the next free one (True for the default base)
    # Not server flags.
    max_open_files: int = 256
    max_file_size_mb: int = 16  # RLIMIT_FSIZE
    max_stdin_bytes: int = 1024 * 1024
    nice: int = 10  # sandboxes yield the CPU to the server
    use_namespaces: bool = True  # False forces the degraded fallback (tests, broken hosts)
    use_cgroups: bool = True
    probe_languages: bool = True  # compile+run hello world per language at start-up

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """The execution limits of a server started with `settings`; `overrides` name fields of this class."""
        values: dict[str, Any] = {
            "workers": settings.exec_workers or cores(),
            "queue_size": settings.exec_queue_size,
            "default_timeout": settings.run_timeout,
            "max_timeout": settings.run_timeout_max,
            "compile_timeout": settings.compile_timeout,
            "output_limit": settings.run_output_limit,
            "memory_limit_mb": settings.run_memory_mb,
            "max_processes": settings.run_max_processes,
            "tmp_size_mb": settings.run_tmp_mb,
            "max_code_bytes": settings.max_code_size,
            "session_rate": settings.run_rate,
            "session_burst": settings.run_burst,
            "require": settings.sandbox_require,
            "uid_base": settings.sandbox_uid_base,
            "mode": settings.sandbox_mode,
            # Only the default base moves on when taken; a base the operator chose is used or refused.
            "uid_search": settings.sandbox_uid_base == Settings.sandbox_uid_base,
        }
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.require not in REQUIRE_CHOICES:
            raise ValueError(f"require must be one of {REQUIRE_CHOICES}, not {self.require!r}")
        if self.mode not in MODE_CHOICES:
            raise ValueError(f"mode must be one of {MODE_CHOICES}, not {self.mode!r}")
        if self.workers < 1 or self.queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        if not (0 < self.default_timeout <= self.max_timeout) or self.compile_timeout <= 0:
            raise ValueError("need 0 < default_timeout <= max_timeout and compile_timeout > 0")
        if self.uid_base < 1000 or self.uid_base + self.workers >= 2**31 - 2:
            raise ValueError("uid_base must be >= 1000 (never a system or login uid)")
        if min(self.output_limit, self.memory_limit_mb, self.max_processes, self.tmp_size_mb) <= 0:
            raise ValueError("limits must be positive")
        if self.session_rate <= 0 or self.session_burst < 1:
            raise ValueError("session_rate must be > 0 and session_burst >= 1")
        if not 0 <= self.nice <= 19:
            raise ValueError("nice must be within 0..19")

    @property
    def memory_bytes(self) -> int:
        return self.memory_limit_mb * 1024 * 1024

