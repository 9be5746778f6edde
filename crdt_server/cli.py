"""``crdt-server`` / ``python -m crdt_server``: parse settings, run uvicorn."""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from .app import create_app
from .config import Settings, load_settings
from .logs import install_redaction
from .web import build_web_main


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """The one uvicorn configuration (the tests start the app in-process with it too)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build-web"]:  # `crdt-server build-web [flags]`: build the interview page, then exit
        raise SystemExit(build_web_main(argv[1:]))
    settings = load_settings(argv)
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
    gc.freeze()  # start-up objects (modules, app) never need scanning again
    gc.set_threshold(50_000, 20, 20)  # fewer young collections on the message hot path
    config = uvicorn_config(settings)
    install_redaction()  # uvicorn.Config has just configured its log handlers
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
