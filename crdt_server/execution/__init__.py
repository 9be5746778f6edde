"""Sandboxed code execution for the interview pads.

Public API (the HTTP layer uses only this module):

    service = ExecutionService(ExecutionSettings.from_settings(settings))  # settings: config.Settings
    await service.start()            # probes the host; SandboxUnavailable if require is not met
    service.mode                     # "full" | "degraded" | "unavailable" -> /health and every result
    service.layers                   # what the probe found and why layers are missing (diagnostics)
    service.languages()              # [LanguageInfo(name, version, aliases, compiled)]; .as_json()
    service.skipped_languages        # {name: reason} for toolchains not offered on this host
    service.queue_depth              # runs waiting for a worker
    result = await service.run(language="python", code="print(1)", stdin="", timeout=5,
                               session_key=pad_id)   # RunResult; .as_json() is camelCase
    await service.aclose()
    # or: async with ExecutionService(...) as service

Needs root (each run drops to uid uid_base+slot) and, for the full sandbox, bubblewrap.
How the sandbox works and why: docs/design/sandbox.md.

Errors: UnknownLanguage, InvalidRequest (422), QueueFull, SessionBusy, RateLimited(retry_after)
(429), SandboxUnavailable (503), SandboxError (500).
"""

from .errors import (
    ExecutionError,
    InvalidRequest,
    QueueFull,
    RateLimited,
    SandboxError,
    SandboxUnavailable,
    SessionBusy,
    UnknownLanguage,
)
from .models import LanguageInfo, RunResult
from .service import ExecutionService
from .settings import ExecutionSettings

__all__ = [
    "ExecutionError",
    "ExecutionService",
    "ExecutionSettings",
    "InvalidRequest",
    "LanguageInfo",
    "QueueFull",
    "RateLimited",
    "RunResult",
    "SandboxError",
    "SandboxUnavailable",
    "SessionBusy",
    "UnknownLanguage",
]
