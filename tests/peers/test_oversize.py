"""A client whose offline document exceeds the server's message limit (issue 10, item 7): its sync step 2
is refused with one explicit close (4413) that it receives, not a reset (1006) and not a 1009 that
y-websocket retries for ever re-sending the same step 2; everyone else keeps editing."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from crdt_server.testing import ServerProcess

from ..conftest import running
from .conftest import GENERATIONS, Generation, ReferenceServer, Room, new_room, peers

pytestmark = pytest.mark.anyio

MESSAGE_LIMIT = 64 * 1024
OFFLINE_TEXT = "x" * (1024 * 1024)  # 16 times the limit: more than the kernel buffers of a loopback socket


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Ours with a 64 KiB message limit (and a document limit that fits it)."""
    args = ["--max-message-size", str(MESSAGE_LIMIT), "--max-document-size", str(MESSAGE_LIMIT // 2)]
    yield from running(ServerProcess(tmp_path_factory.mktemp("peers-oversize") / "data", extra_args=args))


@pytest.fixture
def oversize_server(request: pytest.FixtureRequest, side: str, gen: Generation) -> ServerProcess | ReferenceServer:
    if side == "ours":
        return request.getfixturevalue("small_server")  # type: ignore[no-any-return]
    return request.getfixturevalue("reference14" if gen.yjs14 else "reference13")  # type: ignore[no-any-return]


CELLS = [pytest.param(side, GENERATIONS[g], id=f"{side}-{g}")
         for side, gens in (("ours", ("y-websocket@2", "y-websocket@3", "next")), ("reference", ("y-websocket@3",)))
         for g in gens]


@pytest.mark.parametrize(("side", "gen"), CELLS)
async def test_an_offline_document_over_the_message_limit_is_refused_once(
        oversize_server: ServerProcess | ReferenceServer, side: str, gen: Generation) -> None:
    """Ours: each upload of the oversized step 2 gets close 4413 with a reason (never 1006/1009); 3.1+
    takes it as final and stops, 2.x and the next major retry (documented), and nothing of it is kept
    while the others edit on. The reference has no message limit: it accepts the document."""
    room: Room = await new_room(oversize_server)
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (ada, bob):
        await ada.disconnect()
        await ada.append(OFFLINE_TEXT)  # offline: sent as the sync step 2 answering the server's step 1
        mark = ada.mark()
        await ada.reconnect()
        if side == "reference":
            await bob.wait_text(equals=OFFLINE_TEXT, timeout=20)
            return
        first = await ada.wait_close(timeout=15, since=mark)
        assert first["code"] == 4413, first
        assert "message too large" in first["reason"], first
        await anyio.sleep(2.0)  # back-off starts at 100 ms: a retrying client has come back by now
        closes = [e for e in ada.find_events("connection-close", since=mark) if not e["local"]]
        assert {e["code"] for e in closes} == {4413}, closes
        if gen.final_44xx:
            assert len(closes) == 1 and ada.find_events("closed", since=mark)
        else:
            assert len(closes) >= 2
        await bob.append("still editing")
        async with peers(room, gen, ("Cy", "observer")) as (cy,):
            await cy.wait_text(equals="still editing", timeout=10)
        assert await room.rest_code() == "still editing"
