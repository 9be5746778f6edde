"""``crdt-server`` / ``python -m crdt_server``: parse settings, run uvicorn."""

from __future__ import annotations

import gc
import logging
import resource
import sys

import uvicorn

from .admission import uvicorn_protocols
from .app import create_app
from .config import Settings, load_settings
from .logs import install_redaction


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """The one uvicorn configuration (the tests start the app in-process with it too)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop="uvloop",
        # httptools and websockets-sansio, wrapped: per-address connection cap, header deadline
        **uvicorn_protocols(settings.max_connections_per_ip, settings.header_timeout),
        ws_max_size=settings.max_message_size,
        # Off, as in the reference server: deflate would run once per *recipient* for every
        # broadcast frame, and Yjs updates are small and already compact.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        access_log=False,  # URLs carry tokens (?token=…): never log them
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
            logging.getLogger(__name__).warning("open files limit stays %d: %s", soft, exc)
            return
        soft = hard
    logging.getLogger(__name__).info("open files limit: %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings.sqlite_path
    except ValueError as exc:
        raise SystemExit(f"crdt-server: {exc}") from None
    # Commits run in a worker thread (the loop never blocks on SQLite); with CPython's default 5 ms
    # GIL switch interval that thread could wait up to 5 ms for the GIL while the loop is busy,
    # and every broadcast waits for its commit. 0.5 ms keeps the write-ahead hop short.
    sys.setswitchinterval(0.0005)
    raise_fd_limit()
    gc.freeze()  # start-up objects (modules, app) never need scanning again
    gc.set_threshold(50_000, 20, 20)  # fewer young collections on the message hot path
    config = uvicorn_config(settings)
    install_redaction()  # uvicorn.Config has just configured its log handlers
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
