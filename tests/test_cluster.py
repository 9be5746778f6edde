"""Two server processes on one PostgreSQL schema, joined by Redis: one interview, whichever process
each client reaches (docs/design/cluster.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pycrdt import Text

from crdt_server.storage import UpdateRecord
from crdt_server.sync.loader import rebuild

from .cluster import Deployment, deployment
from .conftest import create_session, free_port, py_client, text_of
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    with deployment(tmp_path) as d:
        yield d, d.server(), d.server()


def stored_text(d: Deployment, sid: str) -> str:
    """A cold reload: the document rebuilt from what PostgreSQL holds (snapshot + log), no server involved."""
    snap = d.rows("SELECT data FROM snapshots WHERE session_id = $1 ORDER BY seq DESC LIMIT 1", sid)
    base = d.rows("SELECT coalesce(max(seq), 0) FROM snapshots WHERE session_id = $1", sid)[0][0]
    rows = d.rows("SELECT seq, data FROM updates WHERE session_id = $1 AND seq > $2 ORDER BY seq", sid, base)
    doc = rebuild(sid, snap[0][0] if snap else None, [UpdateRecord(sid, data, "", "", seq=seq) for seq, data in rows])
    return str(doc.get("code", type=Text))


async def wait_equal(*texts: Any, timeout: float = 10.0) -> str:
    """Wait until every getter (sync or async) returns the same text; that text."""
    with anyio.fail_after(timeout):
        while True:
            got = []
            for get in texts:
                value = get()
                got.append(await value if hasattr(value, "__await__") else value)
            if len(set(got)) == 1:
                return str(got[0])
            await anyio.sleep(0.05)


@pytest.mark.usefixtures("js_deps")
async def test_js_on_a_and_pycrdt_on_b_converge_with_fresh_clients_and_a_cold_reload(pair):
    d, a, b = pair
    s = await create_session(a, code="start\n")
    async with js_client(a.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as js, \
            py_client(b, s) as py:
        text = py.get("code", type=Text)
        for i in range(40):  # concurrent: both type without waiting for the other
            await js.insert(0, f"js{i};")
            text.insert(len(text), f"py{i};")
            if i % 10 == 0:
                await anyio.sleep(0.01)
        final = await wait_equal(js.get_text, lambda: text_of(py))
        assert all(f"js{i};" in final and f"py{i};" in final for i in range(40))
        assert "start\n" in final
        # a fresh client on either process, and the database alone, hold the same text
        for srv in (a, b):
            async with py_client(srv, s) as fresh:
                assert text_of(fresh) == final
        assert stored_text(d, s["id"]) == final
        # a deletion (which no state vector shows) crosses too
        await js.delete(0, 5)
        final = await wait_equal(js.get_text, lambda: text_of(py))
        assert len(final) == len("start\n") + sum(len(f"js{i};py{i};") for i in range(40)) - 5


async def test_health_reports_the_bus_and_rest_reads_work_on_either_process(pair):
    _, a, b = pair
    async with httpx.AsyncClient() as http:
        for srv in (a, b):
            body = (await http.get(f"{srv.base_url}/health")).json()
            assert body["bus"] == "ok" and body["status"] == "ok"
    s = await create_session(a, code="x = 1\n")
    async with py_client(a, s) as doc_a, py_client(b, s) as doc_b:
        doc_a.get("code", type=Text).insert(0, "# edited on A\n")
        await wait_equal(lambda: text_of(doc_a), lambda: text_of(doc_b))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {s['tokens']['interviewer']}"}) as http:
        r = await http.get(f"{b.base_url}/api/sessions/{s['id']}/code")
        assert r.status_code == 200 and r.json()["code"] == "# edited on A\nx = 1\n"


def test_a_server_whose_redis_does_not_answer_refuses_to_start(tmp_path):
    with deployment(tmp_path, f"redis://127.0.0.1:{free_port()}/0") as d:
        with pytest.raises(RuntimeError) as exc:
            d.server("--redis-timeout", "1")
        assert "does not answer" in str(exc.value) and "Traceback" not in str(exc.value)
        assert "server exited with 2" in str(exc.value)


@pytest.mark.slow
async def test_processes_on_one_database_but_different_buses_are_reported(tmp_path):
    """An operator gives one process another --redis-prefix (or Redis): the instance lock lets it in
    (it has a bus), but nothing crosses between the two. Each says so, loudly, within the bound;
    processes on the same bus never do."""
    with deployment(tmp_path) as d:
        a = d.server("--presence-timeout", "3")
        b = d.server("--presence-timeout", "3")
        c = d.server("--presence-timeout", "3", "--redis-prefix", d.prefix + "-other")

        def reported(srv: Any) -> bool:
            return "is not on this bus" in srv.log()

        with anyio.fail_after(15):
            while not (reported(a) and reported(c)):
                await anyio.sleep(0.2)
        assert "backend pid" in a.log()
        c.kill9()  # its lock goes with its connection
        await anyio.sleep(2)
        for srv in (a, b):
            srv.log_path.write_text("")  # from here on, A and B share their bus alone
        await anyio.sleep(4.5)  # past --presence-timeout + a check
        assert not reported(a) and not reported(b)
