"""What the running server knows about its interview page: building, ready or absent.

Start-up never waits for a build: ``EditorPage`` decides at once from what is on disk, and when
the bundle is missing or stale (and building is allowed) builds it in a background task. A stale
bundle keeps being served while the new one builds; a failed build leaves the server running.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from starlette.requests import HTTPConnection

from ..config import Settings
from .bundle import SOURCE_DIR, BuildError, Bundle, build, find_bundle, node_tools, source_hash

log = logging.getLogger("crdt_server.web")

EditorStatus = Literal["building", "ready", "absent"]


def web_dir(settings: Settings) -> Path:
    return Path(settings.web_dir) if settings.web_dir else settings.data_dir / "web"


class EditorPage:
    """The page's state for one server process (kept on ``app.state.editor``)."""

    def __init__(self, settings: Settings, source: Path = SOURCE_DIR) -> None:
        self.directory = web_dir(settings)
        self.source = source
        self.reason = ""
        wanted = source_hash(source) if settings.web_build == "auto" else None
        self.bundle: Bundle | None = find_bundle(self.directory, wanted)
        self.needs_build = wanted is not None and self.bundle is None
        if self.needs_build:
            self.bundle = find_bundle(self.directory, None)  # a stale one serves until the build is done
            try:
                node_tools()
            except BuildError as exc:
                self.needs_build = False
                self.reason = str(exc)
        elif self.bundle is None:
            self.reason = (f"No built interview page in {self.directory} (building is off)." if settings.web_build == "off"
                           else f"No interview page sources at {source} and no built page in {self.directory}.")
        self.status: EditorStatus = "building" if self.needs_build else ("ready" if self.bundle else "absent")

    def log_state(self) -> None:
        if self.status == "building":
            log.info("interview page missing or stale: building it in the background into %s", self.directory)
        elif self.status == "absent":
            log.warning("interview page absent: %s", self.reason)
        else:
            assert self.bundle is not None
            log.info("interview page ready (%s)", self.bundle.directory)

    async def run(self) -> None:
        """The background task: build when needed, then report the outcome (never raises BuildError)."""
        self.log_state()
        if not self.needs_build:
            return
        try:
            self.bundle = await build(self.directory, self.source)
        except (BuildError, OSError) as exc:
            self.reason = str(exc)
            log.warning("interview page build failed: %s", exc)
        self.needs_build = False
        self.status = "ready" if self.bundle else "absent"


def editor_page(conn: HTTPConnection) -> EditorPage | None:
    page = getattr(conn.app.state, "editor", None)
    return page if isinstance(page, EditorPage) else None


def editor_status(conn: HTTPConnection) -> EditorStatus:
    """For ``/health``: ``building``, ``ready`` or ``absent``."""
    page = editor_page(conn)
    return page.status if page is not None else "absent"
