"""The interview page over plain HTTP: headers, hashed static files, links, /health, and the
explanation a server without the page (no Node, nothing built) answers instead."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crdt_server.config import Settings
from crdt_server.web import EditorPage, find_bundle, source_hash

from .conftest import ROOT, ServerProcess
from .webpage import web_bundle, web_env  # noqa: F401

SOURCES = ROOT / "web"


@pytest.fixture(scope="module")
def served(tmp_path_factory, web_bundle):  # noqa: F811
    srv = ServerProcess(tmp_path_factory.mktemp("served") / "data", env=web_env(web_bundle))
    srv.start()
    yield srv
    srv.stop()


def page(srv: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(srv.base_url + path)


def test_pages_carry_a_strict_csp_and_no_inline_script(served):
    for path in ("/", "/sessions/bmOEK1UxqSpATY89dQKYAA"):
        r = page(served, path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self'"
        assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
        assert csp["connect-src"] == f"'self' ws://127.0.0.1:{served.port} wss://127.0.0.1:{served.port}"
        nonce = re.search(r"'nonce-([^']+)'", csp["style-src"]).group(1)
        assert f'<meta name="style-nonce" content="{nonce}">' in r.text
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-cache"
        scripts = re.findall(r"<script[^>]*>", r.text)
        assert scripts and all(re.search(r'src="/static/[a-z]+-[A-Z0-9]+\.js"', s) for s in scripts), scripts
        assert not re.search(r"<script[^>]*>[^<]", r.text)  # no inline script
        assert not re.search(r"<[^>]*\son[a-z]+=", r.text) and " style=" not in r.text  # no handler/style attributes
        assert '<link rel="icon" href="data:,">' in r.text
    again = page(served, "/")
    assert again.headers["content-security-policy"] != page(served, "/").headers["content-security-policy"]


def test_static_files_have_hashed_names_long_caching_and_gzip(served):
    html = page(served, "/sessions/bmOEK1UxqSpATY89dQKYAA").text
    names = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
    assert {n.split("-")[0] for n in names} == {"page", "editor", "licenses"}, names
    for name in names:
        plain = httpx.get(f"{served.base_url}/static/{name}", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200, name
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert plain.headers["x-content-type-options"] == "nosniff"
        zipped = httpx.get(f"{served.base_url}/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content
    js = httpx.get(f"{served.base_url}/static/{[n for n in names if n.endswith('.js')][0]}")
    assert js.headers["content-type"].startswith("text/javascript")
    for bad in ("manifest.json", "..%2Fmanifest.json", "editor.js", "nope-AAAA.js"):
        assert httpx.get(f"{served.base_url}/static/{bad}").status_code == 404, bad


def test_the_licences_of_the_bundled_packages_are_linked_and_served(served, web_bundle):  # noqa: F811
    html = page(served, "/").text
    name = re.search(r'href="/static/(licenses-[0-9a-f]+\.txt)"', html).group(1)
    text = page(served, f"/static/{name}").text
    bundle = find_bundle(web_bundle, None)
    assert bundle is not None
    for package in ("yjs", "y-websocket", "y-codemirror.next", "@codemirror/view"):
        assert package in bundle.manifest["packages"]
        assert re.search(rf"^{re.escape(package)} \S+  —  MIT$", text, re.M), package
    assert "Permission is hereby granted" in text


def test_health_says_ready_and_create_returns_page_links(served):
    assert page(served, "/health").json()["editor"] == "ready"
    created = httpx.post(served.base_url + "/api/sessions", json={}).json()
    for role, token in created["tokens"].items():
        assert created["links"][role] == f"{served.base_url}/sessions/{created['id']}#token={token}"
    assert page(served, f"/sessions/{created['id']}").status_code == 200


def test_without_a_bundle_the_server_runs_and_the_page_explains(tmp_path):
    empty = tmp_path / "no-bundle"
    empty.mkdir()
    srv = ServerProcess(tmp_path / "data", env=web_env(empty))
    srv.start()
    try:
        assert page(srv, "/health").json()["editor"] == "absent"
        for path in ("/sessions/bmOEK1UxqSpATY89dQKYAA", "/"):
            r = page(srv, path)
            assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
            assert "build-web" in r.text and "Node" in r.text
            assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert httpx.post(srv.base_url + "/api/sessions", json={}).status_code == 201
    finally:
        srv.stop()


def test_without_node_the_server_starts_and_says_absent(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with no node and no npm
    bin_dir.mkdir()
    srv = ServerProcess(tmp_path / "data", env={"CRDT_SERVER_WEB_BUILD": "auto", "PATH": str(bin_dir)})
    srv.start()
    try:
        assert page(srv, "/health").json()["editor"] == "absent"
        assert "Node" in page(srv, "/sessions/bmOEK1UxqSpATY89dQKYAA").text
    finally:
        srv.stop()
    assert "interview page absent" in srv.log()
    result = subprocess.run([sys.executable, "-m", "crdt_server", "build-web", "--data-dir", str(tmp_path / "d2")],
                            env={"PATH": str(bin_dir)}, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Node >= 18 and npm are needed" in result.stderr


def test_an_unwritable_web_dir_still_starts_and_says_absent(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be made inside a file, not even by root
    srv = ServerProcess(tmp_path / "data", env={"CRDT_SERVER_WEB_BUILD": "auto",
                                                "CRDT_SERVER_WEB_DIR": str(blocker / "web")})
    srv.start()
    try:
        deadline = time.monotonic() + 20
        while page(srv, "/health").json()["editor"] == "building" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page(srv, "/health").json()["editor"] == "absent"
        assert page(srv, "/").status_code == 503
    finally:
        srv.stop()
    assert "not writable" in srv.log()


def _fake_bundle(directory: Path, source: str | None) -> None:
    directory.mkdir(parents=True)
    (directory / "editor-X.js").write_text("")
    (directory / "manifest.json").write_text(json.dumps({"sourceHash": source, "entries": {"editor.js": "editor-X.js"},
                                                         "files": ["editor-X.js"]}))


def test_a_source_change_makes_the_bundle_stale(tmp_path):
    copy = tmp_path / "web"
    copy.mkdir()
    for name in ("package.json", "package-lock.json", "build.mjs"):
        (copy / name).write_bytes((SOURCES / name).read_bytes())
    (copy / "src").mkdir()
    (copy / "src" / "editor.js").write_text("console.log(1)\n")
    before = source_hash(copy)
    assert before == source_hash(copy) and before is not None
    web_dir = tmp_path / "out"
    _fake_bundle(web_dir / "bundle-a", before)
    settings = Settings(web_dir=str(web_dir))
    assert EditorPage(settings, copy).status == "ready"
    (copy / "src" / "editor.js").write_text("console.log(2)\n")
    assert source_hash(copy) != before
    stale = EditorPage(settings, copy)
    assert stale.status == "building" and stale.bundle is not None  # the old one serves meanwhile
    assert EditorPage(dataclasses.replace(settings, web_build="off"), copy).status == "ready"  # serves what is there
    assert EditorPage(Settings(web_dir=str(tmp_path / "none"), web_build="off"), copy).status == "absent"


def test_the_build_writes_gzip_twins_and_a_complete_manifest(web_bundle):  # noqa: F811
    bundle = find_bundle(web_bundle, source_hash(SOURCES))
    assert bundle is not None, "the session's bundle is current for these sources"
    for name in bundle.manifest["files"]:
        assert gzip.decompress((bundle.directory / f"{name}.gz").read_bytes()) == (bundle.directory / name).read_bytes()
    assert set(bundle.entries) == {"editor.js", "home.js", "page.css", "licenses.txt"}
    assert not (SOURCES / "dist").exists() and not any(SOURCES.glob("*.js.gz"))  # nothing written into web/


def test_the_dockerfile_builder_stage_builds_what_the_image_serves(tmp_path):
    """No Docker engine here: run the builder stage's COPY/RUN steps in a scratch directory, then
    serve its output the way the final image does (its --web-dir, building off)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text.split("\nFROM node:", 1)[1].split("\nFROM ", 1)[0].splitlines()[1:]
    root = tmp_path / "image"
    work = root
    for line in (line.strip() for line in stage if line.strip() and not line.startswith("#")):
        op, _, rest = line.partition(" ")
        if op == "WORKDIR":
            work = root / rest.strip("/")
            work.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = rest.split()
            target = work / dest
            for src in sources:
                if (ROOT / src).is_dir():
                    shutil.copytree(ROOT / src, target)
                else:
                    shutil.copy2(ROOT / src, target / Path(src).name if dest.endswith("/") else target)
        elif op == "RUN":
            command = rest.replace(" /out", f" {root}/out")
            subprocess.run(command, shell=True, cwd=work, check=True, capture_output=True, timeout=600)
    assert "COPY --from=web /out /app/web" in text and "CRDT_SERVER_WEB_DIR=/app/web" in text
    srv = ServerProcess(tmp_path / "data", env=web_env(root / "out"))
    srv.start()
    try:
        assert page(srv, "/health").json()["editor"] == "ready"
        assert page(srv, "/sessions/bmOEK1UxqSpATY89dQKYAA").status_code == 200
    finally:
        srv.stop()
