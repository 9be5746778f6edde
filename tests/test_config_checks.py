"""Every bad setting stops the server at start with one line naming the flag and the env var.

Each case runs the real entry point (``python -m crdt_server``) twice, once with the flag and once
with the env var; a value that slipped through would start a server, which the timeout catches.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from crdt_server.config import Settings

from .conftest import ROOT, free_port

BAD_VALUES = [
    ("port", "70000", "between 1 and 65535"),
    ("port", "0", "between 1 and 65535"),
    ("port", "eighty", "not a valid int"),
    ("max_message_size", "0", "greater than 0"),
    ("send_queue_bytes", "-5", "greater than 0"),
    ("room_pending_updates", "0", "greater than 0"),
    ("room_grace", "-1", "0 or more"),
    ("session_ttl", "0", "greater than 0"),
    ("token_ttl", "-60", "greater than 0"),
    ("ws_ping_interval", "0", "greater than 0"),
    ("create_burst", "0", "greater than 0"),
    ("create_rate", "-1", "0 or more"),
    ("run_timeout", "nan", "finite"),
    ("run_memory_mb", "0", "greater than 0"),
    ("run_timeout_max", "2", "at least --run-timeout"),
    ("sandbox_uid_base", "0", "between"),
    ("durability", "sometimes", "one of normal, full"),
    ("log_format", "xml", "one of text, json"),
    ("cors_origins", "editor.example", "not an origin"),
    ("forwarded_allow_ips", "proxy.local", "not an IP address"),
]
SHORT_SECRET = "only-twenty-characte"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return "CRDT_SERVER_" + name.upper()


def run_server(tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
    clean.update({"CRDT_SERVER_DATA_DIR": str(tmp_path / "data"), "CRDT_SERVER_PORT": str(free_port())}, **(env or {}))
    try:
        return subprocess.run([sys.executable, "-m", "crdt_server", *args], env=clean, cwd=ROOT,
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server started with {args} {env}: the bad value was not refused")


def assert_refused(result: subprocess.CompletedProcess[str], name: str, why: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert flag(name) in lines[0] and env_var(name) in lines[0], lines[0]
    assert why in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("name", "value", "why"), BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_flag_and_env_var(tmp_path: Path, name: str, value: str, why: str) -> None:
    assert_refused(run_server(tmp_path, [flag(name), value]), name, why)
    assert_refused(run_server(tmp_path, [], {env_var(name): value}), name, why)


def test_short_secret_is_refused_with_the_reason_and_never_echoed(tmp_path: Path) -> None:
    result = run_server(tmp_path, [], {"CRDT_SERVER_SECRET": SHORT_SECRET})
    line = assert_refused(result, "secret", "at least 32 characters")
    assert "brute-forced" in line
    assert SHORT_SECRET not in result.stderr + result.stdout
    # on the command line any secret is refused before its value is looked at (other processes read argv)
    argv = run_server(tmp_path, ["--secret", SHORT_SECRET])
    assert argv.returncode != 0 and "CRDT_SERVER_SECRET" in argv.stderr
    assert SHORT_SECRET not in argv.stderr + argv.stdout


def test_unwritable_data_dir_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = str(blocker / "data")  # unwritable even for root
    assert_refused(run_server(tmp_path, ["--data-dir", data_dir]), "data_dir", "cannot write")
    assert_refused(run_server(tmp_path, [], {"CRDT_SERVER_DATA_DIR": data_dir}), "data_dir", "cannot write")


def test_port_in_use_is_reported_before_the_sandbox_probe(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        for result in (run_server(tmp_path, ["--port", port, "--execution", "on"]),
                       run_server(tmp_path, ["--execution", "on"], {"CRDT_SERVER_PORT": port})):
            # one line and nothing else: neither the sandbox probe nor the store had started
            line = assert_refused(result, "port", "already in use")
            assert port in line


def test_json_log_format_reports_the_error_as_json(tmp_path: Path) -> None:
    import json

    result = run_server(tmp_path, ["--log-format", "json", "--port", "70000"])
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    record = json.loads(line)
    assert "--port" in record["message"] and "CRDT_SERVER_PORT" in record["message"]


def test_values_documented_as_zero_off_are_accepted() -> None:
    from crdt_server.config import load_settings

    s = load_settings(["--create-rate", "0", "--connect-rate", "0", "--run-rate", "0", "--exec-workers", "0",
                       "--presence-interval", "0", "--room-grace", "0", "--exec-queue-size", "0"], {})
    assert (s.create_rate, s.exec_workers, s.presence_interval) == (0.0, 0, 0.0)


def test_secrets_never_appear_in_the_settings_repr() -> None:
    s = Settings(secret="s" * 40 + "SIGNING", api_key="k" * 20 + "APIKEY")
    assert "SIGNING" not in repr(s) and "APIKEY" not in repr(s)
    assert not hasattr(Settings, "replace")


def test_every_setting_carries_a_check() -> None:
    """A new option cannot skip validation: ``_opt`` requires a check, and this catches other routes."""
    import dataclasses

    for f in dataclasses.fields(Settings):
        assert callable(f.metadata.get("check")), f.name
        if f.metadata.get("choices"):
            assert f.default in f.metadata["choices"], f.name
        assert f.metadata["check"](f.default) is None, f"the default of {f.name} fails its own check"


def test_listening_socket_is_not_inherited_by_the_sandbox_helpers(tmp_path: Path) -> None:
    """The port is bound before the sandbox starts its helper processes; none of them may hold it."""
    import psutil

    from .conftest import ServerProcess

    server = ServerProcess(tmp_path / "data", env={"CRDT_SERVER_EXECUTION": "on"})
    server.start()
    try:
        assert server.proc is not None
        children = psutil.Process(server.proc.pid).children(recursive=True)
        holders = [c.pid for c in children for conn in c.net_connections(kind="tcp")
                   if conn.status == psutil.CONN_LISTEN and conn.laddr.port == server.port]
        assert holders == []
    finally:
        server.stop()
