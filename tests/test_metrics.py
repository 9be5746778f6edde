"""GET /metrics against the real server: the values move with real traffic, the token guards them,
and nothing secret (session ids, tokens, code) reaches the exposition."""

from __future__ import annotations

import random
import signal
import string

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Text

from .conftest import ServerProcess, auth, create_session, py_client, text_of, wait_for
from .execution_fixtures import require_bwrap
from .jsclient import js_client, js_deps  # noqa: F401
from .test_sync_python import spawn_raw_client

pytestmark = pytest.mark.anyio

TOKEN = "metrics-token-0123456789abcdef"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_text(srv: ServerProcess, token: str | None = TOKEN) -> str:
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.get("/metrics", headers=auth(token) if token else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


async def scrape(srv: ServerProcess, token: str | None = TOKEN) -> Samples:
    return parse(await scrape_text(srv, token))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("metrics") / "data", env={"CRDT_SERVER_METRICS_TOKEN": TOKEN})
    srv.start()
    yield srv
    srv.stop()


async def test_metrics_need_the_token_when_one_is_set(metrics_server):
    async with httpx.AsyncClient(base_url=metrics_server.base_url) as http:
        for headers in ({}, auth("wrong"), {"Authorization": TOKEN}, auth(TOKEN + "x")):
            r = await http.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "unauthorized"
            assert "crdt_server" not in r.text
    samples = await scrape(metrics_server)
    assert value(samples, "crdt_server_sandbox_mode_info", mode="off") == 1  # the server runs with --execution off
    assert TOKEN not in metrics_server.log()


async def test_metrics_are_open_without_a_token(fresh_server):
    samples = await scrape(fresh_server, token=None)
    assert ("crdt_server_updates_total", frozenset()) in samples


async def test_updates_bytes_connections_and_commits_follow_real_editors(metrics_server, js_deps):
    before = await scrape(metrics_server)
    s = await create_session(metrics_server, code="")
    async with js_client(metrics_server.ws_url, s["id"], s["tokens"]["interviewer"], name="Ada") as editor:
        async with py_client(metrics_server, s, "observer") as watcher:
            during = await scrape(metrics_server)
            assert value(during, "crdt_server_connections") == value(before, "crdt_server_connections") + 2
            assert value(during, "crdt_server_rooms_loaded") >= 1
            typed = "def add(a, b):\n    return a + b\n"
            await editor.type_chars(typed)
            await wait_for(lambda: text_of(watcher) == typed)
            after = await scrape(metrics_server)
            exposition = await scrape_text(metrics_server)
    updates = value(after, "crdt_server_updates_total") - value(before, "crdt_server_updates_total")
    assert updates >= len(typed)  # one update per keystroke at least
    sent = value(after, "crdt_server_broadcast_bytes_total") - value(before, "crdt_server_broadcast_bytes_total")
    assert sent >= len(typed.encode())  # every keystroke went to the watcher
    commits = value(after, "crdt_server_commit_seconds_count") - value(before, "crdt_server_commit_seconds_count")
    assert commits >= 1
    assert value(after, "crdt_server_commit_seconds_sum") > value(before, "crdt_server_commit_seconds_sum")
    # both sockets closed: the gauge comes back down
    with anyio.fail_after(10):
        while value(await scrape(metrics_server), "crdt_server_connections") != value(before, "crdt_server_connections"):
            await anyio.sleep(0.05)
    for secret in (s["id"], *s["tokens"].values(), "return a + b", TOKEN):
        assert secret not in exposition


async def test_a_client_that_stops_reading_counts_as_a_slow_consumer_close(tmp_path):
    srv = ServerProcess(tmp_path / "data", ["--send-queue-messages", "20", "--send-queue-bytes", "500000",
                                             "--max-document-size", "400000", "--presence-max-room-bytes", "200000"])
    srv.start()
    try:
        s = await create_session(srv)
        assert value(await scrape(srv, None), "crdt_server_slow_consumer_closes_total") == 0
        lazy = spawn_raw_client(f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}")
        lazy.send_signal(signal.SIGSTOP)
        try:
            async with py_client(srv, s) as writer:
                t = writer.get("code", type=Text)
                rnd = random.Random(11)
                with anyio.fail_after(60):
                    # bytes on the wire, a small document; chunks small enough that what waits for its
                    # commit under load never takes the document past --max-document-size (4413 to the writer)
                    while "send queue full" not in srv.log():
                        t.insert(0, "".join(rnd.choices(string.ascii_letters, k=5_000)))
                        del t[0:5_000]
                        await anyio.sleep(0.002)
            samples = await scrape(srv, None)
            assert value(samples, "crdt_server_slow_consumer_closes_total") == 1
        finally:
            lazy.kill()
            lazy.wait()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def exec_server(tmp_path_factory):
    require_bwrap()  # fails (never skips) where the sandbox cannot run
    srv = ServerProcess(tmp_path_factory.mktemp("exec-metrics") / "data",
                        ["--exec-workers", "1", "--run-rate", "100", "--run-burst", "100"],
                        env={"CRDT_SERVER_EXECUTION": "on"})
    srv.start()
    yield srv
    srv.stop()


async def test_runs_are_counted_by_language_and_outcome(exec_server):
    marker = "print('metrics-marker-' + str(6 * 7))"
    s = await create_session(exec_server, language="python", code=marker + "\n")
    before = await scrape(exec_server, None)
    assert value(before, "crdt_server_sandbox_mode_info", mode="full") == 1
    async with httpx.AsyncClient(base_url=exec_server.base_url, timeout=30) as http:
        r = await http.post(f"/api/sessions/{s['id']}/execute", json={}, headers=auth(s["tokens"]["candidate"]))
        assert r.status_code == 200 and r.json()["stdout"] == "metrics-marker-42\n", r.text
        r = await http.post("/api/execute", json={"language": "python", "code": "import sys; sys.exit(3)"})
        assert r.json()["exitCode"] == 3
        r = await http.post("/api/execute", json={"language": "cobol", "code": marker})
        assert r.status_code == 422
    after = await scrape(exec_server, None)
    exposition = await scrape_text(exec_server, None)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("crdt_server_runs_total", language="python", outcome="ok") == 1
    assert delta("crdt_server_runs_total", language="python", outcome="error") == 1
    assert delta("crdt_server_runs_total", language="other", outcome="refused:unknown_language") == 1
    assert delta("crdt_server_run_seconds_count") == 2  # refusals have no duration
    assert delta("crdt_server_run_seconds_sum") > 0
    assert value(after, "crdt_server_run_queue_depth") == 0
    for secret in (s["id"], *s["tokens"].values(), "metrics-marker", "cobol"):
        assert secret not in exposition
