"""Interop with the real JavaScript clients: yjs 13.6 + y-websocket 3 under Node."""

from __future__ import annotations

import anyio
import httpx
import pytest
from pycrdt import Text

from crdt_server.sync.protocol import Reader

from .conftest import auth, create_session, py_client, text_of
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .pg import BACKENDS  # noqa: F401  (conftest runs this module's server tests on SQLite and PostgreSQL)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]


def decode_state_vector(sv: bytes) -> dict[int, int]:
    r = Reader(sv)
    return {r.var_uint(): r.var_uint() for _ in range(r.var_uint())}


async def test_js_and_python_clients_converge(server):
    s = await create_session(server, code="print('hi')\n")
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as a, \
            js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as b, \
            py_client(server, s) as py:
        assert await a.get_text() == "print('hi')\n"
        await b.append("x = 1\n")
        py.get("code", type=Text).insert(0, "# py\n")
        await a.insert(0, "# js\n")
        expected_parts = ["# py\n", "# js\n", "print('hi')\n", "x = 1\n"]
        for client in (a, b):
            await client.wait_until(lambda c=client: _has_all(c, expected_parts), timeout=10)
        assert await a.get_text() == await b.get_text()
        with anyio.fail_after(10):
            while text_of(py) != await a.get_text():
                await anyio.sleep(0.02)
        assert await a.get_meta() == {"language": "python", "title": "", "status": "active"}


async def _has_all(client, parts) -> bool:  # type: ignore[no-untyped-def]
    text = await client.get_text()
    return all(part in text for part in parts)


async def test_late_joiner_sees_presence_at_once_and_no_server_ghost(server):
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as a:
        await a.wait_awareness(lambda st: "Ada" in st.names, timeout=5)
        async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as b:
            # A renewal would only come after 15 s: seeing Ada within 2 s proves the snapshot on join.
            await b.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Bob"], timeout=2)
            snapshot = await b.awareness_states()
            assert snapshot.raw_count == 2  # no empty server entry (ghost user)
            await a.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Bob"], timeout=5)


async def test_presence_removed_after_abrupt_drop(server):
    s = await create_session(server)
    async with js_client(server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as a:
        b = await _start(server, s, "candidate", "Bob")
        await a.wait_awareness(lambda st: "Bob" in st.names, timeout=5)
        await b.aclose()  # SIGKILL: no close frame, no awareness removal from the client
        # The client-side timeout is 30 s; the server must remove it well before that.
        await a.wait_awareness(lambda st: st.names == ["Ada"], timeout=5)


async def _start(server, s, role, name):  # type: ignore[no-untyped-def]
    from .jsclient import JSClient

    c = JSClient(label=name)
    await c.start()
    await c.connect(server.ws_url, s["id"], s["tokens"][role], name=name)
    await c.wait_synced(10)
    return c


async def test_observer_edits_never_reach_others(server):
    s = await create_session(server, code="x")
    async with js_client(server.ws_url, s["id"], s["tokens"]["observer"], name="Obs") as obs, \
            js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Cand") as cand:
        await obs.append("OBSERVER")
        await cand.append("+cand")
        await obs.wait_text(contains="+cand", timeout=5)
        await anyio.sleep(0.3)
        assert "OBSERVER" not in await cand.get_text()
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
        assert r.json()["code"] == "x+cand"


@pytest.mark.parametrize("which,code", [("garbage", 4401), ("foreign", 4403)])
async def test_refused_js_client_stops_retrying_and_gets_no_data(server, which, code):
    s = await create_session(server, code="confidential")
    other = await create_session(server)
    token = "garbage" if which == "garbage" else other["tokens"]["candidate"]
    async with js_client(server.ws_url, s["id"], token, wait_synced=False) as c:
        event = await c.wait_close(code, timeout=5)
        assert event["permanent"]
        await anyio.sleep(0.5)
        status = await c.status()
        assert not status["synced"]
        assert len([x for x in status["closes"] if not x.get("local")]) == 1  # no reconnect loop
        assert await c.get_text() == ""


async def test_kill_9_loses_no_update_another_client_received(fresh_server):
    """SIGKILL the server while a client types; every update the observer had received must
    survive the restart (write-ahead: committed before broadcast)."""
    srv = fresh_server
    s = await create_session(srv)
    async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="Writer") as writer, \
            js_client(srv.ws_url, s["id"], s["tokens"]["interviewer"], name="Watcher") as watcher:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_type_until_cancelled, writer)
            await watcher.wait_until(lambda: _length_at_least(watcher, 200), timeout=20)
            srv.kill9()
            seen_sv = decode_state_vector(await watcher.state_vector())
            seen_text = await watcher.get_text()
            tg.cancel_scope.cancel()
    # both clients are gone before the restart: nothing can reach the new server from them
    assert len(seen_text) >= 200
    srv.start()
    async with py_client(srv, s, "observer") as recovered:
        recovered_sv = decode_state_vector(recovered.get_state())
        for client_id, clock in seen_sv.items():
            assert recovered_sv.get(client_id, 0) >= clock, "an update the watcher had received was lost"
        assert text_of(recovered).startswith(seen_text)


async def _type_until_cancelled(writer) -> None:  # type: ignore[no-untyped-def]
    try:
        await writer.type_chars("abcdefghij" * 1000, interval_ms=1, timeout=60)
    except Exception:  # noqa: BLE001 - the server died under it: that is the point
        pass


async def _length_at_least(client, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await client.get_text()) >= n


async def test_clean_restart_keeps_every_edit(fresh_server):
    srv = fresh_server
    s = await create_session(srv, code="start\n")
    async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="A") as a:
        await a.type_chars("typed by js\n", interval_ms=0)
        await a.wait_until(lambda: _length_at_least(a, len("start\ntyped by js\n")), timeout=5)
        expected = await a.get_text()
        async with httpx.AsyncClient(base_url=srv.base_url) as http:
            with anyio.fail_after(5):
                while (await http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["candidate"]))).json()["code"] != expected:
                    await anyio.sleep(0.02)
    assert srv.stop() is not None  # SIGTERM: flush and exit
    srv.start()
    async with js_client(srv.ws_url, s["id"], s["tokens"]["candidate"], name="B") as b:
        assert await b.get_text() == expected
