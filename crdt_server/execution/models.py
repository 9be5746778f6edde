"""Plain result types returned to the HTTP layer (snake_case here, camelCase via as_json)."""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass, fields
from typing import Any, Self

from .types import Outcome


def _signal_name(number: int) -> str:
    try:
        return f"{signals.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True)
class LanguageInfo:
    name: str
    version: str
    aliases: tuple[str, ...] = ()
    compiled: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "aliases": list(self.aliases), "compiled": self.compiled}


@dataclass(frozen=True)
class RunResult:
    """The public result of one run (the sandbox's Outcome, decoded: see from_outcome).

    exit_code follows the shell convention: 128+N when the program died of signal N (137 for the
    kill on timeout, output cap or OOM). When compilation fails the program never runs:
    compile_error is True, exit_code is the compiler's and stderr carries the compiler messages
    (which are also in compile_output, always, for compiled languages).
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    truncated: bool
    duration_ms: int
    language: str
    sandbox: str  # "full" | "degraded"
    compile_error: bool = False
    compile_output: str = ""
    oom_killed: bool = False
    killed_by_signal: int | None = None  # died of a signal no limit of the sandbox sent (stderr says so)

    @classmethod
    def from_outcome(cls, outcome: Outcome, *, language: str, sandbox: str) -> Self:
        """The one mapping from what the sandbox saw (bytes, seconds) to the public result."""

        def text(raw: bytes) -> str:
            return raw.decode("utf-8", errors="replace")

        stderr = text(outcome.stderr)
        if outcome.signal:
            stderr += f"\n[crdt-server: the program was killed by {_signal_name(outcome.signal)}, not by a limit of the " \
                      "sandbox: the program itself or a process outside the sandbox sent it]\n"
        return cls(
            stdout=text(outcome.stdout),
            stderr=stderr,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            truncated=outcome.truncated,
            duration_ms=round(outcome.duration * 1000),
            language=language,
            sandbox=sandbox,
            compile_error=outcome.compile_error,
            compile_output=text(outcome.compile_output),
            oom_killed=outcome.oom_killed,
            killed_by_signal=outcome.signal or None,
        )

    def as_json(self) -> dict[str, Any]:
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}
