"""Presence across processes: cursors cross Redis, the participants list covers every process, and a
process that dies takes its clients out of everyone's presence within --presence-timeout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from crdt_server.cluster.messages import Kind, Message, bus_key, encode
from crdt_server.sync.protocol import AwarenessEntry, awareness_frames

from .cluster import deployment
from .conftest import auth, create_session
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    with deployment(tmp_path) as d:
        yield d, d.server(), d.server()


async def participants(srv: Any, s: dict[str, Any]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(headers=auth(s["tokens"]["interviewer"]), timeout=10) as http:
        r = await http.get(f"{srv.base_url}/api/sessions/{s['id']}/participants")
        assert r.status_code == 200, r.text
        return list(r.json()["participants"])


async def wait_names(srv: Any, s: dict[str, Any], expected: set[str], timeout: float) -> float:
    """Seconds until the participants list of ``srv`` names exactly ``expected``."""
    started = time.monotonic()
    with anyio.fail_after(timeout):
        while {p["name"] for p in await participants(srv, s)} != expected:
            await anyio.sleep(0.1)
    return time.monotonic() - started


async def test_presence_crosses_and_a_killed_process_leaves_within_the_bound(pair):
    d, a, b = pair
    s = await create_session(a)
    async with js_client(a.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as ada:
        # Bob's room on B loads after Ada set her state: B asks, so Bob sees her at once (no 15 s renewal)
        async with js_client(b.ws_url, s["id"], s["tokens"]["candidate"], name="Bob", maxBackoffTime=200) as bob:
            await bob.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Bob"], timeout=3)
            await ada.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Bob"], timeout=3)
            await ada.set_awareness_field("cursor", {"anchor": 3, "head": 5})
            await bob.wait_awareness(lambda st: any(v.get("cursor") == {"anchor": 3, "head": 5}
                                                    for v in st.others.values()), timeout=3)
            for srv in (a, b):  # either process lists everyone, wherever connected
                await wait_names(srv, s, {"Ada", "Bob"}, timeout=5)
            a.kill9()  # no removal is ever sent for Ada
            await bob.wait_awareness(lambda st: st.names == ["Bob"], timeout=10)
            assert await wait_names(b, s, {"Bob"}, timeout=1) < 1


async def test_remote_presence_is_checked_like_a_local_one_and_needs_the_key(pair):
    d, a, b = pair
    s = await create_session(a)
    secret = d.rows("SELECT secret FROM server_secret")[0][0]
    async with js_client(b.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as bob:
        redis = Redis.from_url(d.redis_url)
        try:
            def presence(key: bytes, state: bytes, client_id: int) -> bytes:
                frame = awareness_frames([AwarenessEntry(client_id, 1, state)], 1 << 20)[0]
                return encode(key, Message(Kind.PRESENCE, b"\x01" * 8, s["id"], "main", conn_id="forged",
                                           role="interviewer", since=time.time(), frame=frame))

            channel = f"{d.prefix}:bus"
            good = bus_key(secret, d.prefix)
            await redis.publish(channel, presence(b"x" * 32, b'{"user":{"name":"NoKey"}}', 1001))  # wrong key
            await redis.publish(channel, presence(good, b'{"user":{"name":"Huge","pad":"' + b"x" * 100_000 + b'"}}', 1002))
            await redis.publish(channel, presence(good, b'{"user":{"name":', 1003))  # not JSON
            await redis.publish(channel, presence(good, b'{"user":{"name":"Keyed"}}', 1004))  # proves the path works
            await bob.wait_awareness(lambda st: "Keyed" in st.names, timeout=5)
            assert sorted((await bob.awareness_states()).names) == ["Bob", "Keyed"]
        finally:
            await redis.aclose()




async def test_a_flood_of_untagged_messages_does_not_flood_the_log(pair):
    """Anyone with Redis access can publish for a session it sees on the channel: the messages are
    refused, and the log says so a few times, not once per message (a full disk, an unreadable log)."""
    d, a, b = pair
    s = await create_session(a)
    async with js_client(b.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as bob:
        redis = Redis.from_url(d.redis_url)
        try:
            forged = encode(b"x" * 32, Message(Kind.HEAD, b"\x01" * 8, s["id"], "main", seq=1))
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(2000):
                    pipe.publish(f"{d.prefix}:bus", forged)
                await pipe.execute()
        finally:
            await redis.aclose()
        await bob.insert(0, "still here ")  # B went through every message, and still serves
        await bob.wait_text(equals="still here ", timeout=10)
        await anyio.sleep(1)
    refused = [line for line in b.log().splitlines() if "bus:" in line and "refused" in line]
    assert 1 <= len(refused) <= 5, len(refused)
