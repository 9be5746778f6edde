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
