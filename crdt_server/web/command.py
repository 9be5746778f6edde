"""``crdt-server build-web``: build the interview page now, into the directory the server serves from.

The server builds it on its own at start when it can; this command is for images, CI and
machines whose server must not run npm (``--web-build off``).
"""

from __future__ import annotations

import logging
import sys

import anyio

from ..config import load_settings
from .bundle import BuildError, build
from .state import web_dir


def build_web_main(argv: list[str]) -> int:
    """Takes the server's flags (``--data-dir``, ``--web-dir``, …); exit status 0 when built."""
    settings = load_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bundle = anyio.run(build, web_dir(settings))
    except (BuildError, OSError) as exc:
        print(f"crdt-server build-web: {exc}", file=sys.stderr)
        return 1
    m = bundle.manifest
    print(f"interview page ready in {bundle.directory} "
          f"(JavaScript {m.get('javascriptBytes', 0) // 1024} KiB, {m.get('javascriptGzipBytes', 0) // 1024} KiB gzipped)")
    return 0
