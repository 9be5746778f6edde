"""The pycrdt-websocket internals our subclasses replace or rely on still have the shape we assume.

``SessionRoom`` (crdt_server/sync/room.py) and ``SessionServer`` (crdt_server/sync/server.py)
override private methods of ``YRoom`` and ``WebsocketServer`` (docs/design/pycrdt-websocket.md,
"Where we override upstream internals"). An upstream release that renames one of them, changes its
parameters or stops calling it would leave our override silently unused — for example the stock
``_broadcast_updates`` would come back and broadcast before commit. These tests fail first.
Fast: no server, no sockets.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import tomllib
from typing import Any

import anyio
import pytest
from pycrdt.websocket import WebsocketServer, YRoom

from .conftest import ROOT


def params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.mark.parametrize(
    ("owner", "name", "expected"),
    [
        (YRoom, "serve", ["self", "channel"]),
        (YRoom, "_broadcast_updates", ["self"]),
        (YRoom, "_watch_ready", ["self"]),
        (YRoom, "send_server_awareness", ["self", "type", "changes"]),
        (WebsocketServer, "get_room", ["self", "name"]),
        (WebsocketServer, "serve", ["self", "websocket"]),
    ],
)
def test_overridden_methods_keep_their_signature(owner: type, name: str, expected: list[str]) -> None:
    method = owner.__dict__.get(name)
    assert method is not None, f"{owner.__name__}.{name} is gone upstream: our override is dead code"
    assert params(method) == expected


@pytest.mark.parametrize(
    ("owner", "name"),
    [(YRoom, "serve"), (YRoom, "_broadcast_updates"), (YRoom, "_watch_ready"),
     (WebsocketServer, "get_room"), (WebsocketServer, "serve"), (YRoom, "start"), (YRoom, "stop")],
)
def test_async_methods_stay_async(owner: type, name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(owner, name))


def test_send_server_awareness_is_sync() -> None:
    # It is registered as an awareness observer and called synchronously.
    assert not inspect.iscoroutinefunction(YRoom.send_server_awareness)


def test_constructor_keywords_we_pass() -> None:
    assert {"ready", "ydoc", "log", "exception_handler"} <= set(params(YRoom.__init__))
    assert {"rooms_ready", "auto_clean_rooms", "log", "exception_handler"} <= set(params(WebsocketServer.__init__))


def test_start_path_still_runs_the_methods_we_replace() -> None:
    """Read the source: ``start`` opens the room's task group and runs ``_start`` in it (SessionRoom
    replaces ``_start``: one task per room, no awareness ticker), whose upstream version spawns
    ``_watch_ready`` and ``_broadcast_updates``; the constructor subscribes ``send_server_awareness``
    to the awareness."""
    start = inspect.getsource(YRoom.start)
    assert re.search(r"create_task_group\(\) as self\._task_group", start)
    assert "await self._start(task_status)" in start
    start_path = inspect.getsource(YRoom._start)
    assert "self._watch_ready" in start_path
    assert "self._broadcast_updates" in start_path
    assert re.search(r"awareness\.observe\(\s*self\.send_server_awareness\s*\)", inspect.getsource(YRoom.__init__))


class _Probe(YRoom):
    """Records which of the replaced methods upstream calls, and when."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        super().__init__(ready=True)

    def send_server_awareness(self, type: str, changes: Any) -> None:
        self.calls.append(f"awareness:{type}")

    async def _watch_ready(self) -> None:
        self.calls.append("watch_ready")
        self.ydoc_observed.set()

    async def _broadcast_updates(self) -> None:
        self.calls.append("broadcast_updates")
        await anyio.sleep_forever()


@pytest.mark.anyio
async def test_started_server_and_room_expose_what_we_use() -> None:
    """A started ``WebsocketServer`` has ``_task_group`` and ``rooms``; a room started in that task
    group calls our ``_watch_ready``/``_broadcast_updates`` and has its own ``_task_group`` (presence
    coalescing spawns into it) until ``stop()``."""
    server = WebsocketServer(rooms_ready=True, auto_clean_rooms=False)
    assert server.rooms == {}
    async with server:
        assert server._task_group is not None
        assert isinstance(server.rooms, dict)
        room = _Probe()
        room.awareness.set_local_state(None)  # what SessionRoom does: routed to our observer
        assert any(c.startswith("awareness:") for c in room.calls)
        with anyio.fail_after(5):
            await server._task_group.start(room.start)
            while "broadcast_updates" not in room.calls or "watch_ready" not in room.calls:
                await anyio.sleep(0.001)
        assert room._task_group is not None
        assert room.ydoc_observed.is_set()
        assert room.clients == set()
        await room.stop()
        assert room._task_group is None


def test_installed_version_is_inside_the_pinned_range() -> None:
    """The checks above were written against 0.16.x; pyproject.toml pins ``>=0.16.5,<0.17``."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("pycrdt-websocket"))
    assert re.fullmatch(r"pycrdt-websocket>=0\.16\.\d+,<0\.17", pin.replace(" ", "")), pin
    version = importlib.metadata.version("pycrdt-websocket")
    assert version.startswith("0.16."), version
