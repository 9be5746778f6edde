"""deploy/compose.yaml and deploy/nginx.conf (no Docker engine here): what they configure is what the
server accepts, and the load balancer names the processes the compose file starts."""

from __future__ import annotations

import re
from typing import Any

import yaml

from crdt_server.config import ENV_PREFIX, settings_from

from .conftest import ROOT

DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def crdt_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in doc["services"].items() if str(svc.get("build", "")) == ".."}


def test_every_process_gets_the_same_database_and_redis_and_valid_settings():
    services = crdt_services(compose())
    assert len(services) == 2
    envs = [svc["environment"] for svc in services.values()]
    assert envs[0] == envs[1]
    env = {k: re.sub(r"\$\{[^}]*\}", "pw", str(v)) for k, v in envs[0].items()}
    assert env["CRDT_SERVER_DATABASE_URL"].startswith("postgresql://")
    assert env["CRDT_SERVER_REDIS_URL"].startswith("redis://")
    settings = settings_from({}, env)  # a ConfigError (a bad name is ignored: checked below) fails the test
    assert settings.redis_url and settings.postgres
    names = {f"{ENV_PREFIX}{n.upper()}" for n in type(settings).__dataclass_fields__}
    assert set(env) <= names, set(env) - names
    volumes = [svc["volumes"][0].split(":")[0] for svc in services.values()]
    assert len(set(volumes)) == 2  # each process its own data directory


def test_nginx_balances_over_the_compose_processes():
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream crdt \{(.*?)\}", conf, flags=re.S)
    assert upstream
    servers = set(re.findall(r"server (\S+?):(\d+)", upstream.group(1)))
    port = re.search(r"CRDT_SERVER_PORT=(\d+)", (ROOT / "Dockerfile").read_text())
    assert port
    assert servers == {(name, port.group(1)) for name in crdt_services(compose())}
    assert "./nginx.conf" in str(compose()["services"]["nginx"]["volumes"])


def test_the_interview_page_behind_nginx_on_the_published_port_passes_the_origin_check():
    """The page opens its WebSocket to ``location.host`` (web/src/editor.js), so a browser at
    http://localhost:8080 sends ``Origin: http://localhost:8080``; the server compares it with the
    Host nginx forwards, which must keep the port (``$host`` drops it: every socket would get 4403)."""
    from starlette.requests import HTTPConnection

    from crdt_server.api.origins import origin_allowed

    published = next(p for p in compose()["services"]["nginx"]["ports"])
    outer, inner = str(published).split(":")
    assert re.search(rf"listen {inner};", (DEPLOY / "nginx.conf").read_text())
    browser_host = f"localhost:{outer}"
    variables = {"$host": browser_host.split(":")[0], "$http_host": browser_host}  # nginx's meaning of each
    host = re.search(r"proxy_set_header Host (\S+);", (DEPLOY / "nginx.conf").read_text())
    assert host
    forwarded = variables[host.group(1)]
    scope = {"type": "websocket", "path": "/ws/sessions/x", "query_string": b"",
             "headers": [(b"host", forwarded.encode()), (b"origin", f"http://{browser_host}".encode())]}
    assert origin_allowed(HTTPConnection(scope), settings_from({}, {}))
