"""Playback end to end: real yjs + y-websocket clients type with known timing; the REST moments and
the binary update stream (decoded by Yjs under Node) give back exactly what was there."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from crdt_server.testing import ServerProcess

from .conftest import auth, create_session
from .jsclient import JS_DIR, js_client, js_deps  # noqa: F401  (js_deps is a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]

START = "# start\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Snapshots and checkpoints every 3 updates, so most moments are rebuilt from a checkpoint
    (tests/test_playback_store.py covers moments before a newer snapshot that must not be used)."""
    srv = ServerProcess(tmp_path_factory.mktemp("playback") / "data",
                        extra_args=["--snapshot-every", "3", "--playback-checkpoint-every", "3"])
    srv.start()
    yield srv
    srv.stop()


async def get(server: ServerProcess, path: str, token: str | None, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await http.get(path, params=params, headers=auth(token) if token else {})


async def play(server: ServerProcess, s: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = await get(server, f"/api/sessions/{s['id']}/playback", s["tokens"]["interviewer"], **params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def decode_with_yjs(server: ServerProcess, s: dict[str, Any], *extra: str) -> dict[str, Any]:
    proc = await anyio.run_process(["node", str(Path(JS_DIR) / "playback_stream.mjs"), server.base_url, s["id"],
                                    s["tokens"]["interviewer"], *extra], cwd=JS_DIR, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


async def test_moments_seq_language_and_the_yjs_stream(server):
    s = await create_session(server, code=START, language="python")
    sid, tok = s["id"], s["tokens"]["interviewer"]
    moments: list[tuple[float, str, str]] = []
    async with js_client(server.ws_url, sid, tok, name="Ada") as ada, \
            js_client(server.ws_url, sid, s["tokens"]["candidate"], name="Bob") as bob:
        await ada.wait_text(equals=START)
        await bob.wait_text(equals=START)
        moments.append((time.time(), START, "python"))
        await anyio.sleep(0.05)
        expected = START
        for chunk in ("héllo 😀\n", "x = 1\n"):  # typed a code point at a time, 10 ms apart
            await bob.type_chars(chunk, interval_ms=10)
            expected += chunk
            await ada.wait_text(equals=expected)
            moments.append((time.time(), expected, "python"))
            await anyio.sleep(0.05)
        await ada.append("中文 ok 🎉\n")
        expected += "中文 ok 🎉\n"
        await bob.wait_text(equals=expected)
        moments.append((time.time(), expected, "python"))
        await anyio.sleep(0.05)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            r = await http.patch(f"/api/sessions/{sid}", json={"language": "js"}, headers=auth(tok))
            assert r.status_code == 200, r.text
        moments.append((time.time(), expected, "javascript"))  # canonicalised from the alias
        await anyio.sleep(0.05)
        await bob.delete(len(START), len("héllo 😀\n".encode("utf-16-le")) // 2)  # UTF-16 units, as Yjs counts
        expected = expected.replace("héllo 😀\n", "")
        await ada.wait_text(equals=expected)
        moments.append((time.time(), expected, "javascript"))
        live = await ada.get_text()

        seqs = []
        for at, text, language in moments:
            m = await play(server, s, at=f"{at:.6f}")
            assert (m["code"], m["language"]) == (text, language)
            assert m["at"] == pytest.approx(at, abs=1e-5)
            seqs.append(m["seq"])
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for (_, text, language), seq in zip(moments, seqs, strict=True):  # the same moments by sequence
            m = await play(server, s, seq=seq)
            assert (m["seq"], m["code"], m["language"]) == (seq, text, language)

        before = await play(server, s, at="0")  # before the session existed: the starter code
        assert (before["seq"], before["code"], before["language"]) == (1, START, "python")
        first = await play(server, s, seq=1)
        assert first["code"] == START
        end = await play(server, s, at="99999999999")  # past the end: now
        assert end["code"] == live == expected and end["seq"] >= seqs[-1]

        # The binary stream, decoded and replayed by Yjs, ends at the same text as playback and the editors.
        decoded = await decode_with_yjs(server, s)
        assert decoded["text"] == live
        assert decoded["lastSeq"] == end["seq"] and decoded["records"] == end["seq"]
        assert (await play(server, s, seq=decoded["lastSeq"]))["code"] == live
        by_role = {(p[1], p[3]) for p in decoded["participants"]}
        assert ("server", "") in by_role and ("candidate", "Bob") in by_role and ("interviewer", "Ada") in by_role
        assert decoded["participants"][0][:2] == [1, "server"]
        # A bounded range: inclusive, and the text is the moment at its last row.
        partial = await decode_with_yjs(server, s, str(seqs[2]))
        assert partial["lastSeq"] == seqs[2] and partial["text"] == moments[2][1]


def parse(body: bytes) -> list[tuple[int, float, str, str, str, bytes]]:
    out, pos = [], 0
    while pos < len(body):
        length, seq, ts = struct.unpack_from(">IQd", body, pos)
        end, pos = pos + 4 + length, pos + 20
        strings = []
        for _ in range(3):
            (n,) = struct.unpack_from(">H", body, pos)
            strings.append(body[pos + 2:pos + 2 + n].decode())
            pos += 2 + n
        out.append((seq, ts, *strings, body[pos:end]))
        pos = end
    return out


async def test_stream_bounds_are_inclusive(server):
    s = await create_session(server, code="a")
    async with js_client(server.ws_url, s["id"], s["tokens"]["candidate"], name="Bob") as bob:
        await bob.type_chars("bcdef", interval_ms=5)
        await anyio.sleep(0.3)
    path, tok = f"/api/sessions/{s['id']}/playback/updates", s["tokens"]["interviewer"]
    r = await get(server, path, tok, from_seq=2, to_seq=3)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert [rec[0] for rec in parse(r.content)] == [2, 3] and "x-next-from-seq" not in r.headers
    everything = parse((await get(server, path, tok)).content)
    assert [rec[0] for rec in everything] == list(range(1, len(everything) + 1)) and len(everything) >= 6
    assert everything[0][2:5] == ("server", "server", "")
    assert parse((await get(server, path, tok, from_seq=len(everything) + 1)).content) == []


@pytest.mark.parametrize("params", [
    {"at": "abc"}, {"at": "-1"}, {"at": "1e5"}, {"at": "nan"}, {"at": "inf"}, {"at": ""}, {"at": "1" * 20},
    {"seq": "0"}, {"seq": "-1"}, {"seq": "x"}, {"seq": ""}, {"seq": "999"}, {"at": "1", "seq": "1"}, {},
    {"when": "1"},
])
async def test_bad_playback_values_are_422(server, params):
    s = await create_session(server)
    r = await get(server, f"/api/sessions/{s['id']}/playback", s["tokens"]["interviewer"], **params)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field", r.text


@pytest.mark.parametrize("params", [{"from_seq": "0"}, {"to_seq": "x"}, {"from_seq": "5", "to_seq": "4"},
                                    {"from_seq": ""}, {"limit": "3"}])
async def test_bad_stream_bounds_are_422(server, params):
    s = await create_session(server)
    r = await get(server, f"/api/sessions/{s['id']}/playback/updates", s["tokens"]["interviewer"], **params)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field", r.text


@pytest.mark.parametrize("path", ["playback?seq=1", "playback/updates"])
async def test_only_this_sessions_interviewer_plays_back(server, path):
    s, other = await create_session(server), await create_session(server)
    url = f"/api/sessions/{s['id']}/{path}"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        assert (await http.get(url, headers=auth(s["tokens"]["interviewer"]))).status_code == 200
        for token in (s["tokens"]["candidate"], s["tokens"]["observer"], other["tokens"]["interviewer"]):
            assert (await http.get(url, headers=auth(token))).status_code == 403
        assert (await http.get(url)).status_code == 401
        assert (await http.delete(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["interviewer"]))).status_code == 204
        r = await http.get(url, headers=auth(s["tokens"]["interviewer"]))
        assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
