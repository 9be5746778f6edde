"""Checks of the host that run before anything slow starts (the sandbox probe, the store).

A data directory the server cannot write to, or a port another process holds, would otherwise
surface as a traceback from deep inside start-up, after the sandbox probe; here each is one line
naming the flag and the env var. The listening socket is bound here and handed to uvicorn, so
the port cannot be taken between the check and the start.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .config import SECRET_FILE, ConfigError, Settings, env_name, flag_name

if TYPE_CHECKING:
    from .storage.pg_instance import InstanceLock


def _problem(name: str, why: str) -> ConfigError:
    return ConfigError(f"crdt-server: invalid {flag_name(name)} / {env_name(name)}: {why}")


def check_writable(directory: Path, option: str) -> None:
    """Create ``directory`` if needed and prove a file can be written in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise _problem(option, f"cannot write to {str(directory)!r}: {exc.strerror or exc}") from None


def check_storage(settings: Settings) -> InstanceLock | None:
    """The data directory is writable; with PostgreSQL, the database is ready and this process holds
    its instance lock (returned: kept until the process ends)."""
    check_writable(settings.data_dir, "data_dir")  # the secret lives here even with --database-url
    if settings.redis_url:
        check_redis(settings)
    if settings.postgres:
        return claim_database(settings)
    if settings.database_url:
        check_writable(settings.sqlite_path.parent, "database_url")
    secret_file = settings.data_dir / SECRET_FILE
    if not settings.secret and secret_file.exists() and not os.access(secret_file, os.R_OK):
        raise _problem("data_dir", f"cannot read the signing secret {str(secret_file)!r}")
    return None


def check_redis(settings: Settings) -> None:
    """Redis answers within --redis-timeout (the bus between processes; docs/design/cluster.md)."""
    from .cluster.bus import BusRefused, ping

    try:
        asyncio.run(ping(settings.redis_url, settings.redis_timeout))
    except BusRefused as exc:
        raise _problem("redis_url", str(exc)) from None


def claim_database(settings: Settings) -> InstanceLock:
    """PostgreSQL answers, its schema is migrated, and no other process serves it (one line each):
    the instance lock, held from here on (docs/design/storage.md, "One process per database")."""
    from .storage.pg_instance import DatabaseRefused, InstanceConflict, InstanceLock, prepare

    url, schema, timeout = settings.database_url, settings.database_schema, settings.database_timeout
    lock = InstanceLock(url, schema, timeout, shared=bool(settings.redis_url))  # processes joined by a bus share it
    try:
        asyncio.run(prepare(url, schema, timeout))
        lock.hold()
    except DatabaseRefused as exc:
        raise _problem("database_url", str(exc)) from None
    except InstanceConflict as exc:
        raise ConfigError(f"crdt-server: {exc}") from None
    return lock


def bind_listener(settings: Settings) -> socket.socket:
    """Bind the listening socket as uvicorn would (SO_REUSEADDR, IPv6 for a ':' host)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _problem("port", f"port {settings.port} on {settings.host} is already in use by another process") from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise _problem("host", f"cannot listen on {settings.host!r}: {exc.strerror or exc}") from None
        raise _problem("port", f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    return sock  # non-inheritable (the default): the sandbox's helpers, started later, never hold the port
