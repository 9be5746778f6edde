"""The built-in interview page: its bundle (built from ``web/``, never committed), pages and files."""

from .bundle import BuildError, Bundle, build, find_bundle, source_hash
from .command import build_web_main
from .pages import security_headers, session_links, web_routes
from .state import EditorPage, EditorStatus, editor_status, web_dir

__all__ = [
    "BuildError",
    "Bundle",
    "EditorPage",
    "EditorStatus",
    "build",
    "build_web_main",
    "editor_status",
    "find_bundle",
    "security_headers",
    "session_links",
    "source_hash",
    "web_dir",
    "web_routes",
]
