"""pycrdt's own client (``pycrdt.Provider``, Yrs in Python) against both servers, and with a Yjs client."""

from __future__ import annotations

import pytest
from pycrdt import Text

from ..conftest import text_of, wait_for
from .conftest import GENERATIONS, Room, peer, py_peer

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("side", ["ours", "reference"])]
V3 = GENERATIONS["y-websocket@3"]


@pytest.fixture
def gen() -> object:
    return V3  # the reference of the Yjs 13 line serves pycrdt


async def test_pycrdt_clients_converge_and_a_newcomer_syncs(room: Room) -> None:
    async with py_peer(room) as a, py_peer(room, "candidate") as b:
        a.get("code", type=Text).insert(0, "from a\n")
        b.get("code", type=Text).insert(0, "from b\n")
        await wait_for(lambda: text_of(a) == text_of(b) and len(text_of(a)) == 14)
        async with py_peer(room) as late:
            assert text_of(late) == text_of(a)


async def test_pycrdt_and_yjs_clients_converge(room: Room) -> None:
    async with py_peer(room) as py, peer(room, V3, "Ada", "candidate") as js:
        py.get("code", type=Text).insert(0, "py\n")
        await js.wait_text(equals="py\n")
        await js.append("js\n")
        await wait_for(lambda: text_of(py) == "py\njs\n")
