"""Exceptions the HTTP layer maps to status codes (422 / 429 / 503 / 500)."""

from __future__ import annotations


class ExecutionError(Exception):
    """Base class for every error raised by crdt_server.execution; ``code`` names it in API answers."""

    code = "execution_error"


class UnknownLanguage(ExecutionError):
    """The language is not in the registry or not runnable on this host (HTTP 422)."""

    code = "unknown_language"

    def __init__(self, language: str) -> None:
        super().__init__(f"unknown or unavailable language: {language!r}")
        self.language = language


class InvalidRequest(ExecutionError, ValueError):
    """Code or stdin too large, or a non-positive timeout (HTTP 422)."""

    code = "invalid_field"


class QueueFull(ExecutionError):
    """Every worker is busy and the wait queue is full (HTTP 429)."""

    code = "queue_full"


class SessionBusy(ExecutionError):
    """This session already has a run queued or in flight (HTTP 429)."""

    code = "run_in_progress"


class RateLimited(ExecutionError):
    """The session's token bucket is empty; retry_after is in seconds (HTTP 429 + Retry-After)."""

    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class SandboxUnavailable(ExecutionError):
    """No acceptable sandbox on this host (or the service is not started) (HTTP 503)."""

    code = "execution_unavailable"


class SandboxError(ExecutionError):
    """The sandbox itself failed (not the submitted program) (HTTP 500)."""

    code = "sandbox_error"
