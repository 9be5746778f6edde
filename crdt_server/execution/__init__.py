"""Sandboxed code execution for the interview pads.

Public API (the HTTP layer uses only this module):

    service = ExecutionService(ExecutionSettings(...))
    await service.start()            # probes the host; SandboxUnavailable if require is not met
    service.mode                     # "full" | "degraded" | "unavailable" -> /health
    service.layers                   # what the probe found, for /health
    service.languages()              # [LanguageInfo(name, version, aliases, compiled)]
    result = await service.run(language="python", code="print(1)", stdin="", timeout=5,
                               session_key=pad_id)   # RunResult; .as_json() is camelCase
    await service.aclose()

Errors: UnknownLanguage, InvalidRequest (400), QueueFull, SessionBusy, RateLimited(retry_after)
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
