"""Faults between the processes: the bus loses messages, Redis goes away, PostgreSQL stops taking
writes. Every case converges without any client reconnecting (the pycrdt clients here never do), and
nothing a client saw is missing from PostgreSQL (docs/design/cluster.md, "When something is down")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from pycrdt import Map, Text

from crdt_server.sync.protocol import CloseCode

from .cluster import Deployment, PrivateRedis, deployment, redis_command
from .conftest import auth, create_session, py_client, text_of, wait_for
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .pg import URL
from .test_cluster import stored_text, wait_equal

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    """Servers on the shared Redis (started by the test)."""
    with deployment(tmp_path) as d:
        yield d


@pytest.fixture
def private_dep(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[Deployment]:
    """Servers on the test's own Redis, which the test stops and starts."""
    with deployment(tmp_path, private_redis.url) as d:
        yield d


async def bus_state(srv: Any) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{srv.base_url}/health")
        return str(r.json()["bus"])


async def wait_bus(srv: Any, state: str, timeout: float = 15) -> None:
    with anyio.fail_after(timeout):
        while await bus_state(srv) != state:
            await anyio.sleep(0.1)


async def test_subscriber_killed_and_redis_restarted_converge_without_reconnecting(private_dep, private_redis):
    d = private_dep
    a, b = d.server(), d.server()
    s = await create_session(a, code="0123456789\n")
    async with py_client(a, s) as on_a, py_client(b, s) as on_b, \
            js_client(b.ws_url, s["id"], s["tokens"]["observer"], name="Watcher") as watcher:
        ta = on_a.get("code", type=Text)
        await wait_equal(lambda: text_of(on_a), lambda: text_of(on_b))
        # 1. Redis cuts every subscriber: a delete-only change made right then still reaches B
        killed = redis_command(private_redis.url, "CLIENT", "KILL", "TYPE", "pubsub")
        assert killed.startswith(b":") and int(killed[1:]) >= 2, killed
        del ta[0:3]
        assert await wait_equal(lambda: text_of(on_a), lambda: text_of(on_b)) == "3456789\n"
        async with js_client(a.ws_url, s["id"], s["tokens"]["candidate"], name="Leaver") as leaver:
            await watcher.wait_awareness(lambda st: "Leaver" in st.names, timeout=5)
            # 2. Redis down: both processes keep committing and serving their own sockets, report it,
            # and still catch up from the database
            private_redis.stop()
            await wait_bus(a, "down")
            await wait_bus(b, "down")
            ta.insert(0, "A-while-down ")
            on_b.get("code", type=Text).insert(len(text_of(on_b)), "B-while-down")
            final = await wait_equal(lambda: text_of(on_a), lambda: text_of(on_b), timeout=15)
            assert "A-while-down" in final and "B-while-down" in final
            await leaver.exit()  # its removal never crosses: Redis is down
        # 3. Redis back (an empty one, as after a restart): the bus resumes, and B learns who left meanwhile
        private_redis.start()
        await wait_bus(a, "ok")
        await wait_bus(b, "ok")
        del ta[0:len("A-while-down ")]
        final = await wait_equal(lambda: text_of(on_a), lambda: text_of(on_b))
        assert final == "3456789\nB-while-down"
        assert stored_text(d, s["id"]) == final
        await watcher.wait_awareness(lambda st: "Leaver" not in st.names, timeout=8)  # not y-protocols' 30 s


async def test_every_message_lost_is_repaired_from_the_database(dep, private_redis):
    """A publishes into a Redis that B does not listen to: for B every message of A is lost, yet
    nothing reconnects, and B's periodic check of the log's head repairs it (deletes included, which
    no state vector shows)."""
    d = dep
    if True:
        b = d.server()
        a = d.server(CRDT_SERVER_REDIS_URL=private_redis.url)
        s = await create_session(a, code="abcdefghij\n")
        async with py_client(a, s) as on_a, py_client(b, s) as on_b:
            ta = on_a.get("code", type=Text)
            del ta[0:2]  # delete-only, and the last change: no later message reveals a hole
            assert await wait_equal(lambda: text_of(on_a), lambda: text_of(on_b), timeout=5) == "cdefghij\n"
            for i in range(20):
                ta.insert(0, f"a{i} ")
                on_b.get("code", type=Text).insert(len(text_of(on_b)), f" b{i}")
            final = await wait_equal(lambda: text_of(on_a), lambda: text_of(on_b), timeout=10)
            assert all(f"a{i} " in final and f" b{i}" in final for i in range(20))
            assert stored_text(d, s["id"]) == final
        # a delete whose message is lost: B's check finds the session gone and closes its sockets
        async with js_client(b.ws_url, s["id"], s["tokens"]["observer"]) as watcher:
            async with httpx.AsyncClient(headers=auth(s["tokens"]["interviewer"])) as http:
                assert (await http.delete(f"{a.base_url}/api/sessions/{s['id']}")).status_code == 204
            event = await watcher.wait_close(timeout=10)
            assert event["code"] == CloseCode.SESSION_NOT_FOUND


