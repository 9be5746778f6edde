"""An edit inside an emoji's UTF-16 surrogate pair: every reader sees the same text.

Yjs replaces both halves of a split pair with U+FFFD; the server's CRDT library (Yrs) kept the emoji
whole, so the author, the other editors, the REST text and a newcomer saw different texts. The server
now deletes and re-inserts the character before applying such an update (``sync/surrogates.py``).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import auth, create_session
from .jsclient import JSClient, js_client

pytestmark = pytest.mark.anyio

# (what the author does in "x😀y", in UTF-16 units as Yjs counts, what every reader ends with)
EDITS = {
    "insert between the halves": (("insert", 2, "中"), "x中😀y"),
    "delete from the low half on": (("delete", 2, 2), "x😀"),
    "delete up to the high half": (("delete", 0, 2), "😀y"),
}


async def _rest(server: Any, s: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
        assert r.status_code == 200, r.text
        code = str(r.json()["code"])
        r = await http.get(f"/api/sessions/{s['id']}/playback", params={"at": "99999999999"},
                           headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200, r.text
        assert r.json()["code"] == code  # playback replays the log: the same text
        return code


async def _newcomer(server: Any, s: dict[str, Any]) -> str:
    async with js_client(server.ws_url, s["id"], s["tokens"]["observer"], name="Late") as late:
        return await late.get_text()


async def _edit(author: JSClient, edit: tuple[str, int, Any]) -> None:
    kind, index, arg = edit
    if kind == "insert":
        await author.insert(index, arg)
    else:
        await author.delete(index, arg)


@pytest.mark.parametrize("case", list(EDITS))
async def test_an_edit_inside_a_surrogate_pair_leaves_every_reader_with_the_same_text(fresh_server, case):
    srv = fresh_server
    edit, expected = EDITS[case]
    s = await create_session(srv, code="")
    async with js_client(srv.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as other, \
            js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as author:
        await other.insert(0, "x😀y")
        await author.wait_text(equals="x😀y")
        await _edit(author, edit)
        await author.wait_text(equals=expected)
        await other.wait_text(equals=expected)
        assert await _rest(srv, s) == expected
        assert await _newcomer(srv, s) == expected
        await author.append("!")  # later edits integrate normally
        await other.wait_text(equals=expected + "!")
    srv.restart()
    assert await _rest(srv, s) == expected + "!"
    assert await _newcomer(srv, s) == expected + "!"


async def test_the_notes_document_is_repaired_too(server):
    s = await create_session(server)
    room, token = f"{s['id']}/notes", s["tokens"]["interviewer"]
    async with js_client(server.ws_url, room, token, name="A", textName="notes") as a, \
            js_client(server.ws_url, room, token, name="B", textName="notes") as b:
        await a.insert(0, "x😀y")
        await b.wait_text(equals="x😀y")
        await b.insert(2, "中")
        for client in (a, b):
            await client.wait_text(equals="x中😀y")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/notes", headers=auth(token))
        assert r.json()["notes"] == "x中😀y"
