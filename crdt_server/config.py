"""Settings: one table of options feeds the CLI flags, the env vars, their checks and the README table.

Every limit the server enforces lives here so that it is configurable in one place
(flag ``--name`` or env ``CRDT_SERVER_NAME``) and documented from the same source. Each option
carries its constraint (``check=``, required), so a new setting cannot skip validation and a bad
value stops the server at start with one line naming the flag and the env var.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_checks import (
    MIN_SECRET_LENGTH,
    POSTGRES_SCHEMES,
    Check,
    address_list,
    anything,
    between,
    db_url,
    non_negative,
    not_empty,
    origin_list,
    positive,
    redact_url,
    redis_url,
    schema_name,
    secret_length,
    url_password,
)

ENV_PREFIX = "CRDT_SERVER_"
DATABASE_FILE = "crdt-server.db"  # in the data directory (also what a backup writes)
SECRET_FILE = "secret.key"  # the generated signing secret, beside the database



class ConfigError(SystemExit):
    """A setting has a bad value: ``crdt-server`` prints the message on one line and exits 2."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _opt(default: Any, help: str, *, check: Check, choices: tuple[str, ...] | None = None,
         secret: bool = False, shown: bool = True) -> Any:
    return field(default=default, repr=shown and not secret,
                 metadata={"help": help, "choices": choices, "check": check, "secret": secret})


def _choice(default: str, help: str, choices: tuple[str, ...]) -> Any:
    return _opt(default, help, choices=choices, check=anything)  # choices are checked for every option