async def test_an_end_whose_message_is_lost_is_enforced_from_the_log(dep, private_redis):
    """The session's status and lock are in the document's meta too: a process that learns of an end
    only through the log (its CONTROL message lost, or later than the row) enforces it at once, so a
    candidate who was shown "ended" cannot still edit there."""
    d = dep
    b = d.server()
    a = d.server(CRDT_SERVER_REDIS_URL=private_redis.url)  # B never hears A's messages
    s = await create_session(a, code="x = 1\n")
    async with py_client(b, s) as cand:
        async with httpx.AsyncClient(headers=auth(s["tokens"]["interviewer"])) as http:
            r = await http.patch(f"{a.base_url}/api/sessions/{s['id']}", json={"status": "ended"})
            assert r.status_code == 200, r.text
        await wait_for(lambda: cand.get("meta", type=Map).get("status") == "ended", timeout=10)
        cand.get("code", type=Text).insert(0, "late ")  # undone by B, never stored
        await wait_for(lambda: text_of(cand) == "x = 1\n", timeout=10)
        await anyio.sleep(0.5)
        assert text_of(cand) == "x = 1\n"
        assert stored_text(d, s["id"]) == "x = 1\n"


async def test_postgresql_refusing_writes_closes_the_author_and_applies_nothing(dep):
    d = dep
    if True:
        a, b = d.server("--database-timeout", "1"), d.server("--database-timeout", "1")
        s = await create_session(a, code="base\n")
        async with js_client(a.ws_url, s["id"], s["tokens"]["candidate"], name="Author") as author, \
                py_client(b, s) as on_b, py_client(a, s) as other_on_a:
            await wait_equal(author.get_text, lambda: text_of(on_b))
            blocker = await asyncpg.connect(URL, server_settings={"search_path": d.schema})
            try:
                tx = blocker.transaction()
                await tx.start()
                await blocker.execute("LOCK TABLE updates IN EXCLUSIVE MODE")  # reads go on, writes wait, then fail
                since = author.mark()
                await author.insert(0, "MARK ")
                await author.wait_close(timeout=10, since=since)  # its write failed: closed so that it resends
                await anyio.sleep(1.5)
                for text in (text_of(on_b), text_of(other_on_a)):
                    assert "MARK" not in text  # nobody saw what was not committed
                assert "MARK" not in stored_text(d, s["id"])
                await tx.rollback()
            finally:
                await blocker.close()
            # the database takes writes again: the author's client resends on reconnect
            # (the room on A closed every socket, other_on_a's too: it reloads from the database)
            final = await wait_equal(author.get_text, lambda: text_of(on_b), timeout=20)
            assert final == "MARK base\n" == stored_text(d, s["id"])
            async with py_client(a, s) as fresh:
                assert text_of(fresh) == final


async def test_a_lock_and_a_token_reissue_made_while_redis_was_down_reach_the_other_process(private_dep, private_redis):
    """Their messages were published into a Redis that was away: once the bus is back, A still
    enforces the lock B set and closes the sockets of the tokens B revoked meanwhile."""
    d = private_dep
    a, b = d.server(), d.server()
    s = await create_session(a, code="x = 1\n")
    sid, tokens = s["id"], s["tokens"]
    async with httpx.AsyncClient(base_url=b.base_url, headers=auth(tokens["interviewer"]), timeout=10) as rest, \
            js_client(a.ws_url, sid, tokens["candidate"], name="Cand") as cand:
        private_redis.stop()
        await wait_bus(a, "down")
        await wait_bus(b, "down")
        assert (await rest.patch(f"/api/sessions/{sid}", json={"locked": True})).status_code == 200
        private_redis.start()
        await wait_bus(a, "ok")
        await wait_bus(b, "ok")
        await anyio.sleep(1)
        await cand.insert(0, "// cand\n")
        await cand.wait_text(equals="x = 1\n", timeout=10)  # undone on A: the lock is known there
        private_redis.stop()
        await wait_bus(a, "down")
        r = await rest.post(f"/api/sessions/{sid}/tokens")
        assert r.status_code == 200, r.text
        since = cand.mark()
        private_redis.start()
        await cand.wait_close(CloseCode.UNAUTHORIZED, timeout=15, since=since)
