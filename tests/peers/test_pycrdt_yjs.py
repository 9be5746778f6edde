"""pycrdt-websocket's own provider tests (its ``tests/test_pycrdt_yjs.py``: a pycrdt client and a real
Yjs client in one room), as our scenarios, against our server and, for comparison, the reference.
Their Yjs side is ``pycrdt_yjs.mjs``; upstream runs it with y-websocket 1.x, so do we, and with 3.x."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from pycrdt import Array, Map

from ..nodepkg import node_executable
from .conftest import GENERATIONS, PEERS_DIR, Generation, Room, py_peer

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("side", ["ours", "reference"]),
              pytest.mark.parametrize("gen", [GENERATIONS["y-websocket@1"], GENERATIONS["y-websocket@3"]],
                                      ids=lambda g: g.name)]


@asynccontextmanager
async def yjs_side(room: Room, gen: Generation, scenario: str) -> AsyncIterator[None]:
    """pycrdt_yjs.mjs playing ``scenario`` in ``room`` (as the candidate on ours), synced on entry."""
    gen.package.ensure()
    args = [node_executable(), str(PEERS_DIR / "pycrdt_yjs.mjs"), str(gen.flavour_path), scenario,
            room.server_url, room.name, room.token("candidate") or ""]
    async with await anyio.open_process(args, cwd=gen.package.directory, stderr=subprocess.STDOUT) as proc:
        try:
            assert proc.stdout is not None
            with anyio.fail_after(15):
                async for line in TextReceiveStream(proc.stdout):
                    assert "synced" in line, line
                    break
            yield
        finally:
            proc.kill()


async def changed(shared: Map | Array, check: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until ``check()`` holds, woken by changes of ``shared``."""
    event = anyio.Event()

    def wake(_: Any) -> None:
        event.set()

    subscription = shared.observe(wake)
    try:
        with anyio.fail_after(timeout):
            while not check():
                await event.wait()
                event = anyio.Event()
    finally:
        shared.unobserve(subscription)


async def test_a_yjs_client_answers_each_change(room: Room, gen: Generation) -> None:
    async with py_peer(room) as doc, yjs_side(room, gen, "increment"):
        doc["map"] = shared = Map()
        for value in range(10):
            shared["in"] = float(value)
            await changed(shared, lambda v=value: shared.get("out") == v + 1.0)


async def test_nested_types_from_a_yjs_client(room: Room, gen: Generation) -> None:
    async with py_peer(room) as doc:
        doc["cells"] = cells = Array()
        doc["state"] = state = Map()
        async with yjs_side(room, gen, "cells"):
            await changed(cells, lambda: len(cells) == 1)
            await changed(state, lambda: "state" in state)
            assert cells.to_py() == [{"metadata": {"foo": "bar"}, "source": "1 + 2"}]
            assert state.to_py() == {"state": {"dirty": False}}


async def test_a_yjs_client_undoes_a_remote_change(room: Room, gen: Generation) -> None:
    async with py_peer(room) as doc, yjs_side(room, gen, "undo"):
        doc["map0"] = map0 = Map()
        await changed(map0, lambda: map0.get("key0") == "val0")
        map0["key1"] = "val1"
        await changed(map0, lambda: "key1" not in map0)
        assert map0.to_py() == {"key0": "val0"}
