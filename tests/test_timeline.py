"""The timeline (``GET /api/sessions/{id}/timeline``) against the real server and real yjs clients."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from .conftest import auth, create_session
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = pytest.mark.anyio

PASTE = "😀中" * 25  # 50 code points (75 UTF-16 units, 175 UTF-8 bytes) in one update


async def timeline(server: Any, s: dict[str, Any], role: str = "interviewer", **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
        return await http.get(f"/api/sessions/{s['id']}/timeline", params=params, headers=auth(s["tokens"][role]))


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in body["participants"]}


async def test_counts_code_points_per_participant_once_across_reconnects(server: Any) -> None:
    s = await create_session(server, code="start\n")  # the server's own text belongs to nobody
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada, \
            js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as bob:
        await ada.delete(0, 6)  # Ada removes the starter code: 6 code points
        await ada.type_chars("héllo 😀\n")  # 8 code points, one update each
        await ada.delete(6, 2)  # the emoji: 2 UTF-16 units, 4 UTF-8 bytes, 1 code point
        await bob.wait_text(equals="héllo \n")
        await bob.type_chars("中文字")
        await bob.delete(8, 1)  # 文: 3 UTF-8 bytes, 1 code point
        await bob.insert(-1, PASTE)
        await ada.wait_text(equals="héllo \n中字" + PASTE)
        # Bob goes offline, types, and comes back: the resync resends his state; then his socket drops
        # and the provider reconnects on its own (same role and name, new connections)
        await bob.disconnect()
        await bob.insert(-1, "ñ")
        await bob.reconnect()
        await bob.wait_synced()
        await ada.wait_text(equals="héllo \n中字" + PASTE + "ñ")
        await bob.terminate()
        await bob.wait_synced()
        await ada.type_chars("!")
        await bob.wait_text(equals="héllo \n中字" + PASTE + "ñ!")
        r = await timeline(server, s, bucket=1)
        assert r.status_code == 200, r.text
        body = r.json()
    people = by_name(body)
    assert set(people) == {"Ada", "Bob"}
    assert (people["Ada"]["role"], people["Ada"]["inserted"], people["Ada"]["deleted"]) == ("interviewer", 9, 7)
    assert (people["Bob"]["role"], people["Bob"]["inserted"], people["Bob"]["deleted"]) == ("candidate", 54, 1)
    assert people["Bob"]["connections"] >= 2  # the reconnects are merged into one participant
    for p in people.values():  # the tracks add up to the totals
        assert sum(pt[1] for pt in p["points"]) == p["inserted"]
        assert sum(pt[2] for pt in p["points"]) == p["deleted"]
        assert all(body["start"] <= pt[0] <= body["end"] for pt in p["points"])
    pastes = [e for e in body["events"] if e["type"] == "paste"]
    assert [(e["participant"], e["data"]["length"]) for e in pastes] == [(people["Bob"]["id"], 50)]
    joins = [e["participant"] for e in body["events"] if e["type"] == "participant_joined"]
    assert joins.count(people["Ada"]["id"]) == 1 and joins.count(people["Bob"]["id"]) >= 2
    assert [e["ts"] for e in body["events"]] == sorted(e["ts"] for e in body["events"])


async def test_leaves_saves_and_caching(server: Any) -> None:
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Cy") as cy:
        await cy.type_chars("ab")
        with anyio.fail_after(10):
            while True:  # the join is recorded when the socket opens
                first = (await timeline(server, s)).json()
                if any(e["type"] == "participant_joined" for e in first["events"]) and first["participants"] and \
                        first["participants"][0]["inserted"] == 2:
                    break
                await anyio.sleep(0.1)
        again = (await timeline(server, s)).json()
        assert again == first  # nothing new: the same answer
        await cy.type_chars("c")
        with anyio.fail_after(10):
            while by_name(later := (await timeline(server, s)).json())["Cy"]["inserted"] != 3:
                await anyio.sleep(0.1)
        assert later != first
    async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
        r = await http.post(f"/api/sessions/{s['id']}/code", json={"code": "abc\nprint(1)\n"},
                            headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200, r.text
        r = await http.patch(f"/api/sessions/{s['id']}", json={"language": "javascript"},
                             headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 200, r.text
    with anyio.fail_after(10):
        while True:
            body = (await timeline(server, s)).json()
            types = [e["type"] for e in body["events"]]
            if "participant_left" in types and "code_saved" in types and "language_changed" in types:
                break
            await anyio.sleep(0.1)
    cy_id = by_name(body)["Cy"]["id"]
    left = [e for e in body["events"] if e["type"] == "participant_left"]
    assert [e["participant"] for e in left] == [cy_id]
    saved = next(e for e in body["events"] if e["type"] == "code_saved")
    assert saved["participant"] is None and saved["data"]["by"] == "interviewer"
    changed = next(e for e in body["events"] if e["type"] == "language_changed")
    assert changed["data"]["to"] == "javascript" and changed["participant"] is None
    assert by_name(body)["Cy"]["inserted"] == 3  # the REST save is the server's edit, nobody's track
    assert len(body["participants"]) == 1


async def test_interviewer_only(server: Any) -> None:
    s = await create_session(server)
    other = await create_session(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
        url = f"/api/sessions/{s['id']}/timeline"
        for role in ("candidate", "observer"):
            r = await http.get(url, headers=auth(s["tokens"][role]))
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"]
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=auth(other["tokens"]["interviewer"]))).status_code == 403
        for bad in ("0", "3601", "x", "-1"):
            r = await http.get(url, params={"bucket": bad}, headers=auth(s["tokens"]["interviewer"]))
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field", r.text
        ok = await http.get(url, headers=auth(s["tokens"]["interviewer"]))
        assert ok.status_code == 200 and ok.json()["bucket"] == 10 and ok.json()["participants"] == []
        assert (await http.delete(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["interviewer"]))).status_code == 204
        r = await http.get(url, headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found", r.text
