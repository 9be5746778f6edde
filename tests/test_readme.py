"""The README's Node quick start runs exactly as written, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .conftest import ROOT, ServerProcess
from .jsclient import NODE_MODULES, js_deps, node_executable  # noqa: F401  (js_deps is a fixture)


def snippet(name: str) -> str:
    """The one ```js block between ``<!-- quickstart-NAME:start -->`` and ``…:end -->``."""
    readme = (ROOT / "README.md").read_text()
    start, end = f"<!-- quickstart-{name}:start -->", f"<!-- quickstart-{name}:end -->"
    block = readme[readme.index(start) + len(start):readme.index(end)]
    match = re.fullmatch(r"\s*```js\n(.*?)```\s*", block, flags=re.S)
    assert match, "the quick start is one ```js block between the markers"
    return match.group(1)


def test_node_quick_start_runs_as_written(tmp_path: Path, server: ServerProcess, js_deps: Path) -> None:  # noqa: F811
    script = tmp_path / "quickstart.mjs"
    script.write_text(snippet("node"))
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)  # what `npm install yjs y-websocket ws` gives
    env = {**os.environ, "CRDT_SERVER_URL": server.base_url}
    result = subprocess.run([node_executable(), str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'print("hello")\n\n'  # the starter code, then console.log's newline


def test_browser_snippet_is_valid_javascript(tmp_path: Path) -> None:
    script = tmp_path / "editor.mjs"
    script.write_text(snippet("browser"))
    result = subprocess.run([node_executable(), "--check", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