@dataclass(frozen=True)
class Settings:
    host: str = _opt("127.0.0.1", "Address to listen on.", check=not_empty)
    port: int = _opt(3000, "TCP port to listen on.", check=between(1, 65535))
    data_dir: Path = _opt(Path("./data"), "Directory for the SQLite database and the signing secret (with PostgreSQL: still this process's own, for the lock and the built page).", check=not_empty)
    database_url: str = _opt("", "Overrides --data-dir for the database: sqlite:///relative.db, sqlite:////absolute/path.db, or postgresql://user:password@host:5432/dbname (several processes on one database need --redis-url; the password is never printed, and refused on the command line: set it in the env var, or PGPASSWORD).", check=db_url, shown=False)
    database_schema: str = _opt("public", "PostgreSQL schema holding the server's tables (created and migrated at start); one deployment per schema.", check=schema_name)
    database_pool_size: int = _opt(8, "PostgreSQL connections this process reads with (besides one writer and one lock connection).", check=between(1, 100))
    database_timeout: float = _opt(10.0, "Seconds a PostgreSQL connection attempt or statement may take (a lock it waits for included); past it the write fails like an unreachable database (WebSocket 1011, HTTP 503).", check=positive)
    log_level: str = _choice("info", "Logging level.", ("debug", "info", "warning", "error"))
    log_format: str = _choice(
        "text", "'text': one human-readable line per record; 'json': every line the process writes is one JSON object.",
        ("text", "json"),
    )
    durability: str = _choice(
        "normal",
        "SQLite synchronous mode: 'normal' survives a crash of the server process, 'full' also a power loss (PostgreSQL always commits with synchronous_commit=on).",
        ("normal", "full"),
    )
    persistence: str = _choice(
        "write-ahead",
        "'write-ahead': every update is committed before it is broadcast; 'off': edits are kept in memory only (benchmarks, throwaway servers).",
        ("write-ahead", "off"),
    )
    max_message_size: int = _opt(4 * 1024 * 1024, "Largest WebSocket message in bytes; a larger one closes its socket with 4413 (final for y-websocket 3.1+).", check=positive)
    oversize_drain_bytes: int = _opt(
        64 * 1024 * 1024,
        "Bytes of a message over --max-message-size read and discarded after its 4413 close, so the client receives the close rather than a reset (0 = close at once: the client sees 1006 and retries).",
        check=non_negative,
    )
    oversize_drain_timeout: float = _opt(10.0, "Seconds the rest of a refused oversized message is read and discarded before its connection is closed.", check=positive)
    send_queue_messages: int = _opt(4096, "Messages queued for one slow WebSocket before it is closed (1013).", check=positive)
    send_queue_bytes: int = _opt(16 * 1024 * 1024, "Bytes queued for one slow WebSocket before it is closed (1013).", check=positive)
    max_document_size: int = _opt(
        2 * 1024 * 1024,
        "Largest encoded document state of a session in bytes (at most 8 MiB; must fit --max-message-size and --send-queue-bytes); a write past it is refused (WebSocket close 4413, HTTP 413).",
        check=between(1, 8 * 1024 * 1024),
    )
    session_storage_quota: int = _opt(
        64 * 1024 * 1024,
        "Bytes one session may keep in storage (update log + snapshot); a write past it is refused like an oversized document (0 = unlimited).",
        check=non_negative,
    )
    room_pending_updates: int = _opt(10_000, "Updates a room holds ahead of their commit before it stops reading its sockets (backpressure).", check=positive)
    room_grace: float = _opt(30.0, "Seconds an empty room stays loaded before it is flushed and unloaded (0 = at once).", check=non_negative)
    presence_interval: float = _opt(0.05, "Seconds over which presence (awareness) updates of a room are coalesced into one broadcast (0 = relay each at once).", check=non_negative)
    presence_max_clients: int = _opt(4, "Awareness clientIDs one connection may own (an editor has one); further ones are dropped.", check=positive)
    presence_max_state_bytes: int = _opt(16 * 1024, "Largest awareness state in bytes; larger ones are dropped.", check=positive)
    presence_max_room_bytes: int = _opt(512 * 1024, "Awareness bytes a room holds (what a newcomer receives); new or growing states beyond it are dropped. At most half of --send-queue-bytes.", check=positive)
    presence_max_refused: int = _opt(256, "Awareness entries one connection may have dropped (over a bound, invalid JSON) within 10 s; more closes it as a flood (1008).", check=positive)
    presence_entries_rate: int = _opt(5000, "Awareness entries per second one connection's messages are processed at, on average over 10 s; beyond, its socket is read more slowly.", check=positive)
    ignored_bytes_rate: int = _opt(64 * 1024, "Bytes per second of frames the server ignores (text frames, unknown message types) one connection's socket is read at, on average over 10 s, each frame counting at least 1 KiB; beyond, its socket is read more slowly.", check=positive)
    editor_events_per_connection: int = _opt(100, "History events one connection's edits may cause (reverted changes, language switches); more are applied but not recorded.", check=positive)
    snapshot_every: int = _opt(2000, "Write a document snapshot after this many updates since the last one.", check=positive)
    playback_checkpoint_every: int = _opt(2000, "Keep one snapshot per this many log rows as a playback checkpoint (0 = keep only the newest snapshot; playback then replays from the start).", check=non_negative)
    shutdown_timeout: float = _opt(5.0, "Seconds SIGTERM waits for connections before forcing them closed.", check=non_negative)
    ws_ping_interval: float = _opt(20.0, "Seconds between WebSocket pings (detects dropped TCP connections).", check=positive)
    ws_ping_timeout: float = _opt(20.0, "Seconds without a pong before a connection counts as dropped.", check=positive)
    token_ttl: float = _opt(
        365 * 86400.0,
        "Hard cap on a token's age in seconds (defence in depth); tokens are otherwise valid until their session is deleted or its tokens are re-issued.",
        check=positive,
    )
    token_cache_entries: int = _opt(
        4096,
        "Verified tokens kept in memory so a token presented again (a shared link, a reconnect) is not verified again (0 = none); the session and the token's generation are still checked on every use.",
        check=non_negative,
    )
    session_ttl: float = _opt(86400.0, "Sessions inactive this many seconds (after their requested expiresAt) expire and are deleted.", check=positive)
    session_max_lifetime: float = _opt(30 * 86400.0, "Latest expiresAt a new session may ask for, in seconds from now (422 beyond).", check=positive)
    ended_retention: float = _opt(30 * 86400.0, "Seconds an ended session is kept (read-only, reopenable) before it is deleted.", check=positive)
    max_code_size: int = _opt(1024 * 1024, "Largest starter/saved code in bytes.", check=positive)
    max_body_size: int = _opt(2 * 1024 * 1024, "Largest REST request body in bytes (413 above).", check=positive)
    create_rate: float = _opt(1.0, "Sessions one client IP may create per second, on average (0 = unlimited).", check=non_negative)
    create_burst: int = _opt(20, "Sessions one client IP may create in a burst.", check=positive)
    connect_rate: float = _opt(5.0, "WebSocket connection attempts per second per client IP, on average (0 = unlimited).", check=non_negative)
    connect_burst: int = _opt(50, "WebSocket connection attempts one client IP may make in a burst.", check=positive)
    max_connections_per_ip: int = _opt(1000, "Open TCP connections (HTTP and WebSocket) one client address may hold; more are answered 503 and closed (0 = no cap).", check=non_negative)
    header_timeout: float = _opt(10.0, "Seconds a connection may take to send a request's headers before it is closed (slowloris; 0 = no limit).", check=non_negative)
    max_participant_events: int = _opt(200, "participant_joined/left history events kept per session and role; later joins of that role are not recorded.", check=positive)
    paste_threshold: int = _opt(40, "An insert of more than this many code points in one update is a paste on the timeline (GET /api/sessions/{id}/timeline).", check=positive)
    cors_origins: str = _opt("", "Comma-separated origins allowed for CORS and WebSocket Origin checks (empty: same origin only).", check=origin_list)
    forwarded_allow_ips: str = _opt(
        "", "Comma-separated addresses/networks of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are trusted (empty: trust nobody; '*': everyone).",
        check=address_list,
    )
    execution: str = _choice("on", "Offer Run (code execution); 'off' answers 503 to execution requests.", ("on", "off"))
    sandbox_require: str = _choice(
        "any",
        "Lowest sandbox mode to start with: 'full' refuses to start unless namespaces, seccomp and cgroups all work.",
        ("any", "degraded", "full"),
    )
    sandbox_mode: str = _choice(
        "auto",
        "Which sandbox to use: 'auto' the full one (bubblewrap namespaces) if it works here, else the degraded one; 'full' or 'degraded' only that one.",
        ("auto", "full", "degraded"),
    )
    exec_workers: int = _opt(0, "Concurrent runs (0 = number of CPU cores).", check=non_negative)
    exec_queue_size: int = _opt(16, "Runs waiting for a worker before new ones get 429 (0 = no queue).", check=non_negative)
    run_timeout: float = _opt(5.0, "Default wall-clock limit of a run, seconds.", check=positive)
    run_timeout_max: float = _opt(10.0, "Largest wall-clock limit a request may ask for, seconds (at least --run-timeout).", check=positive)
    compile_timeout: float = _opt(15.0, "Wall-clock limit of a compile step, seconds.", check=positive)
    run_output_limit: int = _opt(64 * 1024, "Bytes of stdout and of stderr kept per run; more kills the run (truncated).", check=positive)
    run_memory_mb: int = _opt(256, "Memory limit of a run (all its processes), MiB.", check=positive)
    run_max_processes: int = _opt(64, "Processes/threads a run may have at once.", check=positive)
    run_tmp_mb: int = _opt(64, "Size of a run's private /tmp, MiB.", check=positive)
    run_rate: float = _opt(0.5, "Runs per second one session may start, on average (0 = unlimited).", check=non_negative)
    run_burst: int = _opt(5, "Runs one session may start in a burst.", check=positive)
    sandbox_uid_base: int = _opt(60000, "Worker slot i runs code as uid/gid base+i (never the server's user or root).", check=between(1000, 2**31 - 2**16))
    web_dir: str = _opt("", "Directory of the built interview page (empty: web/ in the data directory). The server builds into it when the page is missing or stale.", check=anything)
    web_build: str = _choice(
        "auto",
        "'auto': build the interview page in the background at start when it is missing or stale (needs Node and npm); 'off': serve what --web-dir holds.",
        ("auto", "off"),
    )
    redis_url: str = _opt("", "Redis for several processes on one PostgreSQL database: redis://host:6379/0 (needs a postgresql:// --database-url; every process of a deployment names the same Redis and prefix; a password is refused on the command line, like --database-url's).", check=redis_url, shown=False)
    redis_prefix: str = _opt("crdt-server", "Prefix of every Redis key and channel (one deployment per prefix; letters, digits, . _ : -).", check=lambda v: None if re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v) else "must be 1 to 64 of letters, digits, . _ : -")
    redis_check_interval: float = _opt(2.0, "Seconds between checks that every loaded document holds its session's newest row (a lost last bus message is repaired within this).", check=positive)
    redis_timeout: float = _opt(5.0, "Seconds a Redis connection attempt or command may take; the bus reconnects after it (and at start, the server refuses to start).", check=positive)
    presence_timeout: float = _opt(10.0, "With --redis-url: seconds within which the clients of a process that died leave every other process's presence.", check=lambda v: None if v >= 3 else "must be at least 3")
    secret: str = _opt("", f"Token signing secret, at least {MIN_SECRET_LENGTH} characters (default: generated once, kept in the data directory; with PostgreSQL, in the database, shared by every process on it).", check=secret_length, secret=True)
    api_key: str = _opt("", "When set, POST /api/sessions and POST /api/execute need 'Authorization: Bearer <key>'.", check=anything, secret=True)
    metrics_token: str = _opt("", "When set, GET /metrics needs 'Authorization: Bearer <token>'.", check=anything, secret=True)

    @property
    def postgres(self) -> bool:
        """The database is PostgreSQL (else SQLite)."""
        return self.database_url.startswith(POSTGRES_SCHEMES)

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file; with PostgreSQL, the name the data directory's lock is taken on."""
        if self.database_url and not self.postgres:
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data_dir / DATABASE_FILE


