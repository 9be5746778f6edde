"""REST endpoints against the real server: every endpoint x role, validation and error bodies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from .conftest import ServerProcess, auth, new_session
from .pg import BACKENDS, server_secret  # noqa: F401  (conftest runs this module's server tests on SQLite and PostgreSQL)

ROLES = ("interviewer", "candidate", "observer")


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


# -- create -----------------------------------------------------------------------------------------


def test_create_defaults_and_shape(http):
    for body in (None, b"", b"  \n", b"{}"):
        r = http.post("/api/sessions", content=body)
        assert r.status_code == 201, r.text
        s = r.json()
        assert s["title"] == "" and s["language"] == "python" and s["status"] == "active"
        assert set(s) == {"id", "title", "language", "status", "createdAt", "updatedAt", "expiresAt", "locked", "runEnabled", "tokens", "links", "wsUrl"}
        assert set(s["tokens"]) == set(ROLES)
        assert s["wsUrl"] == f"/ws/sessions/{s['id']}"
        assert r.headers["location"] == f"/api/sessions/{s['id']}"
        assert s["createdAt"] <= s["updatedAt"] < s["expiresAt"]
        assert (s["locked"], s["runEnabled"]) == (False, True)


def test_create_with_fields(http):
    s = new_session(http, title="Backend interview", language="javascript", code="let x = 1\n")
    assert (s["title"], s["language"]) == ("Backend interview", "javascript")
    r = http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["observer"]))
    assert r.json()["code"] == "let x = 1\n"
    assert r.json()["language"] == "javascript"


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x" * 201},
        {"language": "Python"},
        {"language": ""},
        {"language": "a" * 40},
        {"language": "py thon"},
        {"code": 5},
        {"expiresAt": str(int(time.time()) + 3600)},  # a number as the schema says, not a numeric string
        {"title": None},
        {"unknown": 1},
        {"tokens": {}},
        [],
        "text",
        42,
        None,
    ],
)
def test_create_rejects_invalid_fields(http, body):
    raw = json.dumps(body).encode()  # (httpx sends no body at all for json=None)
    assert_error(http.post("/api/sessions", content=raw), 422, "invalid_field")


def test_title_limit_counts_characters(http):
    assert new_session(http, title="é" * 200)["title"] == "é" * 200
    assert new_session(http, title="😀" * 200)["title"] == "😀" * 200


def test_code_size_limit(http):
    s = new_session(http, code="x" * (1024 * 1024))  # the default limit, exactly
    assert len(s["id"]) >= 16
    assert_error(http.post("/api/sessions", json={"code": "x" * (1024 * 1024 + 1)}), 422, "invalid_field")
    # bytes, not characters: 400 000 three-byte characters are 1.2 MB
    assert_error(http.post("/api/sessions", json={"code": "€" * 400_000}), 422, "invalid_field")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"{'title': 'x'}",
        b"\xff\xfe\x00",
        b'{"title": "\xff"}',
        b"[" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"1" * 5000,
        b'{"title": "\\ud800"}',
        b'{"\\udfff": 1}',
        b"NaN-ish",
    ],
)
def test_create_malformed_json_is_400(http, raw):
    assert_error(http.post("/api/sessions", content=raw, headers={"content-type": "application/json"}), 400,
                 "malformed_json")


def test_huge_numbers_and_odd_values_never_500(http):
    for raw in (b'{"title": 1e999999}', b'{"title": ' + b"9" * 4000 + b"}", b'{"title": NaN}',
                b'{"title": Infinity}', b'{"title": [[[[[[[[[[]]]]]]]]]]}', b'{"title": {"a": null}}'):
        r = http.post("/api/sessions", content=raw)
        assert r.status_code in (400, 422), (raw[:40], r.text)
        assert_error(r, r.status_code)


def test_body_too_large_is_413(http, server):
    big = b'{"code": "' + b"x" * (2 * 1024 * 1024 + 10) + b'"}'
    assert_error(http.post("/api/sessions", content=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"code": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    assert_error(http.post("/api/sessions", content=chunks()), 413, "payload_too_large")


def test_nul_and_unicode_survive(http, backend):
    s = new_session(http, title="a\x00b 日本 😀", code="print('\x00')\n# ünïcødé 😀\n")
    r = http.get(f"/api/sessions/{s['id']}/code", headers=auth(s["tokens"]["candidate"]))
    assert r.json()["code"] == "print('\x00')\n# ünïcødé 😀\n"
    r = http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["candidate"]))
    # PostgreSQL text cannot hold NUL: its store keeps U+FFFD in its place (docs/design/storage.md)
    assert r.json()["title"] == ("a\x00b 日本 😀" if backend == "sqlite" else "a\ufffdb 日本 😀")


# -- auth and roles ---------------------------------------------------------------------------------

# (method, path suffix, body, roles allowed, success status)
ENDPOINTS = [
    ("GET", "", None, ROLES, 200),
    ("PATCH", "", {"title": "renamed"}, ("interviewer",), 200),
    ("DELETE", "", None, ("interviewer",), 204),
    ("GET", "/code", None, ROLES, 200),
    ("POST", "/code", {"code": "saved\n"}, ("interviewer", "candidate"), 200),
    ("GET", "/participants", None, ROLES, 200),
    ("GET", "/history", None, ("interviewer",), 200),
    ("POST", "/tokens", None, ("interviewer",), 200),
]


def _call(http: httpx.Client, method: str, sid: str, suffix: str, body: Any, headers: dict[str, Any]) -> httpx.Response:
    return http.request(method, f"/api/sessions/{sid}{suffix}", json=body, headers=headers)


@pytest.mark.parametrize("method,suffix,body,allowed,ok", ENDPOINTS, ids=[f"{e[0]} {e[1] or '/'}" for e in ENDPOINTS])
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(http, method, suffix, body, allowed, ok, role):
    s = new_session(http)
    r = _call(http, method, s["id"], suffix, body, auth(s["tokens"][role]))
    if role in allowed:
        assert r.status_code == ok, r.text
    else:
        assert_error(r, 403, "forbidden")
        assert role in r.json()["error"]["message"]


@pytest.mark.parametrize("method,suffix,body,allowed,ok", ENDPOINTS, ids=[f"{e[0]} {e[1] or '/'}" for e in ENDPOINTS])
def test_missing_invalid_and_foreign_tokens(http, server, method, suffix, body, allowed, ok):
    s, other = new_session(http), new_session(http)
    sid = s["id"]
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, {"Authorization": "Token abc"}):
        r = _call(http, method, sid, suffix, body, headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    for token in ("garbage", "a.b.c", "é" * 20, "x" * 10_000, s["tokens"]["interviewer"][:-3] + "abc",
                  jwt.encode({"sid": sid, "role": "interviewer", "exp": int(time.time()) + 60}, "a wrong secret that is long enough for HS256", algorithm="HS256")):
        headers = {"Authorization": ("Bearer " + token).encode("utf-8")}  # raw bytes: é is not ASCII
        assert_error(_call(http, method, sid, suffix, body, headers), 401, "invalid_token")
    # a valid token of another session: 403, whatever its role
    for role in ROLES:
        assert_error(_call(http, method, sid, suffix, body, auth(other["tokens"][role])), 403, "forbidden")
    # expired token (signed with the server's secret)
    secret = server_secret(server)
    expired = jwt.encode({"sid": sid, "role": "interviewer", "exp": int(time.time()) - 5}, secret, algorithm="HS256")
    error = assert_error(_call(http, method, sid, suffix, body, auth(expired)), 401, "invalid_token")
    assert "expired" in error["message"]
    # an unknown role in a correctly signed token
    odd = jwt.encode({"sid": sid, "role": "admin", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    assert_error(_call(http, method, sid, suffix, body, auth(odd)), 401, "invalid_token")
    # a token of this session whose tokens were re-issued since (every role's)
    assert http.post(f"/api/sessions/{sid}/tokens", headers=auth(s["tokens"]["interviewer"])).status_code == 200
    for role in ROLES:
        error = assert_error(_call(http, method, sid, suffix, body, auth(s["tokens"][role])), 401, "invalid_token")
        assert "re-issued" in error["message"]


@pytest.mark.parametrize("method,suffix,body,allowed,ok", ENDPOINTS, ids=[f"{e[0]} {e[1] or '/'}" for e in ENDPOINTS])
def test_deleted_session_is_404_everywhere(http, method, suffix, body, allowed, ok):
    s = new_session(http)
    token = s["tokens"]["interviewer"]
    assert http.delete(f"/api/sessions/{s['id']}", headers=auth(token)).status_code == 204
    assert_error(_call(http, method, s["id"], suffix, body, auth(token)), 404, "session_not_found")


@pytest.mark.parametrize("sid", ["short", "x" * 65, "bad%20id%2Fxx-xxxxxxxx", "%00" * 20, "..%2F..%2Fetc%2Fpasswd"])
def test_malformed_session_ids(http, sid):
    s = new_session(http)
    r = http.get(f"/api/sessions/{sid}", headers=auth(s["tokens"]["interviewer"]))
    assert_error(r, 404)
    r = http.get(f"/api/sessions/{sid}")
    assert r.status_code in (401, 404)
    assert_error(r, r.status_code)


def test_unknown_paths_and_methods(http):
    s = new_session(http)
    for method, path in (("GET", "/api"), ("POST", "/nope"), ("GET", "/api/sessions/"),
                         ("DELETE", "/api/sessions/x/y/z"), ("GET", "/ws/sessions/abc")):
        assert_error(http.request(method, path), 404, "not_found")
    for method, path, allow in (
        ("PUT", f"/api/sessions/{s['id']}", "GET, HEAD, PATCH, DELETE"),
        ("OPTIONS", f"/api/sessions/{s['id']}", "GET, HEAD, PATCH, DELETE"),
        ("PUT", "/api/sessions", "GET, HEAD, POST"),
        ("DELETE", "/health", "GET, HEAD"),
        ("PUT", f"/api/sessions/{s['id']}/code", "GET, HEAD, POST"),
        ("TRACE", "/openapi.json", "GET, HEAD"),
        ("PROPFIND", "/api/sessions", "GET, HEAD, POST"),
    ):
        r = http.request(method, path)
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == allow
    r = http.head("/health")
    assert r.status_code == 200 and r.content == b""


def test_odd_headers_never_500(http):
    s = new_session(http)
    url = f"/api/sessions/{s['id']}"
    for headers in (
        {"Authorization": b"Bearer " + b"\xff" * 50},
        {"Authorization": "Bearer \u00e9".encode("utf-8")},
        {"Authorization": "bearer " + s["tokens"]["observer"]},  # scheme is case-insensitive
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"Accept": "text/html"},
        {"X-Forwarded-For": "::1, 999.999.1.1"},
        {"Origin": "null"},
        {"Cookie": "a=b; " * 199 + "a=b"},
    ):
        r = http.get(url, headers=headers)
        assert r.status_code < 500, (headers, r.text)
        assert r.headers["content-type"].startswith("application/json")
    assert http.get(url, headers={"Authorization": "bearer " + s["tokens"]["observer"]}).status_code == 200


# -- read / patch / code ----------------------------------------------------------------------------


def test_get_session_shape(http):
    s = new_session(http, title="T", language="go")
    r = http.get(f"/api/sessions/{s['id']}", headers=auth(s["tokens"]["observer"]))
    assert r.status_code == 200
    body = r.json()
    assert body == {k: s[k] for k in ("id", "title", "language", "status", "createdAt", "updatedAt", "expiresAt", "locked", "runEnabled")}


def test_patch_fields_and_events(http):
    s = new_session(http, title="a")
    h = auth(s["tokens"]["interviewer"])
    url = f"/api/sessions/{s['id']}"
    r = http.patch(url, json={"title": "b", "language": "rust"}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["title"], r.json()["language"], r.json()["status"]) == ("b", "rust", "active")
    assert r.json()["updatedAt"] > s["updatedAt"]
    assert http.get(url, headers=h).json()["language"] == "rust"
    assert http.get(url + "/code", headers=h).json()["language"] == "rust"
    # no-op and empty patches are fine
    assert http.patch(url, json={}, headers=h).json()["title"] == "b"
    assert http.patch(url, content=b"", headers=h).status_code == 200
    assert http.patch(url, json={"title": None}, headers=h).json()["title"] == "b"
    assert http.patch(url, json={"title": "b"}, headers=h).status_code == 200
    for bad in ({"status": "paused"}, {"title": "x" * 201}, {"language": "C"}, {"id": "x"}, {"createdAt": 1},
                # JSON types as the schema gives them: no number or string taken for a boolean
                {"locked": 0.0}, {"locked": 1}, {"locked": "true"}, {"runEnabled": "no"}):
        assert_error(http.patch(url, json=bad, headers=h), 422, "invalid_field")
    assert_error(http.patch(url, content=b"{", headers=h), 400, "malformed_json")
    events = http.get(url + "/history", headers=h).json()["events"]
    changes = [(e["type"], e["data"]) for e in events if e["type"].endswith("_changed")]
    assert changes == [
        ("title_changed", {"from": "a", "to": "b", "by": "interviewer"}),
        ("language_changed", {"from": "python", "to": "rust", "by": "interviewer"}),
    ]


def test_ended_session_is_read_only_over_rest(http):
    s = new_session(http, code="original\n")
    hi, hc = auth(s["tokens"]["interviewer"]), auth(s["tokens"]["candidate"])
    url = f"/api/sessions/{s['id']}"
    r = http.patch(url, json={"status": "ended"}, headers=hi)
    assert r.status_code == 200 and r.json()["status"] == "ended"
    for h in (hi, hc):
        assert_error(http.post(url + "/code", json={"code": "changed"}, headers=h), 409, "session_ended")
    assert_error(http.patch(url, json={"title": "new"}, headers=hi), 409, "session_ended")
    assert_error(http.patch(url, json={"language": "go", "status": "ended"}, headers=hi), 409, "session_ended")
    # reads still work; repeating the status is a no-op
    assert http.get(url + "/code", headers=hc).json()["code"] == "original\n"
    assert http.patch(url, json={"status": "ended"}, headers=hi).status_code == 200
    # reopening (together with another change) works
    r = http.patch(url, json={"status": "active", "title": "again"}, headers=hi)
    assert r.status_code == 200 and (r.json()["status"], r.json()["title"]) == ("active", "again")
    assert http.post(url + "/code", json={"code": "changed"}, headers=hc).json()["code"] == "changed"
    statuses = [e["data"] for e in http.get(url + "/history", headers=hi).json()["events"] if e["type"] == "status_changed"]
    assert statuses == [{"from": "active", "to": "ended", "by": "interviewer"},
                        {"from": "ended", "to": "active", "by": "interviewer"}]


def test_save_code_minimal_and_language(http):
    s = new_session(http, code="def f():\n    return 1\n")
    h = auth(s["tokens"]["candidate"])
    url = f"/api/sessions/{s['id']}/code"
    r = http.post(url, json={"code": "def f():\n    return 2\n"}, headers=h)
    assert r.status_code == 200
    assert r.json()["code"] == "def f():\n    return 2\n" and r.json()["language"] == "python"
    r = http.post(url, json={"code": "fn main() {}\n", "language": "rust"}, headers=h)
    assert r.json() == {"code": "fn main() {}\n", "language": "rust", "updatedAt": r.json()["updatedAt"]}
    assert http.get(url, headers=h).json()["code"] == "fn main() {}\n"
    # the same text again, empty text, unicode
    assert http.post(url, json={"code": "fn main() {}\n"}, headers=h).status_code == 200
    assert http.post(url, json={"code": ""}, headers=h).json()["code"] == ""
    assert http.post(url, json={"code": "a😀b\nü\n"}, headers=h).json()["code"] == "a😀b\nü\n"
    assert http.post(url, json={"code": "a😀😀b\nü\n"}, headers=h).json()["code"] == "a😀😀b\nü\n"
    for bad in ({}, {"code": None}, {"code": 1}, {"code": "x", "language": "X"}, {"code": "x", "extra": 1},
                {"code": "x" * (1024 * 1024 + 1)}):
        assert_error(http.post(url, json=bad, headers=h), 422, "invalid_field")
    assert_error(http.post(url, content=b"", headers=h), 400, "malformed_json")
    hi = auth(s["tokens"]["interviewer"])
    saved = [e["data"] for e in http.get(f"/api/sessions/{s['id']}/history", headers=hi).json()["events"]
             if e["type"] == "code_saved"]
    assert saved[0] == {"by": "candidate", "length": len("def f():\n    return 2\n")}
    assert len(saved) == 6


def test_code_survives_restart_without_duplication(fresh_server):
    with httpx.Client(base_url=fresh_server.base_url) as http:
        s = new_session(http, code="one\n")
        h = auth(s["tokens"]["interviewer"])
        http.post(f"/api/sessions/{s['id']}/code", json={"code": "one\ntwo\n"}, headers=h)
        http.patch(f"/api/sessions/{s['id']}", json={"language": "ruby"}, headers=h)
    fresh_server.restart()
    with httpx.Client(base_url=fresh_server.base_url) as http:
        r = http.get(f"/api/sessions/{s['id']}/code", headers=h)
        assert r.json()["code"] == "one\ntwo\n" and r.json()["language"] == "ruby"
        r = http.post(f"/api/sessions/{s['id']}/code", json={"code": "zero\none\ntwo\n"}, headers=h)
        assert r.json()["code"] == "zero\none\ntwo\n"


def test_participants_empty_without_sockets(http):
    s = new_session(http)
    r = http.get(f"/api/sessions/{s['id']}/participants", headers=auth(s["tokens"]["observer"]))
    assert r.json() == {"participants": []}


def test_history_pagination(http):
    s = new_session(http)
    h = auth(s["tokens"]["interviewer"])
    base = f"/api/sessions/{s['id']}"
    for i in range(6):
        http.patch(base, json={"title": f"t{i}"}, headers=h)
    events = http.get(base + "/history", headers=h).json()
    assert [e["type"] for e in events["events"]] == ["created"] + ["title_changed"] * 6
    assert events["nextAfter"] is None
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7
    ts = [e["ts"] for e in events["events"]]
    assert ts == sorted(ts)
    # pages of 3: 3 + 3 + 1
    pages, after = [], 0
    while True:
        page = http.get(base + "/history", params={"after": after, "limit": 3}, headers=h).json()
        pages.append([e["seq"] for e in page["events"]])
        if page["nextAfter"] is None:
            break
        after = page["nextAfter"]
    assert pages == [seqs[0:3], seqs[3:6], seqs[6:7]]
    # exactly a full last page: nextAfter is null, not a pointer to an empty page
    page = http.get(base + "/history", params={"after": seqs[3], "limit": 3}, headers=h).json()
    assert [e["seq"] for e in page["events"]] == seqs[4:7] and page["nextAfter"] is None
    assert http.get(base + "/history", params={"after": seqs[-1]}, headers=h).json() == {"events": [], "nextAfter": None}
    assert http.get(base + "/history", params={"after": "", "limit": ""}, headers=h).status_code == 200
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": -1}, {"after": -1}, {"after": "x"}, {"after": "1.5"},
                   {"after": "9" * 5000}, {"after": 2**62 + 1}, {"limit": "²"}, {"after": "١"}):
        assert_error(http.get(base + "/history", params=params, headers=h), 422, "invalid_field")


def test_history_is_per_session(http):
    a, b = new_session(http), new_session(http)
    http.patch(f"/api/sessions/{a['id']}", json={"title": "only a"}, headers=auth(a["tokens"]["interviewer"]))
    events = http.get(f"/api/sessions/{b['id']}/history", headers=auth(b["tokens"]["interviewer"])).json()["events"]
    assert [e["type"] for e in events] == ["created"]


def test_delete(http):
    s = new_session(http, code="x")
    h = auth(s["tokens"]["interviewer"])
    r = http.delete(f"/api/sessions/{s['id']}", headers=h)
    assert r.status_code == 204 and r.content == b""
    assert_error(http.delete(f"/api/sessions/{s['id']}", headers=h), 404, "session_not_found")
    assert_error(http.get(f"/api/sessions/{s['id']}/history", headers=h), 404, "session_not_found")


def test_health_and_openapi(http):
    r = http.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "ok" and isinstance(body["version"], str)
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert json.dumps(doc)  # plain JSON


def test_session_languages_come_from_the_registry(http):
    """Aliases are stored as the registry id; an id outside the registry is refused with a hint,
    whatever toolchains the host has (this server has Run off)."""
    s = new_session(http, language="c++")
    assert s["language"] == "cpp"
    h = auth(s["tokens"]["interviewer"])
    url = f"/api/sessions/{s['id']}"
    assert http.patch(url, json={"language": "golang"}, headers=h).json()["language"] == "go"
    assert http.post(url + "/code", json={"code": "x", "language": "py"}, headers=h).json()["language"] == "python"
    for r in (http.post("/api/sessions", json={"language": "cobol"}),
              http.patch(url, json={"language": "cobol"}, headers=h),
              http.post(url + "/code", json={"code": "x", "language": "cobol"}, headers=h)):
        error = assert_error(r, 422, "invalid_field")
        assert "cobol" in error["message"] and "/api/languages" in error["message"], error
    assert http.get(url, headers=h).json()["language"] == "python"


def test_languages_lists_the_registry_with_run_off(http):
    """With execution off: 200 with every session language, none runnable (not 503)."""
    r = http.get("/api/languages")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sandbox"] == "unavailable"
    by_name = {lang["name"]: lang for lang in body["languages"]}
    assert {"python", "javascript", "cpp", "ruby"} <= set(by_name)
    assert "c++" in by_name["cpp"]["aliases"] and "c++" not in by_name
    assert not any(lang["runnable"] for lang in body["languages"])
