"""``crdt-server`` / ``python -m crdt_server``: check settings and host, then run uvicorn.

``crdt-server [flags]`` starts the server; ``crdt-server backup DEST [flags]`` writes an online backup.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

from . import logs
from .config import ConfigError, Settings, load_settings, requested_log_format
from .config_checks import url_password
from .preflight import bind_listener, check_storage

if TYPE_CHECKING:
    import uvicorn

    from .storage.pg_instance import InstanceLock

log = logging.getLogger(__name__)


def uvicorn_config(settings: Settings, instance: InstanceLock | None = None) -> uvicorn.Config:
    """The one uvicorn configuration (the tests start the app in-process with it too)."""
    import uvicorn  # here, not at the top: a bad setting is reported before the server's imports

    from .admission import uvicorn_protocols
    from .app import create_app

    return uvicorn.Config(
        create_app(settings, instance),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=logs.logging_config(settings.log_level, settings.log_format),
        loop="uvloop",
        # httptools and websockets-sansio, wrapped: per-address connection cap, header deadline,
        # an oversized message refused with a close the client receives (oversize.py)
        **uvicorn_protocols(settings.max_connections_per_ip, settings.header_timeout,
                            settings.oversize_drain_bytes, settings.oversize_drain_timeout),
        ws_max_size=settings.max_message_size,
        # Off, as in the reference server: deflate would run once per *recipient* for every
        # broadcast frame, and Yjs updates are small and already compact.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        timeout_graceful_shutdown=settings.shutdown_timeout,  # type: ignore[arg-type]  # uvicorn accepts a float
        access_log=False,  # URLs carry tokens (?token=…); AccessLogMiddleware logs paths without them
        # X-Forwarded-For is believed only from the listed proxies; with none listed, from nobody.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        lifespan="on",
    )


def raise_fd_limit() -> None:
    """Soft open-files limit up to the hard one: the usual soft 1024 is exhausted by ~1,000 sockets,
    after which nobody can connect; the per-address cap is the bound that belongs to the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit stays %d: %s", soft, exc)
            return
        soft = hard
    log.info("open files limit: %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["backup"]:
        from .backup import main as backup_main

        backup_main(args[1:])
        return
    if args[:1] == ["build-web"]:  # build the interview page, then exit
        from .web import build_web_main

        raise SystemExit(build_web_main(args[1:]))
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        logs.report_error(str(exc), requested_log_format(args, os.environ))
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    logs.add_secret(settings.secret)
    logs.add_secret(settings.api_key)
    logs.add_secret(url_password(settings.database_url))
    logs.add_secret(url_password(settings.redis_url))
    try:  # before the slow parts (sandbox probe, store): a wrong data dir or a busy port is one line
        instance = check_storage(settings)  # PostgreSQL: the instance lock, held from here on
        listener = bind_listener(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    raise_fd_limit()
    import uvicorn

    config = uvicorn_config(settings, instance)  # imports the server, builds the app: before gc.freeze below
    # Commits run in a worker thread (the loop never blocks on SQLite); with CPython's default 5 ms
    # GIL switch interval that thread could wait up to 5 ms for the GIL while the loop is busy,
    # and every broadcast waits for its commit. 0.5 ms keeps the write-ahead hop short.
    sys.setswitchinterval(0.0005)
    gc.freeze()  # start-up objects (modules, app) never need scanning again
    gc.set_threshold(50_000, 20, 20)  # fewer young collections on the message hot path
    log.info("bound http://%s:%d; serving once start-up completes", settings.host, settings.port)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