FRAME_OVERHEAD = 64  # a sync message's type bytes and length prefix, rounded up
PRESENCE_FRAME_BYTES = 256 * 1024  # the largest presence message the server sends (a newcomer's snapshot is split)
PRESENCE_WORK_UNIT = 100  # presence entries per token of a connection's entries-rate bucket


def _cross_checks(s: Settings) -> tuple[str, str] | None:
    """Constraints between options: (option whose value is wrong, why)."""
    if s.run_timeout_max < s.run_timeout:
        return "run_timeout_max", f"must be at least --run-timeout ({s.run_timeout:g})"
    # An accepted document always reaches a newcomer (send queue) and a client's own copy of it always
    # uploads (message size), so a refusal is never a retry loop.
    fits = s.max_document_size + FRAME_OVERHEAD
    for name in ("max_message_size", "send_queue_bytes"):
        if getattr(s, name) < fits:
            return name, f"must be at least --max-document-size + {FRAME_OVERHEAD} ({fits})"
    # A state at its limit fits one presence message; a full room's presence fits a newcomer's queue.
    frame = min(PRESENCE_FRAME_BYTES, s.max_message_size)
    if s.presence_max_state_bytes + FRAME_OVERHEAD > frame:
        return "presence_max_state_bytes", f"must be at most {frame - FRAME_OVERHEAD} (one presence message)"
    if not s.presence_max_state_bytes <= s.presence_max_room_bytes <= s.send_queue_bytes // 2:
        return "presence_max_room_bytes", (f"must be between --presence-max-state-bytes and half of "
                                           f"--send-queue-bytes ({s.send_queue_bytes // 2})")
    if s.presence_entries_rate < PRESENCE_WORK_UNIT:
        return "presence_entries_rate", f"must be at least {PRESENCE_WORK_UNIT}"
    if s.database_schema != Settings.database_schema and not s.postgres:
        return "database_schema", "only applies to a postgresql:// --database-url"
    if s.redis_url and not s.postgres:
        return "redis_url", "needs a postgresql:// --database-url (the processes share the database; SQLite is one process's)"
    if s.redis_url and s.persistence != "write-ahead":
        return "persistence", "must be write-ahead with --redis-url (the processes catch up from the database)"
    return None


