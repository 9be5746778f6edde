"""Logging set-up that keeps secrets out: tokens in URLs are redacted on every handler.

uvicorn logs each WebSocket handshake with its query string ("…?token=eyJ…"), even with the
access log off; the filter rewrites such records before any handler writes them.
"""

from __future__ import annotations

import logging
import re

_SECRET = re.compile(r"(token|api_key|key)=([^&\s\"']+)", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _SECRET.sub(r"\1=[redacted]", text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install_redaction() -> None:
    """Attach the filter to every handler that exists now (call after uvicorn configured logging)."""
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
