"""Issue 10 item 10: content a newcomer must receive exactly as its author wrote it.

A live peer gets the author's update as sent; a newcomer gets what the server re-encodes from its own
document, so that is where a server's CRDT library shows. The reference server (Yjs) keeps anything, so
there the author, a live peer and a newcomer read the author's value. Ours cannot keep some content
exactly (object key order, ``-0``, a subdocument's ``meta``, ``Y.XmlHook``): it stores that item as
deleted, tells the author (a y-protocols permission-denied message) and the author's copy drops it too,
so every reader — the author, a live peer, a newcomer, the stored log a restart loads — reads the same
document without it. Nobody's connection is closed (a close is a reconnect loop for every client but
y-websocket 3.1+, re-sending the content each time), and the author's later edits arrive everywhere.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
import httpx
import pytest

from ..conftest import auth
from ..jsclient import JSClient
from ..test_playback import parse as playback_records
from .conftest import MAIN, Generation, Room, matrix, peer, peers

pytestmark = pytest.mark.anyio

# no integer-like keys: JavaScript itself orders those first, so only the server could change this order
OBJECT = {"zeta": 1, "alpha": {"y": [1, 2], "b": None, "x": "s"}, "mid": True, "beta": 2.5, "omega": "o",
          "gamma": [], "delta": {}, "eta": -3}
ABSENT = {"kind": "absent"}
LATER = {"kind": "json", "json": '"later"'}


async def written_then_read(room: Room, gen: Generation, kind: str, value: Any) -> dict[str, Any]:
    """Ada writes ``value`` (a map entry of ``kind``, see client.mjs ``mapSet``) into root map ``extra``,
    then keeps editing (another entry, text in ``code``). Returns what she wrote (read at once), and what
    she, Bob (live), a newcomer and the stored log read once her later edits have arrived; asserts that
    those later edits arrived everywhere and that nobody's connection was closed."""
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (ada, bob):
        written = await ada.call("mapSet", root="extra", key="v", value=value, kind=kind)
        await ada.call("mapSet", root="extra", key="after", value="later")
        await ada.call("insert", index=0, text="typed later")
        await bob.wait_text(equals="typed later")
        await _settled(ada, room)
        read = {"author": await ada.call("mapGet", root="extra", key="v"),
                "peer": await bob.call("mapGet", root="extra", key="v")}
        assert await bob.call("mapGet", root="extra", key="after") == LATER
        async with peer(room, gen, "Late") as late:
            read["newcomer"] = await late.call("mapGet", root="extra", key="v")
            assert await late.call("mapGet", root="extra", key="after") == LATER
            assert await late.get_text() == "typed later"
        for client in (ada, bob):
            status = await client.status()
            assert status["closes"] == [] and status["syncedCount"] == 1, status  # never reconnected
        denied = (await ada.status())["permissionDenied"]
    if room.side == "ours":
        assert await room.rest_code() == "typed later"
        read["log"] = await _read_from_log(room, gen)
        assert len(denied) == 1 and "cannot keep exactly" in denied[0], denied
    return {"written": written, **read}


async def _settled(ada: JSClient, room: Room) -> None:
    """Ours: until Ada's copy dropped the content (the delete set comes with her confirmation)."""
    if room.side != "ours":
        return
    with anyio.fail_after(10):
        while (await ada.call("mapGet", root="extra", key="v")) != ABSENT:
            await anyio.sleep(0.05)


async def _read_from_log(room: Room, gen: Generation) -> dict[str, Any]:
    """``extra.v`` in a Yjs document made of every row of the stored log (what a restart loads), read
    with the generation's own Yjs; the later edit must be there too."""
    assert room.tokens is not None
    async with httpx.AsyncClient(base_url=room.base_url or "", timeout=10) as http:
        r = await http.get(f"/api/sessions/{room.name}/playback/updates", headers=auth(room.tokens["interviewer"]))
        assert r.status_code == 200 and "X-Next-From-Seq" not in r.headers, r.text
    client = JSClient(label=f"{gen.name}:log", package=gen.package, flavour=gen.flavour_path)
    try:
        await client.start()
        for *_, update in playback_records(r.content):
            await client.call("applyUpdate", update=base64.b64encode(update).decode())
        assert await client.call("mapGet", root="extra", key="after") == LATER
        return await client.call("mapGet", root="extra", key="v")
    finally:
        await client.aclose()


def everyone_reads(result: dict[str, Any], room: Room) -> None:
    """The reference: everyone reads what Ada wrote. Ours: everyone reads it deleted."""
    expected = result["written"] if room.side == "reference" else ABSENT
    assert {k: v for k, v in result.items() if k != "written"} == {
        k: expected for k in ("author", "peer", "newcomer", *(("log",) if room.side == "ours" else ()))}


@pytest.mark.parametrize(("side", "gen"), matrix(MAIN))
async def test_json_object_key_order_reaches_a_newcomer(room: Room, gen: Generation) -> None:
    result = await written_then_read(room, gen, "json", OBJECT)
    assert result["written"]["kind"] == "json"
    everyone_reads(result, room)


@pytest.mark.parametrize(("side", "gen"), matrix(MAIN))
async def test_negative_zero_reaches_a_newcomer(room: Room, gen: Generation) -> None:
    result = await written_then_read(room, gen, "json", -0.0)  # JSON.parse("-0.0") is -0
    assert result["written"] == {"kind": "json", "json": '{"$negativeZero":true}'}
    everyone_reads(result, room)


@pytest.mark.parametrize(("side", "gen"), matrix(MAIN))
async def test_subdocument_meta_reaches_a_newcomer(room: Room, gen: Generation) -> None:
    result = await written_then_read(room, gen, "doc", {"title": "notes", "n": 1})
    assert result["written"]["kind"] == "doc" and result["written"]["meta"] == {"title": "notes", "n": 1}
    everyone_reads(result, room)


@pytest.mark.parametrize(("side", "gen"), matrix(("y-websocket@1", "y-websocket@2", "y-websocket@3")))
async def test_an_xml_hook_reaches_a_newcomer_or_is_deleted_for_everyone(room: Room, gen: Generation) -> None:
    """Yjs 13 only: Yjs 14 has no Y.XmlHook."""
    result = await written_then_read(room, gen, "xmlhook", "widget")
    assert result["written"] == {"kind": "xmlhook", "hookName": "widget"}
    everyone_reads(result, room)