SECRET_OPTIONS = {f.name for f in dataclasses.fields(Settings) if f.metadata["secret"]}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _problem(name: str, why: str, raw: Any = None) -> ConfigError:
    if name in ("database_url", "redis_url") and raw is not None:
        raw = redact_url(str(raw))
    got = "" if raw is None or name in SECRET_OPTIONS else f" (got {str(raw)!r})"
    return ConfigError(f"crdt-server: invalid {flag_name(name)} / {env_name(name)}: {why}{got}")


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind: Any = type(f.default)
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(f.default, Path):
        return Path(raw)
    return kind(raw)


class _RefuseOnArgv(argparse.Action):
    """A secret on the command line is readable by every process of the host (and stays in the argv
    of a parent such as ``uv run``), so the flag only says where the secret goes instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        raise SystemExit(f"crdt-server: {option} is refused: a secret on the command line is readable by other "
                         f"processes (/proc/<pid>/cmdline); set {env_name(self.dest)} in the environment instead")


def build_parser(prog: str = "crdt-server", description: str | None = None,
                 only: set[str] | None = None) -> argparse.ArgumentParser:
    """Flags for every setting (or the ``only`` ones); their env vars apply either way."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or "Yjs-compatible collaborative coding-interview server. "
                                   "`crdt-server build-web [flags]` builds the interview page and exits; "
                                   "`crdt-server backup DEST` copies the data directory online.",
        epilog="commands: `crdt-server backup DEST` writes an online backup of the database and the secret "
               "into the directory DEST (see `crdt-server backup --help`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(Settings):
        if only is not None and f.name not in only:
            continue
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if f.metadata["choices"]:  # shown like argparse's own choices, checked below like every value
            kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
        if f.name not in SECRET_OPTIONS:
            kwargs["help"] += f" (default: {f.default})"
        else:  # any local process (a sandboxed run too) can read argv in /proc/<pid>/cmdline
            kwargs.update(action=_RefuseOnArgv, help=f"Refused: set {env_name(f.name)} instead. {f.metadata['help']}")
        parser.add_argument(flag_name(f.name), type=str, **kwargs)
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def settings_from(given: Mapping[str, str], environ: Mapping[str, str]) -> Settings:
    """Parsed flags win over env vars, env vars over defaults; every value is checked."""
    for name in ("database_url", "redis_url"):  # like --secret: argv is readable by every local process
        if url_password(given.get(name, "")):
            raise ConfigError(f"crdt-server: a password in {flag_name(name)} is refused: the command line is readable by "
                              f"other processes (/proc/<pid>/cmdline); set {env_name(name)} instead")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = given.get(f.name, environ.get(env_name(f.name)))
        if raw is None:
            continue
        try:
            value = _convert(f, raw)
        except ValueError:
            raise _problem(f.name, f"not a valid {type(f.default).__name__}", raw) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise _problem(f.name, "must be a finite number", raw)
        choices = f.metadata["choices"]
        why = f"must be one of {', '.join(choices)}" if choices and value not in choices else f.metadata["check"](value)
        if why:
            raise _problem(f.name, why, raw)
        values[f.name] = value
    settings = Settings(**values)
    cross = _cross_checks(settings)
    if cross:
        raise _problem(cross[0], cross[1], getattr(settings, cross[0]))
    return settings


def load_settings(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags win over env vars, env vars over defaults; a bad value raises ConfigError."""
    given = vars(build_parser().parse_args(argv))
    return settings_from(given, os.environ if environ is None else environ)


def requested_log_format(argv: list[str], environ: Mapping[str, str]) -> str:
    """The log format asked for, read without validating anything else (for reporting config errors)."""
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1]
    return environ.get(env_name("log_format"), "text")


def config_table() -> str:
    """The README's configuration table, generated so it cannot drift."""
    rows = ["| flag | env var | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = "(generated)" if f.name == "secret" else ("(unset)" if f.default == "" else f.default)
        if isinstance(default, Path):
            default = f"./{default}"
        rows.append(f"| `{flag_name(f.name)}` | `{env_name(f.name)}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # `python -m crdt_server.config` prints the README table
    print(config_table())
