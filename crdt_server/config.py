"""Settings: one table of options feeds the CLI flags, the env vars and the README table.

Every limit the server enforces lives here so that it is configurable in one place
(flag ``--name`` or env ``CRDT_SERVER_NAME``) and documented from the same source.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CRDT_SERVER_"


def _opt(default: Any, help: str, *, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class Settings:
    host: str = _opt("127.0.0.1", "Address to listen on.")
    port: int = _opt(3000, "TCP port to listen on.")
    data_dir: Path = _opt(Path("./data"), "Directory for the SQLite database and the signing secret.")
    database_url: str = _opt("", "Overrides --data-dir for the database: sqlite:///relative.db or sqlite:////absolute/path.db.")
    log_level: str = _opt("info", "Logging level.", choices=("debug", "info", "warning", "error"))
    durability: str = _opt(
        "normal",
        "SQLite synchronous mode: 'normal' survives a crash of the server process, 'full' also a power loss.",
        choices=("normal", "full"),
    )
    persistence: str = _opt(
        "write-ahead",
        "'write-ahead': every update is committed before it is broadcast; 'off': edits are kept in memory only (benchmarks, throwaway servers).",
        choices=("write-ahead", "off"),
    )
    max_message_size: int = _opt(4 * 1024 * 1024, "Largest WebSocket message in bytes; larger ones close the socket with 1009.")
    send_queue_messages: int = _opt(4096, "Messages queued for one slow WebSocket before it is closed (1013).")
    send_queue_bytes: int = _opt(16 * 1024 * 1024, "Bytes queued for one slow WebSocket before it is closed (1013).")
    max_document_size: int = _opt(
        2 * 1024 * 1024,
        "Largest encoded document state of a session in bytes (at most 8 MiB; must fit --max-message-size and --send-queue-bytes); a write past it is refused (WebSocket close 4413, HTTP 413).",
    )
    session_storage_quota: int = _opt(
        64 * 1024 * 1024,
        "Bytes one session may keep in storage (update log + snapshot); a write past it is refused like an oversized document (0 = unlimited).",
    )
    room_pending_updates: int = _opt(10_000, "Updates a room holds ahead of their commit before it stops reading its sockets (backpressure).")
    room_grace: float = _opt(30.0, "Seconds an empty room stays loaded before it is flushed and unloaded.")
    presence_interval: float = _opt(0.05, "Seconds over which presence (awareness) updates of a room are coalesced into one broadcast (0 = relay each at once).")
    snapshot_every: int = _opt(2000, "Write a document snapshot after this many updates since the last one.")
    shutdown_timeout: float = _opt(5.0, "Seconds SIGTERM waits for connections before forcing them closed.")
    ws_ping_interval: float = _opt(20.0, "Seconds between WebSocket pings (detects dropped TCP connections).")
    ws_ping_timeout: float = _opt(20.0, "Seconds without a pong before a connection counts as dropped.")
    token_ttl: float = _opt(86400.0, "Lifetime of session tokens in seconds.")
    session_ttl: float = _opt(86400.0, "Sessions inactive this many seconds expire and are deleted.")
    max_code_size: int = _opt(1024 * 1024, "Largest starter/saved code in bytes.")
    max_body_size: int = _opt(2 * 1024 * 1024, "Largest REST request body in bytes (413 above).")
    create_rate: float = _opt(1.0, "Sessions one client IP may create per second, on average (0 = unlimited).")
    create_burst: int = _opt(20, "Sessions one client IP may create in a burst.")
    connect_rate: float = _opt(5.0, "WebSocket connection attempts per second per client IP, on average (0 = unlimited).")
    connect_burst: int = _opt(50, "WebSocket connection attempts one client IP may make in a burst.")
    cors_origins: str = _opt("", "Comma-separated origins allowed for CORS and WebSocket Origin checks (empty: same origin only).")
    execution: str = _opt("on", "Offer Run (code execution); 'off' answers 503 to execution requests.", choices=("on", "off"))
    sandbox_require: str = _opt(
        "any",
        "Lowest sandbox mode to start with: 'full' refuses to start unless namespaces, seccomp and cgroups all work.",
        choices=("any", "degraded", "full"),
    )
    exec_workers: int = _opt(0, "Concurrent runs (0 = number of CPU cores).")
    exec_queue_size: int = _opt(16, "Runs waiting for a worker before new ones get 429.")
    run_timeout: float = _opt(5.0, "Default wall-clock limit of a run, seconds.")
    run_timeout_max: float = _opt(10.0, "Largest wall-clock limit a request may ask for, seconds.")
    compile_timeout: float = _opt(15.0, "Wall-clock limit of a compile step, seconds.")
    run_output_limit: int = _opt(64 * 1024, "Bytes of stdout and of stderr kept per run; more kills the run (truncated).")
    run_memory_mb: int = _opt(256, "Memory limit of a run (all its processes), MiB.")
    run_max_processes: int = _opt(64, "Processes/threads a run may have at once.")
    run_tmp_mb: int = _opt(64, "Size of a run's private /tmp, MiB.")
    run_rate: float = _opt(0.5, "Runs per second one session may start, on average.")
    run_burst: int = _opt(5, "Runs one session may start in a burst.")
    sandbox_uid_base: int = _opt(60000, "Worker slot i runs code as uid/gid base+i (never the server's user or root).")
    secret: str = _opt("", "Token signing secret (default: generated once, kept in the data directory).")
    api_key: str = _opt("", "When set, POST /api/sessions and POST /api/execute need 'Authorization: Bearer <key>'.")

    @property
    def sqlite_path(self) -> Path:
        if self.database_url:
            if not self.database_url.startswith("sqlite:///"):
                raise ValueError("only sqlite:/// database URLs are supported by this build")
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data_dir / "crdt-server.db"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


SECRET_OPTIONS = {"secret", "api_key"}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = type(f.default)
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(f.default, Path):
        return Path(raw)
    return kind(raw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdt-server",
        description="Yjs-compatible collaborative coding-interview server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if f.name not in SECRET_OPTIONS:
            kwargs["help"] += f" (default: {f.default})"
        parser.add_argument(flag, type=str, **kwargs)
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def load_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags win over env vars, env vars over defaults."""
    environ = os.environ if environ is None else environ
    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = given.get(f.name, environ.get(env_name(f.name)))
        if raw is None:
            continue
        try:
            values[f.name] = _convert(f, raw)
        except ValueError:
            raise SystemExit(f"crdt-server: invalid value for --{f.name.replace('_', '-')}: {raw!r}") from None
        choices = f.metadata.get("choices")
        if choices and values[f.name] not in choices:
            raise SystemExit(f"crdt-server: --{f.name.replace('_', '-')} must be one of {', '.join(choices)}")
    settings = Settings(**values)
    check_limits(settings)
    return settings


