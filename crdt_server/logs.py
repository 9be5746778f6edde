"""Logging an operator can use: text or JSON lines, secrets redacted, structured request/socket/run lines.

Why a formatter-level redaction as well as the filter: uvicorn logs each WebSocket handshake with
its query string ("…?token=eyJ…"), and tracebacks or structured fields can carry a token too;
both formatters redact the finished line, so nothing a handler writes can contain one. Why one
root handler: with ``--log-format json`` every line the process writes must be one JSON object,
so uvicorn's loggers, Python warnings and uncaught exceptions all go through it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import types
from datetime import UTC, datetime
from typing import Any

_SECRET = re.compile(r"(token|api_key|key|secret)=([^&\s\"'\\]+)", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
_known_secrets: set[str] = set()

access_log = logging.getLogger("crdt_server.access")
socket_log = logging.getLogger("crdt_server.socket")
run_log = logging.getLogger("crdt_server.run")


def add_secret(value: str) -> None:
    """Redact this exact value wherever it appears (the signing secret, the API key)."""
    if len(value) >= 8:
        _known_secrets.add(value)


def redact(text: str) -> str:
    for value in _known_secrets:
        text = text.replace(value, "[redacted]")
    return _JWT.sub("[redacted]", _BEARER.sub(r"\1[redacted]", _SECRET.sub(r"\1=[redacted]", text)))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the ``extra=`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(out, default=str, ensure_ascii=False))


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``dictConfig`` (also uvicorn's ``log_config``): one stderr handler on the root logger."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                        "formatter": "default", "filters": ["redact"]},
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }


def configure(level: str, fmt: str) -> None:
    """Send everything the process reports through the root handler (warnings, uncaught exceptions)."""
    import logging.config

    logging.config.dictConfig(logging_config(level, fmt))
    logging.captureWarnings(True)
    crash = logging.getLogger("crdt_server.crash")

    def excepthook(kind: type[BaseException], value: BaseException, tb: types.TracebackType | None) -> None:
        crash.critical("uncaught exception: %s", kind.__name__, exc_info=(kind, value, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        crash.critical("uncaught exception in thread %s", name,
                       exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def report_error(message: str, fmt: str) -> None:
    """One line on stderr before logging is configured (bad settings), in the requested format."""
    if fmt == "json":
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        message = json.dumps({"ts": ts, "level": "error", "logger": "crdt_server.config", "message": message})
    print(redact(message), file=sys.stderr, flush=True)


# structured lines the request, socket and run paths emit --------------------------------------
def log_request(method: str, path: str, status: int | None, duration_ms: float,
                session_id: str | None, client: str | None) -> None:
    access_log.info(
        "%s %s %s %.1fms client=%s", method, path, "-" if status is None else status, duration_ms, client or "-",
        extra={"method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 2),
               "session_id": session_id, "client": client},
    )


def log_socket_opened(session_id: str, role: str, connection_id: str) -> None:
    """One line when a WebSocket joins a session (call after the token was accepted)."""
    socket_log.info(
        "socket opened session=%s role=%s connection=%s", session_id, role, connection_id,
        extra={"event": "socket_opened", "session_id": session_id, "role": role, "connection_id": connection_id},
    )


def log_socket_closed(session_id: str, role: str, connection_id: str, duration_s: float, close_code: int | None) -> None:
    """One line when that WebSocket ends, with how long it lasted and the close code."""
    socket_log.info(
        "socket closed session=%s role=%s connection=%s duration=%.1fs code=%s",
        session_id, role, connection_id, duration_s, close_code,
        extra={"event": "socket_closed", "session_id": session_id, "role": role, "connection_id": connection_id,
               "duration_s": round(duration_s, 3), "close_code": close_code},
    )


def log_output(source: str, output: str | bytes, level: int = logging.INFO) -> None:
    """Relay a child process's output (a build, a tool) as one record per line, so JSON stays JSON."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    logger = logging.getLogger(f"crdt_server.output.{source}")
    for line in text.splitlines():
        if line.strip():
            logger.log(level, "%s", line.rstrip(), extra={"source": source})


def log_run(session_id: str | None, language: str, outcome: str, duration_ms: float) -> None:
    """One line per run (never its code or output); ``session_id`` None for ``POST /api/execute``."""
    run_log.info(
        "run session=%s language=%s outcome=%s duration=%.0fms", session_id or "-", language, outcome, duration_ms,
        extra={"event": "run", "session_id": session_id, "language": language, "outcome": outcome,
               "duration_ms": round(duration_ms, 1)},
    )
