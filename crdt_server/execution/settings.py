"""Execution limits, all in one frozen dataclass so the lead can map each to a CLI flag / env var.

Defaults follow /work/shared/research/sandbox.md: concurrency = cores (more only stretches wall
time into false timeouts), a bounded queue, 5 s wall, 256 MB / 64 pids per run, 64 KiB output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MODES = ("unavailable", "degraded", "full")


def _cores() -> int:
    """CPUs this process may run on (respects taskset/cpuset, unlike os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0)) or 2
    except (AttributeError, OSError):
        return os.cpu_count() or 2
REQUIRE_CHOICES = ("any", "degraded", "full")


@dataclass(frozen=True)
class ExecutionSettings:
    workers: int = _cores()  # concurrent runs; more than cores only stretches wall time
    queue_size: int = 16
    default_timeout: float = 5.0
    max_timeout: float = 10.0
    compile_timeout: float = 15.0
    output_limit: int = 64 * 1024
    memory_limit_mb: int = 256
    max_processes: int = 64
    max_open_files: int = 256
    max_file_size_mb: int = 16
    tmp_size_mb: int = 64
    max_code_bytes: int = 1024 * 1024
    max_stdin_bytes: int = 1024 * 1024
    session_rate: float = 0.5  # tokens per second: one run every 2 s sustained ...
    session_burst: int = 5  # ... after a burst of 5
    require: str = "any"  # minimum acceptable mode: "any" | "degraded" | "full"
    uid_base: int = 60000  # slot i runs as uid/gid uid_base + i
    nice: int = 10  # sandboxes yield the CPU to the server
    use_namespaces: bool = True  # False forces the degraded fallback (tests, broken hosts)
    use_cgroups: bool = True
    probe_languages: bool = True  # compile+run hello world per language at start-up

    def __post_init__(self) -> None:
        if self.require not in REQUIRE_CHOICES:
            raise ValueError(f"require must be one of {REQUIRE_CHOICES}, not {self.require!r}")
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


def _from_settings(cls: type[ExecutionSettings], s: "Settings") -> ExecutionSettings:  # replaced by the exec refactor
    base = cls()
    return cls(
        workers=s.exec_workers or base.workers, queue_size=s.exec_queue_size, default_timeout=s.run_timeout,
        max_timeout=s.run_timeout_max, compile_timeout=s.compile_timeout, output_limit=s.run_output_limit,
        memory_limit_mb=s.run_memory_mb, max_processes=s.run_max_processes, tmp_size_mb=s.run_tmp_mb,
        max_code_bytes=s.max_code_size, session_rate=s.run_rate, session_burst=s.run_burst,
        require=s.sandbox_require, uid_base=s.sandbox_uid_base,
    )


ExecutionSettings.from_settings = classmethod(_from_settings)  # type: ignore[attr-defined]