MAX_DOCUMENT_SIZE = 8 * 1024 * 1024
FRAME_OVERHEAD = 64  # a sync message's type bytes and length prefix, rounded up


def check_limits(s: Settings) -> None:
    """Limits that must agree: an accepted document always reaches a newcomer (send queue) and a
    client's own copy of it always uploads (message size), so a refusal is never a retry loop."""
    fits = s.max_document_size + FRAME_OVERHEAD
    if not 0 < s.max_document_size <= MAX_DOCUMENT_SIZE:
        raise SystemExit(f"crdt-server: --max-document-size must be between 1 and {MAX_DOCUMENT_SIZE}")
    for name, value in (("max_message_size", s.max_message_size), ("send_queue_bytes", s.send_queue_bytes)):
        if value < fits:
            raise SystemExit(f"crdt-server: --{name.replace('_', '-')} ({value}) must be at least "
                             f"--max-document-size + {FRAME_OVERHEAD} ({fits})")
    if s.session_storage_quota < 0:
        raise SystemExit("crdt-server: --session-storage-quota must be 0 (unlimited) or positive")


def config_table() -> str:
    """The README's configuration table, generated so it cannot drift."""
    rows = ["| flag | env var | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = "(generated)" if f.name == "secret" else ("(unset)" if f.default == "" else f.default)
        if isinstance(default, Path):
            default = f"./{default}"
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{env_name(f.name)}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # `python -m crdt_server.config` prints the README table
    print(config_table())
